//! The built-in Blnk-Cloud-compatible token endpoint (SPEC §10), for `demo`, `emulator`
//! and the project's own tests.
//!
//! It rotates the refresh token on every use and, like strict servers, treats the reuse
//! of a rotated token as theft: `invalid_grant`, and the whole family revoked (an optional
//! grace window instead returns the pair already issued). Tests queue faults to make it
//! misbehave on purpose, in-process or through `POST /_emulator/faults`.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use tokio::net::TcpListener;

use crate::config::ClientAuth;
use crate::http_server::{accept_loop, serve_http1};

/// The token path, as on Blnk Cloud.
pub const TOKEN_PATH: &str = "/oauth/token";
/// The authorization endpoint, as on Blnk Cloud. It approves at once (there is no user
/// to ask), unless told to answer with an error; PKCE S256 is required.
pub const AUTHORIZE_PATH: &str = "/oauth/authorize";
/// RFC 8414 metadata for the issuer `<scheme>://<addr>`.
pub const METADATA_PATH: &str = "/.well-known/oauth-authorization-server";
/// How long an authorization code may wait to be exchanged.
const CODE_LIFETIME: Duration = Duration::from_secs(60);
/// A protected resource that answers 200 to a valid access token, 401 otherwise.
pub const RESOURCE_PATH: &str = "/resource";

#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    pub client_id: String,
    pub client_secret: String,
    pub auth: ClientAuth,
    pub access_lifetime: Duration,
    /// A rotated refresh token presented again within this time returns the same new pair.
    pub reuse_grace: Duration,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            client_id: "tokend-demo".into(),
            client_secret: format!("demo-secret-{}", random_text(16)),
            auth: ClientAuth::Basic,
            access_lifetime: Duration::from_secs(3600),
            reuse_grace: Duration::ZERO,
        }
    }
}

/// A way to misbehave, consumed by the next token request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answer with this status, body and optional `Retry-After`; nothing rotates.
    Status {
        status: u16,
        #[serde(default)]
        body: String,
        #[serde(default)]
        retry_after: Option<String>,
    },
    /// Wait, then answer normally.
    Delay { ms: u64 },
    /// Close the connection without answering, before processing anything.
    Reset,
    /// Rotate, then close the connection without answering.
    RotateThenReset,
    /// `200` with a body that is not JSON; nothing rotates.
    Garbage,
    /// `200` with a body of this many bytes; nothing rotates.
    HugeBody { bytes: usize },
    /// Succeed without `refresh_token`; the presented one stays valid.
    OmitRefreshToken,
    /// Succeed without `expires_in` (the token still lives `access_lifetime`).
    OmitExpiresIn,
    /// Rotate, answering with this `expires_in` (0, negative, a century, a string...).
    ExpiresIn { value: serde_json::Value },
    /// Rotate, answering with this access token (a newline, control characters...): a
    /// 2xx with a new refresh token but an unusable rest.
    AccessToken { value: String },
    /// `200` with a body that is not UTF-8; nothing rotates.
    InvalidUtf8,
    /// `200` with JSON nested this deep; nothing rotates.
    NestedJson { depth: usize },
}

/// A refresh token as the server sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshTokenStatus {
    /// Usable: the next refresh with it rotates.
    Live,
    /// Rotated away this long ago; presenting it again is a reuse (or a grace replay).
    Rotated {
        ago: Duration,
    },
    /// Its family was revoked.
    Revoked,
    Unknown,
}

/// Counters a test reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    pub token_requests: u64,
    pub refreshes: u64,
    /// Rotated refresh tokens presented again outside any grace window.
    pub reuses: u64,
    /// Reuses answered from the grace window.
    pub grace_replays: u64,
    pub faults_served: u64,
    pub auth_failures: u64,
}

/// One successful rotation, for checking when the client refreshed.
#[derive(Debug, Clone)]
pub struct Rotation {
    pub at: SystemTime,
    /// When the presented refresh token (and its access token) was issued.
    pub previous_issued_at: SystemTime,
    pub previous_lifetime: Duration,
    /// The presented token was a bootstrap token, not one issued with an access token.
    pub from_bootstrap: bool,
}

/// One token request as received, for checking retries.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub at: Instant,
    pub refresh_token: String,
}

