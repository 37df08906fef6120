//! `tokend login NAME`: the authorization-code flow with PKCE (RFC 6749 §4.1, RFC 7636)
//! and a loopback redirect (RFC 8252 §7.3), which starts a new refresh-token chain and
//! writes it exactly as the daemon would. A running daemon holds the state's lock, so
//! login hands the new state over beside it and sends that daemon SIGHUP to adopt it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use url::Url;

use crate::atomic::Perms;
use crate::config::CredentialConfig;
use crate::endpoint::{Clients, Endpoint, FailureKind, Grant, Permanent};
use crate::state::{self, FileStore, State, StateStore, StoreError, bootstrap_digest};

/// How long login waits for a running daemon to adopt what it handed over.
const ADOPTION_WAIT: Duration = Duration::from_secs(10);

/// What the command line asked for.
pub struct Options {
    pub no_browser: bool,
    /// The loopback port of the default redirect URI (0: any free port).
    pub port: u16,
    /// How long to wait for the browser's redirect (or the pasted URL).
    pub timeout: Duration,
}

/// Why a login failed; each kind has its exit code.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The configuration cannot support a login (exit 78).
    #[error("{0}")]
    Config(String),
    /// The server or the user refused (exit 77).
    #[error("{0}")]
    Refused(String),
    /// Try again later: timeout, network, server trouble (exit 75).
    #[error("{0}")]
    Temporary(String),
    /// Anything else, a mismatched `state` among them (exit 1).
    #[error("{0}")]
    Other(String),
}

/// What a successful login did, for the summary it prints (never a token).
pub struct Outcome {
    pub state: State,
    pub written: Written,
}

pub enum Written {
    /// No daemon held the state: written to the state file.
    StateFile(PathBuf),
    /// Handed over to the running daemon with this pid, which adopted it.
    Adopted(i32),
    /// Handed over beside the state file; the holder has not (yet) taken it.
    HandedOver { path: PathBuf, holder: String },
}

