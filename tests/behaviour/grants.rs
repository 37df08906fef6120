//! design.md §12 end to end: the client-credentials grant, with a secret and with signed
//! assertions (`private_key_jwt`), against the emulator on 127.0.0.1.

use std::collections::HashSet;
use std::time::Duration;

use tokend::config::ClientAuth;
use tokend::emulator::EmulatorConfig;

use crate::common::{Env, wait_for};

const SEC: Duration = Duration::from_secs(1);

/// A client-credentials credential `m2m` against the emulator; `auth` lines go into
/// its table.
fn m2m_config(env: &Env, auth: &str) -> std::path::PathBuf {
    let dir = env.dir.path().display();
    env.write_config_text(&format!(
        r#"
state_dir = "{dir}/state"
[credentials.m2m]
grant = "client_credentials"
token_url = "{url}"
client_id = "{id}"
scope = "ledger:read"
token_params = {{ audience = "ledger" }}
{auth}
[credentials.m2m.refresh]
min_remaining = "1s"
[credentials.m2m.retry]
initial = "200ms"
max = "1s"
[credentials.m2m.http]
allow_insecure_http = true
[[credentials.m2m.outputs]]
path = "{dir}/out/m2m/access_token"
"#,
        url = env.emu.token_url(),
        id = env.emu.config().client_id,
    ))
}

fn secret_auth(env: &Env) -> String {
    std::fs::write(env.path("client_secret"), env.emu.config().client_secret).unwrap();
    format!(
        "client_secret_file = \"{}\"",
        env.path("client_secret").display()
    )
}

