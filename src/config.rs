//! Configuration: the TOML file plus `TOKEND_` environment overrides, typed and validated.
//!
//! Loading happens in two steps, as in rathole: `serde` turns the merged sources into
//! raw structs (unknown keys are errors), then `validate` turns "parses" into "makes
//! sense". Every error names the key path and the source it came from.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use url::Url;

/// Where the configuration is read from when neither `-c` nor `$TOKEND_CONFIG` is given.
pub const DEFAULT_PATH: &str = "/etc/tokend/tokend.toml";
/// Blnk Cloud's token endpoint, the default `token_url`.
pub const BLNK_TOKEN_URL: &str = "https://api.cloud.blnkfinance.com/oauth/token";
/// Blnk Cloud's authorization endpoint, the default `authorize_url` with Blnk's token URL.
pub const BLNK_AUTHORIZE_URL: &str = "https://api.cloud.blnkfinance.com/oauth/authorize";
/// Blnk's refresh tokens live 30 days (BLNK-OAUTH.md), the default `refresh_token_max_age`.
pub const BLNK_REFRESH_TOKEN_MAX_AGE: Duration = Duration::from_secs(30 * 86_400);
const ENV_PREFIX: &str = "TOKEND_";
/// Environment variables with the prefix that are not configuration keys.
const ENV_NOT_CONFIG: &[&str] = &["TOKEND_CONFIG"];

/// A configuration that failed to load or validate: which key, from where, and why.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {key}: {message}")]
pub struct ConfigError {
    pub source_name: String,
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(
        source_name: impl Into<String>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ConfigError {
            source_name: source_name.into(),
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The validated configuration of a whole daemon.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    pub state_dir: PathBuf,
    pub log: LogConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthConfig>,
    pub credentials: BTreeMap<String, CredentialConfig>,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    pub listen: SocketAddr,
}

/// How the client authenticates to the token endpoint (SPEC §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// RFC 6749 §2.3.1: id and secret form-urlencoded, then `id:secret` base64-encoded.
    #[default]
    Basic,
    /// Exactly what `curl -u id:secret` sends.
    BasicUnencoded,
    /// `client_id` and `client_secret` in the form body.
    Post,
}

/// A secret given inline or read from a file each time it is needed.
#[derive(Debug, Clone)]
pub enum SecretSource {
    Inline(SecretString),
    File(PathBuf),
}

impl PartialEq for SecretSource {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (SecretSource::Inline(a), SecretSource::Inline(b)) => {
                a.expose_secret() == b.expose_secret()
            }
            (SecretSource::File(a), SecretSource::File(b)) => a == b,
            _ => false,
        }
    }
}

/// Errors reading a secret from its source.
#[derive(Debug, thiserror::Error)]
pub enum SecretReadError {
    #[error("cannot read {path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{path} is empty")]
    Empty { path: PathBuf },
    #[error("{path} holds characters not allowed in a token or secret")]
    Invalid { path: PathBuf },
    #[error(
        "neither refresh_token nor refresh_token_file is set; get a first token with `tokend login {name}`"
    )]
    NotConfigured { name: String },
}

impl SecretSource {
    /// The secret's current value; a file is read afresh and trimmed of surrounding whitespace.
    pub fn read(&self) -> Result<SecretString, SecretReadError> {
        match self {
            SecretSource::Inline(s) => Ok(s.clone()),
            SecretSource::File(path) => {
                let raw = std::fs::read(path).map_err(|err| SecretReadError::Io {
                    path: path.clone(),
                    err,
                })?;
                let text = String::from_utf8(raw)
                    .map_err(|_| SecretReadError::Invalid { path: path.clone() })?;
                let trimmed = text.trim();
                if trimmed.is_empty() {
                    return Err(SecretReadError::Empty { path: path.clone() });
                }
                if !trimmed.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                    return Err(SecretReadError::Invalid { path: path.clone() });
                }
                Ok(SecretString::from(trimmed.to_owned()))
            }
        }
    }

    /// The file behind this secret, if any (watched while a credential is blocked).
    pub fn path(&self) -> Option<&Path> {
        match self {
            SecretSource::File(p) => Some(p),
            SecretSource::Inline(_) => None,
        }
    }
}

