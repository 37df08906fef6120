//! What applications read (design.md §7): readers never see a torn or mixed file,
//! permissions are exact from the first moment, hooks run once per rotation, and a
//! bind-mounted file gives the documented error. Against the real binary.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::common::{Env, wait_for};

const SEC: Duration = Duration::from_secs(1);

/// Every output format, standalone, plus a `publish_dir` pair; `owner`/`group` lines
/// go into each output.
fn all_outputs_toml(env: &Env, name: &str, ownership: &str) -> String {
    let dir = env.dir.path().display();
    let mut text = env.credential_toml(name, &format!("publish_dir = \"{dir}/pub\""));
    for (path, format, mode) in [
        ("out/env", "env", "0644"),
        ("out/header", "header", "0400"),
        ("access_token", "raw", "0640"),
        ("token.json", "json", "0604"),
    ] {
        let path = if path.contains('/') {
            format!("{dir}/{path}")
        } else {
            path.to_owned()
        };
        text.push_str(&format!(
            "[[credentials.{name}.outputs]]\npath = \"{path}\"\nformat = \"{format}\"\nmode = \"{mode}\"\n{ownership}\n"
        ));
    }
    text
}

/// The standalone outputs and the names inside `publish_dir`, with their modes.
fn expected_files(env: &Env) -> Vec<(PathBuf, u32)> {
    vec![
        (env.path("out/c/access_token"), 0o640),
        (env.path("out/c/token.json"), 0o600),
        (env.path("out/env"), 0o644),
        (env.path("out/header"), 0o400),
        (env.path("pub/access_token"), 0o640),
        (env.path("pub/token.json"), 0o604),
    ]
}

fn looks_whole(token: &str) -> bool {
    token.len() == 40 && token.starts_with("blnk_at_")
}

/// Reads every output once; returns how many files were read, or what was wrong.
fn read_all(
    env_file: &Path,
    header: &Path,
    raw: &Path,
    json: &Path,
    pd: &Path,
) -> Result<u64, String> {
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    let raw_text = read(raw)?;
    if !looks_whole(&raw_text) {
        return Err(format!("raw: {} bytes", raw_text.len()));
    }
    let doc: serde_json::Value =
        serde_json::from_str(&read(json)?).map_err(|e| format!("json: {e}"))?;
    if !doc["access_token"].as_str().is_some_and(looks_whole) || !doc["expires_at"].is_string() {
        return Err("json: incomplete".into());
    }
    let env_text = read(env_file)?;
    let lines: Vec<&str> = env_text.lines().collect();
    if lines.len() != 2
        || !lines[0]
            .strip_prefix("ACCESS_TOKEN=")
            .is_some_and(looks_whole)
        || !lines[1].starts_with("ACCESS_TOKEN_EXPIRES_AT=20")
    {
        return Err(format!("env: {} lines", lines.len()));
    }
    let header_text = read(header)?;
    if !header_text
        .strip_prefix("Authorization: Bearer ")
        .and_then(|t| t.strip_suffix('\n'))
        .is_some_and(looks_whole)
    {
        return Err("header: incomplete".into());
    }
    // The publish_dir pair, as docs/configuration.md tells readers of several files to:
    // resolve ..data once, read both files through it; if the version is gone (this
    // reader was paused across two rotations, 20 ms apart here), resolve again.
    loop {
        let version =
            pd.join(std::fs::read_link(pd.join("..data")).map_err(|e| format!("..data: {e}"))?);
        let both = (|| {
            let raw = std::fs::read_to_string(version.join("access_token"))?;
            let json = std::fs::read_to_string(version.join("token.json"))?;
            Ok::<_, std::io::Error>((raw, json))
        })();
        let (pair_raw, pair_json) = match both {
            Ok(pair) => pair,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                PAIR_RETRIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            Err(e) => return Err(format!("{}: {e}", version.display())),
        };
        let pair_json: serde_json::Value =
            serde_json::from_str(&pair_json).map_err(|e| format!("pair json: {e}"))?;
        if !looks_whole(&pair_raw) || pair_json["access_token"].as_str() != Some(pair_raw.as_str())
        {
            return Err("publish_dir pair: mixed versions".into());
        }
        return Ok(6);
    }
}

