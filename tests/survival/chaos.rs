//! The chaos soak: four credentials with short lifetimes against the emulator,
//! whose weather alternates between storms (most requests faulted, every kind of fault)
//! and calm. Counts refreshes, faults, refresh-token reuses seen by the server, seconds
//! during which a published token was expired although the server had been answering
//! well for longer than `retry.max` (plus one request timeout, for an attempt already in
//! flight when the calm began), panics, and RSS after warm-up and at the end.
//!
//! `SOAK_SECONDS` sets the length (default 60; CI runs the default).

use std::time::{Duration, Instant};

use crate::common::{Env, wait_for};
use tokend::config::ClientAuth;
use tokend::emulator::{EmulatorConfig, Fault};

const SEC: Duration = Duration::from_secs(1);
const NAMES: [&str; 4] = ["a", "b", "c", "d"];
const RETRY_MAX: Duration = Duration::from_secs(2);
const HTTP_TIMEOUT: Duration = Duration::from_secs(1);

fn every_fault() -> Vec<Fault> {
    let status = |status: u16, retry_after: Option<&str>| Fault::Status {
        status,
        body: r#"{"error":"temporarily_unavailable"}"#.into(),
        retry_after: retry_after.map(Into::into),
    };
    vec![
        status(500, None),
        status(502, None),
        status(503, Some("1")),
        status(429, Some("1")),
        status(408, None),
        status(404, None),
        Fault::Delay { ms: 1500 },
        Fault::Reset,
        Fault::RotateThenReset,
        Fault::Garbage,
        Fault::HugeBody { bytes: 200_000 },
        Fault::OmitRefreshToken,
        Fault::OmitExpiresIn,
        Fault::ExpiresIn { value: 0.into() },
        Fault::ExpiresIn { value: (-5).into() },
        Fault::AccessToken {
            value: "blnk_at_bad\nline".into(),
        },
        Fault::InvalidUtf8,
        Fault::NestedJson { depth: 10_000 },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_soak() {
    let seconds = crate::common::count_from_env("SOAK_SECONDS", 60);
    let env = Env::with(EmulatorConfig {
        client_id: "soak".into(),
        client_secret: "soak-secret-9".into(),
        auth: ClientAuth::Basic,
        assertion_key: None,
        access_lifetime: 3 * SEC,
        // A token rotated in an answer that never arrived (RotateThenReset) is replayed
        // by design until the answer gets through; a grace window answers those replays,
        // as Okta's does (30 s is its default). A strict server would lock the chain out
        // there: that case is the crash loop's to measure (crash.rs).
        reuse_grace: 30 * SEC,
    })
    .await;
    // Refresh at half the 3 s lifetime; a missing expires_in means the server's 3 s, as
    // an operator of such a server would configure.
    let mut text = format!("state_dir = \"{}/state\"\n", env.dir.path().display());
    for name in NAMES {
        env.bootstrap(name);
        text.push_str(
            &env.credential_toml(name, "")
                .replace(
                    "[credentials.X.refresh]\n".replace('X', name).as_str(),
                    &format!("[credentials.{name}.refresh]\nat = 0.5\ndefault_lifetime = \"3s\"\n"),
                )
                .replace(
                    "initial = \"200ms\"\nmax = \"2s\"",
                    "initial = \"100ms\"\nmax = \"2s\"",
                )
                .replace("timeout = \"3s\"", "timeout = \"1s\""),
        );
    }
    let cfg = env.write_config_text(&text);
    let mut d = env.spawn(&["run", "-c", cfg.to_str().unwrap()], "soak.log", &[]);
    let pid = d.child.id().unwrap();
    wait_for("first tokens", 10 * SEC, || {
        NAMES.iter().all(|n| env.raw_output(n).is_some())
    })
    .await;

    let start = Instant::now();
    let length = Duration::from_secs(seconds);
    let (storm, calm) = (4 * SEC, 4 * SEC);
    let first = env.emu.stats();
    let mut rss_warm = None;
    let (mut samples, mut expired_samples, mut expired_while_reachable) = (0u64, 0u64, 0u64);
    let tick = Duration::from_millis(100);
    while start.elapsed() < length {
        // Storm, then calm, then storm...
        let phase = start.elapsed().as_millis() % (storm + calm).as_millis();
        let stormy = phase < storm.as_millis();
        env.emu
            .set_chaos(if stormy { 0.7 } else { 0.0 }, every_fault());
        let calm_for = Duration::from_millis(phase.saturating_sub(storm.as_millis()) as u64);
        for name in NAMES {
            samples += 1;
            let fresh = env.raw_output(name).is_some_and(|t| env.emu.accepts(&t));
            if !fresh {
                expired_samples += 1;
                if !stormy && calm_for > RETRY_MAX + HTTP_TIMEOUT {
                    expired_while_reachable += 1;
                }
            }
        }
        if rss_warm.is_none() && start.elapsed() > 10 * SEC {
            rss_warm = Some(crate::common::proc_status_kib(pid, "VmRSS"));
        }
        tokio::time::sleep(tick).await;
    }
    env.emu.set_chaos(0.0, vec![]);
    let rss_end = crate::common::proc_status_kib(pid, "VmRSS");
    let code = d.stop().await;
    let log = d.log_text();
    let stats = env.emu.stats();
    let requests = stats.token_requests - first.token_requests;
    let faults = stats.faults_served - first.faults_served;
    let refreshes = stats.refreshes - first.refreshes;
    let panics = log.matches("panicked").count();
    let rss_warm = rss_warm.unwrap_or(rss_end);
    let per_sample = tick.as_secs_f64() / NAMES.len() as f64;
    let line = format!(
        "soak {seconds} s, {} credentials: {requests} requests, {faults} faulted ({:.0} %), {refreshes} refreshes, \
         {} reuses, {} grace replays, {:.1} s expired in storms, {:.1} s expired while reachable, {panics} panics, \
         RSS {:.1} MiB after warm-up, {:.1} MiB at the end",
        NAMES.len(),
        100.0 * faults as f64 / requests.max(1) as f64,
        stats.reuses,
        stats.grace_replays,
        expired_samples as f64 * per_sample,
        expired_while_reachable as f64 * per_sample,
        rss_warm as f64 / 1024.0,
        rss_end as f64 / 1024.0,
    );
    crate::common::figure("chaos", &line);
    assert_eq!(code, 0);
    assert!(samples > 0);
    assert!(faults * 10 >= requests * 3, "at least 30 % faulted: {line}");
    assert_eq!(stats.reuses, 0, "{line}");
    assert_eq!(panics, 0, "{line}");
    assert_eq!(expired_while_reachable, 0, "{line}");
    assert!(refreshes >= seconds, "{line}");
    let drift = (rss_end as f64 - rss_warm as f64).abs() / rss_warm as f64;
    assert!(drift <= 0.10, "RSS drifted {:.0} %: {line}", drift * 100.0);
}
