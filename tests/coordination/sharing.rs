//! One refresher for three replicas, and a bootstrap token seeded once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;

use crate::cluster::{Etcd, Group, Watcher, etcd_table, figure, lags, percentile};
use crate::common::{Env, authorize, finish, start_login, wait_for};
use crate::stores::{Backend, Store};

with_each_store!(three_replicas_refresh_as_one);
with_each_store!(bootstrap_seeds_the_store_once);
with_each_store!(login_seeds_every_replica);
with_each_store!(a_login_during_the_leaders_renewal_is_not_overwritten);
with_each_store!(client_credentials_replicas_fetch_as_one);

/// Three replicas, one etcd, 5 s tokens, 60 s.
async fn three_replicas_refresh_as_one(backend: Backend) {
    let store = Store::start(backend).await;
    let env = Env::new(Duration::from_secs(5)).await;
    let mut g = Group::new(env, store.tables(3)).await;
    g.start_all();
    let leader = g.leader(Duration::from_secs(10)).await;
    wait_for(
        "every replica's first token",
        Duration::from_secs(10),
        || (0..3).all(|i| g.output(i).is_some()),
    )
    .await;
    let alive: Arc<dyn Fn(usize) -> bool + Send + Sync> = Arc::new(|_| true);
    let watcher = Watcher::start(g.env.dir.path(), 3, alive);
    let start = Instant::now();
    let before = g.refreshes();
    let mut rejected = 0;
    while start.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if !g.outputs_accepted() {
            rejected += 1;
        }
    }
    let seen = watcher.finish();
    let refreshes = g.refreshes() - before;
    let lag = lags(&seen);
    let expired = seen.iter().filter(|s| s.expired).count();
    figure(
        "coordination",
        &format!(
            "{backend:?}: three replicas 60s: refreshes={refreshes} reuses={} leader=replica-{leader} follower_lag_ms p50={:.1} p99={:.1} max={:.1} rejected_samples={rejected} expired_samples={expired}",
            g.reuses(),
            percentile(&lag, 0.5),
            percentile(&lag, 0.99),
            percentile(&lag, 1.0),
        ),
    );
    assert_eq!(g.reuses(), 0, "the server saw a reuse");
    // One refresher: a 5 s token refreshed at about 1 s (refresh.at = 0.2) gives about
    // 60 in 60 s; three refreshers would give about 180.
    assert!(
        (45..=75).contains(&refreshes),
        "{refreshes} refreshes in 60 s"
    );
    assert!(
        g.outputs_accepted(),
        "an output holds a token the server refuses"
    );
    assert_eq!(rejected, 0, "samples with a refused output");
    assert_eq!(expired, 0, "samples with an expired output");
    assert!(
        percentile(&lag, 1.0) < 1000.0,
        "a follower published more than 1 s after the first replica"
    );
    g.stop_all().await;
    g.assert_no_panic();
    store.assert_requests_clean().await;
}

/// The bootstrap token seeds the store once; a replica started later
/// with the same bootstrap file neither re-seeds nor replays it. A new bootstrap token
/// (and SIGHUP) on the leader seeds the new chain.
async fn bootstrap_seeds_the_store_once(backend: Backend) {
    let store = Store::start(backend).await;
    let env = Env::new(Duration::from_secs(30)).await;
    let mut g = Group::new(env, store.tables(3)).await;
    g.start(0);
    wait_for("the first replica's token", Duration::from_secs(10), || {
        g.output(0).is_some()
    })
    .await;
    assert_eq!(g.refreshes(), 1);
    g.start(1);
    g.start(2);
    wait_for(
        "the later replicas' tokens",
        Duration::from_secs(10),
        || g.output(1).is_some() && g.output(2).is_some(),
    )
    .await;
    // Restarts with the same bootstrap file, and with no local state at all.
    g.replicas[1].kill().await;
    let _ = std::fs::remove_dir_all(g.env.path("state/r1"));
    g.start(1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        g.refreshes(),
        1,
        "a replica refreshed again from the bootstrap token"
    );
    assert_eq!(g.reuses(), 0);
    assert!(g.outputs_accepted());
    assert_eq!(g.output(1), g.output(0));

    // A person writes a new bootstrap token and reloads the leader: the new chain.
    let leader = g.leader(Duration::from_secs(5)).await;
    let new = g.env.bootstrap("c");
    g.replicas[leader].signal(libc::SIGHUP);
    wait_for("the new chain", Duration::from_secs(10), || {
        g.refreshes() == 2
    })
    .await;
    assert!(matches!(
        g.env.emu.refresh_token_status(&new),
        tokend::emulator::RefreshTokenStatus::Rotated { .. }
    ));
    wait_for(
        "every replica on the new chain",
        Duration::from_secs(5),
        || (0..3).all(|i| g.output(i) == g.output(leader)),
    )
    .await;
    g.finish().await;
    store.assert_requests_clean().await;
}

