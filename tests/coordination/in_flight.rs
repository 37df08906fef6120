//! A leader struck while its token request is in flight, timed by the token server's
//! receipt of the request (the server holds its answer a moment, then rotates): cut
//! off from the store, stopped (SIGSTOP), or killed. The rotated refresh token is then
//! that leader's alone, so the others must not send the token its intent names: with
//! `unfinished_intent = "wait"` they wait, and the leader that comes back stores its
//! rotation on its intent, leading or not. Strict emulator: any replay revokes the chain.

use std::time::{Duration, Instant};

use crate::cluster::{Group, LEASE, figure};
use crate::common::{authorize, finish, start_login, wait_for};
use crate::stores::{Backend, Store};

/// How long the server holds its answer after receiving the request.
const HOLD: Duration = Duration::from_millis(300);

#[derive(Debug, Clone, Copy)]
enum Strike {
    /// Its connection to the store is cut; restored after 2 × lease.
    Cut,
    /// SIGSTOP; SIGCONT after 2 × lease (the answer waits in its socket meanwhile).
    Stop,
}

/// The struck leader comes back after 2 × lease with the rotated token, stores it on
/// its intent, and the chain goes on from it: with `n` replicas, 0 reuses.
async fn struck_during_its_request(backend: Backend, strike: Strike, n: usize) {
    let store = Store::start(backend).await;
    let (proxies, tables) = store.proxies(n).await;
    let g = Group::running(tables, Duration::from_secs(5)).await;
    let leader = g.leader(Duration::from_secs(10)).await;
    g.between_refreshes(leader).await;
    let received = g.refreshes();
    g.at_receipt(leader, HOLD).await;
    match strike {
        Strike::Cut => proxies[leader].set_cut(true),
        Strike::Stop => g.replicas[leader].signal(libc::SIGSTOP),
    }
    let struck = Instant::now();
    // The server rotates, answering into a socket nobody reads (stopped) or to a leader
    // that cannot store it (cut); the others must not send the old token meanwhile.
    wait_for("the server's rotation", Duration::from_secs(5), || {
        g.refreshes() > received
    })
    .await;
    let rotated = g.refreshes();
    let next = g
        .new_leader(leader, struck, LEASE + Duration::from_secs(5))
        .await;
    tokio::time::sleep((2 * LEASE).saturating_sub(struck.elapsed())).await;
    assert_eq!(
        g.refreshes(),
        rotated,
        "a refresh while the struck leader's intent stood"
    );
    assert_eq!(g.reuses(), 0);
    assert!(
        g.replicas[next]
            .log_text()
            .contains("another replica began a refresh of this chain"),
        "{}",
        g.replicas[next].log_text()
    );
    match strike {
        Strike::Cut => proxies[leader].set_cut(false),
        Strike::Stop => g.replicas[leader].signal(libc::SIGCONT),
    }
    let healed = Instant::now();
    // Its rotation is stored, and the chain goes on from it.
    wait_for("rotations after the heal", Duration::from_secs(15), || {
        g.refreshes() >= rotated + 2
    })
    .await;
    let back = healed.elapsed();
    wait_for(
        "every replica on one token",
        Duration::from_secs(10),
        || (0..n).all(|i| g.output(i).is_some() && g.output(i) == g.output(next)),
    )
    .await;
    assert!(
        g.replicas[leader].log_text().contains(" rotated "),
        "the struck leader logged no rotation"
    );
    figure(
        "coordination",
        &format!(
            "{backend:?}, {n} replicas: leader {strike:?} at the server's receipt of its request, healed after 2 x lease: chain on from its rotation {:.2}s after the heal, reuses={}",
            back.as_secs_f64(),
            g.reuses()
        ),
    );
    g.finish().await;
    store.assert_requests_clean().await;
}

async fn cut_during_a_request_2(backend: Backend) {
    struck_during_its_request(backend, Strike::Cut, 2).await
}
with_each_store!(cut_during_a_request_2);

