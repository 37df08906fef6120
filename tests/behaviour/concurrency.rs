//! Signals at awkward moments: a storm of SIGHUPs, some with a changed
//! configuration, while SIGUSR1 keeps refreshes in flight, against a strict server.
//! (Two instances on one state: daemon.rs; SIGTERM during a write: the survival suite's crash.rs.)

use std::time::{Duration, Instant};

use crate::common::{Env, wait_for};
use tokend::emulator::RefreshTokenStatus;

const SEC: Duration = Duration::from_secs(1);
const NAMES: [&str; 3] = ["a", "b", "c"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_storm_during_refreshes_loses_nothing() {
    let env = Env::new(3600 * SEC).await;
    let cfg = env.write_config(&NAMES);
    let original = std::fs::read_to_string(&cfg).unwrap();
    // The same credentials with another retry policy: a change that restarts them.
    let changed = original.replace("initial = \"200ms\"", "initial = \"300ms\"");
    let mut d = env.spawn(&["run", "-c", cfg.to_str().unwrap()], "storm.log", &[]);
    d.wait_started().await;
    wait_for("first tokens", 10 * SEC, || {
        NAMES.iter().all(|n| env.raw_output(n).is_some())
    })
    .await;

    let start = Instant::now();
    let (mut hups, mut usr1s) = (0, 0);
    while start.elapsed() < 5 * SEC {
        if hups % 20 == 10 {
            let text = if (hups / 20) % 2 == 0 {
                &changed
            } else {
                &original
            };
            std::fs::write(&cfg, text).unwrap();
        }
        d.signal(libc::SIGHUP);
        hups += 1;
        if hups % 10 == 0 {
            d.signal(libc::SIGUSR1);
            usr1s += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Let the last refreshes land, then check every chain.
    tokio::time::sleep(SEC).await;
    let stats = env.emu.stats();
    for name in NAMES {
        let rt = env.state(name).unwrap()["refresh_token"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            env.emu.refresh_token_status(&rt),
            RefreshTokenStatus::Live,
            "{name}"
        );
        assert!(env.emu.accepts(&env.raw_output(name).unwrap()), "{name}");
    }
    let log = d.log_text();
    assert_eq!(d.stop().await, 0);
    let line = format!(
        "SIGHUP storm: {hups} SIGHUPs (every 5 ms, the configuration changing every 20) and {usr1s} SIGUSR1s in 5 s: \
         {} refreshes, {} reuses, {} invalid_grant, every chain live",
        stats.refreshes,
        stats.reuses,
        log.matches("invalid_grant").count()
    );
    crate::common::figure("concurrency", &line);
    assert_eq!(stats.reuses, 0, "{line}");
    assert!(
        !log.contains("invalid_grant") && !log.contains("panicked"),
        "{line}"
    );
    assert!(stats.refreshes as usize >= NAMES.len() * 2, "{line}");
}