/// Pair reads that found their version replaced twice and resolved `..data` again.
static PAIR_RETRIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// ≥ 1,000,000 reads across ≥ 2,000 rotations, zero bad reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_see_torn_or_mixed_versions() {
    let target_rotations = crate::common::count_from_env("READER_ROTATIONS", 2000);
    let target_reads = crate::common::count_from_env("READER_READS", 1_000_000);
    let env = Env::new(Duration::from_secs(3600)).await;
    env.bootstrap("c");
    let cfg = env.write_config_text(&format!(
        "state_dir = \"{}/state\"\n{}",
        env.dir.path().display(),
        all_outputs_toml(&env, "c", "")
    ));
    let mut d = env.spawn(&["run", "-c", cfg.to_str().unwrap()], "readers.log", &[]);
    wait_for("first token", 10 * SEC, || {
        env.path("pub/token.json").exists()
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let first_bad = Arc::new(std::sync::Mutex::new(None::<String>));
    let paths = [
        env.path("out/env"),
        env.path("out/header"),
        env.path("pub/access_token"),
        env.path("out/c/token.json"),
        env.path("pub"),
    ];
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (stop, reads, bad, first_bad, p) = (
                stop.clone(),
                reads.clone(),
                bad.clone(),
                first_bad.clone(),
                paths.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Relaxed) {
                    match read_all(&p[0], &p[1], &p[2], &p[3], &p[4]) {
                        Ok(n) => {
                            reads.fetch_add(n, Relaxed);
                        }
                        Err(e) => {
                            bad.fetch_add(1, Relaxed);
                            first_bad.lock().unwrap().get_or_insert(e);
                        }
                    }
                }
            })
        })
        .collect();

    let started = Instant::now();
    let first = env.emu.stats().refreshes;
    while env.emu.stats().refreshes - first < target_rotations || reads.load(Relaxed) < target_reads
    {
        env.rotate(&d, "a rotation", 10 * SEC).await;
        assert!(started.elapsed() < Duration::from_secs(600), "too slow");
    }
    stop.store(true, Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    let rotations = env.emu.stats().refreshes - first;
    let elapsed = started.elapsed().as_secs_f64();
    let line = format!(
        "readers: {} reads across {rotations} rotations in {elapsed:.1} s ({:.1} ms per rotation): {} bad; \
         {} publish_dir pair reads resolved ..data again after two rotations passed them",
        reads.load(Relaxed),
        1000.0 * elapsed / rotations as f64,
        bad.load(Relaxed),
        PAIR_RETRIES.load(Relaxed)
    );
    crate::common::figure("outputs", &line);
    assert_eq!(
        bad.load(Relaxed),
        0,
        "first bad read: {:?}",
        first_bad.lock().unwrap()
    );
    assert_eq!(env.emu.stats().reuses, 0);
    assert_eq!(d.stop().await, 0);
}

/// The owner and group the permission test asks for: another user's, which only root
/// may give a file.
fn test_owner() -> (String, String, u32, u32) {
    crate::common::require_root("gives outputs another user's owner and group");
    let user = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("user nobody");
    let group = nix::unistd::Group::from_name("nogroup")
        .unwrap()
        .expect("group nogroup");
    (
        "nobody".into(),
        "nogroup".into(),
        user.uid.as_raw(),
        group.gid.as_raw(),
    )
}