/// PKCE's verifier and its S256 challenge, and the `state` that ties the answer to us.
struct Secrets {
    verifier: SecretString,
    challenge: String,
    state: String,
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Secrets {
    fn new() -> Self {
        let verifier = b64url(&rand::random::<[u8; 32]>());
        let challenge = b64url(&Sha256::digest(verifier.as_bytes()));
        Secrets {
            verifier: SecretString::from(verifier),
            challenge,
            state: b64url(&rand::random::<[u8; 16]>()),
        }
    }
}

/// Runs the whole flow for one credential; `show_url` prints the authorize URL.
pub async fn login(
    cfg: &CredentialConfig,
    opts: &Options,
    show_url: impl FnOnce(&Url),
) -> Result<Outcome, LoginError> {
    let endpoint =
        Endpoint::new(cfg, &Clients::default()).map_err(|e| LoginError::Config(e.to_string()))?;
    let authorize_url = authorize_endpoint(cfg, &endpoint).await?;

    let (redirect_uri, listener) = redirect(cfg, opts).await?;
    let secrets = Secrets::new();
    let url = authorize_request(&authorize_url, cfg, &redirect_uri, &secrets);
    show_url(&url);
    if !opts.no_browser {
        open_browser(&url);
    }

    let (tx, mut rx) = mpsc::channel::<String>(4);
    let _server = listener.map(|l| {
        let path = redirect_uri.path().to_owned();
        tokio::spawn(serve_callback(l, path, tx.clone()))
    });
    let _stdin = opts.no_browser.then(|| tokio::spawn(read_pasted(tx)));
    let query = tokio::time::timeout(opts.timeout, rx.recv())
        .await
        .ok()
        .flatten()
        .ok_or_else(|| {
            LoginError::Temporary(format!(
                "no answer from the authorization server within {}; nothing was written",
                humantime::format_duration(opts.timeout)
            ))
        })?;
    let code = check_callback(&query, &secrets.state)?;

    let sent_at = SystemTime::now();
    let grant = Grant::Code {
        code: &code,
        verifier: &secrets.verifier,
        redirect_uri: redirect_uri.as_str(),
    };
    let answer = endpoint.request(grant).await.map_err(|f| {
        let message = format!("exchanging the code failed: {}", f.detail);
        match f.kind {
            FailureKind::Permanent(Permanent::Grant) => LoginError::Refused(format!(
                "{message} (the code was refused: it expired, was used, or the redirect URI or PKCE verifier did not match)"
            )),
            FailureKind::Permanent(_) => LoginError::Refused(message),
            FailureKind::Transient | FailureKind::Ambiguous => LoginError::Temporary(message),
            FailureKind::Unexpected => LoginError::Other(message),
        }
    })?;
    let Some(refresh_token) = answer.refresh_token else {
        return Err(LoginError::Refused(
            "the server issued no refresh token: allow the refresh_token grant for this client (some servers also need an offline_access scope)".into(),
        ));
    };
    let lifetime = answer.expires_in.unwrap_or(cfg.refresh.default_lifetime);
    let state = State {
        version: state::VERSION,
        refresh_token,
        access_token: Some(answer.access_token),
        token_type: answer.token_type,
        scope: answer.scope.or_else(|| cfg.scope.clone()),
        obtained_at: Some(sent_at),
        expires_at: Some(sent_at + lifetime),
        chain_started_at: sent_at,
        // The bootstrap token as it is now, so that the daemon does not take it for a
        // new one and replace this chain with it.
        bootstrap_sha256: cfg
            .read_bootstrap()
            .map(|t| bootstrap_digest(&t))
            .unwrap_or_default(),
        last_error: None,
    };
    let written = write(cfg, &state).await?;
    Ok(Outcome { state, written })
}

/// The authorization endpoint: configured, or from the issuer's metadata (which may
/// also give the token endpoint).
async fn authorize_endpoint(
    cfg: &CredentialConfig,
    endpoint: &Endpoint,
) -> Result<Url, LoginError> {
    if let (Some(url), Some(_)) = (&cfg.login.authorize_url, &cfg.token_url) {
        return Ok(url.clone());
    }
    let Some(issuer) = &cfg.login.issuer else {
        return cfg.login.authorize_url.clone().ok_or_else(|| {
            LoginError::Config(format!(
                "credentials.{}: set authorize_url (or issuer) to log in",
                cfg.name
            ))
        });
    };
    let meta = crate::discovery::discover(endpoint.http(), issuer, cfg.http.allow_insecure_http)
        .await
        .map_err(|e| LoginError::Temporary(e.to_string()))?;
    endpoint.use_discovered_token_url(meta.token_endpoint);
    if !meta.code_challenge_methods.is_empty()
        && !meta.code_challenge_methods.iter().any(|m| m == "S256")
    {
        return Err(LoginError::Config(format!(
            "{issuer} does not list PKCE S256 among its code_challenge_methods_supported"
        )));
    }
    cfg.login
        .authorize_url
        .clone()
        .or(meta.authorization_endpoint)
        .ok_or_else(|| {
            LoginError::Config(format!(
                "{issuer}'s metadata has no authorization_endpoint; set authorize_url"
            ))
        })
}

/// The redirect URI, and the loopback listener that receives it (if it can be bound).
async fn redirect(
    cfg: &CredentialConfig,
    opts: &Options,
) -> Result<(Url, Option<TcpListener>), LoginError> {
    let configured = cfg.login.redirect_uri.clone();
    let addr = match &configured {
        None => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), opts.port),
        Some(uri) => match loopback_addr(uri) {
            Some(addr) => addr,
            // Not ours to listen on (say, a hosted page): only a pasted URL comes back.
            None if opts.no_browser => return Ok((uri.clone(), None)),
            None => {
                return Err(LoginError::Config(format!(
                    "redirect_uri {uri} is not a loopback http:// address tokend can listen on; use --no-browser and paste the URL you are sent to"
                )));
            }
        },
    };
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) if opts.no_browser => {
            eprintln!("tokend: not listening on {addr} ({e}); paste the URL instead");
            let uri = configured.unwrap_or_else(|| default_redirect(addr));
            return Ok((uri, None));
        }
        Err(e) => {
            return Err(LoginError::Other(format!(
                "cannot listen on {addr} for the redirect: {e}; choose another --port, or use --no-browser"
            )));
        }
    };
    let bound = listener
        .local_addr()
        .map_err(|e| LoginError::Other(e.to_string()))?;
    Ok((
        configured.unwrap_or_else(|| default_redirect(bound)),
        Some(listener),
    ))
}

fn default_redirect(addr: SocketAddr) -> Url {
    Url::parse(&format!("http://{addr}/callback")).expect("a socket address makes a valid URL")
}

/// Where to listen for `uri`, if it is a plain-HTTP loopback address.
fn loopback_addr(uri: &Url) -> Option<SocketAddr> {
    if uri.scheme() != "http" {
        return None;
    }
    let ip = match uri.host()? {
        url::Host::Ipv4(ip) => IpAddr::V4(ip),
        url::Host::Ipv6(ip) => IpAddr::V6(ip),
        url::Host::Domain(d) if d.eq_ignore_ascii_case("localhost") => {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        }
        url::Host::Domain(_) => return None,
    };
    ip.is_loopback()
        .then(|| SocketAddr::new(ip, uri.port_or_known_default().unwrap_or(80)))
}

