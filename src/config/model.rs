//! The validated configuration: what the rest of tokend reads. Built only by
//! [`super::load`], so every value here has passed validation.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize, Serializer};
use url::Url;

use crate::config::coordination::CoordinationConfig;
use crate::config::secret::{SecretReadError, SecretSource};
use crate::config::text::{duration_text, listen_text, mode_text, signal_text, spelled};

/// Where the configuration is read from when neither `-c` nor `$TOKEND_CONFIG` is given.
pub const DEFAULT_PATH: &str = "/etc/tokend/tokend.toml";
/// Blnk Cloud's token endpoint, the default `token_url`.
pub const BLNK_TOKEN_URL: &str = "https://api.cloud.blnkfinance.com/oauth/token";
/// Blnk Cloud's authorization endpoint, the default `authorize_url` with Blnk's token URL.
pub const BLNK_AUTHORIZE_URL: &str = "https://api.cloud.blnkfinance.com/oauth/authorize";
/// Blnk's refresh tokens live 30 days (Blnk's documentation), the default `refresh_token_max_age`.
pub const BLNK_REFRESH_TOKEN_MAX_AGE: Duration = Duration::from_secs(30 * 86_400);

/// The validated configuration of a whole daemon.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    pub state_dir: PathBuf,
    pub log: LogConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coordination: Option<CoordinationConfig>,
    pub credentials: BTreeMap<String, Arc<CredentialConfig>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum LogFormat {
    Text,
    Json,
}

spelled!(LogFormat {
    Text = "text",
    Json = "json",
});

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    #[serde(deserialize_with = "listen_text::deserialize")]
    pub listen: SocketAddr,
}

/// How the client authenticates to the token endpoint (design.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum ClientAuth {
    /// RFC 6749 §2.3.1: id and secret form-urlencoded, then `id:secret` base64-encoded.
    #[default]
    Basic,
    /// Exactly what `curl -u id:secret` sends.
    BasicUnencoded,
    /// `client_id` and `client_secret` in the form body.
    Post,
    /// RFC 7523 §2.2: a JWT signed with the client's private key, fresh per request.
    PrivateKeyJwt,
    /// RFC 8705 §2: the client id in the form, the certificate in the TLS handshake.
    TlsClientAuth,
}

spelled!(ClientAuth {
    Basic = "basic",
    BasicUnencoded = "basic_unencoded",
    Post = "post",
    PrivateKeyJwt = "private_key_jwt",
    TlsClientAuth = "tls_client_auth",
});

impl ClientAuth {
    /// Whether the client authenticates with a shared secret.
    pub fn uses_secret(self) -> bool {
        matches!(
            self,
            ClientAuth::Basic | ClientAuth::BasicUnencoded | ClientAuth::Post
        )
    }
}

/// What a credential's token requests ask for (design.md §12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum GrantType {
    /// A refresh-token chain (RFC 6749 §6), started by a bootstrap token or a login.
    #[default]
    RefreshToken,
    /// The client's own credentials (RFC 6749 §4.4): no chain.
    ClientCredentials,
}

spelled!(GrantType {
    RefreshToken = "refresh_token",
    ClientCredentials = "client_credentials",
});

/// A JWS algorithm for client assertions, each for its own kind of key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum AssertionAlg {
    RS256,
    ES256,
    EdDSA,
}

spelled!(AssertionAlg {
    RS256 = "RS256",
    ES256 = "ES256",
    EdDSA = "EdDSA",
});

/// How `private_key_jwt` signs its assertions (design.md §12).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AssertionConfig {
    /// A PKCS#8 PEM private key, read afresh for every request like secret files.
    #[serde(rename = "client_assertion_key_file")]
    pub key_file: PathBuf,
    /// `None`: the one the key's type calls for.
    #[serde(
        rename = "client_assertion_alg",
        skip_serializing_if = "Option::is_none"
    )]
    pub alg: Option<AssertionAlg>,
    #[serde(
        rename = "client_assertion_kid",
        skip_serializing_if = "Option::is_none"
    )]
    pub kid: Option<String>,
    /// `None`: the token URL.
    #[serde(
        rename = "client_assertion_audience",
        skip_serializing_if = "Option::is_none"
    )]
    pub audience: Option<String>,
}

/// One credential: a client, a refresh-token chain (or the client-credentials grant),
/// and where its access token goes.
#[derive(Debug, Clone, PartialEq)]
pub struct CredentialConfig {
    pub name: String,
    pub grant: GrantType,
    /// `None` when it comes from the `issuer`'s metadata (see [`crate::discovery`]).
    pub token_url: Option<Url>,
    pub client_id: String,
    /// Set exactly when `client_auth` uses a secret.
    pub client_secret: Option<SecretSource>,
    pub client_auth: ClientAuth,
    /// Set exactly with `private_key_jwt`; boxed, as most credentials have none.
    pub assertion: Option<Box<AssertionConfig>>,
    /// The bootstrap token; optional, since `tokend login` can start a chain instead.
    pub refresh_token: Option<SecretSource>,
    pub scope: Option<String>,
    /// Extra form parameters of every token request (RFC 8707's `resource`, an
    /// `audience`...); never one of tokend's own (design.md §12).
    pub token_params: BTreeMap<String, String>,
    pub state_file: PathBuf,
    pub refresh: RefreshPolicy,
    pub retry: RetryPolicy,
    pub http: HttpConfig,
    pub outputs: Vec<OutputConfig>,
    /// A directory published as one consistent set, as kubelet writes Secret volumes.
    pub publish_dir: Option<PathBuf>,
    /// Boxed: most credentials have none.
    pub on_rotate: Option<Box<HookConfig>>,
    pub login: Login,
    pub chain: ChainPolicy,
}