/// One credential: a client, a refresh-token chain, and where its access token goes.
#[derive(Debug, Clone, PartialEq)]
pub struct CredentialConfig {
    pub name: String,
    /// `None` when it comes from the `issuer`'s metadata (see [`crate::discovery`]).
    pub token_url: Option<Url>,
    pub client_id: String,
    pub client_secret: SecretSource,
    pub client_auth: ClientAuth,
    /// The bootstrap token; optional, since `tokend login` can start a chain instead.
    pub refresh_token: Option<SecretSource>,
    pub scope: Option<String>,
    pub state_file: PathBuf,
    pub refresh: RefreshPolicy,
    pub retry: RetryPolicy,
    pub http: HttpConfig,
    pub outputs: Vec<OutputConfig>,
    /// A directory published as one consistent set, as kubelet writes Secret volumes.
    pub publish_dir: Option<PathBuf>,
    pub on_rotate: Option<HookConfig>,
    pub login: LoginConfig,
    pub chain: ChainPolicy,
}

/// Where `tokend login` sends the user, and where the server sends them back.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoginConfig {
    /// RFC 8414 discovery fills whichever of the two URLs is not set.
    pub issuer: Option<Url>,
    pub authorize_url: Option<Url>,
    /// Default: `http://127.0.0.1:<port>/callback`.
    pub redirect_uri: Option<Url>,
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

fn is_bare_name(path: &Path) -> bool {
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

/// A credential as `check` prints it: the keys of the file, inline secrets redacted.
#[derive(Serialize)]
struct CredentialView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    token_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    authorize_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    redirect_uri: Option<&'a str>,
    client_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret_file: Option<&'a Path>,
    client_auth: ClientAuth,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token_file: Option<&'a Path>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
    state_file: &'a Path,
    #[serde(flatten)]
    chain: &'a ChainPolicy,
    refresh: &'a RefreshPolicy,
    retry: &'a RetryPolicy,
    http: &'a HttpConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    publish_dir: Option<&'a Path>,
    #[serde(skip_serializing_if = "Option::is_none")]
    on_rotate: Option<&'a HookConfig>,
    outputs: &'a [OutputConfig],
}

impl Serialize for CredentialConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let inline =
            |src: &SecretSource| matches!(src, SecretSource::Inline(_)).then_some("[redacted]");
        CredentialView {
            token_url: self.token_url.as_ref().map(Url::as_str),
            issuer: self.login.issuer.as_ref().map(Url::as_str),
            authorize_url: self.login.authorize_url.as_ref().map(Url::as_str),
            redirect_uri: self.login.redirect_uri.as_ref().map(Url::as_str),
            client_id: &self.client_id,
            client_secret: inline(&self.client_secret),
            client_secret_file: self.client_secret.path(),
            client_auth: self.client_auth,
            refresh_token: self.refresh_token.as_ref().and_then(inline),
            refresh_token_file: self.refresh_token.as_ref().and_then(SecretSource::path),
            scope: self.scope.as_deref(),
            state_file: &self.state_file,
            chain: &self.chain,
            refresh: &self.refresh,
            retry: &self.retry,
            http: &self.http,
            publish_dir: self.publish_dir.as_deref(),
            on_rotate: self.on_rotate.as_ref(),
            outputs: &self.outputs,
        }
        .serialize(s)
    }
}

/// When to refresh, as fractions of the access token's lifetime (SPEC §3).
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    pub allow_insecure_http: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            ca_file: None,
            allow_insecure_http: false,
        }
    }
}

/// What an output file holds (SPEC §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    #[default]
    Raw,
    Json,
    Env,
    Header,
}

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