#[tokio::test]
async fn the_client_credentials_grant_keeps_a_token_fresh_with_no_chain_and_no_early_fetch() {
    let env = Env::new(Duration::from_secs(3)).await;
    let cfg = m2m_config(&env, &secret_auth(&env));
    let cfg_arg = cfg.to_str().unwrap();
    let mut d = env.spawn(&["run", "-c", cfg_arg], "run.log", &[]);
    wait_for("three client tokens", 15 * SEC, || {
        env.emu.stats().client_tokens >= 3
    })
    .await;
    let token = env.raw_output("m2m").expect("a published token");
    assert!(env.emu.accepts(&token));
    assert_eq!(d.stop().await, 0);
    let stats = env.emu.stats();
    assert_eq!((stats.refreshes, stats.auth_failures), (0, 0), "{stats:?}");
    // Every request was the grant itself, with its scope and extra parameters.
    for r in env.emu.requests() {
        assert_eq!(r.param("grant_type"), Some("client_credentials"));
        assert_eq!(r.param("scope"), Some("ledger:read"));
        assert_eq!(r.param("audience"), Some("ledger"));
        assert_eq!(r.param("refresh_token"), None);
    }
    // The state keeps the access token, and no refresh token.
    let state = env.state("m2m").unwrap();
    assert!(state.get("refresh_token").is_none(), "{state}");
    assert!(state["access_token"].is_string());

    // A restart while the token is fresh asks for nothing; `once` neither.
    let before = env.emu.stats().client_tokens;
    let out = tokio::process::Command::new(crate::common::BIN)
        .args(["once", "-c", cfg_arg])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(env.emu.stats().client_tokens, before, "once fetched early");
    // Once it expires, `once` fetches a new one.
    tokio::time::sleep(3 * SEC).await;
    let out = tokio::process::Command::new(crate::common::BIN)
        .args(["once", "-c", cfg_arg])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(env.emu.stats().client_tokens, before + 1);

    // `login` has nothing to do for it, and says so.
    let out = tokio::process::Command::new(crate::common::BIN)
        .args(["login", "m2m", "-c", cfg_arg, "--no-browser"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("client_credentials"));
}

/// `private_key_jwt`: each request carries a new assertion signed by the key file as it
/// is; a key the server does not know blocks the credential (`invalid_client`), and
/// writing the right key to the file resumes it without a signal.
#[tokio::test]
async fn private_key_jwt_signs_every_request_and_a_refused_key_waits_for_the_file() {
    let right = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let wrong = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let env = Env::with(EmulatorConfig {
        client_id: "m2m-client".into(),
        client_secret: "unused-secret".into(),
        auth: ClientAuth::PrivateKeyJwt,
        assertion_key: Some(right.public_key_pem().into_bytes()),
        access_lifetime: Duration::from_secs(2),
        reuse_grace: Duration::ZERO,
    })
    .await;
    let key_file = env.path("m2m.key");
    std::fs::write(&key_file, wrong.serialize_pem()).unwrap();
    let cfg = m2m_config(
        &env,
        &format!(
            "client_auth = \"private_key_jwt\"\nclient_assertion_key_file = \"{}\"\nclient_assertion_kid = \"m2m-1\"",
            key_file.display()
        ),
    );
    let mut d = env.spawn(&["run", "-c", cfg.to_str().unwrap()], "run.log", &[]);
    wait_for("the wrong key refused", 10 * SEC, || {
        d.log_text().contains("refreshing stopped")
    })
    .await;
    assert!(d.log_text().contains("invalid_client"), "{}", d.log_text());
    assert!(env.raw_output("m2m").is_none());
    let refused = env.emu.stats().auth_failures;
    assert_eq!(refused, 1, "a blocked credential does not retry");

    std::fs::write(&key_file, right.serialize_pem()).unwrap();
    wait_for("tokens with the right key", 20 * SEC, || {
        env.emu.stats().client_tokens >= 3
    })
    .await;
    assert!(
        d.log_text()
            .contains("the client's assertion key changed; resuming"),
        "{}",
        d.log_text()
    );
    assert!(env.emu.accepts(&env.raw_output("m2m").unwrap()));
    assert_eq!(d.stop().await, 0);
    // Each request had its own assertion (the emulator also refuses a repeated jti).
    let assertions: Vec<String> = env
        .emu
        .requests()
        .iter()
        .filter_map(|r| r.param("client_assertion").map(str::to_owned))
        .collect();
    let distinct: HashSet<&String> = assertions.iter().collect();
    assert_eq!(distinct.len(), assertions.len());
    assert_eq!(env.emu.stats().auth_failures, refused);
    // Neither the key nor an assertion reaches the log.
    let log = d.log_text();
    let key_body = right.serialize_pem();
    let key_line = key_body.lines().nth(1).unwrap();
    assert!(!log.contains(key_line));
    assert!(assertions.iter().all(|a| !log.contains(a.as_str())));
}

/// `check` explains each mistake in a client's key or certificate, by key and file,
/// and prints nothing of what the files hold.
#[tokio::test]
async fn check_explains_keys_that_cannot_sign_and_certificates_without_keys() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["m2m".into()]).unwrap();
    let sec1 = write(
        "sec1.pem",
        &ec.serialize_pem().replace("PRIVATE KEY", "EC PRIVATE KEY"),
    );
    let p8 = write("ec.pem", &ec.serialize_pem());
    let crt = write("m2m.crt", &cert.cert.pem());
    let m2m = |name: &str, auth: &str| {
        format!(
            "[credentials.{name}]\ngrant = \"client_credentials\"\ntoken_url = \"https://id.example/token\"\nclient_id = \"{name}\"\n{auth}\n"
        )
    };
    let text = [
        m2m(
            "sec1",
            &format!("client_auth = \"private_key_jwt\"\nclient_assertion_key_file = \"{sec1}\""),
        ),
        m2m(
            "alg",
            &format!(
                "client_auth = \"private_key_jwt\"\nclient_assertion_key_file = \"{p8}\"\nclient_assertion_alg = \"RS256\""
            ),
        ),
        m2m(
            "cert",
            &format!(
                "client_auth = \"tls_client_auth\"\n[credentials.cert.http]\nclient_cert_file = \"{crt}\"\nclient_key_file = \"{crt}\""
            ),
        ),
    ]
    .concat();
    let cfg = write(
        "tokend.toml",
        &format!("state_dir = \"{}\"\n{text}", dir.path().display()),
    );
    let out = tokio::process::Command::new(crate::common::BIN)
        .args(["check", "-c", &cfg])
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    for expected in [
        format!(
            "credentials.sec1.client_assertion_key_file: {sec1}: holds an EC PRIVATE KEY, not a PKCS#8 key"
        ),
        format!(
            "credentials.alg.client_assertion_key_file: {p8}: holds an EC key, which cannot sign RS256: set client_assertion_alg = \"ES256\""
        ),
        format!(
            "credentials.cert.http.client_cert_file: {crt}: with http.client_key_file, not a PEM certificate and its private key"
        ),
    ] {
        assert!(err.contains(&expected), "wants {expected:?} in:\n{err}");
    }
    let key_body = ec.serialize_pem();
    let cert_body = cert.cert.pem();
    for body in [key_body, cert_body] {
        let line = body.lines().nth(1).unwrap();
        assert!(!err.contains(line) && !String::from_utf8_lossy(&out.stdout).contains(line));
    }
}
