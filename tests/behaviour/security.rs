//! What a less privileged user can and cannot make a root tokend do. The attacker is
//! `nobody`, who owns the daemon's state directory (as the daemon's user does, by
//! design); tokend runs as root, as `login` does. Needs root.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use crate::common::{BIN, Env, authorize, command_as, finish, get, nobody, start_login, wait_for};

const SEC: Duration = Duration::from_secs(1);

/// Gives `path` to `user`.
fn give(path: &Path, user: &nix::unistd::User) {
    std::os::unix::fs::chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw())).unwrap();
}

/// A root-only file that must come through untouched.
fn victim(env: &Env) -> std::path::PathBuf {
    let v = env.path("root-only/victim");
    std::fs::create_dir(env.path("root-only")).unwrap();
    std::fs::write(&v, "precious").unwrap();
    std::fs::set_permissions(&v, std::fs::Permissions::from_mode(0o600)).unwrap();
    v
}

fn untouched(victim: &Path) {
    let meta = std::fs::metadata(victim).unwrap();
    assert_eq!(std::fs::read_to_string(victim).unwrap(), "precious");
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o600));
}

/// `nobody` plants `link` -> `target` (in a directory `nobody` owns).
fn plant(user: &nix::unistd::User, target: &Path, link: &Path) {
    let ok = command_as(user, "ln")
        .arg("-sfn")
        .arg(target)
        .arg(link)
        .status()
        .unwrap();
    assert!(ok.success(), "ln -s as nobody");
}

fn once(cfg: &Path) -> (i32, String) {
    let out = std::process::Command::new(BIN)
        .args(["once", "-c", cfg.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The state directory belongs to `nobody`; everything else to root.
fn nobody_owns_the_state(env: &Env) -> (nix::unistd::User, std::path::PathBuf) {
    let nobody = nobody();
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = env.path("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    give(&state, &nobody);
    (nobody, state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_planted_in_the_state_directory_never_steers_a_root_tokend() {
    let env = Env::new(3600 * SEC).await;
    let cfg = env.write_config(&["c"]);
    let (nobody, state) = nobody_owns_the_state(&env);
    let victim = victim(&env);

    // At the lock: refused, as a configuration problem, before anything is sent.
    plant(&nobody, &victim, &state.join("c.json.lock"));
    let (code, err) = once(&cfg);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("c.json.lock is a symbolic link"), "{err}");
    assert!(
        err.contains("running as root: tokend needs no privilege"),
        "{err}"
    );
    untouched(&victim);
    assert_eq!(env.emu.stats().refreshes, 0);

    // At the state file: never read through, never written through.
    std::fs::remove_file(state.join("c.json.lock")).unwrap();
    plant(&nobody, &victim, &state.join("c.json"));
    let (code, err) = once(&cfg);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    untouched(&victim);
    assert_eq!(env.emu.stats().refreshes, 0);

    // At the login's handover: a root daemon never adopts a planted chain through it.
    std::fs::remove_file(state.join("c.json")).unwrap();
    plant(&nobody, &victim, &state.join("c.json.login"));
    let (code, err) = once(&cfg);
    assert_eq!(code, 0, "{err}");
    untouched(&victim);
    assert!(
        std::fs::symlink_metadata(state.join("c.json"))
            .unwrap()
            .is_file()
    );
}

/// The same directory made writable by others, or owned by a stranger, is refused
/// outright, with what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_directory_others_can_write_is_refused() {
    let env = Env::new(3600 * SEC).await;
    let cfg = env.write_config(&["c"]);
    let (nobody, state) = nobody_owns_the_state(&env);
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let (code, err) = once(&cfg);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("writable by its group or by others (mode 1777)"),
        "{err}"
    );
    let check = std::process::Command::new(BIN)
        .args(["check", "-c", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(78), "{text}");
    assert!(text.contains("chmod 0700"), "{text}");
    // Someone else's, seen by a non-root tokend: refused too.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    give(
        &state,
        &nix::unistd::User::from_uid(0.into()).unwrap().unwrap(),
    );
    std::fs::set_permissions(
        env.path("client_secret"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::set_permissions(
        env.path("c.bootstrap"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let other = env.path("other-state");
    std::fs::create_dir(&other).unwrap();
    give(&other, &nobody);
    std::os::unix::fs::chown(&other, Some(4242), None).unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        &format!("{}/state", env.dir.path().display()),
        other.to_str().unwrap(),
    );
    let cfg2 = env.path("other.toml");
    std::fs::write(&cfg2, text).unwrap();
    let out = crate::common::once_as(&nobody, &cfg2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("is owned by uid 4242, not by tokend's user"),
        "{err}"
    );
}

/// A root `tokend login` over a lock file that `nobody` replaced with a link: the link's
/// target keeps its owner and content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_login_never_chowns_or_writes_through_a_link() {
    let env = Env::new(3600 * SEC).await;
    let cfg = crate::login::login_config(&env, "");
    let (nobody, state) = nobody_owns_the_state(&env);
    let victim = victim(&env);
    plant(&nobody, &victim, &state.join("c.json.lock"));
    let login = start_login(&cfg, &[]).await;
    get(&authorize(&login.url).await).await;
    let (code, _, err) = finish(login).await;
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    untouched(&victim);
    // Without the link, the lock and the state go to the directory's owner.
    std::fs::remove_file(state.join("c.json.lock")).unwrap();
    let login = start_login(&cfg, &[]).await;
    get(&authorize(&login.url).await).await;
    assert_eq!(finish(login).await.0, 0);
    for f in ["c.json", "c.json.lock"] {
        assert_eq!(
            std::fs::metadata(state.join(f)).unwrap().uid(),
            nobody.uid.as_raw()
        );
    }
}

/// `nobody`, who holds the lock file, writes a root process's pid into it: a root
/// `tokend login` signals the daemon the kernel names as the lock's holder, never that
/// process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_pid_in_the_lock_file_is_never_signalled() {
    let env = Env::new(3600 * SEC).await;
    let cfg = crate::login::login_config(&env, "");
    let (nobody, state) = nobody_owns_the_state(&env);
    std::fs::create_dir(env.path("out")).unwrap();
    give(&env.path("out"), &nobody);
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    // A first chain, then the daemon as nobody.
    let login = start_login(&cfg, &[]).await;
    get(&authorize(&login.url).await).await;
    assert_eq!(finish(login).await.0, 0);
    let log = std::fs::File::create(env.path("daemon.log")).unwrap();
    let mut daemon = tokio::process::Command::from(command_as(&nobody, BIN));
    let mut daemon = daemon
        .args(["run", "-c", cfg.to_str().unwrap()])
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let daemon_pid = daemon.id().unwrap();
    wait_for("the daemon to start", 10 * SEC, || {
        std::fs::read_to_string(env.path("daemon.log")).is_ok_and(|l| l.contains("ready"))
    })
    .await;
    // A root process, and its pid in the lock file, as nobody writes it.
    let mut bystander = tokio::process::Command::new("sleep")
        .arg("60")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let forged = format!(
        "pid {} on {}\n",
        bystander.id().unwrap(),
        tokend::host::hostname()
    );
    let wrote = command_as(&nobody, "sh")
        .args([
            "-c",
            &format!(
                "printf '{forged}' > {}",
                state.join("c.json.lock").display()
            ),
        ])
        .status()
        .unwrap();
    assert!(wrote.success());
    let login = start_login(&cfg, &[]).await;
    get(&authorize(&login.url).await).await;
    let (code, out, err) = finish(login).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("handed to the running tokend (pid {daemon_pid})")),
        "{out}"
    );
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "the bystander was signalled"
    );
    bystander.kill().await.unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon_pid as i32),
        nix::sys::signal::SIGTERM,
    )
    .unwrap();
    daemon.wait().await.unwrap();
}

