//! A leader that dies, stops or is told to stop: another replica leads, and the old
//! one never sends a refresh again on its own.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cluster::{Group, LEASE, Watcher, figure, percentile};
use crate::common::wait_for;
use crate::stores::{Backend, Store};

with_each_store!(a_killed_leader_is_replaced_within_the_lease);
with_each_store!(a_stopped_leader_hands_over_at_once);
with_each_store!(a_paused_leader_never_refreshes_after_waking);
with_each_store!(a_credential_removed_by_reload_is_handed_over);

/// Kill -9 of the leader, ten times in a row.
async fn a_killed_leader_is_replaced_within_the_lease(backend: Backend) {
    let store = Store::start(backend).await;
    let mut g = Group::running(store.tables(3), Duration::from_secs(5)).await;
    let alive = Arc::new(Mutex::new(vec![true; 3]));
    let a = alive.clone();
    let watcher = Watcher::start(g.env.dir.path(), 3, Arc::new(move |i| a.lock().unwrap()[i]));
    let mut takeovers = Vec::new();
    for _ in 0..10 {
        let leader = g.leader(Duration::from_secs(10)).await;
        g.between_refreshes(leader).await;
        alive.lock().unwrap()[leader] = false;
        g.replicas[leader].kill().await;
        let killed = Instant::now();
        let next = g.leader(LEASE + Duration::from_secs(5)).await;
        let took = killed.elapsed();
        takeovers.push(took.as_secs_f64());
        assert_ne!(next, leader);
        assert!(
            took <= LEASE + Duration::from_secs(2),
            "replica-{next} led {took:?} after the kill"
        );
        g.start(leader);
        wait_for(
            "the restarted replica's readiness",
            Duration::from_secs(10),
            || g.output(leader).is_some(),
        )
        .await;
        let r = &g.replicas[leader];
        let start = Instant::now();
        while !r.ready().await && start.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        alive.lock().unwrap()[leader] = true;
    }
    let seen = watcher.finish();
    let expired = seen.iter().filter(|s| s.expired).count();
    figure(
        "coordination",
        &format!(
            "{backend:?}: kill -9 of the leader x10: takeover_s median={:.2} worst={:.2} reuses={} refreshes={} expired_samples={expired}",
            percentile(&takeovers, 0.5),
            percentile(&takeovers, 1.0),
            g.reuses(),
            g.refreshes()
        ),
    );
    assert_eq!(expired, 0, "a live replica's output expired");
    g.finish().await;
    store.assert_requests_clean().await;
}

/// SIGTERM gives the lease back at once.
async fn a_stopped_leader_hands_over_at_once(backend: Backend) {
    let store = Store::start(backend).await;
    let mut g = Group::running(store.tables(3), Duration::from_secs(5)).await;
    let mut took = Vec::new();
    for _ in 0..3 {
        let leader = g.leader(Duration::from_secs(10)).await;
        let stopped = Instant::now();
        let d = g.replicas[leader].daemon.as_mut().unwrap();
        assert_eq!(d.stop().await, 0);
        assert!(d.log_text().contains("released the lease"));
        g.replicas[leader].daemon = None;
        let next = g.leader(Duration::from_secs(5)).await;
        took.push(stopped.elapsed().as_secs_f64());
        assert_ne!(next, leader);
        g.start(leader);
    }
    figure(
        "coordination",
        &format!(
            "{backend:?}: SIGTERM of the leader x3: takeover_s worst={:.2} reuses={}",
            percentile(&took, 1.0),
            g.reuses()
        ),
    );
    assert!(percentile(&took, 1.0) <= 2.0, "takeovers: {took:?}");
    g.finish().await;
    store.assert_requests_clean().await;
}