/// `tokend login` on one host writes the new chain to the
/// store as the newest generation, and every replica adopts it.
async fn login_seeds_every_replica(backend: Backend) {
    let store = Store::start(backend).await;
    let g = Group::running(store.tables(3), Duration::from_secs(30)).await;
    let old = g.output(0);
    let login = start_login(&g.replicas[2].config, &[]).await;
    let redirect = authorize(&login.url).await;
    let (status, _) = crate::cluster::fetch(&redirect).await;
    assert_eq!(status, 200);
    let (code, out, err) = finish(login).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("as generation 2: every replica adopts it"),
        "{out}"
    );
    wait_for(
        "every replica on the login's chain",
        Duration::from_secs(10),
        || {
            (0..3)
                .all(|i| g.output(i).is_some() && g.output(i) != old && g.output(i) == g.output(0))
        },
    )
    .await;
    assert!(g.outputs_accepted());
    // The chain goes on from the login: a rotation now uses its refresh token.
    let leader = g.leader(Duration::from_secs(5)).await;
    // Its `rotated` line, not the server's count: the line comes once the record is
    // stored, which `status` reads next.
    let rotated = || g.replicas[leader].rotations();
    let before = rotated();
    g.replicas[leader].signal(libc::SIGUSR1);
    wait_for(
        "a rotation of the new chain",
        Duration::from_secs(10),
        || rotated() > before,
    )
    .await;
    let status = std::process::Command::new(crate::common::BIN)
        .args([
            "status",
            "-c",
            g.replicas[leader].config.to_str().unwrap(),
            "--json",
        ])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(report[0]["shared"]["role"], "leader", "{report}");
    assert_eq!(report[0]["shared"]["generation"], 3, "{report}");
    g.finish().await;
    store.assert_requests_clean().await;
    // login and status included, every verb the Role grants was needed.
    store.assert_role_fits().await;
}

/// The local state file is the newest copy. When etcd lost the record (a
/// restore from an old backup, a deleted key), the first leader pushes its own chain
/// back instead of replaying the long-rotated bootstrap token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_local_state_is_pushed_back() {
    let etcd = Etcd::start(1).await;
    let env = Env::new(Duration::from_secs(30)).await;
    let mut g = Group::new(env, vec![etcd_table(&etcd.endpoints())]).await;
    g.start(0);
    wait_for("the first token", Duration::from_secs(10), || {
        g.output(0).is_some()
    })
    .await;
    g.env
        .rotate(
            g.replicas[0].daemon.as_ref().unwrap(),
            "a second rotation",
            Duration::from_secs(10),
        )
        .await;
    g.stop_all().await;
    // etcd loses the record.
    let key = base64::engine::general_purpose::STANDARD.encode("/test/c/state");
    let client = reqwest::Client::new();
    let deleted = client
        .post(format!("{}/v3/kv/deleterange", etcd.endpoints()[0]))
        .body(format!("{{\"key\":\"{key}\"}}"))
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success());
    let refreshes = g.refreshes();
    g.start(0);
    wait_for("the record pushed back", Duration::from_secs(10), || {
        g.replicas[0]
            .log_text()
            .contains("newer than the stored record")
    })
    .await;
    assert_eq!(g.refreshes(), refreshes, "a refresh before the push");
    g.env
        .rotate(
            g.replicas[0].daemon.as_ref().unwrap(),
            "a rotation after the push",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(
        g.reuses(),
        0,
        "the bootstrap token or an old one was replayed"
    );
    assert!(g.outputs_accepted());
    g.stop_all().await;
    g.assert_no_panic();
}