// ---- raw forms, as they come out of serde ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_dir: Option<PathBuf>,
    #[serde(default)]
    log: LogConfig,
    health: Option<HealthConfig>,
    #[serde(default)]
    credentials: BTreeMap<String, RawCredential>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredential {
    token_url: Option<String>,
    issuer: Option<String>,
    authorize_url: Option<String>,
    redirect_uri: Option<String>,
    #[serde(default, with = "duration_text::option")]
    refresh_token_max_age: Option<Duration>,
    #[serde(default, with = "duration_text::option")]
    warn_before: Option<Duration>,
    client_id: Option<String>,
    client_secret: Option<SecretString>,
    client_secret_file: Option<PathBuf>,
    #[serde(default)]
    client_auth: ClientAuth,
    refresh_token: Option<SecretString>,
    refresh_token_file: Option<PathBuf>,
    scope: Option<String>,
    state_file: Option<PathBuf>,
    #[serde(default)]
    refresh: RefreshPolicy,
    #[serde(default)]
    retry: RetryPolicy,
    #[serde(default)]
    http: HttpConfig,
    #[serde(default)]
    outputs: Vec<RawOutput>,
    publish_dir: Option<PathBuf>,
    on_rotate: Option<RawHook>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHook {
    #[serde(default)]
    command: Vec<String>,
    #[serde(default = "default_hook_timeout", with = "duration_text")]
    timeout: Duration,
    signal: Option<String>,
    pid_file: Option<PathBuf>,
}

fn default_hook_timeout() -> Duration {
    Duration::from_secs(30)
}

/// A user or group by name or numeric id (TOML integer or a string of digits).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawAccount {
    Id(u32),
    Name(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    path: PathBuf,
    #[serde(default)]
    format: OutputFormat,
    #[serde(
        default = "default_mode_text",
        deserialize_with = "mode_text::deserialize"
    )]
    mode: String,
    owner: Option<RawAccount>,
    group: Option<RawAccount>,
}

fn default_mode_text() -> String {
    "0640".into()
}

// ---- loading ----

/// Where configuration values came from, for error messages.
struct Sources {
    env: config::Map<String, String>,
    file: String,
}

impl Sources {
    /// The variable that set `key`, or else the file.
    fn origin_of(&self, key: &str) -> String {
        let var = env_var_for(key);
        if self.env.contains_key(&var) {
            var
        } else {
            self.file.clone()
        }
    }

    fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.origin_of(key), key, message)
    }
}

fn env_var_for(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "__").to_uppercase())
}

/// Reads `path` (TOML) and the `TOKEND_` environment, then validates.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with_env(path, std::env::vars())
}

/// As [`load`], with the environment given explicitly (tests).
pub fn load_with_env(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let file_name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(&file_name, "(file)", format!("cannot read: {e}")))?;
    load_from_str(&text, &file_name, env)
}

/// Parses TOML `text` named `file_name`, merges the environment, validates.
pub fn load_from_str(
    text: &str,
    file_name: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let env_map: config::Map<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && !ENV_NOT_CONFIG.contains(&k.as_str()))
        .collect();
    let merged = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix("TOKEND")
                .prefix_separator("_")
                .separator("__")
                .source(Some(env_map.clone())),
        )
        .build()
        .map_err(|e| ConfigError::new(file_name, "(file)", one_line(&e.to_string())))?;
    let sources = Sources {
        env: env_map,
        file: file_name.to_owned(),
    };
    let raw: RawConfig = serde_path_to_error::deserialize(merged).map_err(|e| {
        let key = e.path().to_string();
        let message = one_line(&strip_config_suffix(&e.inner().to_string()));
        sources.error(&key, message)
    })?;
    validate(raw, &sources)
}

