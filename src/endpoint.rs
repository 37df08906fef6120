//! The token endpoint: one token request (a refresh, or a login's code exchange), and
//! what its answer means.
//!
//! [`classify`] is SPEC §5's outcome table as a single pure function of (status,
//! `Retry-After`, body); the network part only adds the cases where no status came back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::{OnceCell, Semaphore};
use url::Url;

use crate::config::{ClientAuth, CredentialConfig, HttpConfig, SecretSource};
use crate::schedule::parse_retry_after;

/// Token answers larger than this are refused without reading further (SPEC §5).
pub const MAX_BODY: usize = 64 * 1024;
/// Longest piece of a server's error text that goes into our messages.
const MAX_DETAIL: usize = 200;

/// A usable answer to a refresh (RFC 6749 §5.1).
#[derive(Debug)]
pub struct TokenAnswer {
    pub access_token: SecretString,
    pub token_type: String,
    pub expires_in: Option<Duration>,
    pub refresh_token: Option<SecretString>,
    pub scope: Option<String>,
}

/// What went wrong, and what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Nothing useful happened; retry with backoff.
    Transient,
    /// The request may have reached the server; retry soon with the same refresh token.
    Ambiguous,
    /// The server refused for a reason only a person can fix.
    Permanent(Permanent),
    /// An answer the table does not cover; retry at the maximum backoff, loudly.
    Unexpected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permanent {
    /// `invalid_grant`: the refresh token is dead.
    Grant,
    /// `invalid_client` / `unauthorized_client`: the client credentials are refused.
    Client,
    /// `unsupported_grant_type` / `invalid_scope`: the configuration is wrong.
    Configuration,
}

impl Permanent {
    /// What the operator must do, for logs and `status`.
    pub fn remedy(self) -> &'static str {
        match self {
            Permanent::Grant => {
                "the refresh token is dead: authorize again and write the new refresh token to the \
                 bootstrap file (refresh_token_file), or send SIGHUP after changing the configuration"
            }
            Permanent::Client => {
                "the client credentials were refused: check client_id, the client secret and client_auth, \
                 then update the secret file or send SIGHUP"
            }
            Permanent::Configuration => {
                "the server refused the request as configured (grant type or scope): fix the configuration and send SIGHUP"
            }
        }
    }
}

/// A refresh that did not produce a usable token.
#[derive(Debug)]
pub struct Failure {
    pub kind: FailureKind,
    /// The server's `Retry-After`, already turned into a delay.
    pub retry_after: Option<Duration>,
    /// A short, secret-free description for logs and `status`.
    pub detail: String,
    /// A new refresh token from a 2xx answer whose other parts were unusable: it must be
    /// kept, because the one we sent is probably dead now.
    pub rotated: Option<SecretString>,
}

impl Failure {
    fn new(kind: FailureKind, detail: impl Into<String>) -> Self {
        Failure {
            kind,
            retry_after: None,
            detail: detail.into(),
            rotated: None,
        }
    }
}

pub type Outcome = Result<TokenAnswer, Failure>;

/// A token endpoint client for one credential.
pub struct Endpoint {
    http: reqwest::Client,
    in_flight: Arc<Semaphore>,
    /// The token URL: configured, or found in the issuer's metadata on first use.
    url: OnceCell<Url>,
    issuer: Option<Url>,
    allow_insecure_http: bool,
    client_id: String,
    client_secret: SecretSource,
    auth: ClientAuth,
    scope: Option<String>,
}

/// What a token request asks for.
pub enum Grant<'a> {
    /// RFC 6749 §6.
    Refresh(&'a SecretString),
    /// RFC 6749 §4.1.3 with RFC 7636's `code_verifier`.
    Code {
        code: &'a SecretString,
        verifier: &'a SecretString,
        redirect_uri: &'a str,
    },
}

