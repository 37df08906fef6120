//! The command line: configuration errors, exit codes, redaction, and secrets in logs.

use std::process::Command;
use std::time::Duration;

use crate::common::{BIN, Env, wait_for};
use base64::Engine;
use tokend::emulator::Fault;

const SEC: Duration = Duration::from_secs(1);

fn tokend(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("TOKEND_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

const GOOD: &str = r#"
state_dir = "/tmp/tokend-test-never-used"
[credentials.c]
client_id = "id"
client_secret = "s"
refresh_token = "r"
[[credentials.c.outputs]]
path = "/tmp/tokend-test-never-used-out/t"
"#;

#[test]
fn bad_configs_give_one_line_naming_the_key_and_exit_78() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            GOOD.replace("client_id = \"id\"", ""),
            "credentials.c.client_id",
        ),
        (
            GOOD.replace(
                "client_secret = \"s\"",
                "client_secret = \"s\"\nclient_secret_file = \"/x\"",
            ),
            "credentials.c.client_secret",
        ),
        (
            format!("{GOOD}\n[credentials.c.retry]\nmax = \"five minutes\"\n"),
            "credentials.c.retry.max",
        ),
        (
            GOOD.replace(
                "client_id = \"id\"",
                "client_id = \"id\"\nclient_idd = \"x\"",
            ),
            "credentials.c.client_idd",
        ),
        (
            format!("{GOOD}mode = \"0999\"\n"),
            "credentials.c.outputs[0].mode",
        ),
        (
            GOOD.replace(
                "client_id = \"id\"",
                "client_id = \"id\"\ntoken_url = \"http://example.com/token\"",
            ),
            "credentials.c.token_url",
        ),
        (
            GOOD.replace("[credentials.c]", "[credentials.C]"),
            "credentials.C",
        ),
        (
            format!("{GOOD}\n[credentials.c.refresh]\nat = 1.5\n"),
            "credentials.c.refresh.at",
        ),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        for cmd in ["check", "run", "once"] {
            let (code, _, err) = tokend(&[cmd, "-c", path.to_str().unwrap()]);
            assert_eq!(code, 78, "{cmd} {key}: {err}");
            assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
            assert!(err.contains(key), "{err} should name {key}");
            assert!(
                err.contains(&format!("bad{i}.toml")),
                "{err} should name the file"
            );
        }
    }
}

#[test]
fn environment_errors_name_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.toml");
    std::fs::write(&path, GOOD).unwrap();
    let out = Command::new(BIN)
        .args(["check", "-c", path.to_str().unwrap()])
        .env("TOKEND_CREDENTIALS__C__HTTP__TIMEOUT", "soon")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        err.contains("TOKEND_CREDENTIALS__C__HTTP__TIMEOUT")
            && err.contains("credentials.c.http.timeout"),
        "{err}"
    );
}