/// With coordination the local state file is a copy: a corrupt one is replaced by the
/// shared record instead of blocking the credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_local_copy_is_replaced_by_the_record() {
    let etcd = Etcd::start(1).await;
    let mut g = Group::running(
        vec![etcd_table(&etcd.endpoints()); 2],
        Duration::from_secs(30),
    )
    .await;
    let follower = 1 - g.leader(Duration::from_secs(5)).await;
    g.replicas[follower].kill().await;
    let state = g.env.path(&format!("state/r{follower}/c.json"));
    std::fs::write(&state, "{ not a state").unwrap();
    let _ = std::fs::remove_dir_all(g.env.path(&format!("out/r{follower}")));
    g.start(follower);
    wait_for(
        "the follower's token from the record",
        Duration::from_secs(10),
        || g.output(follower).is_some(),
    )
    .await;
    assert!(
        g.replicas[follower]
            .log_text()
            .contains("cannot read the local state file")
    );
    wait_for("the local copy repaired", Duration::from_secs(5), || {
        tokend::store::file::read_state_file(&state).is_ok_and(|s| s.is_some())
    })
    .await;
    g.finish().await;
}

/// A record that lands while the leader renews its lease before an intent (here, a
/// `tokend login` on another host) is adopted: the intent is conditional on the record
/// the leader last reconciled with, not on the newer one its view holds by then, so it
/// cannot overwrite the login's chain.
async fn a_login_during_the_leaders_renewal_is_not_overwritten(backend: Backend) {
    let store = Store::start(backend).await;
    let (proxies, tables) = store.proxies(2).await;
    let g = Group::running(tables, Duration::from_secs(30)).await;
    let leader = g.leader(Duration::from_secs(5)).await;
    let other = 1 - leader;
    let login = start_login(&g.replicas[other].config, &[]).await;
    let redirect = authorize(&login.url).await;
    let started = std::time::SystemTime::now();
    // The leader's next renewal (before its intent) takes 0.8 s to reach the store (less
    // than the 1 s timeout); the login is stored meanwhile, and the leader's watch shows
    // it before the intent is sent.
    let renewal = store.renewal_marker();
    proxies[leader].slow_down(Some((renewal, Duration::from_millis(800))));
    g.replicas[leader].signal(libc::SIGUSR1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, _) = crate::cluster::fetch(&redirect).await;
    assert_eq!(status, 200);
    let (code, out, err) = finish(login).await;
    assert_eq!(code, 0, "{out}\n{err}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxies[leader].slow_down(None);
    // Every replica ends on the login's chain, and it goes on from there.
    let chain_of = |i: usize| {
        let path = g.env.path(&format!("state/r{i}/c.json"));
        tokend::store::file::read_state_file(&path)
            .ok()
            .flatten()
            .map(|s| s.chain_started_at)
    };
    wait_for(
        "both replicas on the login's chain",
        Duration::from_secs(15),
        || (0..2).all(|i| chain_of(i).is_some_and(|t| t >= started)) && g.output(0) == g.output(1),
    )
    .await;
    let before = g.refreshes();
    g.replicas[g.leader(Duration::from_secs(5)).await].signal(libc::SIGUSR1);
    wait_for(
        "a rotation of the login's chain",
        Duration::from_secs(10),
        || g.refreshes() > before,
    )
    .await;
    g.finish().await;
    store.assert_requests_clean().await;
}

/// The client-credentials grant shares its token as a chain is shared: one
/// replica asks the server, every replica publishes what it got (design.md §12).
async fn client_credentials_replicas_fetch_as_one(backend: Backend) {
    let store = Store::start(backend).await;
    let env = Env::new(Duration::from_secs(5)).await;
    let mut g = Group::new(env, store.tables(3)).await;
    for r in &g.replicas {
        let text = std::fs::read_to_string(&r.config).unwrap();
        let text: String = text
            .lines()
            .filter(|l| !l.starts_with("authorize_url") && !l.starts_with("refresh_token_file"))
            .map(|l| match l {
                "[credentials.c]" => "[credentials.c]\ngrant = \"client_credentials\"\n".to_owned(),
                _ => format!("{l}\n"),
            })
            .collect();
        std::fs::write(&r.config, text).unwrap();
    }
    g.start_all();
    g.leader(Duration::from_secs(10)).await;
    wait_for(
        "every replica's first token",
        Duration::from_secs(10),
        || (0..3).all(|i| g.output(i).is_some()),
    )
    .await;
    let before = g.env.emu.stats().client_tokens;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let fetched = g.env.emu.stats().client_tokens - before;
    figure(
        "coordination",
        &format!("{backend:?}: client credentials, three replicas 20s: fetched={fetched}"),
    );
    // One fetcher at about 1 s per 5 s token (refresh.at = 0.2) gives about 20; three
    // would give about 60.
    assert!((12..=30).contains(&fetched), "{fetched} tokens in 20 s");
    assert_eq!(g.refreshes(), 0);
    g.finish().await;
    store.assert_requests_clean().await;
}

/// A corrupt stored record ("nobody refreshes until it is repaired") repaired by
/// `tokend login`: the login's chain starts at generation 1, and a leader whose own
/// chain counted higher adopts it rather than pushing its older chain over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_over_a_corrupt_record_sticks() {
    let etcd = Etcd::start(1).await;
    let env = Env::new(Duration::from_secs(30)).await;
    let mut g = Group::new(env, vec![etcd_table(&etcd.endpoints()); 2]).await;
    g.start_all();
    wait_for("both tokens", Duration::from_secs(10), || {
        (0..2).all(|i| g.output(i).is_some())
    })
    .await;
    let leader = g.leader(Duration::from_secs(5)).await;
    for _ in 0..3 {
        let d = g.replicas[leader].daemon.as_ref().unwrap();
        g.env.rotate(d, "a rotation", Duration::from_secs(10)).await;
    }
    let old = g.output(leader);
    // The record is damaged.
    let key = base64::engine::general_purpose::STANDARD.encode("/test/c/state");
    let value = base64::engine::general_purpose::STANDARD.encode("{not a record");
    let put = reqwest::Client::new()
        .post(format!("{}/v3/kv/put", etcd.endpoints()[0]))
        .body(format!("{{\"key\":\"{key}\",\"value\":\"{value}\"}}"))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    wait_for("the damage noticed", Duration::from_secs(10), || {
        g.replicas[leader]
            .log_text()
            .contains("the stored record cannot be read")
    })
    .await;
    let login = start_login(&g.replicas[1 - leader].config, &[]).await;
    let redirect = authorize(&login.url).await;
    crate::cluster::fetch(&redirect).await;
    let (code, out, err) = finish(login).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("as generation 1"), "{out}");
    wait_for(
        "both replicas on the login's chain",
        Duration::from_secs(10),
        || {
            (0..2).all(|i| g.output(i).is_some() && g.output(i) != old)
                && g.output(0) == g.output(1)
        },
    )
    .await;
    // It sticks: rotations go on from it, and nobody replays the old chain.
    let d = g.replicas[leader].daemon.as_ref().unwrap();
    g.env
        .rotate(
            d,
            "a rotation on the login's chain",
            Duration::from_secs(10),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_ne!(g.output(leader), old);
    assert!(
        !g.replicas[leader]
            .log_text()
            .contains("newer than the stored record"),
        "the leader pushed its older chain over the login's"
    );
    g.finish().await;
}
