//! Kill -9 in a refresh storm. Hundreds of credentials in one process
//! refresh at once (SIGUSR1): 16 requests on the wire, their saves on the blocking pool,
//! the rest queued. tokend is killed -9 at a random point of the storm, then started
//! again and left to finish a round, STORM_KILLS times (default 10).
//!
//! The server has a 10 s reuse grace window (Okta's default is 30 s): a kill between
//! its rotation and the new state on disk leaves the old refresh token on disk, and the
//! next round presents it inside the window and gets the same pair again. So no chain
//! may be lost, no state file may be torn, and after every round every credential's
//! state holds a live refresh token. The grace replays counted are the kills that
//! landed inside that window.

use std::time::{Duration, Instant};

use secrecy::ExposeSecret;

use crate::common::{Env, figure, wait_for};
use tokend::config::ClientAuth;
use tokend::emulator::{EmulatorConfig, RefreshTokenStatus};

const SEC: Duration = Duration::from_secs(1);
const CREDENTIALS: usize = 300;

fn kills() -> usize {
    crate::common::count_from_env("STORM_KILLS", 10) as usize
}

/// Every credential's state file: how many cannot be read (torn), and how many hold a
/// refresh token the server no longer takes (rotated away or revoked).
fn look(env: &Env, names: &[String]) -> (usize, Vec<String>) {
    let mut torn = 0;
    let mut dead = Vec::new();
    for name in names {
        let path = env.path(&format!("state/{name}.json"));
        match tokend::store::file::read_state_file(&path) {
            Ok(Some(state)) => {
                let rt = state
                    .refresh_token
                    .as_ref()
                    .expect("a chain")
                    .expose_secret();
                if !matches!(env.emu.refresh_token_status(rt), RefreshTokenStatus::Live) {
                    dead.push(name.clone());
                }
            }
            Ok(None) => dead.push(name.clone()),
            Err(_) => torn += 1,
        }
    }
    (torn, dead)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_a_refresh_storm_loses_no_chain() {
    let env = Env::with(EmulatorConfig {
        client_id: "storm".into(),
        client_secret: "storm-secret-1".into(),
        auth: ClientAuth::Basic,
        assertion_key: None,
        access_lifetime: 3600 * SEC,
        reuse_grace: 10 * SEC,
    })
    .await;
    let names: Vec<String> = (0..CREDENTIALS).map(|i| format!("s{i:03}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let cfg = env.write_config(&refs);
    let run = ["run", "-c", cfg.to_str().unwrap()];
    let mut starts = 0;
    let mut torn = 0;
    let mut sent_at_kill = Vec::new();
    for i in 0..kills() {
        // A storm, killed at a random point of it.
        let mut d = env.spawn(&run, "storm.log", &[]);
        starts += 1;
        wait_started(&d, starts).await;
        let before = env.emu.stats().token_requests;
        let aim = rand::random_range(16..CREDENTIALS as u64 - 16);
        d.signal(libc::SIGUSR1);
        wait_for("the storm under way", 30 * SEC, || {
            env.emu.stats().token_requests - before >= aim
        })
        .await;
        d.signal(libc::SIGKILL);
        d.wait_exit(15 * SEC).await;
        sent_at_kill.push(env.emu.stats().token_requests - before);
        torn += look(&env, &names).0;

        // Started again, a whole round: the tokens left on disk by the kill are
        // presented inside the grace window.
        let mut d = env.spawn(&run, "storm.log", &[]);
        starts += 1;
        wait_started(&d, starts).await;
        let before = env.emu.stats().token_requests;
        d.signal(libc::SIGUSR1);
        wait_for("a whole round", 60 * SEC, || {
            env.emu.stats().token_requests - before >= CREDENTIALS as u64
        })
        .await;
        assert_eq!(d.stop().await, 0, "a clean stop after round {i}");
        let (t, dead) = look(&env, &names);
        torn += t;
        assert!(
            dead.is_empty(),
            "after round {i}, {} credentials hold a dead refresh token: {dead:?}",
            dead.len()
        );
    }
    let stats = env.emu.stats();
    let log = std::fs::read_to_string(env.path("storm.log")).unwrap_or_default();
    assert!(!log.contains("panicked"));
    sent_at_kill.sort_unstable();
    let line = format!(
        "{} kills -9 of {CREDENTIALS} credentials in a refresh storm: requests sent before the kill \
         median {} (min {}, max {}); grace replays (kills between rotation and state on disk) {}; \
         reuses {}; torn state files {torn}; refreshes {}",
        sent_at_kill.len(),
        sent_at_kill[sent_at_kill.len() / 2],
        sent_at_kill[0],
        sent_at_kill[sent_at_kill.len() - 1],
        stats.grace_replays,
        stats.reuses,
        stats.refreshes,
    );
    figure("storm", &line);
    assert_eq!(stats.reuses, 0, "{line}");
    assert_eq!(torn, 0, "{line}");
    assert!(
        !log.contains("refreshing stopped"),
        "a credential was blocked: {line}"
    );
}

async fn wait_started(d: &crate::common::Daemon, starts: usize) {
    let started = Instant::now();
    while d.log_text().matches("tokend::daemon: started").count() < starts {
        assert!(started.elapsed() < 30 * SEC, "start {starts}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