/// Errors building the HTTP client (bad CA file).
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("http.ca_file {path}: {message}")]
    CaFile { path: String, message: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// HTTP clients shared by credentials with the same HTTP settings: one connection pool
/// and one set of trust roots for all of them, instead of one per credential.
pub struct Clients {
    cache: Mutex<HashMap<ClientKey, reqwest::Client>>,
    /// Requests in flight across all credentials: a thousand tokens issued in the same
    /// second become a steady trickle, not a burst of connections (and of memory).
    in_flight: Arc<Semaphore>,
}

/// The most token requests one process has in flight at once.
pub const MAX_IN_FLIGHT: usize = 16;

impl Default for Clients {
    fn default() -> Self {
        Clients {
            cache: Mutex::default(),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    timeout: Duration,
    connect_timeout: Duration,
    /// The CA file's content, so that a changed file gets a new client on reload.
    ca_pem: Option<Vec<u8>>,
    /// False for `http://` token URLs (loopback only), which need no trust roots.
    tls: bool,
}

impl Clients {
    /// A client for these settings (and for `https://` URLs when `tls`), built on first use.
    pub fn get(&self, http: &HttpConfig, tls: bool) -> Result<reqwest::Client, EndpointError> {
        let ca_pem = match &http.ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|e| EndpointError::CaFile {
                path: path.display().to_string(),
                message: e.to_string(),
            })?),
            None => None,
        };
        let key = ClientKey {
            timeout: http.timeout,
            connect_timeout: http.connect_timeout,
            ca_pem,
            tls,
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = cache.get(&key) {
            return Ok(client.clone());
        }
        let client = build_client(&key, http)?;
        cache.insert(key, client.clone());
        Ok(client)
    }
}

fn build_client(key: &ClientKey, http: &HttpConfig) -> Result<reqwest::Client, EndpointError> {
    crate::tls::install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("tokend/", env!("CARGO_PKG_VERSION")))
        .timeout(key.timeout)
        .connect_timeout(key.connect_timeout)
        // A token endpoint has no business redirecting a POST that carries secrets.
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(4);
    if !key.tls {
        // Loading the system's trust roots is most of tokend's start-up time; a client
        // that only speaks plain HTTP to loopback has no use for them.
        builder = builder.tls_certs_only([]);
    }
    if let (Some(pem), Some(path)) = (&key.ca_pem, &http.ca_file) {
        let ca_err = |message: String| EndpointError::CaFile {
            path: path.display().to_string(),
            message,
        };
        let certs =
            reqwest::Certificate::from_pem_bundle(pem).map_err(|e| ca_err(e.to_string()))?;
        if certs.is_empty() {
            return Err(ca_err("holds no PEM certificate".into()));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| EndpointError::Client(e.to_string()))
}

impl Endpoint {
    pub fn new(cfg: &CredentialConfig, clients: &Clients) -> Result<Self, EndpointError> {
        let server = cfg.token_url.as_ref().or(cfg.login.issuer.as_ref());
        let tls = server.is_none_or(|u| u.scheme() == "https");
        Ok(Endpoint {
            http: clients.get(&cfg.http, tls)?,
            in_flight: clients.in_flight.clone(),
            url: cfg
                .token_url
                .clone()
                .map(|u| OnceCell::new_with(Some(u)))
                .unwrap_or_default(),
            issuer: cfg.login.issuer.clone(),
            allow_insecure_http: cfg.http.allow_insecure_http,
            client_id: cfg.client_id.clone(),
            client_secret: cfg.client_secret.clone(),
            auth: cfg.client_auth,
            scope: cfg.scope.clone(),
        })
    }

    /// The HTTP client, for discovery at login.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Sets the token URL found by a discovery done elsewhere (login), unless one is set.
    pub fn use_discovered_token_url(&self, url: Url) {
        let _ = self.url.set(url);
    }

    /// The token URL, fetching the issuer's metadata the first time if need be.
    pub async fn token_url(&self) -> Result<&Url, Failure> {
        self.url
            .get_or_try_init(|| async {
                let Some(issuer) = &self.issuer else {
                    // Validation sets one of the two; this only guards the invariant.
                    return Err(Failure::new(
                        FailureKind::Unexpected,
                        "no token_url and no issuer",
                    ));
                };
                crate::discovery::discover(&self.http, issuer, self.allow_insecure_http)
                    .await
                    .map(|m| m.token_endpoint)
                    .map_err(|e| Failure::new(FailureKind::Transient, e.to_string()))
            })
            .await
    }

    /// Sends one `grant_type=refresh_token` request and classifies the answer.
    pub async fn refresh(&self, refresh_token: &SecretString) -> Outcome {
        self.request(Grant::Refresh(refresh_token)).await
    }

    /// Sends one token request and classifies the answer; no secret reaches the
    /// failure's text.
    pub async fn request(&self, grant: Grant<'_>) -> Outcome {
        let secret = self.client_secret.read().map_err(|e| {
            Failure::new(
                FailureKind::Permanent(Permanent::Client),
                format!("client secret: {e}"),
            )
        })?;
        let url = self.token_url().await?.clone();
        // The semaphore is never closed, so acquiring cannot fail; if it did, sending
        // without a permit is the better failure.
        let _permit = self.in_flight.acquire().await.ok();
        // A server may echo what it was sent in its error text; none of it reaches a log.
        let mut secrets = vec![secret.expose_secret()];
        match &grant {
            Grant::Refresh(t) => secrets.push(t.expose_secret()),
            Grant::Code { code, verifier, .. } => {
                secrets.extend([code.expose_secret(), verifier.expose_secret()])
            }
        }
        self.send(url, &grant, &secret).await.map_err(|mut f| {
            // Scrub before shortening, so that no part of a secret survives the cut.
            f.detail = scrub(&f.detail, &secrets)
                .chars()
                .take(MAX_DETAIL)
                .collect();
            f
        })
    }

    async fn send(&self, url: Url, grant: &Grant<'_>, secret: &SecretString) -> Outcome {
        let mut form: Vec<(&str, &str)> = match grant {
            Grant::Refresh(token) => vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", token.expose_secret()),
            ],
            Grant::Code {
                code,
                verifier,
                redirect_uri,
            } => vec![
                ("grant_type", "authorization_code"),
                ("code", code.expose_secret()),
                ("redirect_uri", redirect_uri),
                ("code_verifier", verifier.expose_secret()),
            ],
        };
        if let (Some(scope), Grant::Refresh(_)) = (&self.scope, grant) {
            form.push(("scope", scope));
        }
        let mut request = self
            .http
            .post(url)
            .header(reqwest::header::ACCEPT, "application/json");
        match self.auth {
            ClientAuth::Basic => {
                request = request.header(
                    reqwest::header::AUTHORIZATION,
                    basic_header(&self.client_id, secret.expose_secret(), true),
                )
            }
            ClientAuth::BasicUnencoded => {
                request = request.header(
                    reqwest::header::AUTHORIZATION,
                    basic_header(&self.client_id, secret.expose_secret(), false),
                )
            }
            ClientAuth::Post => {
                form.push(("client_id", &self.client_id));
                form.push(("client_secret", secret.expose_secret()));
            }
        }
        let response = match request.form(&form).send().await {
            Ok(r) => r,
            Err(e) => return Err(transport_failure(&e)),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let body = read_capped(response).await;
        classify(status, retry_after, body)
    }
}

/// RFC 6749 Appendix B form-encoding, leaving RFC 3986's unreserved characters as they
/// are, so that ordinary ids and secrets produce exactly what `curl -u` sends.
const FORM_COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `text` with every occurrence of each secret (as sent, raw or form-encoded) replaced.
fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut text = text.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        let encoded = percent_encoding::utf8_percent_encode(secret, FORM_COMPONENT).to_string();
        for form in [secret.to_string(), encoded] {
            text = text.replace(&form, "[redacted]");
        }
    }
    text
}