async fn cut_during_a_request_3(backend: Backend) {
    struck_during_its_request(backend, Strike::Cut, 3).await
}
with_each_store!(cut_during_a_request_3);

async fn stopped_during_a_request_2(backend: Backend) {
    struck_during_its_request(backend, Strike::Stop, 2).await
}
with_each_store!(stopped_during_a_request_2);

async fn stopped_during_a_request_3(backend: Backend) {
    struck_during_its_request(backend, Strike::Stop, 3).await
}
with_each_store!(stopped_during_a_request_3);

/// The leader killed at the server's receipt of its request never comes back: the
/// rotated token died with it. Nobody replays the old one (0 reuses); the others wait,
/// saying so (log, /readyz once the token expires, status); `tokend login` starts a new
/// chain that they all take up.
async fn killed_during_a_request(backend: Backend) {
    let store = Store::start(backend).await;
    let mut g = Group::running(store.tables(3), Duration::from_secs(5)).await;
    let leader = g.leader(Duration::from_secs(10)).await;
    g.between_refreshes(leader).await;
    g.at_receipt(leader, HOLD).await;
    g.replicas[leader].kill().await;
    let killed = Instant::now();
    let next = g
        .new_leader(leader, killed, LEASE + Duration::from_secs(5))
        .await;
    let rotated = g.refreshes();
    // The token the others hold expires (5 s); they wait, and say why.
    let url = format!("http://127.0.0.1:{}/readyz", g.replicas[next].health);
    wait_for(
        "the wait to show in /readyz",
        Duration::from_secs(10),
        || {
            let body = std::process::Command::new("curl")
                .args(["-s", &url])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            body.contains("waiting for replica replica-")
        },
    )
    .await;
    assert_eq!(
        g.refreshes(),
        rotated,
        "a refresh of the dead leader's link"
    );
    assert_eq!(g.reuses(), 0);
    let (_, status) = crate::common::status(&g.replicas[next].config);
    assert!(status.contains("has stored no result"), "{status}");
    // The documented way out: a person logs in again.
    let login = start_login(&g.replicas[next].config, &[]).await;
    let redirect = authorize(&login.url).await;
    crate::cluster::fetch(&redirect).await;
    let (code, out, err) = finish(login).await;
    assert_eq!(code, 0, "{out}{err}");
    g.start(leader);
    wait_for(
        "rotations on the new chain",
        Duration::from_secs(15),
        || g.refreshes() >= rotated + 2,
    )
    .await;
    figure(
        "coordination",
        &format!(
            "{backend:?}: leader killed at the server's receipt of its request: others waited ({:.1}s, reuses={}), login restarted the chain",
            killed.elapsed().as_secs_f64(),
            g.reuses()
        ),
    );
    g.finish().await;
    store.assert_requests_clean().await;
}
with_each_store!(killed_during_a_request);

/// With `unfinished_intent = "retry_before_expiry"`: a leader killed after its intent
/// and before its request reached the server left a token nobody rotated. The next
/// leader waits while the published token lasts, then sends it, and the chain goes on.
async fn retry_before_expiry_recovers_an_unsent_intent(backend: Backend) {
    let store = Store::start(backend).await;
    let (proxies, tables) = store.proxies(3).await;
    let env = crate::common::Env::new(Duration::from_secs(6)).await;
    let mut g = Group::new(env, tables).await;
    g.start_all_with("unfinished_intent = \"retry_before_expiry\"")
        .await;
    let leader = g.leader(Duration::from_secs(10)).await;
    // Its next intent is stored, and the store's answer held: it never sends.
    proxies[leader].hold_after(&format!("\"intent\":{{\"identity\":\"replica-{leader}@"));
    wait_for("the leader's intent", Duration::from_secs(10), || {
        proxies[leader].holding()
    })
    .await;
    let requests = g.env.emu.stats().token_requests;
    g.replicas[leader].kill().await;
    proxies[leader].release();
    let killed = Instant::now();
    let next = g
        .new_leader(leader, killed, LEASE + Duration::from_secs(5))
        .await;
    wait_for("the next leader's refresh", Duration::from_secs(15), || {
        g.env.emu.stats().token_requests > requests && g.refreshes() > 0
    })
    .await;
    let before = g.refreshes();
    wait_for("rotations after", Duration::from_secs(15), || {
        g.refreshes() >= before + 2
    })
    .await;
    assert!(
        g.replicas[next]
            .log_text()
            .contains("sending the refresh token of its unfinished refresh"),
        "{}",
        g.replicas[next].log_text()
    );
    figure(
        "coordination",
        &format!(
            "{backend:?}: leader killed after its intent, before sending, retry_before_expiry: the next leader sent its token {:.1}s later, reuses={}",
            killed.elapsed().as_secs_f64(),
            g.reuses()
        ),
    );
    g.finish().await;
    store.assert_requests_clean().await;
}
with_each_store!(retry_before_expiry_recovers_an_unsent_intent);