struct RefreshRecord {
    family: u64,
    bootstrap: bool,
    issued_at: SystemTime,
    lifetime: Duration,
    /// Set once rotated: when, and the answer given, for the grace window.
    rotated: Option<(Instant, serde_json::Value)>,
}

struct AccessRecord {
    family: u64,
    expires_at: SystemTime,
}

#[derive(Default)]
struct Inner {
    refresh: HashMap<String, RefreshRecord>,
    access: HashMap<String, AccessRecord>,
    revoked: std::collections::HashSet<u64>,
    next_family: u64,
    faults: VecDeque<Fault>,
    stats: Stats,
    rotations: Vec<Rotation>,
    requests: Vec<TokenRequest>,
    codes: HashMap<String, CodeRecord>,
    /// Chaos: when no fault is queued, each request gets one of these with probability p.
    chaos: Option<(f64, Vec<Fault>)>,
    /// The error the authorization endpoint answers with, instead of a code.
    authorize_error: Option<String>,
}

impl Inner {
    fn new_family(&mut self) -> u64 {
        self.next_family += 1;
        self.next_family
    }

    /// A new live refresh token of `family`.
    fn new_refresh_token(&mut self, family: u64, bootstrap: bool, lifetime: Duration) -> String {
        let token = format!("blnk_rt_{}", random_text(32));
        self.refresh.insert(
            token.clone(),
            RefreshRecord {
                family,
                bootstrap,
                issued_at: SystemTime::now(),
                lifetime,
                rotated: None,
            },
        );
        token
    }
}

/// An authorization code waiting for its exchange.
struct CodeRecord {
    challenge: String,
    redirect_uri: String,
    issued: Instant,
}

struct Shared {
    cfg: Mutex<EmulatorConfig>,
    inner: Mutex<Inner>,
    /// `<scheme>://<addr>`: the issuer, and the base of every endpoint.
    base: String,
}

/// A certificate chain and private key, PEM-encoded, for serving HTTPS.
pub struct TlsIdentity {
    pub cert_chain_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

/// A running emulator; dropping it stops the listener.
pub struct Emulator {
    addr: SocketAddr,
    scheme: &'static str,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain counters behind: still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Emulator {
    /// Binds `addr` (use port 0 for any) and serves plain HTTP until dropped.
    pub async fn start(cfg: EmulatorConfig, addr: SocketAddr) -> std::io::Result<Emulator> {
        Emulator::start_with(cfg, addr, None).await
    }

