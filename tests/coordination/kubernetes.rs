//! What only the Kubernetes backend has: the API server's schemas, its
//! service account token rotated under a running replica, HTTPS from the cluster's CA,
//! and a Role that grants what tokend uses and nothing more.

use std::time::Duration;

use crate::cluster::{Etcd, Group, figure};
use crate::common::{Env, wait_for};
use crate::security::write_tls_files;
use crate::stores::{NAMESPACE, StandIn};

/// The stand-in's validation can fail: a Lease whose duration is a string, one with a
/// field the schema does not have, and a Secret whose data is not base64 are refused
/// with 422, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stand_in_refuses_what_the_schema_refuses() {
    let etcd = Etcd::start(1).await;
    let k = StandIn::start(&etcd, None).await;
    let base = format!("http://127.0.0.1:{}", k.port);
    let leases = format!("{base}/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases");
    let secrets = format!("{base}/api/v1/namespaces/{NAMESPACE}/secrets");
    let lease = |spec: serde_json::Value| {
        serde_json::json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "tokend-c"}, "spec": spec})
    };
    let cases = [
        (
            &leases,
            lease(serde_json::json!({"leaseDurationSeconds": "15"})),
        ),
        (&leases, lease(serde_json::json!({"holder": "a"}))),
        (
            &leases,
            lease(serde_json::json!({"renewTime": "yesterday"})),
        ),
        (
            &secrets,
            serde_json::json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "tokend-c"}, "data": {"state.json": "not base64!"}}),
        ),
    ];
    let http = reqwest::Client::new();
    for (url, body) in &cases {
        let r = http
            .post(*url)
            .bearer_auth("sa-token-1")
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 422, "{body}");
    }
    // A valid one passes, which shows the refusals were the schema's.
    let ok = lease(serde_json::json!({"holderIdentity": "a", "leaseDurationSeconds": 15}));
    let r = http
        .post(&leases)
        .bearer_auth("sa-token-1")
        .json(&ok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let stats = k.stats().await;
    assert_eq!(stats["invalid"], cases.len(), "{stats}");
}

/// The service account token rotates during a run, as the kubelet rotates it: the
/// stand-in refuses the old token from then on, and tokend, which reads the file again,
/// keeps rotating. Over HTTPS, trusting only the cluster's CA (`ca_file`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_service_account_token_is_read_again() {
    let etcd = Etcd::start(1).await;
    let tls = tempfile::tempdir().unwrap();
    write_tls_files(tls.path());
    let k = StandIn::start(&etcd, Some(tls.path())).await;
    let env = Env::new(Duration::from_secs(3)).await;
    let mut g = Group::new(env, vec![k.table(k.port); 2]).await;
    g.start_all();
    wait_for("both replicas' tokens", Duration::from_secs(15), || {
        g.output(0).is_some() && g.output(1).is_some()
    })
    .await;
    for round in 2..=3 {
        k.rotate_token(&format!("sa-token-{round}"));
        let before = g.refreshes();
        wait_for(
            "rotations with the new token",
            Duration::from_secs(10),
            || g.refreshes() >= before + 3,
        )
        .await;
    }
    let stats = k.stats().await;
    // The old token was refused (at most once per replica and rotation, when the
    // cached token met the new file), and nothing else was.
    let refused = stats["unauthorized"].as_u64().unwrap();
    assert!(refused >= 1, "the old token was never refused: {stats}");
    assert_eq!(stats["invalid"], 0, "{stats}");
    assert_eq!(stats["forbidden"], 0, "{stats}");
    assert!(g.outputs_accepted());
    figure(
        "coordination",
        &format!(
            "Kubernetes: service account token rotated twice over HTTPS: refused requests={refused}, refreshes={}, reuses={}",
            g.refreshes(),
            g.reuses()
        ),
    );
    for r in &g.replicas {
        assert!(
            !r.log_text().contains("the API server refused"),
            "{}",
            r.log_text()
        );
    }
    g.finish().await;
}

/// A watch that ends with 410 Gone (the API server's watch cache moved on): every
/// replica lists again and follows the next rotations within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_list_again_after_410_gone() {
    let etcd = Etcd::start(1).await;
    let k = StandIn::start(&etcd, None).await;
    let g = Group::running(vec![k.table(k.port); 3], Duration::from_secs(3)).await;
    for _ in 0..3 {
        k.expire_watches().await;
        let before = g.refreshes();
        wait_for("a rotation after the 410", Duration::from_secs(10), || {
            g.refreshes() > before
        })
        .await;
        wait_for("every replica on it", Duration::from_secs(1), || {
            (0..3).all(|i| g.output(i) == g.output(0))
        })
        .await;
    }
    let stats = k.stats().await;
    // At least one watch of each replica ended with 410 each time (it drops its other
    // watch as it lists again), and each replica watched again.
    assert!(stats["gone"].as_u64().unwrap() >= 9, "{stats}");
    assert!(stats["watches"].as_u64().unwrap() >= 6 + 9, "{stats}");
    g.finish().await;
    k.assert_clean().await;
}