/// Two replicas given one `identity` (a shared ConfigMap): each is still its own, and
/// never do both lead.
async fn one_configured_identity_never_makes_two_leaders(backend: Backend) {
    let store = Store::start(backend).await;
    let env = crate::common::Env::new(Duration::from_secs(5)).await;
    let mut g = Group::new(env, store.tables(2)).await;
    for r in &g.replicas {
        let text = std::fs::read_to_string(&r.config).unwrap().replace(
            &format!("identity = \"replica-{}\"", r.id),
            "identity = \"shared\"",
        );
        std::fs::write(&r.config, text).unwrap();
    }
    g.start_all();
    wait_for("both tokens", Duration::from_secs(15), || {
        (0..2).all(|i| g.output(i).is_some())
    })
    .await;
    let start = Instant::now();
    let mut samples = 0;
    while start.elapsed() < Duration::from_secs(8) {
        let leaders = [
            g.replicas[0].is_leader().await,
            g.replicas[1].is_leader().await,
        ];
        assert!(!(leaders[0] && leaders[1]), "both replicas lead");
        samples += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(samples > 20);
    g.finish().await;
    store.assert_requests_clean().await;
}
with_each_store!(one_configured_identity_never_makes_two_leaders);

/// With `unfinished_intent = "retry"`, for a server whose reuse grace window is longer
/// than the lease: the leader killed at the server's receipt of its request took the
/// rotated token with it; the next leader sends the old one at once, inside the grace
/// window, and the server answers with the rotated pair: the chain goes on.
async fn retry_replays_inside_a_grace_window(backend: Backend) {
    let store = Store::start(backend).await;
    let env = crate::common::Env::with(tokend::emulator::EmulatorConfig {
        client_id: "test-client".into(),
        client_secret: "test-secret-Xy7".into(),
        auth: tokend::config::ClientAuth::Basic,
        assertion_key: None,
        access_lifetime: Duration::from_secs(5),
        reuse_grace: Duration::from_secs(30),
    })
    .await;
    let mut g = Group::new(env, store.tables(3)).await;
    g.start_all_with("unfinished_intent = \"retry\"").await;
    let leader = g.leader(Duration::from_secs(10)).await;
    g.between_refreshes(leader).await;
    g.at_receipt(leader, HOLD).await;
    g.replicas[leader].kill().await;
    let killed = Instant::now();
    g.new_leader(leader, killed, LEASE + Duration::from_secs(5))
        .await;
    wait_for(
        "a replay answered from the grace window",
        Duration::from_secs(10),
        || g.env.emu.stats().grace_replays > 0,
    )
    .await;
    let before = g.refreshes();
    wait_for("rotations after", Duration::from_secs(10), || {
        g.refreshes() >= before + 2
    })
    .await;
    figure(
        "coordination",
        &format!(
            "{backend:?}: leader killed at the server's receipt of its request, retry with a 30 s grace window: replayed after {:.1}s, reuses={}",
            killed.elapsed().as_secs_f64(),
            g.reuses()
        ),
    );
    g.finish().await;
    store.assert_requests_clean().await;
}
with_each_store!(retry_replays_inside_a_grace_window);