fn authorize_request(base: &Url, cfg: &CredentialConfig, redirect_uri: &Url, s: &Secrets) -> Url {
    let mut url = base.clone();
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", &cfg.client_id)
            .append_pair("redirect_uri", redirect_uri.as_str());
        if let Some(scope) = &cfg.scope {
            q.append_pair("scope", scope);
        }
        q.append_pair("state", &s.state)
            .append_pair("code_challenge", &s.challenge)
            .append_pair("code_challenge_method", "S256");
    }
    url
}

/// Opens the URL in a browser where there is a desktop; the URL is printed either way.
fn open_browser(url: &Url) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else if std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some()
    {
        "xdg-open"
    } else {
        return;
    };
    let _ = std::process::Command::new(opener)
        .arg(url.as_str())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

/// Answers the browser's redirect and passes its query on.
async fn serve_callback(listener: TcpListener, path: String, tx: mpsc::Sender<String>) {
    let path = Arc::new(path);
    crate::http_server::accept_loop(listener, move |stream| {
        let (path, tx) = (path.clone(), tx.clone());
        async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (path, tx) = (path.clone(), tx.clone());
                async move { Ok::<_, Infallible>(callback_page(&req, &path, &tx)) }
            });
            crate::http_server::serve_http1(stream, service).await;
        }
    })
    .await;
}

fn callback_page(
    req: &Request<Incoming>,
    path: &str,
    tx: &mpsc::Sender<String>,
) -> Response<Full<Bytes>> {
    let (status, text) = if req.uri().path() != path {
        (StatusCode::NOT_FOUND, "Not found.")
    } else {
        let query = req.uri().query().unwrap_or("").to_owned();
        let failed = query_map(&query).contains_key("error");
        let _ = tx.try_send(query);
        if failed {
            (
                StatusCode::OK,
                "tokend: the authorization failed. See the terminal.",
            )
        } else {
            (
                StatusCode::OK,
                "tokend: authorization received. You can close this window.",
            )
        }
    };
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        "text/plain; charset=utf-8".parse().expect("static header"),
    );
    r
}

/// `--no-browser`: the URL the browser was sent to, pasted on stdin.
async fn read_pasted(tx: mpsc::Sender<String>) {
    eprintln!(
        "tokend: after authorizing, paste the full URL your browser was sent to, then Enter:"
    );
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let query = line.split_once('?').map_or(line, |(_, q)| q);
        let query = query.split('#').next().unwrap_or("");
        let _ = tx.send(query.to_owned()).await;
        return;
    }
}

fn query_map(query: &str) -> HashMap<String, String> {
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

/// Checks the redirect's `state` and turns it into the code, or into the error it holds.
fn check_callback(query: &str, expected_state: &str) -> Result<SecretString, LoginError> {
    let q = query_map(query);
    let state_matches = q.get("state").map(String::as_str) == Some(expected_state);
    // An error without a state is still worth reporting; a code never is.
    if let Some(error) = q.get("error") {
        if q.contains_key("state") && !state_matches {
            return Err(mismatched_state());
        }
        return Err(authorization_error(error, q.get("error_description")));
    }
    if !state_matches {
        return Err(mismatched_state());
    }
    match q.get("code") {
        Some(code) if !code.is_empty() => Ok(SecretString::from(code.clone())),
        _ => Err(LoginError::Other(
            "the redirect carries neither a code nor an error; nothing was written".into(),
        )),
    }
}

fn mismatched_state() -> LoginError {
    LoginError::Other(
        "the redirect's state does not match this login's: it answers another login attempt, or was forged; nothing was written. Run tokend login again".into(),
    )
}

/// RFC 6749 §4.1.2.1's errors, said plainly.
fn authorization_error(code: &str, description: Option<&String>) -> LoginError {
    let detail = description
        .map(|d| {
            let clean: String = d.chars().filter(|c| !c.is_control()).take(200).collect();
            format!(" ({clean})")
        })
        .unwrap_or_default();
    let code_text: String = code
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect();
    let (kind, text) = match code {
        "access_denied" => (
            0,
            "the authorization was denied, by you or by the server's policy",
        ),
        "unauthorized_client" => (
            0,
            "this client may not use the authorization-code flow; allow it in the server's client settings",
        ),
        "unsupported_response_type" => (
            0,
            "the server does not issue authorization codes to this client",
        ),
        "invalid_scope" => (
            0,
            "the requested scope is invalid or not allowed; check scope",
        ),
        "invalid_request" => (
            1,
            "the server found the request malformed: check client_id, redirect_uri (it must be registered exactly) and authorize_url",
        ),
        "server_error" => (2, "the authorization server failed; try again"),
        "temporarily_unavailable" => (
            2,
            "the authorization server is busy or down; try again later",
        ),
        _ => (1, "the authorization server refused"),
    };
    let message = format!("{text}: error={code_text}{detail}; nothing was written");
    match kind {
        0 => LoginError::Refused(message),
        2 => LoginError::Temporary(message),
        _ => LoginError::Other(message),
    }
}

/// Who must own what login writes: the owner of the state directory when login runs as
/// root and the daemon as someone else (systemd's `DynamicUser`, a service account), so
/// that the daemon can read its state and take its lock.
fn daemon_owner(cfg: &CredentialConfig) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let dir = cfg.state_file.parent()?;
    let meta = std::fs::metadata(dir).ok()?;
    (nix::unistd::geteuid().is_root() && meta.uid() != 0).then(|| (meta.uid(), meta.gid()))
}