#[test]
fn check_redacts_and_usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.toml");
    std::fs::write(
        &path,
        GOOD.replace("client_secret = \"s\"", "client_secret = \"sup3r-secret\"")
            .replace(
                "refresh_token = \"r\"",
                "refresh_token = \"blnk_rt_secret\"",
            ),
    )
    .unwrap();
    let (code, out, _) = tokend(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        out.contains("client_id = \"id\"") && out.contains("[redacted]"),
        "{out}"
    );
    assert!(
        !out.contains("sup3r-secret") && !out.contains("blnk_rt_secret"),
        "{out}"
    );
    assert_eq!(tokend(&["frobnicate"]).0, 2);
    assert_eq!(tokend(&["run", "--bogus"]).0, 2);
    let (code, out, _) = tokend(&["--version"]);
    assert_eq!(
        (code, out.trim()),
        (0, concat!("tokend ", env!("CARGO_PKG_VERSION")))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_status_and_token() {
    let env = Env::new(Duration::from_secs(3600)).await;
    let cfg = env.write_config(&["c"]);
    let cfg = cfg.to_str().unwrap();
    let (code, _, _) = tokend(&["status", "-c", cfg]);
    assert_eq!(code, 1, "no state yet: unhealthy");
    assert_eq!(tokend(&["token", "-c", cfg]).0, 1);

    let (code, _, err) = tokend(&["once", "-c", cfg]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(env.emu.stats().refreshes, 1);
    let published = env.raw_output("c").unwrap();
    assert!(env.emu.accepts(&published));
    // A second `once` finds the token fresh and does not refresh.
    assert_eq!(tokend(&["once", "-c", cfg]).0, 0);
    assert_eq!(env.emu.stats().refreshes, 1);

    let (code, out, _) = tokend(&["token", "-c", cfg]);
    assert_eq!((code, out.as_str()), (0, published.as_str()));
    let (code, out, _) = tokend(&["status", "-c", cfg, "--json"]);
    assert_eq!(code, 0, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report[0]["healthy"], true);
    assert!(report[0]["seconds_left"].as_u64().unwrap() > 3500);
    let (_, text, _) = tokend(&["status", "-c", cfg]);
    assert!(text.contains("c: healthy"), "{text}");
    for secret in env.emu.issued_tokens() {
        assert!(
            !out.contains(&secret) && !text.contains(&secret),
            "status leaked a token"
        );
    }

    // Server trouble: 75; a dead refresh token: 77.
    // Make the hour-long token due one second after it was obtained.
    let cfg_env = [("TOKEND_CREDENTIALS__C__REFRESH__MIN_REMAINING", "3599s")];
    tokio::time::sleep(1100 * Duration::from_millis(1)).await;
    env.emu.push_fault(Fault::Status {
        status: 503,
        body: String::new(),
        retry_after: None,
    });
    let once_due = || {
        Command::new(BIN)
            .args(["once", "-c", cfg])
            .envs(cfg_env)
            .output()
            .unwrap()
    };
    let out = once_due();
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.emu.revoke_all();
    let out = once_due();
    assert_eq!(
        out.status.code(),
        Some(77),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, text, _) = tokend(&["status", "-c", cfg]);
    assert_eq!(code, 1);
    assert!(
        text.contains("BLOCKED") && text.contains("invalid_grant"),
        "{text}"
    );
}

#[tokio::test]
async fn no_secret_reaches_the_log_even_at_trace() {
    let env = Env::new(Duration::from_secs(3)).await;
    let cfg = env.write_config(&["c"]);
    let cfg = cfg.to_str().unwrap();
    let mut d = env.spawn(&["run", "-c", cfg], "trace.log", &[("RUST_LOG", "trace")]);
    d.wait_started().await;
    wait_for("two rotations", 10 * SEC, || env.emu.stats().refreshes >= 3).await;
    env.emu.push_fault(Fault::Reset);
    env.emu.push_fault(Fault::Status {
        status: 400,
        body: r#"{"error":"invalid_request"}"#.into(),
        retry_after: None,
    });
    d.signal(libc::SIGUSR1);
    wait_for("faults served", 10 * SEC, || {
        env.emu.stats().faults_served == 2
    })
    .await;
    d.signal(libc::SIGHUP);
    wait_for("another rotation", 10 * SEC, || {
        env.emu.stats().refreshes >= 5
    })
    .await;
    assert_eq!(d.stop().await, 0);

    let log = d.log_text();
    assert!(
        log.contains("TRACE") && log.lines().count() > 50,
        "trace logging was on"
    );
    let secret = env.emu.config().client_secret;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("test-client:{secret}"));
    let mut secrets = env.emu.issued_tokens();
    secrets.extend([secret, basic]);
    assert!(secrets.len() > 10);
    for s in &secrets {
        assert!(!log.contains(s.as_str()), "a secret reached the log");
    }
    assert!(
        !log.to_ascii_lowercase().contains("authorization: basic"),
        "an Authorization header reached the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_proxy_from_the_environment_is_used() {
    let env = Env::new(Duration::from_secs(3600)).await;
    // The token URL points at a closed port; only a proxy can reach the emulator.
    let closed = crate::common::free_port();
    let cfg = env.write_config(&["c"]);
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        &env.emu.token_url(),
        &format!("http://127.0.0.1:{closed}/oauth/token"),
    );
    std::fs::write(&cfg, text).unwrap();
    let run = |proxy: &str| {
        Command::new(BIN)
            .args(["once", "-c", cfg.to_str().unwrap()])
            .env("HTTP_PROXY", proxy)
            .env_remove("NO_PROXY")
            .output()
            .unwrap()
    };
    let out = run(&format!("http://{}", env.emu.addr()));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.emu.stats().refreshes, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let env = Env::new(Duration::from_secs(3600)).await;
    let cfg = env.write_config(&["c"]);
    let out = Command::new(BIN)
        .args(["once", "-c", cfg.to_str().unwrap()])
        .env("TOKEND_LOG__FORMAT", "json")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).expect(l))
        .collect();
    let rotated = lines
        .iter()
        .find(|l| l["message"] == "rotated")
        .expect("a rotation line");
    assert_eq!(rotated["level"], "INFO");
    assert_eq!(rotated["span"]["credential"], "c", "{rotated}");
    assert!(rotated["expires_at"].as_str().unwrap().ends_with('Z'));
    assert!(rotated["duration_ms"].is_u64());
}
