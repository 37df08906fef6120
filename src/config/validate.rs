//! From "parses" to "makes sense": the checks that turn raw values into a [`Config`],
//! each error naming its key and source.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use crate::config::claims::check_claims;
use crate::config::client::{check_grant_keys, validate_client};
use crate::config::coordination::validate_coordination;
use crate::config::error::{ConfigError, Sources};
use crate::config::model::{
    BLNK_AUTHORIZE_URL, BLNK_REFRESH_TOKEN_MAX_AGE, BLNK_TOKEN_URL, ChainPolicy, Config,
    CredentialConfig, GrantType, HttpConfig, LoginConfig, RefreshPolicy, RetryPolicy,
};
use crate::config::outputs::{validate_hook, validate_outputs};
use crate::config::raw::{RawConfig, RawCredential};
use crate::config::secret::at_most_one;

/// Validates the whole configuration.
pub fn validate(raw: RawConfig, src: &Sources) -> Result<Config, ConfigError> {
    let state_dir = raw
        .state_dir
        .unwrap_or_else(|| PathBuf::from("/var/lib/tokend"));
    if state_dir.as_os_str().is_empty() {
        return Err(src.error("state_dir", "must not be empty"));
    }
    validate_log_level(&raw.log.level).map_err(|m| src.error("log.level", m))?;
    if raw.credentials.is_empty() {
        return Err(src.error(
            "credentials",
            "no credential is configured: add a [credentials.NAME] table",
        ));
    }
    let mut credentials = BTreeMap::new();
    for (name, rc) in raw.credentials {
        let cred = validate_credential(&name, rc, &state_dir, src)?;
        credentials.insert(name, Arc::new(cred));
    }
    check_claims(&credentials, src)?;
    let coordination = match raw.coordination {
        Some(c) => {
            let timeouts: Vec<(&str, Duration)> = credentials
                .values()
                .map(|c| (c.name.as_str(), c.http.timeout))
                .collect();
            Some(validate_coordination(c, &timeouts, src)?)
        }
        None => None,
    };
    Ok(Config {
        state_dir,
        log: raw.log,
        health: raw.health,
        coordination,
        credentials,
    })
}

/// The levels `log.level` takes, alone or after `target=` in a filter directive.
const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// A level, or `tracing` filter directives such as `info,tokend::credential=debug`. A
/// bare word that is not a level would be read as a target to log at every level, and
/// everything else silenced: that is a typo (`inf`, `warnig`), not what anyone means.
fn validate_log_level(text: &str) -> Result<(), String> {
    let valid = || {
        format!(
            "use one of {}, or directives such as \"info,tokend::credential=debug\"",
            LOG_LEVELS.join(", ")
        )
    };
    if text.trim().is_empty() {
        return Err(format!("must not be empty; {}", valid()));
    }
    for directive in text.split(',').map(str::trim) {
        let level = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        if !LOG_LEVELS.contains(&level.trim().to_ascii_lowercase().as_str()) {
            return Err(format!("{directive:?} is not a level: {}", valid()));
        }
    }
    tracing_subscriber::EnvFilter::try_new(text)
        .map(|_| ())
        .map_err(|e| format!("not a valid level or filter ({e}): {}", valid()))
}