/// Under umask 000 and 077 every output has its exact mode, owner and
/// group whenever a watcher looks, on every inotify event of the directories.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_are_exact_from_the_first_moment_under_any_umask() {
    use inotify::{Inotify, WatchMask};
    let (owner, group, uid, gid) = test_owner();
    for umask in ["000", "077"] {
        let env = Env::new(Duration::from_secs(3600)).await;
        env.bootstrap("c");
        let ownership = format!("owner = \"{owner}\"\ngroup = \"{group}\"");
        let mut text = format!("state_dir = \"{}/state\"\n", env.dir.path().display());
        text.push_str(&all_outputs_toml(&env, "c", &ownership));
        // The two default outputs of the harness get the same owner and group.
        text = text.replace(
            "mode = \"0640\"\n[[",
            &format!("mode = \"0640\"\n{ownership}\n[["),
        );
        text = text.replace(
            "mode = \"0600\"\n",
            &format!("mode = \"0600\"\n{ownership}\n"),
        );
        let cfg = env.write_config_text(&text);
        for dir in ["out/c", "pub"] {
            std::fs::create_dir_all(env.path(dir)).unwrap();
        }
        let mut inotify = Inotify::init().unwrap();
        let mask = WatchMask::CREATE
            | WatchMask::MOVED_TO
            | WatchMask::ATTRIB
            | WatchMask::CLOSE_WRITE
            | WatchMask::MODIFY;
        for dir in ["out", "out/c", "pub"] {
            inotify.watches().add(env.path(dir), mask).unwrap();
        }
        let files = expected_files(&env);
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (stop, files) = (stop.clone(), files.clone());
            std::thread::spawn(move || {
                let (mut events, mut looks, mut wrong) = (0u64, 0u64, Vec::new());
                let mut buf = [0u8; 8192];
                let fd = std::os::fd::AsRawFd::as_raw_fd(&inotify);
                while !stop.load(Relaxed) {
                    let mut pfd = libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    if unsafe { libc::poll(&mut pfd, 1, 50) } <= 0 {
                        continue;
                    }
                    let Ok(batch) = inotify.read_events(&mut buf) else {
                        continue;
                    };
                    events += batch.count() as u64;
                    for (path, mode) in &files {
                        if let Ok(m) = std::fs::metadata(path) {
                            looks += 1;
                            let got = (m.mode() & 0o7777, m.uid(), m.gid());
                            if got != (*mode, uid, gid) {
                                wrong.push(format!(
                                    "{}: {:o} {}:{}",
                                    path.display(),
                                    got.0,
                                    got.1,
                                    got.2
                                ));
                            }
                        }
                    }
                }
                (events, looks, wrong)
            })
        };
        let script = format!(
            "umask {umask}; exec {} run -c {}",
            crate::common::BIN,
            cfg.display()
        );
        let mut d = env.spawn_shell(&script, "umask.log");
        wait_for("first token", 10 * SEC, || {
            env.path("pub/token.json").exists()
        })
        .await;
        d.wait_started().await;
        for _ in 0..30 {
            env.rotate(&d, "a rotation", 10 * SEC).await;
        }
        wait_for("outputs of the last rotation", 5 * SEC, || {
            d.log_text().matches("rotated").count() >= 31
        })
        .await;
        assert_eq!(d.stop().await, 0, "{}", d.log_text());
        stop.store(true, Relaxed);
        let (events, looks, wrong) = watcher.join().unwrap();
        let line = format!(
            "permissions under umask {umask}: {events} inotify events, {looks} stats, {} wrong",
            wrong.len()
        );
        crate::common::figure("outputs", &line);
        assert!(events > 100 && looks > 100, "the watcher saw too little");
        assert!(
            wrong.is_empty(),
            "umask {umask}: {:?}",
            &wrong[..wrong.len().min(5)]
        );
        assert_eq!(crate::common::mode(&env.path("state/c.json")), 0o600);
    }
}