    /// As [`Emulator::start`], serving HTTPS with `tls` when given.
    pub async fn start_with(
        cfg: EmulatorConfig,
        addr: SocketAddr,
        tls: Option<TlsIdentity>,
    ) -> std::io::Result<Emulator> {
        let acceptor = tls.map(tls_acceptor).transpose()?;
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            cfg: Mutex::new(cfg),
            inner: Mutex::new(Inner::default()),
            base: format!("{scheme}://{addr}"),
        });
        let task = tokio::spawn(serve(listener, acceptor, shared.clone()));
        Ok(Emulator {
            addr,
            scheme,
            shared,
            task,
        })
    }

    /// Stops serving (and drops open connections), as if the server went away.
    pub fn stop(&self) {
        self.task.abort();
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn token_url(&self) -> String {
        format!("{}://{}{TOKEN_PATH}", self.scheme, self.addr)
    }

    pub fn resource_url(&self) -> String {
        format!("{}://{}{RESOURCE_PATH}", self.scheme, self.addr)
    }

    pub fn config(&self) -> EmulatorConfig {
        lock(&self.shared.cfg).clone()
    }

    /// Replaces the client secret (a rotated secret in the dashboard).
    pub fn set_client_secret(&self, secret: &str) {
        lock(&self.shared.cfg).client_secret = secret.to_owned();
    }

    /// A refresh token starting a new family, as an authorization would give.
    pub fn issue_refresh_token(&self) -> String {
        self.shared.issue_bootstrap()
    }

    /// The issuer identifier, for `issuer = ...` (RFC 8414 metadata is served).
    pub fn issuer(&self) -> String {
        self.shared.base.clone()
    }

    pub fn authorize_url(&self) -> String {
        format!("{}{AUTHORIZE_PATH}", self.shared.base)
    }

    /// From now on, each token request without a queued fault gets a random one of
    /// `faults` with probability `p` (`p = 0` stops it).
    pub fn set_chaos(&self, p: f64, faults: Vec<Fault>) {
        lock(&self.shared.inner).chaos = (p > 0.0 && !faults.is_empty()).then_some((p, faults));
    }

    /// Makes the authorization endpoint answer `error=<code>` (e.g. `access_denied`), or
    /// approve again with `None`.
    pub fn set_authorize_error(&self, code: Option<&str>) {
        lock(&self.shared.inner).authorize_error = code.map(str::to_owned);
    }

    /// Queues a fault for the next token request.
    pub fn push_fault(&self, fault: Fault) {
        lock(&self.shared.inner).faults.push_back(fault);
    }

    /// Revokes every family, as "Revoke Key" in the dashboard would.
    pub fn revoke_all(&self) {
        let mut inner = lock(&self.shared.inner);
        let families: Vec<u64> = inner.refresh.values().map(|r| r.family).collect();
        inner.revoked.extend(families);
    }

    pub fn stats(&self) -> Stats {
        lock(&self.shared.inner).stats.clone()
    }

    pub fn rotations(&self) -> Vec<Rotation> {
        lock(&self.shared.inner).rotations.clone()
    }

    /// Every token request received, in order.
    pub fn requests(&self) -> Vec<TokenRequest> {
        lock(&self.shared.inner).requests.clone()
    }

    /// Every access and refresh token it ever issued (for secret scans).
    pub fn issued_tokens(&self) -> Vec<String> {
        let inner = lock(&self.shared.inner);
        inner
            .refresh
            .keys()
            .chain(inner.access.keys())
            .cloned()
            .collect()
    }

    /// What the server knows of a refresh token.
    pub fn refresh_token_status(&self, token: &str) -> RefreshTokenStatus {
        let inner = lock(&self.shared.inner);
        match inner.refresh.get(token) {
            None => RefreshTokenStatus::Unknown,
            Some(r) if inner.revoked.contains(&r.family) => RefreshTokenStatus::Revoked,
            Some(r) => match &r.rotated {
                Some((at, _)) => RefreshTokenStatus::Rotated { ago: at.elapsed() },
                None => RefreshTokenStatus::Live,
            },
        }
    }

    /// Whether `access_token` is currently accepted.
    pub fn accepts(&self, access_token: &str) -> bool {
        self.shared.accepts(access_token)
    }
}

impl Shared {
    fn issue_bootstrap(&self) -> String {
        let lifetime = lock(&self.cfg).access_lifetime;
        let mut inner = lock(&self.inner);
        let family = inner.new_family();
        inner.new_refresh_token(family, true, lifetime)
    }

    fn accepts(&self, access_token: &str) -> bool {
        let inner = lock(&self.inner);
        inner
            .access
            .get(access_token)
            .is_some_and(|a| a.expires_at > SystemTime::now() && !inner.revoked.contains(&a.family))
    }
}

fn random_text(n: usize) -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

fn tls_acceptor(identity: TlsIdentity) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let invalid = |e: &dyn std::fmt::Display| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
    };
    crate::tls::install_crypto_provider();
    let certs = CertificateDer::pem_slice_iter(&identity.cert_chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&e))?;
    let key = PrivateKeyDer::from_pem_slice(&identity.key_pem).map_err(|e| invalid(&e))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid(&e))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn serve(listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>, shared: Arc<Shared>) {
    accept_loop(listener, move |stream| {
        let (shared, tls) = (shared.clone(), tls.clone());
        async move {
            let service = hyper::service::service_fn(move |req| handle(shared.clone(), req));
            match tls {
                None => serve_http1(stream, service).await,
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        serve_http1(stream, service).await;
                    }
                }
            }
        }
    })
    .await
}

type Answer = Response<Full<Bytes>>;

/// An error makes hyper drop the connection without an answer: the "reset" faults.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped on purpose")]
struct Dropped;

fn json(status: StatusCode, body: serde_json::Value) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        "application/json".parse().expect("static header"),
    );
    r.headers_mut()
        .insert("cache-control", "no-store".parse().expect("static header"));
    r
}