/// An `Authorization: Basic` value; `encode` applies RFC 6749 §2.3.1's form-urlencoding.
pub fn basic_header(id: &str, secret: &str, encode: bool) -> reqwest::header::HeaderValue {
    let pair = if encode {
        let enc = |s: &str| percent_encoding::utf8_percent_encode(s, FORM_COMPONENT).to_string();
        format!("{}:{}", enc(id), enc(secret))
    } else {
        format!("{id}:{secret}")
    };
    let mut value = reqwest::header::HeaderValue::from_str(&format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    ))
    .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static("Basic"));
    value.set_sensitive(true);
    value
}

/// Why a body could not be read in full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    TooLarge,
    Interrupted(String),
}

pub(crate) async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, BodyError> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY as u64)
    {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(BodyError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(BodyError::Interrupted(error_chain(&e))),
        }
    }
}

/// Failures where no status line came back.
fn transport_failure(e: &reqwest::Error) -> Failure {
    let detail = error_chain(e);
    if e.is_connect() {
        // DNS, refused, unreachable, TLS handshake: the request never left.
        Failure::new(
            FailureKind::Transient,
            format!("could not connect: {detail}"),
        )
    } else if e.is_timeout() {
        Failure::new(
            FailureKind::Ambiguous,
            format!("timed out after sending: {detail}"),
        )
    } else {
        Failure::new(
            FailureKind::Ambiguous,
            format!("connection failed after sending: {detail}"),
        )
    }
}

