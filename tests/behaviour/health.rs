//! The health endpoints of SPEC §9: /healthz, /readyz and /metrics.

use std::time::{Duration, SystemTime};

use crate::common::{Env, free_port, get, wait_for};
use tokend::emulator::Fault;

const SEC: Duration = Duration::from_secs(1);

fn with_health(env: &Env, port: u16) -> std::path::PathBuf {
    env.bootstrap("c");
    let text = format!(
        "state_dir = \"{}/state\"\n[health]\nlisten = \"127.0.0.1:{port}\"\n{}",
        env.dir.path().display(),
        env.credential_toml("c", "")
    );
    env.write_config_text(&text)
}

async fn wait_status(url: &str, want: u16, limit: Duration) -> String {
    let start = std::time::Instant::now();
    loop {
        let (status, body) = get(url).await;
        if status == want {
            return body;
        }
        assert!(
            start.elapsed() < limit,
            "{url}: wanted {want}, still {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn readyz_follows_the_token() {
    let env = Env::new(Duration::from_secs(3)).await;
    let port = free_port();
    let cfg = with_health(&env, port);
    env.emu.push_fault(Fault::Delay { ms: 1500 });
    let mut d = env.spawn(&["run", "-c", cfg.to_str().unwrap()], "d.log", &[]);
    let base = format!("http://127.0.0.1:{port}");
    // Before the first token: alive, not ready.
    let body = wait_status(&format!("{base}/readyz"), 503, 5 * SEC).await;
    assert!(body.contains("c: no unexpired access token"), "{body}");
    assert!(env.raw_output("c").is_none());
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    // With a token: ready.
    wait_status(&format!("{base}/readyz"), 200, 5 * SEC).await;
    assert!(
        env.raw_output("c").is_some(),
        "ready only once the output exists"
    );
    // Server gone and the token expired: not ready, still alive.
    env.emu.stop();
    let body = wait_status(&format!("{base}/readyz"), 503, 6 * SEC).await;
    assert!(body.contains("no unexpired access token"), "{body}");
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    assert_eq!(get(&format!("{base}/nope")).await.0, 404);
    assert_eq!(d.stop().await, 0);
}

fn sample(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("{name_and_labels} missing from:\n{metrics}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_carry_the_spec_series_and_pass_promtool() {
    let env = Env::new(Duration::from_secs(2)).await;
    let port = free_port();
    let cfg = with_health(&env, port);
    env.emu.push_fault(Fault::Status {
        status: 503,
        body: String::new(),
        retry_after: None,
    });
    let mut d = env.spawn(&["run", "-c", cfg.to_str().unwrap()], "d.log", &[]);
    wait_for("three rotations", 15 * SEC, || {
        env.emu.stats().refreshes >= 3
    })
    .await;
    // Between rotations: read the state and the metrics at one moment.
    let url = format!("http://127.0.0.1:{port}/metrics");
    let (metrics, state, refreshes) = loop {
        let before = env.emu.stats().refreshes;
        let (_, metrics) = get(&url).await;
        let state = env.state("c").unwrap();
        if env.emu.stats().refreshes == before {
            break (metrics, state, before);
        }
    };
    assert_eq!(d.stop().await, 0);

    let c = "{credential=\"c\"}";
    let t = |k: &str| {
        humantime::parse_rfc3339_weak(state[k].as_str().unwrap())
            .unwrap()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    assert_eq!(
        sample(
            &metrics,
            "tokend_refresh_attempts_total{credential=\"c\",result=\"success\"}"
        ),
        refreshes as f64
    );
    assert_eq!(
        sample(
            &metrics,
            "tokend_refresh_attempts_total{credential=\"c\",result=\"transient\"}"
        ),
        1.0
    );
    assert!(
        (sample(
            &metrics,
            &format!("tokend_access_token_expiry_timestamp_seconds{c}")
        ) - t("expires_at"))
        .abs()
            < 0.01
    );
    assert!(
        (sample(
            &metrics,
            &format!("tokend_last_success_timestamp_seconds{c}")
        ) - t("obtained_at"))
        .abs()
            < 0.01
    );
    let age = sample(
        &metrics,
        &format!("tokend_refresh_token_chain_age_seconds{c}"),
    );
    assert!(age > 2.0 && age < 30.0, "chain age {age}");
    assert_eq!(
        sample(
            &metrics,
            &format!("tokend_refresh_duration_seconds_count{c}")
        ),
        refreshes as f64 + 1.0
    );
    assert_eq!(sample(&metrics, &format!("tokend_ready{c}")), 1.0);

    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is needed (Debian package prometheus)");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{metrics}"
    );
}
