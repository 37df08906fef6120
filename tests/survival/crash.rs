//! Crash loops: start tokend, ask for a refresh (SIGUSR1), kill it -9 at a
//! random moment of that refresh, look at what is on disk, start it again; hundreds of
//! times. Against a server with a 2 s reuse grace window no chain may be lost. Against a
//! strict server a kill between the server rotating and the new state reaching disk
//! loses the chain; each such lockout is counted, matched to the kill that caused it,
//! and the window's width is measured. The same loop with SIGTERM must lose nothing,
//! even against the strict server: a stopping tokend finishes and saves its refresh.
//!
//! `CRASH_KILLS` sets the number of kills per loop (default 200).

use std::time::{Duration, Instant};

use secrecy::ExposeSecret;

use crate::common::Env;
use tokend::config::ClientAuth;
use tokend::emulator::{EmulatorConfig, RefreshTokenStatus};

const SEC: Duration = Duration::from_secs(1);

#[derive(Default, Debug)]
struct Tally {
    kills: usize,
    /// Kills that left a rotated-away refresh token on disk: ms from rotation to kill.
    in_window: Vec<f64>,
    /// Kills after a rotation that was already durable: ms from rotation to kill.
    after_window: Vec<f64>,
    /// Kills before the server rotated.
    before: usize,
    lockouts: usize,
    /// Lockouts that followed a kill inside the window.
    explained: usize,
    torn_state_files: usize,
    /// From tokend's own `rotated` lines: answer in hand to state durable, in ms.
    write_ms: Vec<f64>,
}

fn kills() -> usize {
    crate::common::count_from_env("CRASH_KILLS", 200) as usize
}