fn validate_credential(
    name: &str,
    mut rc: RawCredential,
    state_dir: &Path,
    src: &Sources,
) -> Result<CredentialConfig, ConfigError> {
    let key = |k: &str| format!("credentials.{name}.{k}");
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(src.error(
            &format!("credentials.{name}"),
            "credential names may hold only a-z, 0-9 and _",
        ));
    }
    // Checked now (values are moved out below), reported in the order of the keys.
    let server = validate_server(name, &rc, src);
    let client_id = match rc.client_id.take() {
        Some(id) if !id.is_empty() => id,
        Some(_) => return Err(src.error(&key("client_id"), "must not be empty")),
        None => return Err(src.error(&key("client_id"), "is required")),
    };
    let client = validate_client(name, &mut rc, src)?;
    check_grant_keys(name, &rc, src)?;
    let refresh_token = at_most_one(
        rc.refresh_token,
        rc.refresh_token_file,
        &key("refresh_token"),
        src,
    )?;
    let server = server?;
    let chain = ChainPolicy {
        // Zero turns the default off; a grant without a chain has no age.
        max_age: match rc.refresh_token_max_age {
            _ if rc.grant == GrantType::ClientCredentials => None,
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None => server.blnk.then_some(BLNK_REFRESH_TOKEN_MAX_AGE),
        },
        warn_before: rc.warn_before.unwrap_or(Duration::from_secs(5 * 86_400)),
    };
    if let Some(scope) = &rc.scope {
        validate_scope(scope).map_err(|m| src.error(&key("scope"), m))?;
    }
    check_params(
        &rc.token_params,
        &key("token_params"),
        &TOKEN_OWN_PARAMS,
        "a parameter tokend sends itself",
        src,
    )?;
    validate_policies(name, &rc.refresh, &rc.retry, &rc.http, src)?;
    let outputs = validate_outputs(name, rc.outputs, rc.publish_dir.as_deref(), src)?;
    let on_rotate = rc
        .on_rotate
        .map(|h| validate_hook(h, &key("on_rotate"), src).map(Box::new))
        .transpose()?;

    let state_file = rc
        .state_file
        .unwrap_or_else(|| state_dir.join(format!("{name}.json")));
    Ok(CredentialConfig {
        name: name.to_owned(),
        grant: rc.grant,
        token_url: server.token_url,
        client_id,
        client_secret: client.secret,
        client_auth: rc.client_auth,
        assertion: client.assertion,
        refresh_token,
        scope: rc.scope,
        token_params: rc.token_params,
        state_file,
        refresh: rc.refresh,
        retry: rc.retry,
        http: rc.http,
        outputs,
        publish_dir: rc.publish_dir,
        on_rotate,
        login: server.login.into(),
        chain,
    })
}

fn validate_scope(scope: &str) -> Result<(), &'static str> {
    let printable = scope
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
    if scope.trim().is_empty() || !printable {
        return Err("must be space-separated printable scope tokens");
    }
    Ok(())
}

/// Parameters of the authorization request that tokend sets itself.
const AUTHORIZE_OWN_PARAMS: [&str; 7] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
];

/// What a token request carries for tokend itself: the grants' own parameters (RFC 6749
/// §4.1.3 and §6, RFC 7636 §4.5), the client's authentication (RFC 6749 §2.3.1, RFC
/// 7523 §2.2), and `scope`, which has its own key.
const TOKEN_OWN_PARAMS: [&str; 10] = [
    "grant_type",
    "refresh_token",
    "code",
    "code_verifier",
    "redirect_uri",
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
    "scope",
];

/// Extra parameters of a request (`params`, configured at `table`): printable, and none
/// of the request's `own`.
fn check_params(
    params: &BTreeMap<String, String>,
    table: &str,
    own: &[&str],
    what: &str,
    src: &Sources,
) -> Result<(), ConfigError> {
    for (name, value) in params {
        let k = format!("{table}.{name}");
        if own.contains(&name.as_str()) {
            return Err(src.error(
                &k,
                format!(
                    "is {what}; set it through its key, or not at all ({})",
                    own.join(", ")
                ),
            ));
        }
        if name.is_empty() || value.chars().any(char::is_control) {
            return Err(src.error(&k, "names and values must be non-empty printable text"));
        }
    }
    Ok(())
}

/// The server's URLs, with Blnk Cloud's as the defaults when no issuer is given.
struct Server {
    token_url: Option<Url>,
    login: LoginConfig,
    /// The token URL is Blnk Cloud's, whose chains have a known maximum age.
    blnk: bool,
}

