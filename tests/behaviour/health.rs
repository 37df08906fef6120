//! The health endpoints of design.md §9: /healthz, /readyz and /metrics.

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
async fn metrics_carry_the_documented_series_and_pass_promtool() {
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

/// Raises this process's open-file limit to its hard limit (the test opens thousands of
/// connections), returning the soft limit it had.
fn raise_nofile() -> u64 {
    let (soft, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    soft
}

/// The health port is reachable by any local process, or the pod network: a client that
/// sends half a head, or nothing, is cut off; a flood of idle connections or of huge
/// heads takes neither the descriptors nor the memory that refreshing needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_port_cannot_be_exhausted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    raise_nofile();
    let env = Env::new(3 * SEC).await;
    let port = free_port();
    let cfg = with_health(&env, port);
    // A thousand descriptors, as many container runtimes give.
    let mut d = env.spawn_shell(
        &format!(
            "ulimit -n 1024 && exec {} run -c {}",
            crate::common::BIN,
            cfg.display()
        ),
        "d.log",
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_status(&format!("{base}/readyz"), 200, 10 * SEC).await;
    let addr = format!("127.0.0.1:{port}");

    // Half a head, and nothing at all: both closed within the head timeout (5 s).
    let mut half = tokio::net::TcpStream::connect(&addr).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    for (what, conn) in [("half a head", &mut half), ("nothing", &mut idle)] {
        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(8 * SEC, conn.read(&mut buf)).await;
        assert!(
            read.is_ok(),
            "a connection that sent {what} is still open after 8 s"
        );
    }

    // 2,000 idle connections, while tokens rotate every 2 s or so.
    let before = env.emu.stats().refreshes;
    let mut flood = Vec::new();
    for _ in 0..2000 {
        if let Ok(Ok(c)) = tokio::time::timeout(SEC, tokio::net::TcpStream::connect(&addr)).await {
            flood.push(c);
        }
    }
    let pid = d.child.id().unwrap();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    wait_for("three rotations during the flood", 20 * SEC, || {
        env.emu.stats().refreshes >= before + 3
    })
    .await;
    assert!(fds < 150, "tokend holds {fds} descriptors during the flood");
    let log = d.log_text();
    assert!(
        !log.contains("Too many open files") && !log.contains("cannot save"),
        "{log}"
    );
    let token = env.raw_output("c").unwrap();
    assert!(env.emu.accepts(&token));
    drop(flood);

    // 300 connections each sending 380 KB of head: refused early, memory kept.
    let rss_before = crate::common::proc_status_kib(pid, "VmRSS");
    let mut heavy = Vec::new();
    for _ in 0..300 {
        let Ok(mut c) = tokio::net::TcpStream::connect(&addr).await else {
            continue;
        };
        let mut head = b"GET /healthz HTTP/1.1\r\nX-Pad: ".to_vec();
        head.resize(380_000, b'a');
        heavy.push(tokio::spawn(async move {
            let _ = tokio::time::timeout(2 * SEC, c.write_all(&head)).await;
            c
        }));
    }
    for h in heavy {
        let _ = h.await;
    }
    let rss_after = crate::common::proc_status_kib(pid, "VmRSS");
    assert!(
        rss_after < rss_before + 8 * 1024,
        "RSS went from {rss_before} KiB to {rss_after} KiB"
    );
    wait_status(&format!("{base}/readyz"), 200, 10 * SEC).await;
    assert_eq!(d.stop().await, 0);
}