fn oauth_error(status: StatusCode, code: &str, description: &str) -> Answer {
    json(
        status,
        serde_json::json!({"error": code, "error_description": description}),
    )
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Answer, Dropped> {
    let path = req.uri().path().to_owned();
    Ok(match (req.method(), path.as_str()) {
        (&Method::POST, TOKEN_PATH) => return token(shared, req).await,
        (&Method::GET, RESOURCE_PATH) => resource(&shared, &req),
        (&Method::GET, AUTHORIZE_PATH) => authorize(&shared, &req),
        (&Method::GET, METADATA_PATH) => json(
            StatusCode::OK,
            serde_json::json!({
                "issuer": shared.base,
                "authorization_endpoint": format!("{}{AUTHORIZE_PATH}", shared.base),
                "token_endpoint": format!("{}{TOKEN_PATH}", shared.base),
                "response_types_supported": ["code"],
                "grant_types_supported": ["authorization_code", "refresh_token"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            }),
        ),
        (&Method::GET, "/_emulator/stats") => {
            json(StatusCode::OK, serde_json::json!(lock(&shared.inner).stats))
        }
        (&Method::POST, "/_emulator/bootstrap") => json(
            StatusCode::OK,
            serde_json::json!({"refresh_token": shared.issue_bootstrap()}),
        ),
        (&Method::POST, "/_emulator/faults") => match read_body(req)
            .await
            .and_then(|b| serde_json::from_slice::<Vec<Fault>>(&b).ok())
        {
            Some(faults) => {
                lock(&shared.inner).faults.extend(faults);
                json(StatusCode::OK, serde_json::json!({"queued": true}))
            }
            None => json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": "expected a JSON list of faults"}),
            ),
        },
        _ => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "not_found"}),
        ),
    })
}

async fn read_body(req: Request<Incoming>) -> Option<Bytes> {
    Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
        .ok()
        .map(|c| c.to_bytes())
}

fn resource(shared: &Shared, req: &Request<Incoming>) -> Answer {
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if shared.accepts(token) {
        json(StatusCode::OK, serde_json::json!({"ok": true}))
    } else {
        let mut r = json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"error": "invalid_token"}),
        );
        r.headers_mut().insert(
            "www-authenticate",
            "Bearer error=\"invalid_token\""
                .parse()
                .expect("static header"),
        );
        r
    }
}

/// Client credentials as the configured authentication mode carries them.
fn client_credentials(
    auth: ClientAuth,
    req_auth: Option<&str>,
    form: &HashMap<String, String>,
) -> Option<(String, String)> {
    match auth {
        ClientAuth::Post => Some((
            form.get("client_id")?.clone(),
            form.get("client_secret")?.clone(),
        )),
        ClientAuth::Basic | ClientAuth::BasicUnencoded => {
            let encoded = req_auth?.strip_prefix("Basic ")?;
            let decoded = String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .ok()?,
            )
            .ok()?;
            let (id, secret) = decoded.split_once(':')?;
            if auth == ClientAuth::BasicUnencoded {
                return Some((id.to_owned(), secret.to_owned()));
            }
            // RFC 6749 §2.3.1: each part is application/x-www-form-urlencoded.
            let decode = |s: &str| {
                form_urlencoded::parse(s.as_bytes())
                    .next()
                    .map(|(k, _)| k.into_owned())
                    .unwrap_or_default()
            };
            Some((decode(id), decode(secret)))
        }
    }
}