/// The `config` crate appends its own location to some messages; we give ours instead.
fn strip_config_suffix(message: &str) -> String {
    match message.find(" for key `") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn validate(raw: RawConfig, src: &Sources) -> Result<Config, ConfigError> {
    let state_dir = raw
        .state_dir
        .unwrap_or_else(|| PathBuf::from("/var/lib/tokend"));
    if raw.log.level.trim().is_empty() {
        return Err(src.error("log.level", "must not be empty"));
    }
    tracing_subscriber::EnvFilter::try_new(&raw.log.level)
        .map_err(|e| src.error("log.level", format!("not a valid level or filter: {e}")))?;
    let mut credentials = BTreeMap::new();
    for (name, rc) in raw.credentials {
        let cred = validate_credential(&name, rc, &state_dir, src)?;
        credentials.insert(name, cred);
    }
    let mut seen: BTreeMap<PathBuf, String> = BTreeMap::new();
    for c in credentials.values() {
        if let Some(other) = seen.insert(c.state_file.clone(), c.name.clone()) {
            return Err(src.error(
                &format!("credentials.{}.state_file", c.name),
                format!(
                    "{} is also the state file of credential {other}",
                    c.state_file.display()
                ),
            ));
        }
    }
    Ok(Config {
        state_dir,
        log: raw.log,
        health: raw.health,
        credentials,
    })
}

fn validate_credential(
    name: &str,
    rc: RawCredential,
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
    let client_id = match rc.client_id {
        Some(id) if !id.is_empty() => id,
        Some(_) => return Err(src.error(&key("client_id"), "must not be empty")),
        None => return Err(src.error(&key("client_id"), "is required")),
    };
    let client_secret = exactly_one(
        rc.client_secret,
        rc.client_secret_file,
        &key("client_secret"),
        src,
    )?;
    let refresh_token = at_most_one(
        rc.refresh_token,
        rc.refresh_token_file,
        &key("refresh_token"),
        src,
    )?;

    let insecure = rc.http.allow_insecure_http;
    let url = |k: &str, text: Option<String>| -> Result<Option<Url>, ConfigError> {
        let Some(text) = text else { return Ok(None) };
        let url = Url::parse(&text).map_err(|e| src.error(&key(k), format!("not a URL: {e}")))?;
        check_server_url(&url, insecure).map_err(|m| src.error(&key(k), m))?;
        Ok(Some(url))
    };
    let issuer = url("issuer", rc.issuer)?;
    let explicit_token_url = url("token_url", rc.token_url)?;
    let mut authorize_url = url("authorize_url", rc.authorize_url)?;
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
        .map(|text| {
            let u = Url::parse(&text)
                .map_err(|e| src.error(&key("redirect_uri"), format!("not a URL: {e}")))?;
            if u.fragment().is_some() {
                return Err(src.error(&key("redirect_uri"), "must not have a #fragment"));
            }
            Ok(u)
        })
        .transpose()?;
    let chain = ChainPolicy {
        // Zero turns the default off.
        max_age: match rc.refresh_token_max_age {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None => blnk.then_some(BLNK_REFRESH_TOKEN_MAX_AGE),
        },
        warn_before: rc.warn_before.unwrap_or(Duration::from_secs(5 * 86_400)),
    };

    if let Some(scope) = &rc.scope
        && (scope.trim().is_empty()
            || !scope
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\'))
    {
        return Err(src.error(
            &key("scope"),
            "must be space-separated printable scope tokens",
        ));
    }

    let p = &rc.refresh;
    if !(p.at > 0.0 && p.at < 1.0) {
        return Err(src.error(&key("refresh.at"), "must be between 0 and 1 (exclusive)"));
    }
    if !(p.jitter >= 0.0 && p.jitter < p.at && p.at + p.jitter < 1.0) {
        return Err(src.error(
            &key("refresh.jitter"),
            "must be at least 0 and keep at ± jitter inside (0, 1)",
        ));
    }
    if p.default_lifetime.is_zero() {
        return Err(src.error(&key("refresh.default_lifetime"), "must be more than 0s"));
    }
    if rc.retry.initial.is_zero() {
        return Err(src.error(&key("retry.initial"), "must be more than 0s"));
    }
    if rc.retry.max < rc.retry.initial {
        return Err(src.error(&key("retry.max"), "must be at least retry.initial"));
    }
    if rc.http.timeout.is_zero() {
        return Err(src.error(&key("http.timeout"), "must be more than 0s"));
    }
    if rc.http.connect_timeout.is_zero() {
        return Err(src.error(&key("http.connect_timeout"), "must be more than 0s"));
    }
    if let Some(ca) = &rc.http.ca_file {
        std::fs::metadata(ca)
            .map_err(|e| src.error(&key("http.ca_file"), format!("{}: {e}", ca.display())))?;
    }

    if let Some(dir) = &rc.publish_dir
        && (!dir.is_absolute() || dir.parent().is_none())
    {
        return Err(src.error(
            &key("publish_dir"),
            "must be an absolute path to a directory (not /)",
        ));
    }
    let mut outputs = Vec::new();
    for (i, o) in rc.outputs.into_iter().enumerate() {
        let okey = |k: &str| format!("credentials.{name}.outputs[{i}].{k}");
        let mode = parse_mode(&o.mode).map_err(|m| src.error(&okey("mode"), m))?;
        if o.path.as_os_str().is_empty() || o.path.file_name().is_none() {
            return Err(src.error(&okey("path"), "must name a file"));
        }
        if let Some(dir) = &rc.publish_dir {
            if is_bare_name(&o.path) && o.path.to_string_lossy().starts_with("..") {
                return Err(src.error(
                    &okey("path"),
                    "names starting with .. are publish_dir's own",
                ));
            }
            if o.path.starts_with(dir) {
                return Err(src.error(
                    &okey("path"),
                    format!(
                        "inside publish_dir: give just the file name, as in path = {:?}",
                        o.path.file_name().unwrap_or_default()
                    ),
                ));
            }
        }
        let owner = o
            .owner
            .map(|a| resolve_account(a, AccountKind::User))
            .transpose()
            .map_err(|m| src.error(&okey("owner"), m))?;
        let group = o
            .group
            .map(|a| resolve_account(a, AccountKind::Group))
            .transpose()
            .map_err(|m| src.error(&okey("group"), m))?;
        if outputs.iter().any(|x: &OutputConfig| x.path == o.path) {
            return Err(src.error(
                &okey("path"),
                format!("{} is already an output", o.path.display()),
            ));
        }
        outputs.push(OutputConfig {
            path: o.path,
            format: o.format,
            mode,
            owner,
            group,
        });
    }
    let on_rotate = rc
        .on_rotate
        .map(|h| validate_hook(h, &key("on_rotate"), src))
        .transpose()?;

    let state_file = rc
        .state_file
        .unwrap_or_else(|| state_dir.join(format!("{name}.json")));
    if outputs.iter().any(|o| o.path == state_file) {
        return Err(src.error(&key("outputs"), "an output may not be the state file"));
    }
    if let Some(dir) = &rc.publish_dir
        && state_file.starts_with(dir)
    {
        return Err(src.error(
            &key("publish_dir"),
            "must not hold the state file: it is for what applications read",
        ));
    }
    Ok(CredentialConfig {
        name: name.to_owned(),
        token_url,
        client_id,
        client_secret,
        client_auth: rc.client_auth,
        refresh_token,
        scope: rc.scope,
        state_file,
        refresh: rc.refresh,
        retry: rc.retry,
        http: rc.http,
        outputs,
        publish_dir: rc.publish_dir,
        on_rotate,
        login: LoginConfig {
            issuer,
            authorize_url,
            redirect_uri,
        },
        chain,
    })
}

fn validate_hook(h: RawHook, key: &str, src: &Sources) -> Result<HookConfig, ConfigError> {
    let sub = |k: &str| format!("{key}.{k}");
    if h.command.first().is_some_and(|p| p.is_empty()) {
        return Err(src.error(&sub("command"), "the program must not be empty"));
    }
    if h.timeout.is_zero() {
        return Err(src.error(&sub("timeout"), "must be more than 0s"));
    }
    let signal = h
        .signal
        .map(|text| parse_signal(&text))
        .transpose()
        .map_err(|m| src.error(&sub("signal"), m))?;
    match (&signal, &h.pid_file) {
        (Some(_), None) => {
            return Err(src.error(&sub("pid_file"), "is required with on_rotate.signal"));
        }
        (None, Some(_)) => {
            return Err(src.error(&sub("signal"), "is required with on_rotate.pid_file"));
        }
        _ => {}
    }
    if h.command.is_empty() && signal.is_none() {
        return Err(src.error(key, "set command, or signal and pid_file"));
    }
    Ok(HookConfig {
        command: h.command,
        timeout: h.timeout,
        signal,
        pid_file: h.pid_file,
    })
}

/// `"SIGHUP"` or `"HUP"`.
fn parse_signal(text: &str) -> Result<nix::sys::signal::Signal, String> {
    let upper = text.trim().to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse()
        .map_err(|_| format!("{text:?} is not a signal name such as \"SIGHUP\""))
}

mod signal_text {
    pub fn serialize<S: serde::Serializer>(
        signal: &Option<nix::sys::signal::Signal>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match signal {
            Some(sig) => s.serialize_str(sig.as_str()),
            None => s.serialize_none(),
        }
    }
}

#[derive(Clone, Copy)]
enum AccountKind {
    User,
    Group,
}

/// Resolves a user or group name to its id now, so that `check` catches a typo.
fn resolve_account(raw: RawAccount, kind: AccountKind) -> Result<Account, String> {
    let name = match raw {
        RawAccount::Id(id) => {
            return Ok(Account {
                given: id.to_string(),
                id,
            });
        }
        RawAccount::Name(name) => name,
    };
    if let Ok(id) = name.parse::<u32>() {
        return Ok(Account { given: name, id });
    }
    let (what, found) = match kind {
        AccountKind::User => (
            "user",
            nix::unistd::User::from_name(&name).map(|u| u.map(|u| u.uid.as_raw())),
        ),
        AccountKind::Group => (
            "group",
            nix::unistd::Group::from_name(&name).map(|g| g.map(|g| g.gid.as_raw())),
        ),
    };
    match found {
        Ok(Some(id)) => Ok(Account { given: name, id }),
        Ok(None) => Err(format!("no {what} named {name:?} on this system")),
        Err(e) => Err(format!("cannot look up {what} {name:?}: {e}")),
    }
}

/// Like [`exactly_one`], but both absent is fine.
fn at_most_one(
    inline: Option<SecretString>,
    file: Option<PathBuf>,
    key: &str,
    src: &Sources,
) -> Result<Option<SecretSource>, ConfigError> {
    if inline.is_none() && file.is_none() {
        return Ok(None);
    }
    exactly_one(inline, file, key, src).map(Some)
}

fn exactly_one(
    inline: Option<SecretString>,
    file: Option<PathBuf>,
    key: &str,
    src: &Sources,
) -> Result<SecretSource, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(src.error(
            key,
            format!("set exactly one of {key} and {key}_file, not both"),
        )),
        (None, None) => Err(src.error(key, format!("one of {key} or {key}_file is required"))),
        (Some(s), None) if s.expose_secret().trim().is_empty() => {
            Err(src.error(key, "must not be empty"))
        }
        (Some(s), None) => Ok(SecretSource::Inline(s)),
        (None, Some(p)) => Ok(SecretSource::File(p)),
    }
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

fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if !digits.is_empty() && m <= 0o777 => Ok(m),
        _ => Err(format!(
            "{text:?} is not an octal file mode such as \"0640\""
        )),
    }
}

