//! etcd as production runs it: authentication on, TLS with client certificates.

use std::time::Duration;

use base64::Engine;

use crate::cluster::{Etcd, Group, etcd_table};
use crate::common::{Env, wait_for};

/// etcd with authentication on: a user whose role may read and write only the prefix
/// shares the chain; a wrong password is reported as such, once, and nothing refreshes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_authentication() {
    let etcd = Etcd::start(1).await;
    let base = etcd.endpoints()[0].clone();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let client = reqwest::Client::new();
    for (path, body) in [
        ("role/add", r#"{"name":"root"}"#.to_owned()),
        (
            "user/add",
            r#"{"name":"root","password":"root-password"}"#.to_owned(),
        ),
        ("user/grant", r#"{"user":"root","role":"root"}"#.to_owned()),
        ("role/add", r#"{"name":"tokend"}"#.to_owned()),
        (
            "role/grant",
            format!(
                r#"{{"name":"tokend","perm":{{"permType":"READWRITE","key":"{}","range_end":"{}"}}}}"#,
                b64("/test/"),
                b64("/test0")
            ),
        ),
        (
            "user/add",
            r#"{"name":"tokend","password":"tokend-password"}"#.to_owned(),
        ),
        (
            "user/grant",
            r#"{"user":"tokend","role":"tokend"}"#.to_owned(),
        ),
        ("enable", "{}".to_owned()),
    ] {
        let r = client
            .post(format!("{base}/v3/auth/{path}"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "{path}: {}",
            r.text().await.unwrap()
        );
    }
    let env = Env::new(Duration::from_secs(5)).await;
    let mut g = Group::new(env, vec![etcd_table(&etcd.endpoints()); 2]).await;
    for (i, password) in ["tokend-password", "wrong-password"].iter().enumerate() {
        let file = g.env.path(&format!("etcd-password-{i}"));
        std::fs::write(&file, password).unwrap();
        let lines = format!(
            "username = \"tokend\"\npassword_file = \"{}\"",
            file.display()
        );
        g.add_etcd_settings(i, &lines);
    }
    admitted_then_refused(&mut g, "etcd failed: check coordination.etcd.username").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = g.replicas[1].log_text();
    // Logged once per operation that failed (the lease, the read), not at every retry.
    let said = log
        .matches("etcd failed: check coordination.etcd.username")
        .count();
    assert!(said <= 2, "logged {said} times:\n{log}");
    assert!(
        g.output(1).is_none(),
        "the replica without access published something"
    );
    assert!(!log.contains("tokend-password") && !log.contains("wrong-password"));
    g.replicas[1].kill().await;
    g.finish().await;
}

/// etcd serving TLS from a private CA and requiring client certificates: tokend reaches
/// it with `ca_file`, `cert_file` and `key_file`; without its certificate it is refused,
/// and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_tls_with_client_certificates() {
    let env = Env::new(Duration::from_secs(5)).await;
    let tls = env.path("tls");
    write_tls_files(&tls);
    let etcd = Etcd::start_tls(&tls).await;
    let mut g = Group::new(env, vec![etcd_table(&etcd.endpoints()); 2]).await;
    let ca = format!("ca_file = \"{}\"", tls.join("ca.pem").display());
    let client = format!(
        "\ncert_file = \"{}\"\nkey_file = \"{}\"",
        tls.join("client.pem").display(),
        tls.join("client.key").display()
    );
    g.add_etcd_settings(0, &format!("{ca}{client}"));
    // Replica 1 trusts the CA but has no certificate of its own.
    g.add_etcd_settings(1, &ca);
    admitted_then_refused(&mut g, "etcd failed").await;
    assert!(
        g.output(1).is_none(),
        "a replica without a certificate published something"
    );
    g.replicas[1].kill().await;
    g.finish().await;
}

/// Replica 0 gets tokens and rotates through etcd; replica 1 is refused by etcd, and
/// its log says `refusal`.
async fn admitted_then_refused(g: &mut Group, refusal: &str) {
    g.start(0);
    wait_for(
        "replica 0's token through etcd",
        Duration::from_secs(10),
        || g.output(0).is_some(),
    )
    .await;
    let before = g.refreshes();
    wait_for("rotations", Duration::from_secs(10), || {
        g.refreshes() >= before + 2
    })
    .await;
    g.start(1);
    wait_for("the refusal, logged", Duration::from_secs(10), || {
        g.replicas[1].log_text().contains(refusal)
    })
    .await;
}

/// A private CA, a certificate for 127.0.0.1 and one for a client, as PEM files.
pub fn write_tls_files(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tokend etcd test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    for (name, sans) in [
        ("server", vec!["127.0.0.1".to_string()]),
        ("client", vec![]),
    ] {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(sans).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}
