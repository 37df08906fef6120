//! Random kills, stops and cuts of the leader across three replicas for
//! COORD_SOAK_SECONDS (default 45; `.ci/run --long` sets 300): half of them between two
//! of its refreshes ([`Group::between_refreshes`]), half at the token server's receipt of
//! its request ([`Group::at_receipt`]). A leader stopped or cut inside its request comes
//! back and stores the rotation; one killed there takes the rotated token with it, the
//! others wait rather than replay it, and a person's `tokend login` starts a new chain.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::cluster::{Group, LEASE, Watcher, figure, lags, percentile};
use crate::common::{authorize, finish, start_login, wait_for};
use crate::stores::{Backend, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_kills_stops_and_cuts() {
    let seconds = crate::common::count_from_env("COORD_SOAK_SECONDS", 45);
    let store = Store::start(Backend::Etcd).await;
    let (proxies, endpoints) = store.proxies(3).await;
    let mut g = Group::running(endpoints, Duration::from_secs(5)).await;
    let steady = Arc::new(Mutex::new(vec![true; 3]));
    let s = steady.clone();
    let watcher = Watcher::start(g.env.dir.path(), 3, Arc::new(move |i| s.lock().unwrap()[i]));
    let takeovers = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let mut events = [0u32; 3];
    let mut inside = 0u32;
    let mut logins = 0u32;
    while start.elapsed() < Duration::from_secs(seconds) {
        let leader = g.leader(LEASE + Duration::from_secs(10)).await;
        let what = rand::rng().random_range(0..3);
        let during = rand::rng().random_bool(0.5);
        events[what] += 1;
        inside += u32::from(during);
        if during {
            g.at_receipt(leader, Duration::from_millis(300)).await;
        } else {
            g.between_refreshes(leader).await;
        }
        steady.lock().unwrap()[leader] = false;
        let hit = Instant::now();
        match what {
            0 => g.replicas[leader].kill().await,
            1 => g.replicas[leader].signal(libc::SIGSTOP),
            _ => proxies[leader].set_cut(true),
        }
        let next = g
            .new_leader(leader, hit, LEASE + Duration::from_secs(10))
            .await;
        takeovers.lock().unwrap().push(hit.elapsed().as_secs_f64());
        let before = g.refreshes();
        match (what, during) {
            // Between refreshes: the new leader rotates at least once before the heal.
            (_, false) => {
                wait_for(
                    "a rotation by the new leader",
                    Duration::from_secs(10),
                    || g.refreshes() > before,
                )
                .await
            }
            // Killed inside its request: the rotated token died with it. The others
            // wait on its intent; a person logs in again.
            (0, true) => {
                wait_for("the new leader to wait", Duration::from_secs(10), || {
                    g.replicas[next]
                        .log_text()
                        .contains("another replica began a refresh of this chain")
                })
                .await;
                assert_eq!(g.reuses(), 0);
                let login = start_login(&g.replicas[next].config, &[]).await;
                let redirect = authorize(&login.url).await;
                crate::cluster::fetch(&redirect).await;
                let (code, out, err) = finish(login).await;
                assert_eq!(code, 0, "{out}{err}");
                logins += 1;
            }
            // Stopped or cut inside its request: the others wait; it comes back.
            (_, true) => tokio::time::sleep(LEASE).await,
        }
        match what {
            0 => g.start(leader),
            1 => g.replicas[leader].signal(libc::SIGCONT),
            _ => proxies[leader].set_cut(false),
        }
        wait_for("a rotation after the heal", Duration::from_secs(15), || {
            g.refreshes() > before
        })
        .await;
        wait_for(
            "the healed replica to catch up",
            Duration::from_secs(15),
            || g.output(leader) == g.output(next),
        )
        .await;
        steady.lock().unwrap()[leader] = true;
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(0..2000))).await;
        assert_eq!(g.reuses(), 0, "a reuse after event {events:?}");
    }
    let before = g.refreshes();
    wait_for("rotation after the soak", Duration::from_secs(10), || {
        g.refreshes() > before
    })
    .await;
    wait_for("every output accepted", Duration::from_secs(5), || {
        g.outputs_accepted()
    })
    .await;
    let seen = watcher.finish();
    let lag = lags(&seen);
    let expired = seen.iter().filter(|s| s.expired).count();
    let t = takeovers.lock().unwrap().clone();
    figure(
        "coordination-soak",
        &format!(
            "soak {seconds}s: kills={} stops={} cuts={} ({inside} at the server's receipt of a request; {logins} chains restarted by login after a kill there) takeovers={} takeover_s median={:.2} worst={:.2} refreshes={} reuses={} follower_lag_ms p50={:.1} p99={:.1} expired_samples_of_steady_replicas={expired}",
            events[0],
            events[1],
            events[2],
            t.len(),
            percentile(&t, 0.5),
            percentile(&t, 1.0),
            g.refreshes(),
            g.reuses(),
            percentile(&lag, 0.5),
            percentile(&lag, 0.99),
        ),
    );
    // Expired samples are a figure, not a failure: a takeover that takes longer than a
    // token has left (the lease against 4 s here, on a loaded machine) lets it expire.
    g.finish().await;
}