async fn token(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Answer, Dropped> {
    let auth_header = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Some(body) = read_body(req).await else {
        return Ok(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "body too large or unreadable",
        ));
    };
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let fault = {
        let mut inner = lock(&shared.inner);
        inner.stats.token_requests += 1;
        let refresh_token = form.get("refresh_token").cloned().unwrap_or_default();
        inner.requests.push(TokenRequest {
            at: Instant::now(),
            refresh_token,
        });
        let fault = inner.faults.pop_front().or_else(|| {
            let (p, faults) = inner.chaos.as_ref()?;
            let mut rng = rand::rng();
            rng.random_bool(p.clamp(0.0, 1.0))
                .then(|| faults[rng.random_range(0..faults.len())].clone())
        });
        if fault.is_some() {
            inner.stats.faults_served += 1;
        }
        fault
    };
    match &fault {
        Some(Fault::Status {
            status,
            body,
            retry_after,
        }) => {
            let mut r = Response::new(Full::new(Bytes::from(body.clone())));
            *r.status_mut() =
                StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if body.starts_with('{') {
                r.headers_mut().insert(
                    "content-type",
                    "application/json".parse().expect("static header"),
                );
            }
            if let Some(v) = retry_after.as_ref().and_then(|v| v.parse().ok()) {
                r.headers_mut().insert("retry-after", v);
            }
            return Ok(r);
        }
        Some(Fault::Delay { ms }) => tokio::time::sleep(Duration::from_millis(*ms)).await,
        Some(Fault::Reset) => return Err(Dropped),
        Some(Fault::Garbage) => {
            return Ok(Response::new(Full::new(Bytes::from_static(
                b"<html>502 Bad Gateway</html>",
            ))));
        }
        Some(Fault::InvalidUtf8) => {
            return Ok(Response::new(Full::new(Bytes::from_static(
                b"{\"access_token\": \"\xff\xfe\", \"token_type\": \"Bearer\"}",
            ))));
        }
        Some(Fault::NestedJson { depth }) => {
            let body = format!("{}{}", "[".repeat(*depth), "]".repeat(*depth));
            return Ok(Response::new(Full::new(Bytes::from(body))));
        }
        Some(Fault::HugeBody { bytes }) => {
            let mut r = Response::new(Full::new(Bytes::from(vec![b' '; *bytes])));
            r.headers_mut().insert(
                "content-type",
                "application/json".parse().expect("static header"),
            );
            return Ok(r);
        }
        _ => {}
    }
    let cfg = lock(&shared.cfg).clone();
    let creds = client_credentials(cfg.auth, auth_header.as_deref(), &form);
    if creds.as_ref() != Some(&(cfg.client_id.clone(), cfg.client_secret.clone())) {
        lock(&shared.inner).stats.auth_failures += 1;
        let mut r = oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
        r.headers_mut().insert(
            "www-authenticate",
            "Basic realm=\"oauth\"".parse().expect("static header"),
        );
        return Ok(r);
    }
    match form.get("grant_type").map(String::as_str) {
        Some("refresh_token") => {}
        Some("authorization_code") => return Ok(exchange_code(&shared, &cfg, &form)),
        _ => {
            return Ok(oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only refresh_token and authorization_code are supported",
            ));
        }
    }
    let presented = form.get("refresh_token").cloned().unwrap_or_default();
    let answer = rotate(&shared, &cfg, &presented, &fault);
    if fault == Some(Fault::RotateThenReset) {
        return Err(Dropped);
    }
    Ok(answer)
}

fn rotate(shared: &Shared, cfg: &EmulatorConfig, presented: &str, fault: &Option<Fault>) -> Answer {
    let mut inner = lock(&shared.inner);
    let now = SystemTime::now();
    let Some(record) = inner.refresh.get(presented) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "unknown refresh token",
        );
    };
    let family = record.family;
    if inner.revoked.contains(&family) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "refresh token revoked",
        );
    }
    if let Some((when, answer)) = &record.rotated {
        if when.elapsed() <= cfg.reuse_grace {
            let answer = answer.clone();
            inner.stats.grace_replays += 1;
            return json(StatusCode::OK, answer);
        }
        inner.stats.reuses += 1;
        inner.revoked.insert(family);
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "refresh token reused; family revoked",
        );
    }
    let previous = Rotation {
        at: now,
        previous_issued_at: record.issued_at,
        previous_lifetime: record.lifetime,
        from_bootstrap: record.bootstrap,
    };
    let mut body = issue_access(&mut inner, cfg, family, fault);
    if fault == &Some(Fault::OmitRefreshToken) {
        if let Some(r) = inner.refresh.get_mut(presented) {
            r.issued_at = now;
            r.lifetime = cfg.access_lifetime;
            r.bootstrap = false;
        }
    } else {
        let next = inner.new_refresh_token(family, false, cfg.access_lifetime);
        body["refresh_token"] = serde_json::json!(next);
        if let Some(r) = inner.refresh.get_mut(presented) {
            r.rotated = Some((Instant::now(), body.clone()));
        }
    }
    inner.stats.refreshes += 1;
    inner.rotations.push(previous);
    json(StatusCode::OK, body)
}