/// File modes as octal strings (`"0640"`). A TOML integer is refused: TOML reads
/// `0o640` as 416 and `640` as decimal, so no integer says what the user meant.
mod mode_text {
    use std::fmt;

    pub fn serialize<S: serde::Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{mode:04o}"))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = String;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an octal file mode as a string, such as \"0640\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
                Ok(v.to_owned())
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
                Err(E::custom(format!(
                    "got the integer {v}; write the mode as a string, such as mode = \"0640\" \
                     (TOML reads 0o640 as 416 and 640 as decimal)"
                )))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
                self.visit_i64(v as i64)
            }
        }
        // `deserialize_any`: the config crate turns numbers into strings when asked for one.
        d.deserialize_any(V)
    }
}

/// Durations as humantime strings (`"90s"`, `"1h 30m"`).
mod duration_text {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn serialize_some<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => serialize(d, s),
            None => s.serialize_none(),
        }
    }

    /// For optional keys.
    pub mod option {
        use super::*;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            super::deserialize(d).map(Some)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"90s\", \"5m\" or \"1h 30m\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
                humantime::parse_duration(v).map_err(|e| {
                    E::custom(format!(
                        "{v:?} is not a duration such as \"90s\" or \"5m\" ({e})"
                    ))
                })
            }
        }
        d.deserialize_str(V)
    }
}