/// The error and its causes on one line. reqwest puts the URL in its message; our token
/// URLs carry no credentials (validated), so that is safe.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    sanitize(&text)
}

#[derive(Deserialize)]
struct RawAnswer {
    access_token: Option<serde_json::Value>,
    token_type: Option<serde_json::Value>,
    expires_in: Option<serde_json::Value>,
    refresh_token: Option<serde_json::Value>,
    scope: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawError {
    error: Option<serde_json::Value>,
    error_description: Option<serde_json::Value>,
}

/// SPEC §5's table: what an HTTP answer means.
pub fn classify(
    status: u16,
    retry_after: Option<Duration>,
    body: Result<Vec<u8>, BodyError>,
) -> Outcome {
    use FailureKind::*;
    let with_retry = |mut f: Failure| {
        f.retry_after = retry_after;
        f
    };
    match status {
        200..=299 => match body {
            Ok(bytes) => parse_answer(&bytes),
            Err(BodyError::TooLarge) => Err(Failure::new(
                Ambiguous,
                format!("HTTP {status} with a body over {MAX_BODY} bytes"),
            )),
            Err(BodyError::Interrupted(e)) => Err(Failure::new(
                Ambiguous,
                format!("HTTP {status} body cut short: {e}"),
            )),
        },
        408 | 500..=599 => Err(with_retry(Failure::new(
            Transient,
            format!("HTTP {status}{}", error_suffix(&body)),
        ))),
        429 => Err(with_retry(Failure::new(
            Transient,
            format!("HTTP 429 rate limited{}", error_suffix(&body)),
        ))),
        400..=499 => {
            let code = error_code(&body);
            let kind = match code.as_deref() {
                Some("invalid_grant") => Permanent(self::Permanent::Grant),
                Some("invalid_client" | "unauthorized_client") => {
                    Permanent(self::Permanent::Client)
                }
                Some("unsupported_grant_type" | "invalid_scope") => {
                    Permanent(self::Permanent::Configuration)
                }
                _ => Unexpected,
            };
            Err(with_retry(Failure::new(
                kind,
                format!("HTTP {status}{}", error_suffix(&body)),
            )))
        }
        _ => Err(Failure::new(
            Unexpected,
            format!("HTTP {status}{}", error_suffix(&body)),
        )),
    }
}

fn parse_answer(bytes: &[u8]) -> Outcome {
    use FailureKind::*;
    let raw: RawAnswer = match serde_json::from_slice(bytes) {
        Ok(r) => r,
        Err(_) => {
            return Err(Failure::new(
                Ambiguous,
                "2xx answer is not a JSON token response",
            ));
        }
    };
    // The refresh token first: if it is there and well-formed, it must survive whatever
    // else is wrong with the answer.
    let rotated = match &raw.refresh_token {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => match token_text(v) {
            Some(t) => Some(SecretString::from(t)),
            None => {
                return Err(Failure::new(
                    Ambiguous,
                    "2xx answer has an unusable refresh_token",
                ));
            }
        },
    };
    let unusable = |detail: &str| Failure {
        kind: if rotated.is_some() {
            Transient
        } else {
            Ambiguous
        },
        retry_after: None,
        detail: format!("2xx answer {detail}"),
        rotated: rotated.clone(),
    };
    let access_token = match raw.access_token.as_ref().map(token_text) {
        Some(Some(t)) => SecretString::from(t),
        Some(None) => return Err(unusable("has an unusable access_token")),
        None => return Err(unusable("lacks access_token")),
    };
    let token_type = match raw.token_type {
        Some(serde_json::Value::String(t)) if t.eq_ignore_ascii_case("bearer") => t,
        Some(serde_json::Value::String(t))
            if t.len() <= 40 && t.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            return Err(unusable(&format!("has token_type {t:?}, not Bearer")));
        }
        Some(_) => return Err(unusable("has an unusable token_type")),
        None => return Err(unusable("lacks token_type")),
    };
    let expires_in = match raw.expires_in {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => match expires_in_seconds(&v) {
            Some(0) | None => return Err(unusable("has an unusable expires_in")),
            // Ten years: far beyond any real lifetime, small enough for time arithmetic.
            Some(s) => Some(Duration::from_secs(s.min(10 * 365 * 86_400))),
        },
    };
    let scope = match raw.scope {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) if s.bytes().all(|b| (0x20..0x7f).contains(&b)) => {
            Some(s)
        }
        Some(_) => return Err(unusable("has an unusable scope")),
    };
    Ok(TokenAnswer {
        access_token,
        token_type,
        expires_in,
        refresh_token: rotated,
        scope,
    })
}