/// Hooks run once per rotation with the right environment; a hanging
/// hook is killed at its timeout; a failing one changes nothing else; the signal goes
/// to whatever process the pid file names at that moment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_hooks() {
    let env = Env::new(Duration::from_secs(3600)).await;
    let dir = env.dir.path().display().to_string();
    let record = format!(
        r#"echo "$TOKEND_CREDENTIAL $TOKEND_EXPIRES_AT ${{TOKEND_LOG__LEVEL-none}}" >> {dir}/hook.log"#
    );
    let mut text = format!("state_dir = \"{dir}/state\"\n");
    for (name, hook) in [
        (
            "rec",
            format!(
                "[credentials.rec.on_rotate]\ncommand = [\"sh\", \"-c\", {record:?}]\nsignal = \"SIGUSR2\"\npid_file = \"{dir}/app.pid\"\n"
            ),
        ),
        (
            "hang",
            format!(
                "[credentials.hang.on_rotate]\ncommand = [\"sh\", \"-c\", \"echo $$ >> {dir}/hang.pids; sleep 1000\"]\ntimeout = \"1s\"\n"
            ),
        ),
        (
            "fail",
            "[credentials.fail.on_rotate]\ncommand = [\"false\"]\n".to_owned(),
        ),
    ] {
        env.bootstrap(name);
        text.push_str(&env.credential_toml(name, ""));
        text.push_str(&hook);
    }
    let cfg = env.write_config_text(&text);

    // The "application": records each SIGUSR2 with its own pid.
    let app = |tag: &str| {
        let script = format!(
            "trap 'echo {tag} >> {dir}/signals.log' USR2; echo $$ > {dir}/app.pid.tmp; mv {dir}/app.pid.tmp {dir}/app.pid; while :; do sleep 0.05; done"
        );
        tokio::process::Command::new("sh")
            .args(["-c", &script])
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let mut app1 = app("first");
    wait_for("app pid file", 5 * SEC, || env.path("app.pid").exists()).await;
    let signals_seen = |n: usize| {
        std::fs::read_to_string(env.path("signals.log"))
            .unwrap_or_default()
            .lines()
            .count()
            >= n
    };

    // TOKEND_LOG__LEVEL is configuration: the hook must not inherit it.
    let mut d = env.spawn(
        &["run", "-c", cfg.to_str().unwrap()],
        "hooks.log",
        &[("TOKEND_LOG__LEVEL", "info")],
    );
    d.wait_started().await;
    let hook_lines = || {
        std::fs::read_to_string(env.path("hook.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    wait_for("the first hook run", 5 * SEC, || hook_lines().len() == 1).await;
    // Standard signals coalesce: let the app take one before the next is sent.
    wait_for("the first signal", 5 * SEC, || signals_seen(1)).await;

    // The hanging hook does not delay refreshing: rotate while it hangs.
    let before = env.emu.stats().refreshes;
    d.signal(libc::SIGUSR1);
    wait_for("rotations of all three", 3 * SEC, || {
        env.emu.stats().refreshes >= before + 3
    })
    .await;
    wait_for("a hook run per rotation", 5 * SEC, || {
        hook_lines().len() == 2
    })
    .await;

    // The pid file now names another process (once the first has had both signals).
    wait_for("two signals to the first process", 5 * SEC, || {
        signals_seen(2)
    })
    .await;
    let _ = app1.kill().await;
    std::fs::remove_file(env.path("app.pid")).unwrap();
    let mut app2 = app("second");
    wait_for("app pid file", 5 * SEC, || env.path("app.pid").exists()).await;
    let before = env.emu.stats().refreshes;
    d.signal(libc::SIGUSR1);
    wait_for("rotations", 3 * SEC, || {
        env.emu.stats().refreshes >= before + 3
    })
    .await;
    wait_for("a hook run per rotation", 5 * SEC, || {
        hook_lines().len() == 3
    })
    .await;
    // Two rotations signalled the first process, the third the second one.
    let signals = || std::fs::read_to_string(env.path("signals.log")).unwrap_or_default();
    wait_for("signals delivered", 5 * SEC, || {
        signals().lines().count() >= 3
    })
    .await;
    assert_eq!(signals(), "first\nfirst\nsecond\n");

    // Once per rotation, with the expiry of that rotation, and no configuration variable.
    let rec_rotations = env.emu.rotations().len();
    assert_eq!(rec_rotations, 9, "three credentials, three rotations each");
    let expiries: Vec<String> = hook_lines()
        .iter()
        .map(|l| {
            let parts: Vec<&str> = l.split(' ').collect();
            assert_eq!(parts.len(), 3, "{l}");
            assert_eq!((parts[0], parts[2]), ("rec", "none"), "{l}");
            parts[1].to_owned()
        })
        .collect();
    assert_eq!(
        expiries.last().map(String::as_str),
        env.state("rec").unwrap()["expires_at"].as_str()
    );
    assert!(expiries.windows(2).all(|w| w[0] < w[1]), "{expiries:?}");

    // The hanging hooks were killed at their timeout, shell and sleep alike.
    wait_for("hang timeouts", 5 * SEC, || {
        d.log_text()
            .matches("rotation hook timed out and was killed")
            .count()
            == 3
    })
    .await;
    let pids = std::fs::read_to_string(env.path("hang.pids")).unwrap();
    assert_eq!(pids.lines().count(), 3);
    for pid in pids.lines() {
        let pid = nix::unistd::Pid::from_raw(pid.parse().unwrap());
        assert!(
            nix::sys::signal::kill(pid, None).is_err(),
            "hook {pid} still runs"
        );
    }
    assert_eq!(d.log_text().matches("rotation hook failed").count(), 3);
    // The failing credential is as healthy as the others.
    let (healthy, text) = crate::common::status(&cfg);
    assert!(healthy, "{text}");
    assert_eq!(d.stop().await, 0);
    let _ = app2.kill().await;
}

/// A single-file bind mount gives the documented error. Needs a mount namespace (root).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_mounted_output_gives_the_documented_error() {
    crate::common::require_root("bind-mounts a file in its own mount namespace");
    let env = Env::new(Duration::from_secs(3600)).await;
    let cfg = env.write_config(&["c"]);
    std::fs::create_dir_all(env.path("out/c")).unwrap();
    std::fs::write(env.path("mounted"), "").unwrap();
    std::fs::write(env.path("out/c/access_token"), "").unwrap();
    let script = format!(
        "mount --bind {m} {t} && exec {bin} once -c {cfg}",
        m = env.path("mounted").display(),
        t = env.path("out/c/access_token").display(),
        bin = crate::common::BIN,
        cfg = cfg.display()
    );
    let out = std::process::Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(
        stderr.contains(
            "is a bind-mounted single file (rename gives EBUSY); mount its directory instead"
        ),
        "{stderr}"
    );
    // The refresh itself was kept.
    assert!(env.state("c").unwrap()["access_token"].is_string());
}

/// A process that may not chown gets a clear error naming the fix, and the
/// refresh itself is kept. Needs root (to run tokend as another user).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_tokend_may_not_set_gives_a_clear_error() {
    use std::os::unix::fs::PermissionsExt;
    let nobody = crate::common::nobody();
    let env = Env::new(Duration::from_secs(3600)).await;
    env.bootstrap("c");
    let text = format!(
        "state_dir = \"{}/state\"\n{}",
        env.dir.path().display(),
        env.credential_toml("c", "")
    )
    .replace("mode = \"0640\"\n", "mode = \"0640\"\nowner = \"root\"\n");
    let cfg = env.write_config_text(&text);
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    for file in ["client_secret", "c.bootstrap"] {
        std::fs::set_permissions(env.path(file), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let out = crate::common::once_as(&nobody, &cfg);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(
        stderr.contains("cannot give it owner root and group (unchanged): Operation not permitted")
            && stderr.contains("tokend needs CAP_CHOWN"),
        "{stderr}"
    );
    assert!(
        !env.path("out/c/access_token").exists(),
        "never with the wrong owner"
    );
    assert!(
        env.state("c").unwrap()["access_token"].is_string(),
        "the refresh is kept"
    );
}