impl Config {
    /// The effective configuration as TOML, every secret redacted (for `tokend check`).
    pub fn redacted_toml(&self) -> String {
        toml::to_string_pretty(self)
            .unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        state_dir = "/tmp/x"
        [credentials.blnk]
        client_id = "id"
        client_secret = "s3cret"
        refresh_token = "blnk_rt_1"
    "#;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        load_from_str(
            text,
            "t.toml",
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = load(MINIMAL, &[]).unwrap();
        let b = &c.credentials["blnk"];
        assert_eq!(b.token_url.as_ref().unwrap().as_str(), BLNK_TOKEN_URL);
        assert_eq!(
            b.login.authorize_url.as_ref().unwrap().as_str(),
            BLNK_AUTHORIZE_URL
        );
        assert_eq!(b.chain.max_age, Some(BLNK_REFRESH_TOKEN_MAX_AGE));
        assert_eq!(b.state_file, PathBuf::from("/tmp/x/blnk.json"));
        assert_eq!(b.refresh, RefreshPolicy::default());
        assert_eq!(b.client_auth, ClientAuth::Basic);
    }

    #[test]
    fn environment_overrides_file_and_is_named_in_errors() {
        let c = load(
            MINIMAL,
            &[
                ("TOKEND_CREDENTIALS__BLNK__CLIENT_ID", "other"),
                ("TOKEND_CONFIG", "/x"),
            ],
        )
        .unwrap();
        assert_eq!(c.credentials["blnk"].client_id, "other");
        let e = load(MINIMAL, &[("TOKEND_CREDENTIALS__BLNK__REFRESH__AT", "2")]).unwrap_err();
        assert_eq!(e.source_name, "TOKEND_CREDENTIALS__BLNK__REFRESH__AT");
        assert_eq!(e.key, "credentials.blnk.refresh.at");
        let e = load(MINIMAL, &[("TOKEND_CREDENTIALS__BLNK__RETRY__MAX", "soon")]).unwrap_err();
        assert_eq!(e.key, "credentials.blnk.retry.max", "{e}");
        assert_eq!(e.source_name, "TOKEND_CREDENTIALS__BLNK__RETRY__MAX");
    }