fn validate_server(name: &str, rc: &RawCredential, src: &Sources) -> Result<Server, ConfigError> {
    let key = |k: &str| format!("credentials.{name}.{k}");
    let insecure = rc.http.allow_insecure_http;
    let url = |k: &str, text: &Option<String>| -> Result<Option<Url>, ConfigError> {
        let Some(text) = text else { return Ok(None) };
        let url = Url::parse(text).map_err(|e| src.error(&key(k), format!("not a URL: {e}")))?;
        check_server_url(&url, insecure).map_err(|m| src.error(&key(k), m))?;
        Ok(Some(url))
    };
    let issuer = url("issuer", &rc.issuer)?;
    let explicit_token_url = url("token_url", &rc.token_url)?;
    let mut authorize_url = url("authorize_url", &rc.authorize_url)?;
    // Without an issuer, the defaults are Blnk Cloud's.
    let token_url = match (&issuer, explicit_token_url) {
        (_, Some(u)) => Some(u),
        (Some(_), None) => None,
        (None, None) => Some(Url::parse(BLNK_TOKEN_URL).expect("constant URL")),
    };
    let blnk = token_url
        .as_ref()
        .is_some_and(|u| u.as_str() == BLNK_TOKEN_URL);
    if blnk && authorize_url.is_none() && issuer.is_none() {
        authorize_url = Some(Url::parse(BLNK_AUTHORIZE_URL).expect("constant URL"));
    }
    let redirect_uri = rc
        .redirect_uri
        .as_ref()
        .map(|text| {
            let u = Url::parse(text)
                .map_err(|e| src.error(&key("redirect_uri"), format!("not a URL: {e}")))?;
            if u.fragment().is_some() {
                return Err(src.error(&key("redirect_uri"), "must not have a #fragment"));
            }
            Ok(u)
        })
        .transpose()?;
    check_params(
        &rc.authorize_params,
        &key("authorize_params"),
        &AUTHORIZE_OWN_PARAMS,
        "the flow's own parameter",
        src,
    )?;
    Ok(Server {
        token_url,
        login: LoginConfig {
            issuer,
            authorize_url,
            redirect_uri,
            params: rc.authorize_params.clone(),
        },
        blnk,
    })
}

/// The schedule, backoff and HTTP settings.
fn validate_policies(
    name: &str,
    p: &RefreshPolicy,
    retry: &RetryPolicy,
    http: &HttpConfig,
    src: &Sources,
) -> Result<(), ConfigError> {
    let key = |k: &str| format!("credentials.{name}.{k}");
    if !(p.at > 0.0 && p.at < 1.0) {
        return Err(src.error(&key("refresh.at"), "must be between 0 and 1 (exclusive)"));
    }
    if !(p.jitter >= 0.0 && p.jitter < 1.0) {
        return Err(src.error(&key("refresh.jitter"), "must be at least 0 and below 1"));
    }
    if !(p.jitter < p.at && p.at + p.jitter < 1.0) {
        // Blame the one that was changed from its default (`at`, when both were).
        let blamed =
            if p.jitter != RefreshPolicy::default().jitter && p.at == RefreshPolicy::default().at {
                "refresh.jitter"
            } else {
                "refresh.at"
            };
        return Err(src.error(
            &key(blamed),
            format!(
                "at ± jitter ({} ± {}) must stay inside (0, 1): lower refresh.at or refresh.jitter",
                p.at, p.jitter
            ),
        ));
    }
    if p.default_lifetime.is_zero() {
        return Err(src.error(&key("refresh.default_lifetime"), "must be more than 0s"));
    }
    if retry.initial.is_zero() {
        return Err(src.error(&key("retry.initial"), "must be more than 0s"));
    }
    if retry.max < retry.initial {
        return Err(src.error(&key("retry.max"), "must be at least retry.initial"));
    }
    if http.timeout.is_zero() {
        return Err(src.error(&key("http.timeout"), "must be more than 0s"));
    }
    if http.connect_timeout.is_zero() {
        return Err(src.error(&key("http.connect_timeout"), "must be more than 0s"));
    }
    if let Some(ca) = &http.ca_file {
        std::fs::metadata(ca)
            .map_err(|e| src.error(&key("http.ca_file"), format!("{}: {e}", ca.display())))?;
    }
    match (&http.client_cert_file, &http.client_key_file) {
        (Some(_), None) => {
            return Err(src.error(
                &key("http.client_key_file"),
                "is required with http.client_cert_file: the certificate's private key",
            ));
        }
        (None, Some(_)) => {
            return Err(src.error(
                &key("http.client_cert_file"),
                "is required with http.client_key_file: the certificate the key belongs to",
            ));
        }
        _ => {}
    }
    Ok(())
}

/// `https://` always; `http://` only to a loopback address and only when allowed.
pub fn check_server_url(url: &Url, allow_insecure_http: bool) -> Result<(), String> {
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials; use client_id and client_secret".into());
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
                Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                None => false,
            };
            if !loopback {
                Err("http:// is allowed only to a loopback address; use https://".into())
            } else if !allow_insecure_http {
                Err("http:// needs http.allow_insecure_http = true".into())
            } else {
                Ok(())
            }
        }
        other => Err(format!("unsupported scheme {other}:; use https://")),
    }
}