/// A credential's [`LoginConfig`], boxed when it has one: most have none, and every
/// credential's configuration lives as long as the process.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Login(Option<Box<LoginConfig>>);

/// What a credential without login settings reads.
static NO_LOGIN: LoginConfig = LoginConfig {
    issuer: None,
    authorize_url: None,
    redirect_uri: None,
    params: BTreeMap::new(),
};

impl std::ops::Deref for Login {
    type Target = LoginConfig;
    fn deref(&self) -> &LoginConfig {
        self.0.as_deref().unwrap_or(&NO_LOGIN)
    }
}

impl From<LoginConfig> for Login {
    fn from(login: LoginConfig) -> Self {
        Login((login != NO_LOGIN).then(|| Box::new(login)))
    }
}

/// Where `tokend login` sends the user, and where the server sends them back.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoginConfig {
    /// RFC 8414 discovery fills whichever of the two URLs is not set.
    pub issuer: Option<Url>,
    pub authorize_url: Option<Url>,
    /// Default: `http://127.0.0.1:<port>/callback`.
    pub redirect_uri: Option<Url>,
    /// Extra parameters of the authorization request (Google's `access_type`, Auth0's
    /// `audience`, RFC 8707's `resource`...); never the flow's own.
    pub params: BTreeMap<String, String>,
}

/// How long a refresh-token chain may live, and when to start warning about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChainPolicy {
    #[serde(
        rename = "refresh_token_max_age",
        skip_serializing_if = "Option::is_none",
        serialize_with = "duration_text::serialize_some"
    )]
    pub max_age: Option<Duration>,
    #[serde(with = "duration_text")]
    pub warn_before: Duration,
}

impl CredentialConfig {
    /// Whether the credential follows a refresh-token chain (the client-credentials
    /// grant has none).
    pub fn has_chain(&self) -> bool {
        self.grant == GrantType::RefreshToken
    }

    /// The file holding what the client authenticates with (its secret, or its
    /// assertion key): a change to it may fix a refused client, so it is watched while
    /// the credential is blocked.
    pub fn client_file(&self) -> Option<&Path> {
        match (&self.client_secret, &self.assertion) {
            (Some(secret), _) => secret.path(),
            (None, Some(assertion)) => Some(&assertion.key_file),
            (None, None) => None,
        }
    }

    /// The bootstrap refresh token as it is now.
    pub fn read_bootstrap(&self) -> Result<SecretString, SecretReadError> {
        match &self.refresh_token {
            Some(source) => source.read(),
            None => Err(SecretReadError::NotConfigured {
                name: self.name.clone(),
            }),
        }
    }

    /// Whether `out` is written into `publish_dir` (a bare file name there) rather than
    /// on its own: the one place that decides it.
    pub fn in_publish_dir(&self, out: &OutputConfig) -> bool {
        self.publish_dir.is_some() && is_bare_name(&out.path)
    }
}

pub(crate) fn is_bare_name(path: &Path) -> bool {
    let mut parts = path.components();
    matches!(parts.next(), Some(std::path::Component::Normal(_))) && parts.next().is_none()
}

/// What to do after each rotation, once the outputs are written.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HookConfig {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "signal_text::serialize"
    )]
    pub signal: Option<nix::sys::signal::Signal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid_file: Option<PathBuf>,
}

/// A user or group as the configuration names it, and the id it resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub given: String,
    pub id: u32,
}

impl Serialize for Account {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.given)
    }
}

/// When to refresh, as fractions of the access token's lifetime (design.md §3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RefreshPolicy {
    pub at: f64,
    pub jitter: f64,
    #[serde(with = "duration_text")]
    pub min_remaining: Duration,
    #[serde(with = "duration_text")]
    pub default_lifetime: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        RefreshPolicy {
            at: 0.75,
            jitter: 0.05,
            min_remaining: Duration::from_secs(60),
            default_lifetime: Duration::from_secs(3600),
        }
    }
}

/// Exponential backoff with full jitter between `initial` and `max`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    #[serde(with = "duration_text")]
    pub initial: Duration,
    #[serde(with = "duration_text")]
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    #[serde(with = "duration_text")]
    pub connect_timeout: Duration,
    // Boxed paths (16 bytes, not 24): every credential's configuration lives as long as
    // the process, and a few bytes more put it in the allocator's next size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<Box<Path>>,
    /// A TLS client certificate (PEM, leaf first) and its private key, for a token
    /// endpoint behind mutual TLS (RFC 8705; design.md §12).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<Box<Path>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<Box<Path>>,
    pub allow_insecure_http: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            allow_insecure_http: false,
        }
    }
}

/// What an output file holds (design.md §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum OutputFormat {
    #[default]
    Raw,
    Json,
    Env,
    Header,
}

spelled!(OutputFormat {
    Raw = "raw",
    Json = "json",
    Env = "env",
    Header = "header",
});

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutputConfig {
    pub path: PathBuf,
    pub format: OutputFormat,
    #[serde(serialize_with = "mode_text::serialize")]
    pub mode: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<Account>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<Account>,
}
