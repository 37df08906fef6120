//! The store misbehaving: a leader cut off from it, members killed and restarted, the
//! whole store gone for longer than a token lives.

use std::time::{Duration, Instant};

use crate::cluster::{Etcd, Group, LEASE, etcd_table, figure};
use crate::common::wait_for;
use crate::stores::{Backend, Store};

with_each_store!(a_leader_cut_off_from_the_store_stops_at_its_deadline);
with_each_store!(the_store_down_longer_than_a_token_lives);

/// The leader cut off from the store while the token server stays
/// reachable stops refreshing at its lease deadline; another replica takes over; when
/// the cut heals the old leader follows.
async fn a_leader_cut_off_from_the_store_stops_at_its_deadline(backend: Backend) {
    let store = Store::start(backend).await;
    let (proxies, tables) = store.proxies(3).await;
    let g = Group::running(tables, Duration::from_secs(5)).await;
    let leader = g.leader(Duration::from_secs(10)).await;
    g.between_refreshes(leader).await;
    proxies[leader].set_cut(true);
    let cut = Instant::now();
    let rotated = |g: &Group| g.replicas[leader].log_text().matches(" rotated ").count();
    // Whatever it does up to its lease deadline, nothing after it.
    tokio::time::sleep(LEASE).await;
    let at_deadline = rotated(&g);
    let next = g
        .new_leader(leader, cut, LEASE + Duration::from_secs(5))
        .await;
    let takeover = cut.elapsed();
    let before = g.refreshes();
    wait_for(
        "rotations on the reachable side",
        Duration::from_secs(10),
        || g.refreshes() >= before + 2,
    )
    .await;
    assert_eq!(
        rotated(&g),
        at_deadline,
        "the cut-off leader refreshed past its deadline"
    );
    assert_eq!(g.reuses(), 0);
    proxies[leader].set_cut(false);
    wait_for(
        "the old leader to follow the new chain",
        Duration::from_secs(15),
        || g.output(leader) == g.output(next),
    )
    .await;
    assert!(!g.replicas[leader].is_leader().await || next == leader);
    let before = g.refreshes();
    wait_for("rotation after the heal", Duration::from_secs(10), || {
        g.refreshes() > before
    })
    .await;
    figure(
        "coordination",
        &format!(
            "{backend:?}: leader cut off from the store: takeover after {:.2}s, its rotations past the deadline=0, reuses={}",
            takeover.as_secs_f64(),
            g.reuses()
        ),
    );
    g.finish().await;
    store.assert_requests_clean().await;
}

/// A three-member etcd cluster; its leader member killed, then every
/// member restarted, during rotations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_member_cluster_loses_members_during_rotations() {
    let mut etcd = Etcd::start(3).await;
    let g = Group::running(
        vec![etcd_table(&etcd.endpoints()); 3],
        Duration::from_secs(4),
    )
    .await;
    for round in 0..3 {
        let victim = etcd_leader(&etcd).await;
        etcd.members[victim].kill();
        let before = g.refreshes();
        wait_for(
            "rotations without that member",
            Duration::from_secs(15),
            || g.refreshes() >= before + 2,
        )
        .await;
        etcd.members[victim].restart();
        etcd.wait_healthy().await;
        assert_eq!(g.reuses(), 0, "round {round}");
    }
    for m in &mut etcd.members {
        m.kill();
    }
    for m in &mut etcd.members {
        m.restart();
    }
    etcd.wait_healthy().await;
    let before = g.refreshes();
    wait_for(
        "rotation after restarting every member",
        Duration::from_secs(20),
        || g.refreshes() >= before + 2,
    )
    .await;
    wait_for("every output accepted", Duration::from_secs(5), || {
        g.outputs_accepted()
    })
    .await;
    figure(
        "coordination",
        &format!(
            "three-member etcd, its leader killed x3 and all restarted: refreshes={} reuses={}",
            g.refreshes(),
            g.reuses()
        ),
    );
    g.finish().await;
}

/// Which member leads the etcd cluster (its `/v3/maintenance/status` says).
async fn etcd_leader(etcd: &Etcd) -> usize {
    for _ in 0..100 {
        for (i, m) in etcd.members.iter().enumerate() {
            let client = reqwest::Client::new();
            let Ok(Ok(r)) = tokio::time::timeout(
                Duration::from_secs(1),
                client
                    .post(format!("{}/v3/maintenance/status", m.endpoint()))
                    .body("{}")
                    .send(),
            )
            .await
            else {
                continue;
            };
            let Ok(json) = r.json::<serde_json::Value>().await else {
                continue;
            };
            if json["leader"].is_string() && json["leader"] == json["header"]["member_id"] {
                return i;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no etcd member leads");
}

/// The store gone (etcd; the API server) for longer than a
/// token lives: nobody refreshes, readiness turns false at expiry, and rotation
/// resumes from the stored record.
async fn the_store_down_longer_than_a_token_lives(backend: Backend) {
    let mut store = Store::start(backend).await;
    let g = Group::running(store.tables(3), Duration::from_secs(4)).await;
    store.stop_service();
    let down = Instant::now();
    let refreshes = g.refreshes();
    // A token lives 4 s: past that, and then some.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(
        g.refreshes() <= refreshes + 1,
        "refreshes went on without the store"
    );
    for r in &g.replicas {
        assert!(
            !r.ready().await,
            "replica {} still ready with an expired token",
            r.id
        );
    }
    let readyz =
        crate::cluster::fetch(&format!("http://127.0.0.1:{}/readyz", g.replicas[0].health)).await;
    assert_eq!(readyz.0, 503);
    let frozen = g.refreshes();
    store.restart_service().await;
    let back = Instant::now();
    wait_for("rotation to resume", Duration::from_secs(15), || {
        g.refreshes() > frozen
    })
    .await;
    let resumed = back.elapsed();
    let mut all_ready = false;
    let start = Instant::now();
    while !all_ready && start.elapsed() < Duration::from_secs(10) {
        all_ready = true;
        for r in &g.replicas {
            all_ready &= r.ready().await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(all_ready, "readiness did not come back");
    figure(
        "coordination",
        &format!(
            "{backend:?}: the store down {:.1}s (tokens live 4s): refreshes while down={}, rotation resumed {:.2}s after it, reuses={}",
            back.duration_since(down).as_secs_f64(),
            frozen - refreshes,
            resumed.as_secs_f64(),
            g.reuses()
        ),
    );
    g.finish().await;
    store.assert_requests_clean().await;
}
