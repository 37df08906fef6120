//! Mistakes a new user makes, and what tokend says about them: closed pipes, every key
//! given a wrong type, an unknown word or an out-of-range value, local problems that are
//! not the server's refusal, a dead bootstrap token that must not shadow a live chain,
//! two credentials on one path, and outputs or secrets that can never be read or written.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{BIN, Env, wait_for};

const SEC: Duration = Duration::from_secs(1);

/// Runs `tokend args` with stdout (and, with `close_stderr`, stderr too) a pipe
/// whose reader is already gone, as in `tokend status | head -0`.
fn with_closed_output(args: &[&str], close_stderr: bool) -> (i32, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(writer.try_clone().unwrap());
    if close_stderr {
        cmd.stderr(writer);
    } else {
        cmd.stderr(Stdio::piped());
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_every_command_quietly() {
    let env = Env::new(3600 * SEC).await;
    let cfg = env.write_config(&["c"]);
    let cfg = cfg.to_str().unwrap();
    assert_eq!(with_closed_output(&["once", "-c", cfg], false).0, 0);
    let cases: [(&[&str], &[i32]); 9] = [
        (&["check", "-c", cfg], &[0]),
        (&["status", "-c", cfg], &[0]),
        (&["status", "c", "--json", "-c", cfg], &[0]),
        // The token could not be delivered: a failure, but a quiet one.
        (&["token", "-c", cfg], &[0, 1]),
        (&["once", "-c", cfg], &[0]),
        (&["--help"], &[0]),
        (&["--version"], &[0]),
        // (This configuration has no authorize_url: login stops at that.)
        (&["login", "c", "-c", cfg, "--timeout", "1s"], &[78]),
        (&["frobnicate"], &[2]),
    ];
    for (args, codes) in cases {
        for close_stderr in [false, true] {
            let (code, err) = with_closed_output(args, close_stderr);
            assert!(
                codes.contains(&code),
                "{args:?} (stderr closed: {close_stderr}): exit {code}: {err}"
            );
            assert!(!err.contains("panicked"), "{args:?}: {err}");
        }
    }
    // The emulator prints what a client needs, then serves; a closed stdout loses the
    // lines, not the server.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let port = crate::common::free_port().to_string();
    let emulator = tokio::process::Command::new(BIN)
        .args(["emulator", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(writer)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/_emulator/stats");
    wait_for("the emulator to serve", 10 * SEC, || {
        std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_ok()
    })
    .await;
    assert_eq!(crate::common::get(&url).await.0, 200);
    unsafe { libc::kill(emulator.id().unwrap() as i32, libc::SIGTERM) };
    let out = emulator.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

/// Every key of the configuration, given a value of the wrong type, a word it does not
/// take, or a value out of its range: one line, naming the key, its source and what is
/// accepted; exit 78.
#[test]
fn check_names_key_source_and_what_is_accepted_for_every_bad_value() {
    let dir = tempfile::tempdir().unwrap();
    let base = "[credentials.c]\nclient_id = \"id\"\nclient_secret = \"s3cret-value\"\n";
    // (where the line goes, the line, the key named, a word of what is accepted)
    let top = |line: &str, key: &str, accepted: &str| {
        (0, line.to_owned(), key.to_owned(), accepted.to_owned())
    };
    let cred = |line: &str, key: &str, accepted: &str| {
        (
            1,
            line.to_owned(),
            format!("credentials.c.{key}"),
            accepted.to_owned(),
        )
    };
    let table = |t: &str, line: &str, key: &str, accepted: &str| {
        (
            2,
            format!("[credentials.c.{t}]\n{line}"),
            format!("credentials.c.{t}.{key}"),
            accepted.to_owned(),
        )
    };
    let output = |line: &str, key: &str, accepted: &str| {
        (
            2,
            format!("[[credentials.c.outputs]]\npath = \"/tmp/o\"\n{line}"),
            format!("credentials.c.outputs[0].{key}"),
            accepted.to_owned(),
        )
    };
    let cases = vec![
        top("state_dir = 5", "state_dir", "expected"),
        top("[log]\nformat = 5", "log.format", "expected a string"),
        top("[log]\nformat = \"yaml\"", "log.format", "text, json"),
        top("[log]\nlevel = 5", "log.level", "expected a string"),
        top(
            "[log]\nlevel = \"verbose\"",
            "log.level",
            "trace, debug, info, warn, error, off",
        ),
        top(
            "[health]\nlisten = 9464",
            "health.listen",
            "expected a string",
        ),
        top(
            "[health]\nlisten = \"localhost:9464\"",
            "health.listen",
            "IP address and port",
        ),
        cred("token_url = 5", "token_url", "expected a string"),
        cred("token_url = \"ftp://x\"", "token_url", "https://"),
        cred("issuer = true", "issuer", "expected a string"),
        cred("authorize_url = 5", "authorize_url", "expected a string"),
        cred(
            "redirect_uri = \"http://127.0.0.1/cb#x\"",
            "redirect_uri",
            "fragment",
        ),
        cred("client_auth = 5", "client_auth", "expected a string"),
        cred(
            "client_auth = \"digest\"",
            "client_auth",
            "basic, basic_unencoded, post",
        ),
        cred("refresh_token = 5", "refresh_token", "expected a string"),
        cred("refresh_token_file = 5", "refresh_token_file", "expected"),
        cred("scope = 5", "scope", "expected a string"),
        cred("state_file = false", "state_file", "expected"),
        cred(
            "refresh_token_max_age = 30",
            "refresh_token_max_age",
            "duration",
        ),
        cred("warn_before = \"soon\"", "warn_before", "duration"),
        cred("publish_dir = \"relative\"", "publish_dir", "absolute"),
        cred("authorize_params = 5", "authorize_params", "expected"),
        cred(
            "authorize_params = { state = \"x\" }",
            "authorize_params.state",
            "the flow's own",
        ),
        cred("token_params = [\"x\"]", "token_params", "expected"),
        table(
            "http",
            "client_cert_file = \"/etc/c.crt\"",
            "client_key_file",
            "is required",
        ),
        table(
            "http",
            "client_key_file = \"/etc/c.key\"",
            "client_cert_file",
            "is required",
        ),
        cred(
            "token_params = { grant_type = \"password\" }",
            "token_params.grant_type",
            "tokend sends itself",
        ),
        cred(
            "token_params = { client_assertion = \"x\" }",
            "token_params.client_assertion",
            "tokend sends itself",
        ),
        table("refresh", "at = \"0.5\"", "at", "expected a number"),
        table("refresh", "at = 1.5", "at", "between 0 and 1"),
        table("refresh", "at = 0.97", "at", "inside (0, 1)"),
        table("refresh", "jitter = -0.1", "jitter", "at least 0"),
        table("refresh", "min_remaining = 60", "min_remaining", "duration"),
        table(
            "refresh",
            "default_lifetime = \"0s\"",
            "default_lifetime",
            "more than 0s",
        ),
        table("retry", "initial = \"0s\"", "initial", "more than 0s"),
        table(
            "retry",
            "initial = \"10s\"\nmax = \"1s\"",
            "max",
            "at least retry.initial",
        ),
        table("http", "timeout = true", "timeout", "duration"),
        table(
            "http",
            "connect_timeout = \"0s\"",
            "connect_timeout",
            "more than 0s",
        ),
        table(
            "http",
            "allow_insecure_http = \"yes\"",
            "allow_insecure_http",
            "expected a boolean",
        ),
        table(
            "http",
            "ca_file = \"/nonexistent/ca.pem\"",
            "ca_file",
            "No such file",
        ),
        table(
            "on_rotate",
            "command = \"/bin/true\"",
            "command",
            "expected a sequence",
        ),
        table(
            "on_rotate",
            "command = [\"/bin/true\"]\ntimeout = \"0s\"",
            "timeout",
            "more than 0s",
        ),
        table(
            "on_rotate",
            "signal = \"SIGFOO\"\npid_file = \"/p\"",
            "signal",
            "signal name such as",
        ),
        (
            2,
            "[[credentials.c.outputs]]\npath = 5".into(),
            "credentials.c.outputs[0].path".into(),
            "expected".into(),
        ),
        output("format = \"yaml\"", "format", "raw, json, env, header"),
        output("mode = 640", "mode", "as a string"),
        output("mode = \"0999\"", "mode", "octal file mode"),
        output("owner = true", "owner", "expected"),
        output("group = \"no-such-group-x\"", "group", "no group named"),
    ];
    for (i, (place, line, key, accepted)) in cases.into_iter().enumerate() {
        let text = match place {
            0 => format!("{line}\n{base}"),
            1 => format!("{base}{line}\n"),
            _ => format!("{base}{line}\n"),
        };
        let path = dir.path().join(format!("{i}.toml"));
        std::fs::write(&path, &text).unwrap();
        let out = Command::new(BIN)
            .args(["check", "-c", path.to_str().unwrap()])
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{line}: {err}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "one line for {line}: {err}"
        );
        let expected_start = format!("tokend: configuration error: {}: {key}: ", path.display());
        assert!(
            err.starts_with(&expected_start),
            "{line}: wants {expected_start:?}, got {err}"
        );
        assert!(err.contains(&accepted), "{line}: wants {accepted:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_problems_are_not_the_servers_refusal() {
    let env = Env::new(3600 * SEC).await;
    let cfg = env.write_config(&["c"]);
    let cfg = cfg.to_str().unwrap();
    let once = || {
        let out = Command::new(BIN)
            .args(["once", "-c", cfg])
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // The client secret's file is missing: nothing is sent, exit 78, the file named.
    let secret = env.path("client_secret");
    std::fs::rename(&secret, env.path("client_secret.away")).unwrap();
    let (code, err) = once();
    assert_eq!(code, 78, "{err}");
    assert!(err.contains(secret.to_str().unwrap()), "{err}");
    assert!(!err.contains("refused"), "{err}");
    assert_eq!(env.emu.stats().token_requests, 0);
    let check = Command::new(BIN)
        .args(["check", "-c", cfg])
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&check.stderr).contains(secret.to_str().unwrap()));
    std::fs::rename(env.path("client_secret.away"), &secret).unwrap();

    // No state and no bootstrap token: exit 78, and what to do.
    let bootstrap = env.path("c.bootstrap");
    std::fs::rename(&bootstrap, env.path("c.bootstrap.away")).unwrap();
    let (code, err) = once();
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("tokend login c") && !err.contains("refused"),
        "{err}"
    );
    std::fs::rename(env.path("c.bootstrap.away"), &bootstrap).unwrap();

    // A corrupt state file: not the server's doing either (exit 1), and no token sent.
    std::fs::create_dir_all(env.path("state")).unwrap();
    std::fs::write(env.path("state/c.json"), "{not json").unwrap();
    let (code, err) = once();
    assert_eq!(code, 1, "{err}");
    assert!(!err.contains("refused"), "{err}");
    assert!(err.contains("Removing the file starts over"), "{err}");
    assert_eq!(env.emu.stats().token_requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_bootstrap_token_does_not_shadow_a_live_chain() {
    let env = Env::new(3600 * SEC).await;
    let mut d = env.run_started(&["c"]).await;
    wait_for("first token", 10 * SEC, || env.raw_output("c").is_some()).await;
    env.rotate(&d, "a rotation", 10 * SEC).await;
    // A token of another authorization, already used: the server refuses it.
    let dead = env.emu.issue_refresh_token();
    tokend::tls::install_crypto_provider();
    let c = env.emu.config();
    let used = reqwest::Client::new()
        .post(env.emu.token_url())
        .basic_auth(&c.client_id, Some(&c.client_secret))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", dead.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(used.status(), 200);
    std::fs::write(env.path("c.bootstrap"), format!("{dead}\n")).unwrap();
    let refreshes = env.emu.stats().refreshes;
    d.signal(libc::SIGHUP);
    wait_for("the fall back", 10 * SEC, || {
        d.log_text()
            .contains("going on with the chain in the state file")
    })
    .await;
    // The chain that was live goes on at once, and later SIGHUPs never send the dead
    // token.
    wait_for("a rotation of the live chain", 10 * SEC, || {
        env.emu.stats().refreshes > refreshes
    })
    .await;
    let sent_dead = || {
        env.emu
            .requests()
            .iter()
            .filter(|r| r.refresh_token() == dead)
            .count()
    };
    let before = sent_dead();
    for _ in 0..3 {
        d.signal(libc::SIGHUP);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    env.rotate(&d, "another rotation", 10 * SEC).await;
    assert_eq!(sent_dead(), before, "the refused token was sent again");
    // Not after a restart either.
    assert_eq!(d.stop().await, 0);
    let mut d = env.run_started(&["c"]).await;
    env.rotate(&d, "a rotation after restart", 10 * SEC).await;
    assert_eq!(sent_dead(), before);
    assert!(!d.log_text().contains("refreshing stopped"));
    assert_eq!(d.stop().await, 0);
    let token = env.raw_output("c").unwrap();
    assert!(env.emu.accepts(&token));
}

/// `tokend CMD -c cfg` as root: its exit code and stderr.
fn tokend(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Two credentials on one output: one credential's readers would get the other's token.
/// `check` refuses it, naming both and the path; so does every other command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_credentials_on_one_output_are_refused() {
    let env = Env::new(3600 * SEC).await;
    env.bootstrap("a");
    env.bootstrap("b");
    let shared = env.path("out/shared/access_token");
    let mut text = format!("state_dir = \"{}/state\"\n", env.dir.path().display());
    for name in ["a", "b"] {
        text.push_str(&env.credential_toml(
            name,
            &format!(
                "[[credentials.{name}.outputs]]\npath = \"{}\"\n",
                shared.display()
            ),
        ));
    }
    let cfg = env.write_config_text(&text);
    for cmd in ["check", "once", "run"] {
        let (code, err) = tokend(&[cmd, "-c", cfg.to_str().unwrap()]);
        assert_eq!(code, 78, "{cmd}: {err}");
        assert!(
            err.contains("credentials.b.outputs[0].path")
                && err.contains("credentials.a.outputs[0].path")
                && err.contains(shared.to_str().unwrap()),
            "{cmd}: {err}"
        );
    }
    assert_eq!(env.emu.stats().token_requests, 0);
}

/// An output that can never be written (under a regular file) is a configuration error
/// for check, once and run, found before anything is sent: no chain is rotated for
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_that_can_never_be_written_is_refused_before_anything_is_sent() {
    let env = Env::new(3600 * SEC).await;
    env.bootstrap("c");
    std::fs::write(env.path("a-file"), "").unwrap();
    let text = format!(
        "state_dir = \"{}/state\"\n{}",
        env.dir.path().display(),
        env.credential_toml(
            "c",
            &format!(
                "[[credentials.c.outputs]]\npath = \"{}/a-file/token\"\n",
                env.dir.path().display()
            )
        )
    );
    let cfg = env.write_config_text(&text);
    for cmd in ["check", "once", "run"] {
        let (code, err) = tokend(&[cmd, "-c", cfg.to_str().unwrap()]);
        assert_eq!(code, 78, "{cmd}: {err}");
        assert!(
            err.contains("credentials.c.outputs[0].path") && err.contains("is not a directory"),
            "{cmd}: {err}"
        );
    }
    assert_eq!(env.emu.stats().token_requests, 0);
    assert!(env.state("c").is_none());
}

/// A secret file tokend's user cannot read: the error names `client_secret_file`, where
/// it was set, the user tokend runs as and what to do; `once` does not promise that
/// refreshing resumes (it is the daemon that waits for the file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_secret_file_names_its_key_its_source_and_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let nobody = crate::common::nobody();
    let env = Env::new(3600 * SEC).await;
    let cfg = env.write_config(&["c"]);
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in ["tokend.toml", "c.bootstrap"] {
        std::fs::set_permissions(env.path(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(
        env.path("client_secret"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    for dir in ["state", "out"] {
        std::fs::create_dir(env.path(dir)).unwrap();
        std::os::unix::fs::chown(env.path(dir), Some(nobody.uid.as_raw()), None).unwrap();
    }
    for cmd in ["check", "once"] {
        let out = crate::common::command_as(&nobody, BIN)
            .args([cmd, "-c", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{cmd}: {err}");
        assert!(
            err.contains("credentials.c.client_secret_file")
                && err.contains(cfg.to_str().unwrap())
                && err.contains("Permission denied")
                && err.contains("tokend runs as user nobody"),
            "{cmd}: {err}"
        );
        assert!(!err.contains("refreshing resumes"), "{cmd}: {err}");
    }
    assert_eq!(env.emu.stats().token_requests, 0);
}