/// A new access token of `family`, as the body of a token answer.
fn issue_access(
    inner: &mut Inner,
    cfg: &EmulatorConfig,
    family: u64,
    fault: &Option<Fault>,
) -> serde_json::Value {
    let access = format!("blnk_at_{}", random_text(32));
    inner.access.insert(
        access.clone(),
        AccessRecord {
            family,
            expires_at: SystemTime::now() + cfg.access_lifetime,
        },
    );
    let mut body = serde_json::json!({
        "access_token": access,
        "token_type": "Bearer",
        "scope": "data:read data:write",
    });
    if fault != &Some(Fault::OmitExpiresIn) {
        body["expires_in"] = serde_json::json!(cfg.access_lifetime.as_secs().max(1));
    }
    match fault {
        Some(Fault::ExpiresIn { value }) => body["expires_in"] = value.clone(),
        Some(Fault::AccessToken { value }) => body["access_token"] = serde_json::json!(value),
        _ => {}
    }
    body
}

/// `GET /oauth/authorize`: redirects back with a code, or with the configured error.
fn authorize(shared: &Shared, req: &Request<Incoming>) -> Answer {
    let query: HashMap<String, String> =
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let cfg = lock(&shared.cfg).clone();
    // Without a valid client and redirect URI there is nowhere safe to send an error.
    let redirect = match (query.get("client_id"), query.get("redirect_uri")) {
        (Some(id), Some(uri)) if *id == cfg.client_id => match url::Url::parse(uri) {
            Ok(u) => u,
            Err(_) => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "bad redirect_uri",
                );
            }
        },
        _ => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "unknown client"),
    };
    let mut inner = lock(&shared.inner);
    let challenge = query.get("code_challenge").filter(|c| c.len() >= 43);
    let outcome = if let Some(error) = inner.authorize_error.clone() {
        Err(error)
    } else if query.get("response_type").map(String::as_str) != Some("code") {
        Err("unsupported_response_type".to_owned())
    } else if challenge.is_none()
        || query.get("code_challenge_method").map(String::as_str) != Some("S256")
    {
        Err("invalid_request".to_owned())
    } else {
        let code = random_text(24);
        inner.codes.insert(
            code.clone(),
            CodeRecord {
                challenge: challenge.cloned().unwrap_or_default(),
                redirect_uri: redirect.to_string(),
                issued: Instant::now(),
            },
        );
        Ok(code)
    };
    let mut location = redirect;
    {
        let mut q = location.query_pairs_mut();
        match &outcome {
            Ok(code) => q.append_pair("code", code),
            Err(error) => q.append_pair("error", error),
        };
        if let Some(state) = query.get("state") {
            q.append_pair("state", state);
        }
    }
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::FOUND;
    if let Ok(v) = location.as_str().parse() {
        r.headers_mut().insert("location", v);
    }
    r
}

/// `grant_type=authorization_code`: a new chain, if the code, redirect URI and PKCE
/// verifier match (RFC 6749 §4.1.3, RFC 7636 §4.6).
fn exchange_code(shared: &Shared, cfg: &EmulatorConfig, form: &HashMap<String, String>) -> Answer {
    let mut inner = lock(&shared.inner);
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    // A code is used once, whatever happens next.
    let Some(record) = inner.codes.remove(field("code")) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "unknown or used code",
        );
    };
    let digest = sha2::Sha256::digest(field("code_verifier").as_bytes());
    let expected = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest);
    if record.issued.elapsed() > CODE_LIFETIME
        || record.redirect_uri != field("redirect_uri")
        || record.challenge != expected
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "code expired, or redirect_uri or code_verifier does not match",
        );
    }
    let family = inner.new_family();
    let mut body = issue_access(&mut inner, cfg, family, &None);
    let refresh = inner.new_refresh_token(family, false, cfg.access_lifetime);
    body["refresh_token"] = serde_json::json!(refresh);
    json(StatusCode::OK, body)
}
