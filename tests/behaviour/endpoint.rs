//! design.md §6's outcome table, row by row, against a real HTTP server on 127.0.0.1, and the
//! three client authentication modes.

use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretString};
use tokend::config::ClientAuth;
use tokend::emulator::{Emulator, EmulatorConfig, Fault};
use tokend::oauth::{Clients, Endpoint, FailureKind, Grant, Outcome, Permanent};

fn emu_config(auth: ClientAuth, secret: &str) -> EmulatorConfig {
    EmulatorConfig {
        client_id: "client".into(),
        client_secret: secret.into(),
        auth,
        assertion_key: None,
        access_lifetime: Duration::from_secs(60),
        reuse_grace: Duration::ZERO,
    }
}

/// The emulator on a free loopback port, for client `client` with `secret`.
async fn emulator(auth: ClientAuth, secret: &str) -> Emulator {
    Emulator::start(emu_config(auth, secret), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// [`emulator`] over HTTPS with `identity` (Basic, `s3cret`).
async fn https_emulator(identity: tokend::emulator::TlsIdentity) -> Emulator {
    let cfg = emu_config(ClientAuth::Basic, "s3cret");
    Emulator::start_with(cfg, "127.0.0.1:0".parse().unwrap(), Some(identity))
        .await
        .unwrap()
}

fn endpoint(url: &str, auth: &str, secret: &str) -> Endpoint {
    let toml = format!(
        r#"
        [credentials.c]
        token_url = "{url}"
        client_id = "client"
        client_secret = "{secret}"
        client_auth = "{auth}"
        refresh_token = "unused"
        [credentials.c.http]
        allow_insecure_http = true
        timeout = "1s"
        connect_timeout = "1s"
        "#
    );
    let cfg = tokend::config::load_from_str(&toml, "test.toml", []).unwrap();
    Endpoint::new(&cfg.credentials["c"], &Clients::default()).unwrap()
}

struct Server {
    emu: Emulator,
    ep: Endpoint,
}

async fn server() -> Server {
    let emu = emulator(ClientAuth::Basic, "s3cret").await;
    let ep = endpoint(&emu.token_url(), "basic", "s3cret");
    Server { emu, ep }
}

impl Server {
    async fn refresh_with(&self, fault: Option<Fault>) -> Outcome {
        let token = SecretString::from(self.emu.issue_refresh_token());
        if let Some(f) = fault {
            self.emu.push_fault(f);
        }
        self.ep.refresh(&token).await
    }

    async fn failure(&self, fault: Fault) -> tokend::oauth::Failure {
        self.refresh_with(Some(fault))
            .await
            .expect_err("expected a failure")
    }
}

fn status(status: u16, body: &str, retry_after: Option<&str>) -> Fault {
    Fault::Status {
        status,
        body: body.into(),
        retry_after: retry_after.map(Into::into),
    }
}

#[tokio::test]
async fn success_rotates() {
    let s = server().await;
    let a = s.refresh_with(None).await.unwrap();
    assert!(a.access_token.expose_secret().starts_with("blnk_at_"));
    assert!(
        a.refresh_token
            .unwrap()
            .expose_secret()
            .starts_with("blnk_rt_")
    );
    assert_eq!(a.expires_in, Some(Duration::from_secs(60)));
}

#[tokio::test]
async fn server_errors_are_transient_and_carry_retry_after() {
    let s = server().await;
    assert_eq!(
        s.failure(status(500, "", None)).await.kind,
        FailureKind::Transient
    );
    assert_eq!(
        s.failure(status(408, "", None)).await.kind,
        FailureKind::Transient
    );
    let f = s.failure(status(503, "", Some("7"))).await;
    assert_eq!(
        (f.kind, f.retry_after),
        (FailureKind::Transient, Some(Duration::from_secs(7)))
    );
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
    let f = s.failure(status(503, "", Some(&date))).await;
    let after = f.retry_after.expect("HTTP-date Retry-After");
    assert!(
        after > Duration::from_secs(27) && after <= Duration::from_secs(30),
        "{after:?}"
    );
    let f = s
        .failure(status(429, r#"{"error":"slow_down"}"#, Some("3")))
        .await;
    assert_eq!(
        (f.kind, f.retry_after),
        (FailureKind::Transient, Some(Duration::from_secs(3)))
    );
    assert_eq!(s.failure(status(429, "", None)).await.retry_after, None);
}

#[tokio::test]
async fn lost_answers_are_ambiguous() {
    let s = server().await;
    let f = s.failure(Fault::Reset).await;
    assert_eq!(f.kind, FailureKind::Ambiguous, "{}", f.detail);
    let f = s.failure(Fault::Delay { ms: 1500 }).await;
    assert_eq!(f.kind, FailureKind::Ambiguous, "{}", f.detail);
    assert!(f.detail.contains("timed out"), "{}", f.detail);
    assert_eq!(s.failure(Fault::Garbage).await.kind, FailureKind::Ambiguous);
    let f = s.failure(Fault::HugeBody { bytes: 70 * 1024 }).await;
    assert_eq!(f.kind, FailureKind::Ambiguous);
    assert!(f.detail.contains("over 65536 bytes"), "{}", f.detail);
}

#[tokio::test]
async fn nothing_sent_is_transient() {
    let port = crate::common::free_port();
    let ep = endpoint(
        &format!("http://127.0.0.1:{port}/oauth/token"),
        "basic",
        "x",
    );
    let f = ep.refresh(&SecretString::from("rt")).await.unwrap_err();
    assert_eq!(f.kind, FailureKind::Transient, "{}", f.detail);
}

#[tokio::test]
async fn optional_answer_fields() {
    let s = server().await;
    let a = s.refresh_with(Some(Fault::OmitRefreshToken)).await.unwrap();
    assert!(a.refresh_token.is_none());
    let a = s.refresh_with(Some(Fault::OmitExpiresIn)).await.unwrap();
    assert!(a.expires_in.is_none());
}

#[tokio::test]
async fn permanent_refusals() {
    let s = server().await;
    s.emu.revoke_all();
    let token = SecretString::from("blnk_rt_unknown");
    assert_eq!(
        s.ep.refresh(&token).await.unwrap_err().kind,
        FailureKind::Permanent(Permanent::Grant)
    );
    for code in [400, 401] {
        let f = s
            .failure(status(code, r#"{"error":"invalid_client"}"#, None))
            .await;
        assert_eq!(f.kind, FailureKind::Permanent(Permanent::Client), "{code}");
    }
    let f = s
        .failure(status(
            401,
            r#"{"error":"invalid_grant","error_description":"expired"}"#,
            None,
        ))
        .await;
    assert_eq!(f.kind, FailureKind::Permanent(Permanent::Grant));
    assert!(f.detail.contains("invalid_grant (expired)"), "{}", f.detail);
    let f = s
        .failure(status(400, r#"{"error":"invalid_scope"}"#, None))
        .await;
    assert_eq!(f.kind, FailureKind::Permanent(Permanent::Configuration));
    assert_eq!(
        s.failure(status(403, "nope", None)).await.kind,
        FailureKind::Unexpected
    );
    // A real refusal of a wrong secret, not a queued one.
    let wrong = endpoint(&s.emu.token_url(), "basic", "wrong");
    let f = wrong
        .refresh(&SecretString::from(s.emu.issue_refresh_token()))
        .await
        .unwrap_err();
    assert_eq!(f.kind, FailureKind::Permanent(Permanent::Client));
}

const SPECIAL_SECRET: &str = "p+a/s:s=w%rd";

async fn auth_case(server_auth: ClientAuth, client_auth: &str) -> Outcome {
    let emu = Emulator::start(
        emu_config(server_auth, SPECIAL_SECRET),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let ep = endpoint(&emu.token_url(), client_auth, SPECIAL_SECRET);
    ep.refresh(&SecretString::from(emu.issue_refresh_token()))
        .await
}

#[tokio::test]
async fn basic_encodes_special_characters_for_an_rfc_decoding_server() {
    assert!(auth_case(ClientAuth::Basic, "basic").await.is_ok());
}

#[tokio::test]
async fn basic_unencoded_matches_a_server_that_does_not_decode() {
    assert!(
        auth_case(ClientAuth::BasicUnencoded, "basic_unencoded")
            .await
            .is_ok()
    );
    // The RFC encoding of the same secret is refused there: that is why the mode exists.
    let f = auth_case(ClientAuth::BasicUnencoded, "basic")
        .await
        .unwrap_err();
    assert_eq!(f.kind, FailureKind::Permanent(Permanent::Client));
}

#[tokio::test]
async fn post_sends_credentials_in_the_body() {
    assert!(auth_case(ClientAuth::Post, "post").await.is_ok());
    assert!(auth_case(ClientAuth::Post, "basic").await.is_err());
}

/// design.md §12: `token_params` reach the server beside the grant's own parameters, each
/// of which is sent once (validation keeps them out of `token_params`).
#[tokio::test]
async fn token_params_reach_the_server_beside_the_grants_own() {
    let emu = emulator(ClientAuth::Post, "s3cret").await;
    let toml = format!(
        r#"
        [credentials.c]
        token_url = "{}"
        client_id = "client"
        client_secret = "s3cret"
        client_auth = "post"
        refresh_token = "unused"
        scope = "ledger:read"
        token_params = {{ resource = "https://api.example.com/", audience = "a b&c=d" }}
        [credentials.c.http]
        allow_insecure_http = true
        "#,
        emu.token_url()
    );
    let cfg = tokend::config::load_from_str(&toml, "test.toml", []).unwrap();
    let ep = Endpoint::new(&cfg.credentials["c"], &Clients::default()).unwrap();
    let token = SecretString::from(emu.issue_refresh_token());
    assert!(ep.refresh(&token).await.is_ok());
    let request = emu.requests().pop().unwrap();
    let sent = &request.params;
    let count = |name: &str| sent.iter().filter(|(n, _)| n == name).count();
    let value = |name: &str| request.param(name);
    assert_eq!(value("resource"), Some("https://api.example.com/"));
    assert_eq!(
        value("audience"),
        Some("a b&c=d"),
        "form-encoded, decoded intact"
    );
    for own in [
        "grant_type",
        "refresh_token",
        "client_id",
        "client_secret",
        "scope",
    ] {
        assert_eq!(count(own), 1, "{own} is sent once");
    }
    assert_eq!(value("grant_type"), Some("refresh_token"));
    assert_eq!(sent.len(), 7);
}

/// An endpoint for `url` as client `client` (secret `s3cret`), with `http` as the lines
/// of its `[http]` table.
fn endpoint_with_http(url: &str, http: &str) -> Result<Endpoint, tokend::oauth::EndpointError> {
    let toml = format!(
        r#"
        [credentials.c]
        token_url = "{url}"
        client_id = "client"
        client_secret = "s3cret"
        refresh_token = "unused"
        [credentials.c.http]
        {http}
        "#
    );
    let cfg = tokend::config::load_from_str(&toml, "test.toml", []).unwrap();
    Endpoint::new(&cfg.credentials["c"], &Clients::default())
}

/// A throwaway CA, and a certificate for 127.0.0.1 signed by it.
fn test_ca() -> (String, tokend::emulator::TlsIdentity) {
    let (ca_pem, identity, _) = test_ca_issuing();
    (ca_pem, identity)
}

/// [`test_ca`], and the CA itself, to sign more certificates.
fn test_ca_issuing() -> (
    String,
    tokend::emulator::TlsIdentity,
    rcgen::Issuer<'static, rcgen::KeyPair>,
) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tokend test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
    let identity = tokend::emulator::TlsIdentity {
        cert_chain_pem: leaf.pem().into_bytes(),
        key_pem: leaf_key.serialize_pem().into_bytes(),
        client_ca_pem: None,
    };
    (ca_cert.pem(), identity, issuer)
}

/// The emulator over HTTPS, requiring client certificates from a test CA, with `auth`;
/// and a directory for the client's files, the CA's certificate already in it.
struct MutualTls {
    emu: Emulator,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    dir: tempfile::TempDir,
    ca_file: String,
}

impl MutualTls {
    async fn start(auth: ClientAuth) -> MutualTls {
        let (ca_pem, mut identity, issuer) = test_ca_issuing();
        identity.client_ca_pem = Some(ca_pem.clone().into_bytes());
        let cfg = emu_config(auth, "s3cret");
        let emu = Emulator::start_with(cfg, "127.0.0.1:0".parse().unwrap(), Some(identity))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_pem).unwrap();
        let ca_file = ca_file.display().to_string();
        MutualTls {
            emu,
            issuer,
            dir,
            ca_file,
        }
    }

    /// Writes a file for the client; its path.
    fn write(&self, name: &str, text: String) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

/// design.md §12: a token endpoint behind mutual TLS (the emulator requiring a client
/// certificate from its CA) works with `http.client_cert_file` and `client_key_file`,
/// and without them fails with an error that says what is missing.
#[tokio::test]
async fn a_token_endpoint_behind_mutual_tls_takes_the_configured_client_certificate() {
    let m = MutualTls::start(ClientAuth::Basic).await;
    let (emu, ca_file) = (&m.emu, &m.ca_file);
    let client_key = rcgen::KeyPair::generate().unwrap();
    let client_cert = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .signed_by(&client_key, &m.issuer)
        .unwrap();
    let cert_file = m.write("client.crt", client_cert.pem());
    let key_file = m.write("client.key", client_key.serialize_pem());
    let load = |extra: &str| {
        endpoint_with_http(
            &emu.token_url(),
            &format!("ca_file = \"{ca_file}\"\n{extra}"),
        )
    };
    let token = || SecretString::from(emu.issue_refresh_token());

    let with_cert = load(&format!(
        "client_cert_file = \"{cert_file}\"\nclient_key_file = \"{key_file}\""
    ))
    .unwrap();
    assert!(with_cert.refresh(&token()).await.is_ok());

    let without = load("").unwrap();
    let f = without.refresh(&token()).await.unwrap_err();
    assert_eq!(f.kind, FailureKind::Untrusted, "{}", f.detail);
    assert!(f.detail.contains("http.client_cert_file"), "{}", f.detail);

    // The key file in place of the certificate: refused when the client is built,
    // naming the file and not quoting it.
    let swapped = load(&format!(
        "client_cert_file = \"{key_file}\"\nclient_key_file = \"{key_file}\""
    ));
    let err = swapped
        .err()
        .expect("a key is not a certificate")
        .to_string();
    assert!(
        err.contains("client_cert_file") && err.contains("client.key"),
        "{err}"
    );
    assert!(!err.contains("PRIVATE KEY-----\n"), "{err}");
}

/// design.md §12's `tls_client_auth` (RFC 8705 §2): the client id in the form and no
/// secret anywhere; the certificate, in the handshake, is what proves the client. A
/// certificate from another CA is refused with an error that names the setting.
#[tokio::test]
async fn tls_client_auth_proves_the_client_with_its_certificate_alone() {
    let m = MutualTls::start(ClientAuth::TlsClientAuth).await;
    let (emu, ca_file) = (&m.emu, &m.ca_file);
    let client_key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    let trusted = m.write(
        "client.crt",
        params
            .clone()
            .signed_by(&client_key, &m.issuer)
            .unwrap()
            .pem(),
    );
    let stranger = m.write("self.crt", params.self_signed(&client_key).unwrap().pem());
    let key_file = m.write("client.key", client_key.serialize_pem());
    let endpoint = |cert: &str| {
        let toml = format!(
            r#"
            [credentials.c]
            grant = "client_credentials"
            token_url = "{url}"
            client_id = "client"
            client_auth = "tls_client_auth"
            [credentials.c.http]
            ca_file = "{ca_file}"
            client_cert_file = "{cert}"
            client_key_file = "{key_file}"
            "#,
            url = emu.token_url()
        );
        let cfg = tokend::config::load_from_str(&toml, "test.toml", []).unwrap();
        Endpoint::new(&cfg.credentials["c"], &Clients::default()).unwrap()
    };

    let answer = endpoint(&trusted).request(Grant::ClientCredentials).await;
    assert!(answer.is_ok(), "{:?}", answer.err().map(|f| f.detail));
    let sent = emu.requests().pop().unwrap();
    assert_eq!(sent.param("client_id"), Some("client"));
    assert_eq!(sent.param("grant_type"), Some("client_credentials"));
    assert_eq!(sent.param("client_secret"), None);

    let f = endpoint(&stranger)
        .request(Grant::ClientCredentials)
        .await
        .unwrap_err();
    assert_eq!(f.kind, FailureKind::Untrusted, "{}", f.detail);
    assert!(f.detail.contains("http.client_cert_file"), "{}", f.detail);
    assert_eq!(emu.stats().client_tokens, 1);
}

#[tokio::test]
async fn https_with_a_private_ca_from_ca_file() {
    let (ca_pem, identity) = test_ca();
    let emu = https_emulator(identity).await;
    assert!(emu.token_url().starts_with("https://"));
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let load = |extra: &str| endpoint_with_http(&emu.token_url(), extra).unwrap();
    let trusted = load(&format!("ca_file = \"{}\"", ca_file.display()));
    let token = SecretString::from(emu.issue_refresh_token());
    assert!(
        trusted.refresh(&token).await.is_ok(),
        "the private CA is trusted through ca_file"
    );

    let untrusted = load("");
    let f = untrusted
        .refresh(&SecretString::from(emu.issue_refresh_token()))
        .await
        .unwrap_err();
    // A setup problem, with its own class (retried with backoff by `run`,
    // exit 78 from `once`) and a message that says where trust comes from.
    assert_eq!(
        f.kind,
        FailureKind::Untrusted,
        "an unknown CA fails before anything is sent: {}",
        f.detail
    );
    assert!(f.detail.contains("http.ca_file"), "{}", f.detail);
    assert_eq!(
        emu.stats().token_requests,
        1,
        "no request reached the server without trust"
    );

    std::fs::write(&ca_file, "not a certificate").unwrap();
    let toml = format!(
        "[credentials.c]\ntoken_url = \"{}\"\nclient_id = \"c\"\nclient_secret = \"s\"\nrefresh_token = \"r\"\n[credentials.c.http]\nca_file = \"{}\"\n",
        emu.token_url(),
        ca_file.display()
    );
    let cfg = tokend::config::load_from_str(&toml, "test.toml", []).unwrap();
    let err = Endpoint::new(&cfg.credentials["c"], &Clients::default())
        .err()
        .expect("a bad CA file is refused");
    assert!(err.to_string().contains("ca.pem"), "{err}");
}

#[tokio::test]
async fn a_server_echoing_secrets_in_its_error_text_does_not_leak_them() {
    let emu = emulator(ClientAuth::Basic, "s3cret/+x").await;
    let ep = endpoint(&emu.token_url(), "basic", "s3cret/+x");
    let token = emu.issue_refresh_token();
    let body = format!(
        r#"{{"error":"invalid_grant","error_description":"{token} unknown; client secret s3cret%2F%2Bx"}}"#
    );
    emu.push_fault(Fault::Status {
        status: 400,
        body,
        retry_after: None,
    });
    let f = ep
        .refresh(&SecretString::from(token.clone()))
        .await
        .unwrap_err();
    assert_eq!(f.kind, FailureKind::Permanent(Permanent::Grant));
    assert!(
        !f.detail.contains(&token) && !f.detail.contains("s3cret"),
        "{}",
        f.detail
    );
    assert!(f.detail.contains("[redacted] unknown"), "{}", f.detail);
}

/// A hostile server echoes the Basic header as it was sent, half of the refresh token,
/// and bidirectional overrides: none of it reaches the failure's text (the log's).
#[tokio::test]
async fn an_echoed_basic_header_or_half_a_token_does_not_leak() {
    use base64::Engine as _;
    let emu = emulator(ClientAuth::Basic, "s3cret/+x").await;
    let ep = endpoint(&emu.token_url(), "basic", "s3cret/+x");
    let token = emu.issue_refresh_token();
    let basic = base64::engine::general_purpose::STANDARD.encode("client:s3cret%2F%2Bx");
    let half = &token[..token.len() / 2];
    let body = format!(
        r#"{{"error":"invalid_client","error_description":"Authorization: Basic {basic}; refresh token {half}... \u202Eevil"}}"#
    );
    emu.push_fault(Fault::Status {
        status: 401,
        body,
        retry_after: None,
    });
    let f = ep
        .refresh(&SecretString::from(token.clone()))
        .await
        .unwrap_err();
    assert_eq!(f.kind, FailureKind::Permanent(Permanent::Client));
    for leaked in [basic.as_str(), half, "\u{202E}"] {
        assert!(!f.detail.contains(leaked), "{leaked} in {}", f.detail);
    }
    assert!(
        f.detail.contains("Authorization: Basic [redacted]"),
        "{}",
        f.detail
    );
}