async fn crash_loop(grace: Duration, signal: i32, kills: usize) -> Tally {
    let env = Env::with(EmulatorConfig {
        client_id: "crash".into(),
        client_secret: "crash-secret-1".into(),
        auth: ClientAuth::Basic,
        assertion_key: None,
        access_lifetime: 3600 * SEC,
        reuse_grace: grace,
    })
    .await;
    let cfg = env.write_config(&["c"]);
    let state_path = env.path("state/c.json");
    let mut t = Tally::default();
    // The refresh token on disk after the last kill, and whether it had been rotated
    // away (a lockout waiting to happen on a strict server).
    let mut last_rt = std::fs::read_to_string(env.path("c.bootstrap"))
        .ok()
        .map(|t| t.trim().to_owned());
    let mut stale_on_disk = false;
    for i in 0..kills {
        let reuses_before = env.emu.stats().reuses;
        let mut d = env.spawn(&["run", "-c", cfg.to_str().unwrap()], "crash.log", &[]);
        let started = Instant::now();
        while d.log_text().matches("tokend::daemon: started").count() <= i {
            assert!(started.elapsed() < 10 * SEC, "start {i}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Aim at the refresh from what the server sees, not from a guess of how long a
        // loaded machine takes to get there: once the request has arrived (the rotation
        // follows within microseconds), kill within the next few milliseconds, which is
        // where the answer is read and the state written.
        let requests = env.emu.stats().token_requests;
        d.signal(libc::SIGUSR1);
        let asked = Instant::now();
        while env.emu.stats().token_requests == requests && asked.elapsed() < 5 * SEC {
            tokio::task::yield_now().await;
        }
        let delay = Duration::from_micros(rand::random_range(0..8_000u64));
        let arrived = Instant::now();
        while arrived.elapsed() < delay {
            tokio::task::yield_now().await;
        }
        let killed_at = Instant::now();
        d.signal(signal);
        let code = d.wait_exit(15 * SEC).await;
        if signal == libc::SIGTERM {
            assert_eq!(code, 0, "a clean stop");
        }
        t.kills += 1;

        // What tokend will present next: the state's refresh token, or the bootstrap
        // token while there is no state or the state comes from an older bootstrap.
        let bootstrap = std::fs::read_to_string(env.path("c.bootstrap"))
            .unwrap()
            .trim()
            .to_owned();
        let digest = tokend::store::bootstrap_digest(&bootstrap.clone().into());
        let rt = match tokend::store::file::read_state_file(&state_path) {
            Ok(Some(state)) if state.bootstrap_sha256 == digest => state
                .refresh_token
                .as_ref()
                .expect("a chain")
                .expose_secret()
                .to_owned(),
            Ok(_) => bootstrap,
            Err(_) => {
                t.torn_state_files += 1;
                continue;
            }
        };
        let since_kill = killed_at.elapsed();
        if env.emu.stats().reuses > reuses_before {
            // This run presented a rotated-away token: the chain is revoked.
            t.lockouts += 1;
            if stale_on_disk {
                t.explained += 1;
            }
            // A person authorizes again: a new bootstrap token, adopted at next start.
            let fresh = env.bootstrap("c");
            stale_on_disk = false;
            last_rt = Some(fresh);
            continue;
        }
        let changed = last_rt.as_deref() != Some(rt.as_str());
        match env.emu.refresh_token_status(&rt) {
            RefreshTokenStatus::Rotated { ago } => {
                if changed || !stale_on_disk {
                    t.in_window
                        .push((ago.saturating_sub(since_kill)).as_secs_f64() * 1000.0);
                }
                stale_on_disk = true;
            }
            RefreshTokenStatus::Live => {
                stale_on_disk = false;
                // If the token on disk is new, the one before it was rotated in this run.
                match last_rt.as_deref().map(|p| env.emu.refresh_token_status(p)) {
                    Some(RefreshTokenStatus::Rotated { ago }) if changed => t
                        .after_window
                        .push((ago.saturating_sub(since_kill)).as_secs_f64() * 1000.0),
                    _ => t.before += 1,
                }
            }
            other => panic!("state holds a {other:?} refresh token after kill {i}"),
        }
        last_rt = Some(rt);
    }
    let log = std::fs::read_to_string(env.path("crash.log")).unwrap_or_default();
    t.write_ms = log
        .lines()
        .filter_map(|l| l.split("state_us=").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|us| us / 1000.0)
        .collect();
    assert!(!log.contains("panicked"));
    t
}

fn describe(name: &str, t: &mut Tally) -> String {
    // No kill of a kind: "none", not NaN.
    let ms = |v: Option<f64>| v.map_or_else(|| "none".to_owned(), |v| format!("{v:.1} ms"));
    let max_in = ms(t.in_window.iter().cloned().reduce(f64::max));
    let min_after = ms(t.after_window.iter().cloned().reduce(f64::min));
    let line = format!(
        "{name}: {} kills: {} before the server rotated, {} after the state was durable, {} inside the window \
         (rotation to kill: up to {max_in} inside; from {min_after} durable); {} lockouts, {} explained by a kill inside the window; \
         {} torn state files; tokend's answer-to-durable time: median {:.1} ms, p95 {:.1} ms over {} rotations",
        t.kills,
        t.before,
        t.after_window.len(),
        t.in_window.len(),
        t.lockouts,
        t.explained,
        t.torn_state_files,
        crate::common::percentile(&t.write_ms, 0.5),
        crate::common::percentile(&t.write_ms, 0.95),
        t.write_ms.len(),
    );
    crate::common::figure("crash", &line);
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loop_with_a_2s_grace_server_loses_nothing() {
    let mut t = crash_loop(2 * SEC, libc::SIGKILL, kills()).await;
    let line = describe("kill -9, 2 s grace", &mut t);
    assert_eq!(t.lockouts, 0, "{line}");
    assert_eq!(t.torn_state_files, 0, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loop_with_a_strict_server_loses_only_inside_the_window() {
    let mut t = crash_loop(Duration::ZERO, libc::SIGKILL, kills()).await;
    let line = describe("kill -9, strict", &mut t);
    assert_eq!(
        t.lockouts, t.explained,
        "every lockout follows a kill inside the window: {line}"
    );
    assert_eq!(t.torn_state_files, 0, "{line}");
    assert!(
        t.after_window.len() + t.in_window.len() > kills() / 4,
        "the kills must land across the refresh: {line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_loop_with_a_strict_server_loses_nothing() {
    let mut t = crash_loop(Duration::ZERO, libc::SIGTERM, kills() / 4).await;
    let line = describe("SIGTERM, strict", &mut t);
    assert_eq!(t.lockouts, 0, "{line}");
    assert_eq!(t.in_window.len(), 0, "{line}");
    assert_eq!(t.torn_state_files, 0, "{line}");
}