    #[test]
    fn errors_name_key_and_file() {
        let e = load(
            &MINIMAL.replace("client_id = \"id\"", "client_idd = \"id\""),
            &[],
        )
        .unwrap_err();
        assert_eq!(
            (e.source_name.as_str(), e.key.as_str()),
            ("t.toml", "credentials.blnk.client_idd"),
            "{e}"
        );
        let e = load(&MINIMAL.replace("client_id = \"id\"", ""), &[]).unwrap_err();
        assert_eq!(e.key, "credentials.blnk.client_id");
        assert!(e.to_string().contains("is required"), "{e}");
    }

    #[test]
    fn secrets_are_not_in_check_output() {
        let c = load(MINIMAL, &[]).unwrap();
        let out = c.redacted_toml();
        assert!(
            !out.contains("s3cret") && !out.contains("blnk_rt_1"),
            "{out}"
        );
        assert!(out.contains("[redacted]"));
    }

    #[test]
    fn owners_hooks_and_publish_dir_are_checked() {
        let with = |extra: &str| load(&format!("{MINIMAL}{extra}"), &[]);
        let c = with(
            r#"
            publish_dir = "/run/t"
            [credentials.blnk.on_rotate]
            command = ["/bin/true", "x"]
            signal = "hup"
            pid_file = "/run/app.pid"
            [[credentials.blnk.outputs]]
            path = "access_token"
            owner = "root"
            group = 0
            "#,
        )
        .unwrap();
        let b = &c.credentials["blnk"];
        assert_eq!(b.outputs[0].owner.as_ref().unwrap().id, 0);
        assert_eq!(b.outputs[0].group.as_ref().unwrap().given, "0");
        assert!(b.in_publish_dir(&b.outputs[0]));
        let hook = b.on_rotate.as_ref().unwrap();
        assert_eq!(hook.signal, Some(nix::sys::signal::Signal::SIGHUP));
        assert_eq!(hook.timeout, Duration::from_secs(30));
        // What `check` prints loads again to the same configuration.
        assert_eq!(
            load(&c.redacted_toml(), &[]).unwrap().credentials["blnk"].on_rotate,
            b.on_rotate
        );

        let cases = [
            (
                "[[credentials.blnk.outputs]]\npath = \"/o\"\nowner = \"no-such-user-x\"",
                "credentials.blnk.outputs[0].owner",
                "no user named",
            ),
            (
                "[[credentials.blnk.outputs]]\npath = \"/o\"\ngroup = \"no-such-group-x\"",
                "credentials.blnk.outputs[0].group",
                "no group named",
            ),
            (
                "[credentials.blnk.on_rotate]\nsignal = \"SIGHUP\"",
                "credentials.blnk.on_rotate.pid_file",
                "is required",
            ),
            (
                "[credentials.blnk.on_rotate]\nsignal = \"SIGNOPE\"\npid_file = \"/p\"",
                "credentials.blnk.on_rotate.signal",
                "not a signal",
            ),
            (
                "[credentials.blnk.on_rotate]\ntimeout = \"0s\"\ncommand = [\"x\"]",
                "credentials.blnk.on_rotate.timeout",
                "more than",
            ),
            (
                "[credentials.blnk.on_rotate]\ncommand = []",
                "credentials.blnk.on_rotate",
                "set command",
            ),
            (
                "publish_dir = \"rel\"",
                "credentials.blnk.publish_dir",
                "absolute",
            ),
            (
                "publish_dir = \"/tmp/x\"",
                "credentials.blnk.publish_dir",
                "state file",
            ),
            (
                "publish_dir = \"/p\"\n[[credentials.blnk.outputs]]\npath = \"..data\"",
                "credentials.blnk.outputs[0].path",
                "publish_dir's own",
            ),
            (
                "publish_dir = \"/p\"\n[[credentials.blnk.outputs]]\npath = \"/p/t\"",
                "credentials.blnk.outputs[0].path",
                "just the file name",
            ),
        ];
        for (extra, key, message) in cases {
            let e = with(extra).unwrap_err();
            assert_eq!(e.key, key, "{extra}: {e}");
            assert!(e.to_string().contains(message), "{extra}: {e}");
        }
    }

