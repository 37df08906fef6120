//! The daemon end to end: rotation timing, restarts, signals, revocation, locking.

use std::time::{Duration, Instant};

use crate::common::{Env, mode, wait_for};
use tokend::emulator::Fault;

const SEC: Duration = Duration::from_secs(1);

/// Every rotation the emulator saw happened inside the refresh window
/// (at 0.75 ± 0.05 of the lifetime, allowing 0.03 for scheduling and loopback latency).
fn assert_rotations_in_window(env: &Env) {
    for r in env
        .emu
        .rotations()
        .into_iter()
        .filter(|r| !r.from_bootstrap)
    {
        let since =
            r.at.duration_since(r.previous_issued_at)
                .unwrap()
                .as_secs_f64();
        let fraction = since / r.previous_lifetime.as_secs_f64();
        assert!(
            (0.67..=0.83).contains(&fraction),
            "refresh at {fraction:.3} of the lifetime"
        );
    }
}

#[tokio::test]
async fn rotates_for_a_minute_inside_the_window_without_reuse_or_expired_output() {
    let env = Env::new(Duration::from_secs(5)).await;
    let mut d = env.run_started(&["c"]).await;
    wait_for("first token", 5 * SEC, || env.raw_output("c").is_some()).await;
    let start = Instant::now();
    let (mut reads, mut rejected) = (0u64, 0u64);
    while start.elapsed() < Duration::from_secs(60) {
        let token = env.raw_output("c").expect("the output never disappears");
        reads += 1;
        if !env.emu.accepts(&token) {
            rejected += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(d.stop().await, 0);
    let stats = env.emu.stats();
    println!(
        "rotations={} reads={reads} rejected={rejected} stats={stats:?}",
        env.emu.rotations().len()
    );
    let rotations = env
        .emu
        .rotations()
        .iter()
        .filter(|r| !r.from_bootstrap)
        .count();
    assert!(
        rotations >= 10,
        "{rotations} rotations after the bootstrap exchange: {stats:?}"
    );
    assert_eq!(stats.reuses, 0);
    assert_eq!(rejected, 0, "a reader saw an expired or unknown token");
    assert_rotations_in_window(&env);
    let rotations_logged = d.log_text().matches("rotated").count() as u64;
    assert_eq!(
        rotations_logged, stats.refreshes,
        "one log line per rotation"
    );
}

#[tokio::test]
async fn restart_resumes_from_state_without_refreshing_early() {
    let env = Env::new(Duration::from_secs(6)).await;
    let mut d = env.run_started(&["c"]).await;
    wait_for("first rotation", 5 * SEC, || env.emu.stats().refreshes == 1).await;
    assert_eq!(d.stop().await, 0);
    let first_token = env.raw_output("c").unwrap();

    // SIGTERM, then start again: no refresh before the token's deadline (4.5 s ± 0.3 s).
    let mut d = env.run_started(&["c"]).await;
    tokio::time::sleep(2 * SEC).await;
    assert_eq!(
        env.emu.stats().refreshes,
        1,
        "refreshed early after restart"
    );
    assert_eq!(env.raw_output("c").unwrap(), first_token);
    wait_for("scheduled rotation", 8 * SEC, || {
        env.emu.stats().refreshes == 2
    })
    .await;
    // The `rotated` line is logged after the state is durable. A kill between the server
    // rotating and that fsync is the one unavoidable lockout window on a strict server
    // (measured by the crash-loop suite); this test kills outside it.
    wait_for("the rotation saved", 5 * SEC, || {
        d.log_text().contains("rotated")
    })
    .await;

    // kill -9, then start again: the chain continues without invalid_grant.
    d.signal(libc::SIGKILL);
    d.wait_exit(5 * SEC).await;
    let mut d = env.run_started(&["c"]).await;
    wait_for("rotation after kill -9", 10 * SEC, || {
        env.emu.stats().refreshes >= 4
    })
    .await;
    assert_eq!(d.stop().await, 0);
    assert_eq!(env.emu.stats().reuses, 0);
    assert!(!d.log_text().contains("invalid_grant"), "{}", d.log_text());
    assert_rotations_in_window(&env);
}

#[tokio::test]
async fn sigterm_during_a_refresh_waits_for_it_and_persists_the_new_token() {
    let env = Env::new(Duration::from_secs(3600)).await;
    let mut d = env.run_started(&["c"]).await;
    wait_for("first token", 5 * SEC, || env.raw_output("c").is_some()).await;
    let before = env.state("c").unwrap();

    env.emu.push_fault(Fault::Delay { ms: 2000 });
    let requests = env.emu.stats().token_requests;
    d.signal(libc::SIGUSR1);
    wait_for("request in flight", 5 * SEC, || {
        env.emu.stats().token_requests > requests
    })
    .await;
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(10 * SEC).await, 0);

    assert_eq!(env.emu.stats().refreshes, 2);
    let after = env.state("c").unwrap();
    assert_ne!(
        after["refresh_token"], before["refresh_token"],
        "the rotated token was not saved"
    );
    assert!(env.emu.accepts(after["access_token"].as_str().unwrap()));
    // And the saved refresh token is the live one: the next run continues the chain.
    let mut d = env.run_started(&["c"]).await;
    d.signal(libc::SIGUSR1);
    wait_for("rotation from the saved token", 5 * SEC, || {
        env.emu.stats().refreshes >= 3
    })
    .await;
    assert_eq!(d.stop().await, 0);
    assert_eq!(env.emu.stats().reuses, 0);
}

/// SIGTERM with hundreds of refreshes queued behind the 16 request slots (every
/// answer takes a second) does not wait for the queue: the 16 in flight finish and are
/// saved, the rest are left, and the next start goes on from every state without reuse.
#[tokio::test]
async fn sigterm_with_a_queue_of_refreshes_finishes_those_in_flight_and_leaves_the_rest() {
    let env = Env::new(Duration::from_secs(3600)).await;
    let names: Vec<String> = (0..200).map(|i| format!("q{i:03}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    // The first three waves of requests are slow; the stop comes during the first.
    for _ in 0..48 {
        env.emu.push_fault(Fault::Delay { ms: 1000 });
    }
    let mut d = env.run_started(&names).await;
    wait_for("16 requests in flight", 10 * SEC, || {
        env.emu.stats().token_requests >= 16
    })
    .await;
    let stopping = Instant::now();
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(30 * SEC).await, 0);
    let took = stopping.elapsed();
    // The whole queue would take 200 / 16 seconds; the bound is the request timeout (3 s
    // here) plus a second. Asserted loosely: a loaded machine is slow, not unbounded.
    assert!(took < 8 * SEC, "the stop took {took:?}");
    let log = d.log_text();
    let last = log
        .lines()
        .find(|l| l.contains("credentials stopped"))
        .expect("the stop's count");
    let count = |key: &str| -> usize {
        last.split(&format!("{key}="))
            .nth(1)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {last}"))
    };
    let (finished, left) = (count("finished"), count("left"));
    assert!(finished <= 32 && left >= 100, "{last}");
    let saved = names.iter().filter(|n| env.state(n).is_some()).count();
    assert_eq!(
        saved as u64,
        env.emu.stats().refreshes,
        "every rotation the server made is on disk"
    );
    // The next start refreshes the rest, from the bootstrap tokens or the saved states.
    let mut d = env.run_started(&names).await;
    wait_for("every credential's token", 30 * SEC, || {
        names.iter().all(|n| env.raw_output(n).is_some())
    })
    .await;
    assert_eq!(d.stop().await, 0);
    assert_eq!(env.emu.stats().reuses, 0);
    assert_eq!(env.emu.stats().refreshes, names.len() as u64);
}

#[tokio::test]
async fn sighup_adds_a_credential_and_refuses_a_broken_config() {
    let env = Env::new(Duration::from_secs(4)).await;
    let mut d = env.run_started(&["a"]).await;
    wait_for("a's token", 5 * SEC, || env.raw_output("a").is_some()).await;

    env.write_config(&["a", "b"]);
    d.signal(libc::SIGHUP);
    wait_for("b's token", 5 * SEC, || env.raw_output("b").is_some()).await;

    let good = std::fs::read_to_string(env.path("tokend.toml")).unwrap();
    env.write_config_text(&format!("{good}\nnot_a_key = 1\n"));
    d.signal(libc::SIGHUP);
    wait_for("refusal logged", 5 * SEC, || {
        d.log_text().contains("refused")
    })
    .await;
    assert!(d.log_text().contains("not_a_key"), "{}", d.log_text());

    // Both keep rotating on the old configuration.
    let (a, b) = (
        env.state("a").unwrap()["refresh_token"].clone(),
        env.state("b").unwrap()["refresh_token"].clone(),
    );
    wait_for("both rotate again", 8 * SEC, || {
        env.state("a").unwrap()["refresh_token"] != a
            && env.state("b").unwrap()["refresh_token"] != b
    })
    .await;
    assert_eq!(d.stop().await, 0);
    assert_eq!(env.emu.stats().reuses, 0);
}

#[tokio::test]
async fn revoked_chain_resumes_when_a_new_bootstrap_token_is_written() {
    let env = Env::new(Duration::from_secs(3600)).await;
    let mut d = env.run_started(&["c"]).await;
    wait_for("first token", 5 * SEC, || env.raw_output("c").is_some()).await;
    let published = env.raw_output("c").unwrap();

    env.emu.revoke_all();
    d.signal(libc::SIGUSR1);
    wait_for("invalid_grant reported", 5 * SEC, || {
        d.log_text().contains("refreshing stopped")
    })
    .await;
    let requests = env.emu.stats().token_requests;
    tokio::time::sleep(2 * SEC).await;
    assert_eq!(
        env.emu.stats().token_requests,
        requests,
        "kept hammering after invalid_grant"
    );
    assert_eq!(
        env.raw_output("c").unwrap(),
        published,
        "the still-valid token must stay published"
    );
    assert!(
        d.log_text().contains("bootstrap file"),
        "the log says what to do"
    );

    env.bootstrap("c");
    wait_for("rotation after new bootstrap", 10 * SEC, || {
        env.raw_output("c")
            .is_some_and(|t| t != published && env.emu.accepts(&t))
    })
    .await;
    assert_eq!(d.stop().await, 0);
}

#[tokio::test]
async fn second_instance_on_the_same_state_exits_73_naming_the_holder() {
    let env = Env::new(Duration::from_secs(3600)).await;
    let mut first = env.run_started(&["c"]).await;
    wait_for("first token", 5 * SEC, || env.raw_output("c").is_some()).await;
    let cfg = env.path("tokend.toml");
    let mut second = env.spawn(&["run", "-c", cfg.to_str().unwrap()], "second.log", &[]);
    assert_eq!(second.wait_exit(5 * SEC).await, 73);
    let pid = first.child.id().unwrap();
    assert!(
        second.log_text().contains(&format!("pid {pid}")),
        "{}",
        second.log_text()
    );
    let mut once = env.spawn(&["once", "-c", cfg.to_str().unwrap()], "once.log", &[]);
    assert_eq!(once.wait_exit(5 * SEC).await, 73);
    assert_eq!(first.stop().await, 0);
}

#[tokio::test]
async fn state_and_outputs_have_exact_modes_under_umask_000() {
    let env = Env::new(Duration::from_secs(3600)).await;
    let cfg = env.write_config(&["c"]);
    let script = format!(
        "umask 000; exec {} run -c {}",
        crate::common::BIN,
        cfg.display()
    );
    let mut d = env.spawn_shell(&script, "umask.log");
    // Outputs are written one after another: wait for the last one.
    wait_for("first token", 5 * SEC, || {
        env.path("out/c/token.json").exists()
    })
    .await;
    assert_eq!(mode(&env.path("state/c.json")), 0o600);
    assert_eq!(mode(&env.path("out/c/access_token")), 0o640);
    assert_eq!(mode(&env.path("out/c/token.json")), 0o600);
    assert_eq!(d.stop().await, 0);
}
