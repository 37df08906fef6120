//! The authorization-code flow with PKCE (RFC 6749 §4.1, RFC 7636): the authorize URL,
//! the code exchange, and the new chain's first state.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use url::Url;

use crate::config::CredentialConfig;
use crate::oauth::clients::Clients;
use crate::oauth::discovery;
use crate::oauth::endpoint::{Endpoint, Grant};
use crate::oauth::login::callback::{check_callback, read_pasted, redirect, serve_callback};
use crate::oauth::login::error::LoginError;
use crate::oauth::login::handover::{self, Written};
use crate::oauth::outcome::{FailureKind, Origin, Permanent};
use crate::store::{State, bootstrap_digest};

/// What the command line asked for.
pub struct Options {
    pub no_browser: bool,
    /// The loopback port of the default redirect URI (0: any free port).
    pub port: u16,
    /// How long to wait for the browser's redirect (or the pasted URL).
    pub timeout: Duration,
}

/// What a successful login did, for the summary it prints (never a token).
pub struct Outcome {
    pub state: State,
    pub written: Written,
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
    cfg: &Arc<CredentialConfig>,
    opts: &Options,
    show_url: impl FnOnce(&Url),
) -> Result<Outcome, LoginError> {
    if !cfg.has_chain() {
        return Err(LoginError::Config(format!(
            "credential {} uses grant = \"client_credentials\": it has no refresh token to log in for, and `tokend run` asks for its tokens with the client's own credentials",
            cfg.name
        )));
    }
    let endpoint =
        Endpoint::new(cfg, &Clients::default()).map_err(|e| LoginError::Config(e.to_string()))?;
    let authorize_url = authorize_endpoint(cfg, &endpoint).await?;

    let (redirect_uri, listener) = redirect(cfg, opts.port, opts.no_browser).await?;
    let secrets = Secrets::new();
    let url = authorize_request(&authorize_url, cfg, &redirect_uri, &secrets);
    show_url(&url);
    if !opts.no_browser {
        open_browser(&url);
    }

    let (tx, mut rx) = mpsc::channel::<String>(4);
    let _server = listener.map(|l| {
        let path = redirect_uri.path().to_owned();
        tokio::spawn(serve_callback(l, path, secrets.state.clone(), tx.clone()))
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
    let mut answer = endpoint.request(grant).await.map_err(|f| {
        let message = format!("exchanging the code failed: {}", f.detail);
        match f.kind {
            FailureKind::Permanent(Permanent::Grant) => LoginError::Refused(format!(
                "{message} (the code was refused: it expired, was used, or the redirect URI or PKCE verifier did not match)"
            )),
            FailureKind::Permanent(_) => LoginError::Refused(message),
            FailureKind::Transient | FailureKind::Ambiguous => LoginError::Temporary(message),
            FailureKind::Unexpected => LoginError::Other(message),
            FailureKind::Local | FailureKind::Untrusted => LoginError::Config(message),
        }
    })?;
    let Some(refresh_token) = answer.refresh_token.take() else {
        return Err(LoginError::Refused(
            "the server issued no refresh token: allow the refresh_token grant for this client; OpenID providers also need offline_access in scope (tokend then asks for consent, as OpenID Connect requires), and some need more: authorize_params = { access_type = \"offline\" } for Google".into(),
        ));
    };
    let origin = Origin {
        sent_at,
        chain_started_at: sent_at,
        // The bootstrap token as it is now, so that the daemon does not take it for a
        // new one and replace this chain with it.
        bootstrap_sha256: cfg
            .read_bootstrap()
            .map(|t| bootstrap_digest(&t))
            .unwrap_or_default(),
    };
    let state = answer.into_state(
        Some(refresh_token),
        origin,
        cfg.refresh.default_lifetime,
        cfg.scope.clone(),
    );
    let written = handover::write(cfg, &state).await?;
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
    let meta = discovery::discover(
        endpoint.http(),
        issuer,
        cfg.http.allow_insecure_http,
        cfg.http.timeout,
    )
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
        for (name, value) in &cfg.login.params {
            q.append_pair(name, value);
        }
        // OpenID Connect Core §11: a certified provider grants offline_access (the
        // refresh token) only when the user is asked for consent.
        let offline = cfg
            .scope
            .as_deref()
            .is_some_and(|s| s.split(' ').any(|t| t == "offline_access"));
        if offline && !cfg.login.params.contains_key("prompt") {
            q.append_pair("prompt", "consent");
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn credential(extra: &str) -> CredentialConfig {
        let text = format!(
            "[credentials.c]\nissuer = \"https://id.example\"\nclient_id = \"id\"\nclient_secret = \"s3cret-value\"\n{extra}"
        );
        crate::config::load_from_str(&text, "t.toml", [])
            .unwrap()
            .credentials["c"]
            .as_ref()
            .clone()
    }

    fn query(url: &Url) -> Vec<(String, String)> {
        url.query_pairs().into_owned().collect()
    }

    #[test]
    fn offline_access_asks_for_consent_and_extra_params_are_sent() {
        let base = Url::parse("https://id.example/authorize").unwrap();
        let redirect = Url::parse("http://127.0.0.1:9/callback").unwrap();
        let s = Secrets::new();
        let has =
            |q: &[(String, String)], k: &str, v: &str| q.iter().any(|(a, b)| a == k && b == v);
        let q = query(&authorize_request(
            &base,
            &credential("scope = \"openid offline_access\""),
            &redirect,
            &s,
        ));
        assert!(has(&q, "prompt", "consent"), "{q:?}");
        let q = query(&authorize_request(
            &base,
            &credential("scope = \"openid\""),
            &redirect,
            &s,
        ));
        assert!(!q.iter().any(|(k, _)| k == "prompt"), "{q:?}");
        let cfg = credential(
            "scope = \"offline_access\"\nauthorize_params = { access_type = \"offline\", prompt = \"login consent\" }",
        );
        let q = query(&authorize_request(&base, &cfg, &redirect, &s));
        assert!(
            has(&q, "access_type", "offline") && has(&q, "prompt", "login consent"),
            "{q:?}"
        );
        assert_eq!(q.iter().filter(|(k, _)| k == "prompt").count(), 1, "{q:?}");
        let text = "[credentials.c]\nclient_id = \"id\"\nclient_secret = \"s3cret-value\"\nauthorize_params = { state = \"x\" }";
        let e = crate::config::load_from_str(text, "t.toml", []).unwrap_err();
        assert_eq!(e.key, "credentials.c.authorize_params.state", "{e}");
    }

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
}