/// A token as RFC 6749 allows it (visible ASCII), refusing anything that could break an
/// output format: spaces, control characters, quotes, backslashes.
fn token_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s)
            if !s.is_empty()
                && s.len() <= 16 * 1024
                && s.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') =>
        {
            Some(s.clone())
        }
        _ => None,
    }
}

/// `expires_in` as seconds: a non-negative integer, or a numeric string (seen in the wild).
fn expires_in_seconds(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| *f >= 1.0)
                .map(|f| f.min(u64::MAX as f64) as u64)
        }),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn error_code(body: &Result<Vec<u8>, BodyError>) -> Option<String> {
    let bytes = body.as_ref().ok()?;
    let raw: RawError = serde_json::from_slice(bytes).ok()?;
    match raw.error? {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    }
}

/// `: invalid_grant (the description)` for messages, sanitised and bounded.
fn error_suffix(body: &Result<Vec<u8>, BodyError>) -> String {
    let Ok(bytes) = body else {
        return String::new();
    };
    let Ok(raw) = serde_json::from_slice::<RawError>(bytes) else {
        return String::new();
    };
    let text = |v: Option<serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) => Some(sanitize(&s)),
        _ => None,
    };
    match (text(raw.error), text(raw.error_description)) {
        (Some(e), Some(d)) => format!(": {e} ({d})"),
        (Some(e), None) => format!(": {e}"),
        _ => String::new(),
    }
}