/// A tokend running as a user keeps its memory from that user's other processes: it is
/// not dumpable, so `/proc/PID/mem` and `/proc/PID/environ` are root's alone, and no
/// core file is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokend_s_memory_is_not_readable_by_its_own_user() {
    let env = Env::new(3600 * SEC).await;
    let cfg = env.write_config(&["c"]);
    let (nobody, _) = nobody_owns_the_state(&env);
    std::fs::create_dir(env.path("out")).unwrap();
    give(&env.path("out"), &nobody);
    for f in ["tokend.toml", "client_secret", "c.bootstrap"] {
        std::fs::set_permissions(env.path(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let log = std::fs::File::create(env.path("daemon.log")).unwrap();
    let mut daemon = tokio::process::Command::from(command_as(&nobody, BIN))
        .args(["run", "-c", cfg.to_str().unwrap()])
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = daemon.id().unwrap();
    wait_for("the daemon to start", 10 * SEC, || {
        std::fs::read_to_string(env.path("daemon.log")).is_ok_and(|l| l.contains("ready"))
    })
    .await;
    for file in ["mem", "environ"] {
        let read = command_as(&nobody, "head")
            .args(["-c", "1", &format!("/proc/{pid}/{file}")])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&read.stderr);
        assert!(
            !read.status.success() && err.contains("Permission denied"),
            "/proc/{pid}/{file} is readable by the daemon's user: {err}"
        );
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = status
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert!(core.split_whitespace().nth(4) == Some("0"), "{core}");
    daemon.start_kill().unwrap();
    daemon.wait().await.unwrap();
}

/// Under umask 000, every directory tokend makes has an exact mode: its state directory
/// 0700, the parents of an output 0755 (0750 with the output's group), publish_dir
/// 0755. None is writable by others, who could otherwise replace a token there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_directory_tokend_makes_is_writable_by_others() {
    let env = Env::new(3600 * SEC).await;
    env.bootstrap("c");
    let dir = env.dir.path().display().to_string();
    let gid = nix::unistd::getgid();
    let text = format!(
        "state_dir = \"{dir}/state/deep\"\n{}",
        env.credential_toml(
            "c",
            &format!(
                "publish_dir = \"{dir}/pub/c\"\n[[credentials.c.outputs]]\npath = \"access_token\"\n[[credentials.c.outputs]]\npath = \"{dir}/out/g/a/token\"\ngroup = {gid}\n"
            )
        )
    );
    let cfg = env.write_config_text(&text);
    let mut once = env.spawn_shell(
        &format!("umask 000; exec {} once -c {}", BIN, cfg.display()),
        "once.log",
    );
    assert_eq!(once.wait_exit(10 * SEC).await, 0, "{}", once.log_text());
    for (path, mode) in [
        ("state", 0o755),
        ("state/deep", 0o700),
        // Made first, for the grouped output.
        ("out", 0o750),
        ("out/c", 0o755),
        ("pub", 0o755),
        ("pub/c", 0o755),
        ("out/g", 0o750),
        ("out/g/a", 0o750),
    ] {
        assert_eq!(crate::common::mode(&env.path(path)), mode, "{path}");
    }
    assert_eq!(crate::common::mode(&env.path("state/deep/c.json")), 0o600);
}