/// A leader stopped (SIGSTOP) past its lease, once between two refreshes and once
/// exactly between its intent write and its request, wakes up, never sends a refresh,
/// and follows the newer record. Between refreshes another replica takes over at once;
/// after the intent, the others wait (`unfinished_intent = "wait"`): the paused leader
/// might have sent its token. Once it wakes and finds it sent nothing, it takes its
/// intent back, and another replica refreshes.
async fn a_paused_leader_never_refreshes_after_waking(backend: Backend) {
    let store = Store::start(backend).await;
    let (proxies, tables) = store.proxies(3).await;
    let g = Group::running(tables, Duration::from_secs(5)).await;
    for exactly_after_intent in [false, true] {
        let leader = g.leader(Duration::from_secs(10)).await;
        if exactly_after_intent {
            let marker = format!("\"intent\":{{\"identity\":\"replica-{leader}@");
            proxies[leader].hold_after(&marker);
            wait_for("the leader's next intent", Duration::from_secs(10), || {
                proxies[leader].holding()
            })
            .await;
        } else {
            g.between_refreshes(leader).await;
        }
        g.replicas[leader].signal(libc::SIGSTOP);
        proxies[leader].release();
        let before = g.refreshes();
        let rotated_before = g.replicas[leader].log_text().matches(" rotated ").count();
        let following_before = g.replicas[leader].log_text().matches(" following").count();
        if exactly_after_intent {
            // Another replica takes over, and waits on the stored intent: nothing sent.
            let next = g
                .new_leader(leader, Instant::now(), LEASE + Duration::from_secs(5))
                .await;
            wait_for("the new leader to wait", Duration::from_secs(5), || {
                g.replicas[next]
                    .log_text()
                    .contains("another replica began a refresh of this chain")
            })
            .await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            assert_eq!(g.refreshes(), before, "a refresh while the intent stood");
            assert!(
                g.replicas[next]
                    .metrics()
                    .await
                    .contains("tokend_coordination_unfinished_intent_seconds{credential=\"c\"} "),
            );
            g.replicas[leader].signal(libc::SIGCONT);
        }
        // Another replica rotates (at once, or once the woken leader took its intent back).
        wait_for(
            "a rotation by another replica",
            LEASE + Duration::from_secs(8),
            || g.refreshes() > before,
        )
        .await;
        let after_takeover = g.refreshes();
        g.replicas[leader].signal(libc::SIGCONT);
        let woke = Instant::now();
        wait_for("the old leader to follow", Duration::from_secs(8), || {
            g.output(leader) == g.output((leader + 1) % 3)
                && g.replicas[leader].log_text().matches(" following").count() > following_before
        })
        .await;
        // Long enough for the old leader to have refreshed, had it wanted to.
        tokio::time::sleep(Duration::from_secs(2).saturating_sub(woke.elapsed())).await;
        let log = g.replicas[leader].log_text();
        assert_eq!(
            log.matches(" rotated ").count(),
            rotated_before,
            "the old leader rotated after waking:\n{log}"
        );
        assert_eq!(g.reuses(), 0, "the old leader replayed a token");
        assert!(g.refreshes() >= after_takeover);
        figure(
            "coordination",
            &format!(
                "{backend:?}: SIGSTOP of the leader past its lease (exactly after its intent: {exactly_after_intent}): reuses={} old leader's rotations after waking=0",
                g.reuses()
            ),
        );
    }
    g.finish().await;
    store.assert_requests_clean().await;
}

/// A credential removed from the leader's configuration (SIGHUP) gives its leadership
/// up at once; the process, which goes on, does not keep it on its lease.
async fn a_credential_removed_by_reload_is_handed_over(backend: Backend) {
    let store = Store::start(backend).await;
    let env = crate::common::Env::new(Duration::from_secs(30)).await;
    let mut g = Group::new(env, store.tables(2)).await;
    // Replica 0 also holds a second credential, so that it keeps running without c.
    let cfg = g.replicas[0].config.clone();
    let with_c = std::fs::read_to_string(&cfg).unwrap();
    let (head, c_table) = with_c.split_at(with_c.find("[credentials.c]").unwrap());
    let d_table = c_table
        .replace("credentials.c", "credentials.d")
        .replace("c.bootstrap", "d.bootstrap")
        .replace("out/r0/", "out/r0d/");
    g.env.bootstrap("d");
    std::fs::write(&cfg, format!("{with_c}\n{d_table}")).unwrap();
    g.start(0);
    wait_for("replica 0's token", Duration::from_secs(10), || {
        g.output(0).is_some()
    })
    .await;
    assert_eq!(g.leader(Duration::from_secs(5)).await, 0);
    g.start(1);
    wait_for("replica 1's token", Duration::from_secs(10), || {
        g.output(1).is_some()
    })
    .await;
    std::fs::write(&cfg, format!("{head}\n{d_table}")).unwrap();
    let reloaded = Instant::now();
    g.replicas[0].signal(libc::SIGHUP);
    let next = g.new_leader(0, reloaded, Duration::from_secs(2)).await;
    assert_eq!(next, 1);
    figure(
        "coordination",
        &format!(
            "{backend:?}: a credential removed from the leader by SIGHUP: another replica led it after {:.2}s",
            reloaded.elapsed().as_secs_f64()
        ),
    );
    g.replicas[0].kill().await;
    g.finish().await;
    store.assert_requests_clean().await;
}