/// Control characters out, so that server text cannot forge log lines.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> Result<Vec<u8>, BodyError> {
        Ok(body.as_bytes().to_vec())
    }

    fn kind(o: Outcome) -> FailureKind {
        o.expect_err("expected a failure").kind
    }

    #[test]
    fn full_answer_is_success() {
        let a = classify(200, None, ok(r#"{"access_token":"at","token_type":"bearer","expires_in":3600,"refresh_token":"rt","scope":"a b","x":1}"#)).unwrap();
        assert_eq!(a.access_token.expose_secret(), "at");
        assert_eq!(a.expires_in, Some(Duration::from_secs(3600)));
        assert_eq!(a.refresh_token.unwrap().expose_secret(), "rt");
    }

    #[test]
    fn optional_fields_may_be_absent() {
        let a = classify(
            200,
            None,
            ok(r#"{"access_token":"at","token_type":"Bearer"}"#),
        )
        .unwrap();
        assert!(a.expires_in.is_none() && a.refresh_token.is_none() && a.scope.is_none());
    }

    #[test]
    fn unusable_2xx_keeps_the_rotated_token() {
        let f = classify(
            200,
            None,
            ok(r#"{"refresh_token":"rt2","token_type":"Bearer"}"#),
        )
        .unwrap_err();
        assert_eq!(f.kind, FailureKind::Transient);
        assert_eq!(f.rotated.unwrap().expose_secret(), "rt2");
        let f = classify(
            200,
            None,
            ok(r#"{"access_token":"a\nb","token_type":"Bearer","refresh_token":"rt2"}"#),
        )
        .unwrap_err();
        assert!(f.rotated.is_some());
        let f = classify(200, None, ok(r#"{"access_token":"a","token_type":"Bearer","refresh_token":"rt2","expires_in":-5}"#)).unwrap_err();
        assert!(f.rotated.is_some());
    }

    #[test]
    fn garbage_2xx_is_ambiguous() {
        assert_eq!(
            kind(classify(200, None, ok("<html>"))),
            FailureKind::Ambiguous
        );
        assert_eq!(
            kind(classify(200, None, Err(BodyError::TooLarge))),
            FailureKind::Ambiguous
        );
        assert_eq!(
            kind(classify(
                200,
                None,
                ok(r#"{"access_token":"a","token_type":"Bearer","refresh_token":"bad token"}"#)
            )),
            FailureKind::Ambiguous
        );
    }

    #[test]
    fn the_table() {
        use FailureKind::*;
        let e = |code: &str| {
            ok(&format!(
                r#"{{"error":"{code}","error_description":"why"}}"#
            ))
        };
        assert_eq!(kind(classify(500, None, ok(""))), Transient);
        assert_eq!(kind(classify(408, None, ok(""))), Transient);
        let f = classify(503, Some(Duration::from_secs(7)), ok("")).unwrap_err();
        assert_eq!(
            (f.kind, f.retry_after),
            (Transient, Some(Duration::from_secs(7)))
        );
        assert_eq!(kind(classify(429, None, ok(""))), Transient);
        assert_eq!(
            kind(classify(400, None, e("invalid_grant"))),
            Permanent(self::Permanent::Grant)
        );
        assert_eq!(
            kind(classify(401, None, e("invalid_grant"))),
            Permanent(self::Permanent::Grant)
        );
        assert_eq!(
            kind(classify(401, None, e("invalid_client"))),
            Permanent(self::Permanent::Client)
        );
        assert_eq!(
            kind(classify(400, None, e("invalid_client"))),
            Permanent(self::Permanent::Client)
        );
        assert_eq!(
            kind(classify(400, None, e("unauthorized_client"))),
            Permanent(self::Permanent::Client)
        );
        assert_eq!(
            kind(classify(400, None, e("invalid_scope"))),
            Permanent(self::Permanent::Configuration)
        );
        assert_eq!(
            kind(classify(400, None, e("unsupported_grant_type"))),
            Permanent(self::Permanent::Configuration)
        );
        assert_eq!(kind(classify(400, None, e("invalid_request"))), Unexpected);
        assert_eq!(kind(classify(403, None, ok("forbidden"))), Unexpected);
        assert_eq!(kind(classify(302, None, ok(""))), Unexpected);
    }

    #[test]
    fn credentials_with_the_same_http_settings_share_a_client() {
        let clients = Clients::default();
        let http = HttpConfig::default();
        clients.get(&http, true).unwrap();
        clients.get(&http.clone(), true).unwrap();
        let slower = HttpConfig {
            timeout: Duration::from_secs(30),
            ..HttpConfig::default()
        };
        clients.get(&slower, true).unwrap();
        clients.get(&http, false).unwrap();
        assert_eq!(clients.cache.lock().unwrap().len(), 3);
    }

    #[test]
    fn rfc_basic_encoding_differs_from_curl_only_for_special_characters() {
        assert_eq!(
            basic_header("id", "a-b._~1", true),
            basic_header("id", "a-b._~1", false)
        );
        let v = basic_header("id", "a+b/c:d=e%f", true);
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&v.to_str().unwrap()[6..])
            .unwrap();
        assert_eq!(
            String::from_utf8(decoded).unwrap(),
            "id:a%2Bb%2Fc%3Ad%3De%25f"
        );
    }
}