    #[test]
    fn login_keys_and_chain_age() {
        let with = |extra: &str| load(&format!("{MINIMAL}{extra}"), &[]);
        // An issuer leaves the token URL to discovery, and no Blnk defaults apply.
        let c =
            with("issuer = \"https://id.example/o\"\nredirect_uri = \"http://127.0.0.1:8976/cb\"")
                .unwrap();
        let b = &c.credentials["blnk"];
        assert_eq!(b.token_url, None);
        assert_eq!(b.login.authorize_url, None);
        assert_eq!(b.chain.max_age, None);
        let again = load(&c.redacted_toml(), &[]).unwrap();
        assert_eq!(again.credentials["blnk"].login, b.login);
        assert_eq!(again.credentials["blnk"].chain, b.chain);
        // Another server: no maximum age unless set; zero switches Blnk's default off.
        let c = with("token_url = \"https://id.example/token\"\nrefresh_token_max_age = \"10d\"\nwarn_before = \"2d\"").unwrap();
        let chain = &c.credentials["blnk"].chain;
        assert_eq!(chain.max_age, Some(Duration::from_secs(10 * 86_400)));
        assert_eq!(chain.warn_before, Duration::from_secs(2 * 86_400));
        assert_eq!(
            with("refresh_token_max_age = \"0s\"").unwrap().credentials["blnk"]
                .chain
                .max_age,
            None
        );
        // A login may start the chain: no bootstrap token is needed.
        let c = load(&MINIMAL.replace("refresh_token = \"blnk_rt_1\"", ""), &[]).unwrap();
        assert!(
            c.credentials["blnk"]
                .read_bootstrap()
                .unwrap_err()
                .to_string()
                .contains("tokend login blnk")
        );
        let e = with("issuer = \"http://id.example\"").unwrap_err();
        assert_eq!(e.key, "credentials.blnk.issuer");
    }

    #[test]
    fn integer_modes_are_refused() {
        // 0o640 would be 416 and 640 would be read digit by digit: neither is what was meant.
        for mode in ["0o640", "640", "0o777", "416"] {
            let text =
                format!("{MINIMAL}[[credentials.blnk.outputs]]\npath = \"/o\"\nmode = {mode}\n");
            let e = load(&text, &[]).unwrap_err();
            assert_eq!(e.key, "credentials.blnk.outputs[0].mode", "{mode}: {e}");
            assert!(e.message.contains("as a string"), "{mode}: {e}");
        }
        let text =
            format!("{MINIMAL}[[credentials.blnk.outputs]]\npath = \"/o\"\nmode = \"0640\"\n");
        assert_eq!(
            load(&text, &[]).unwrap().credentials["blnk"].outputs[0].mode,
            0o640
        );
    }

    #[test]
    fn modes_parse_as_octal() {
        assert_eq!(parse_mode("0640"), Ok(0o640));
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("").is_err());
        assert!(parse_mode("01777").is_err());
    }
}