/// Writes the new state as the daemon would; hands it over if a daemon holds the lock.
async fn write(cfg: &CredentialConfig, state: &State) -> Result<Written, LoginError> {
    let failed = |e: StoreError| {
        LoginError::Other(format!(
            "the new refresh token could not be saved: {e}; log in again once that is fixed"
        ))
    };
    let owner = daemon_owner(cfg);
    let perms = Perms {
        mode: 0o600,
        uid: owner.map(|o| o.0),
        gid: owner.map(|o| o.1),
    };
    let holder = match FileStore::open(&cfg.state_file) {
        Ok(mut store) => {
            state::write_state_file(&cfg.state_file, state, &perms).map_err(failed)?;
            if let Some((uid, gid)) = owner {
                // The lock file may be new, made by us; the daemon must be able to open it.
                let _ = std::os::unix::fs::chown(
                    state::lock_path(&cfg.state_file),
                    Some(uid),
                    Some(gid),
                );
            }
            // A stale handover from an earlier login must not replace this chain.
            let _ = store.clear_handover();
            return Ok(Written::StateFile(cfg.state_file.clone()));
        }
        Err(StoreError::Locked { holder, .. }) => holder,
        Err(e) => return Err(failed(e)),
    };
    let handover = state::handover_path(&cfg.state_file);
    state::write_state_file(&handover, state, &perms).map_err(failed)?;
    let Some(pid) = state::local_holder_pid(&holder) else {
        return Ok(Written::HandedOver {
            path: handover,
            holder,
        });
    };
    // The daemon adopts a handover on SIGHUP (a reload that keeps everything else).
    let signalled = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    );
    if signalled.is_ok() {
        let start = std::time::Instant::now();
        while start.elapsed() < ADOPTION_WAIT {
            if !handover.exists() {
                return Ok(Written::Adopted(pid));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(Written::HandedOver {
        path: handover,
        holder,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn pkce_challenge_is_s256_of_the_verifier() {
        let s = Secrets::new();
        assert_eq!(s.verifier.expose_secret().len(), 43);
        assert_eq!(
            s.challenge,
            b64url(&Sha256::digest(s.verifier.expose_secret().as_bytes()))
        );
        assert_ne!(Secrets::new().state, s.state);
    }

    #[test]
    fn callbacks_are_checked() {
        assert_eq!(
            check_callback("code=abc&state=s1", "s1")
                .unwrap()
                .expose_secret(),
            "abc"
        );
        assert!(
            matches!(check_callback("code=abc&state=s2", "s1"), Err(LoginError::Other(m)) if m.contains("state does not match"))
        );
        assert!(matches!(
            check_callback("code=abc", "s1"),
            Err(LoginError::Other(_))
        ));
        let denied = check_callback(
            "error=access_denied&state=s1&error_description=no%0Athanks",
            "s1",
        )
        .unwrap_err();
        assert!(
            matches!(&denied, LoginError::Refused(m) if m.contains("denied") && m.contains("(nothanks)")),
            "{denied}"
        );
        assert!(matches!(
            check_callback("error=access_denied&state=zz", "s1"),
            Err(LoginError::Other(_))
        ));
        assert!(matches!(
            check_callback("error=temporarily_unavailable", "s1"),
            Err(LoginError::Temporary(_))
        ));
    }

    #[test]
    fn loopback_redirects_only() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert_eq!(
            loopback_addr(&u("http://127.0.0.1:8976/cb")),
            Some("127.0.0.1:8976".parse().unwrap())
        );
        assert_eq!(
            loopback_addr(&u("http://localhost/cb")),
            Some("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(
            loopback_addr(&u("http://[::1]:9/cb")),
            Some("[::1]:9".parse().unwrap())
        );
        assert_eq!(loopback_addr(&u("https://127.0.0.1/cb")), None);
        assert_eq!(loopback_addr(&u("http://example.com/cb")), None);
    }
}
