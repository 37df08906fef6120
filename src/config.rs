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
    pub token_url: Url,
    pub client_id: String,
    pub client_secret: SecretSource,
    pub client_auth: ClientAuth,
    pub refresh_token: SecretSource,
    pub scope: Option<String>,
    pub state_file: PathBuf,
    pub refresh: RefreshPolicy,
    pub retry: RetryPolicy,
    pub http: HttpConfig,
    pub outputs: Vec<OutputConfig>,
}

/// A credential as `check` prints it: the keys of the file, inline secrets redacted.
#[derive(Serialize)]
struct CredentialView<'a> {
    token_url: &'a str,
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
    refresh: &'a RefreshPolicy,
    retry: &'a RetryPolicy,
    http: &'a HttpConfig,
    outputs: &'a [OutputConfig],
}

impl Serialize for CredentialConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let inline =
            |src: &SecretSource| matches!(src, SecretSource::Inline(_)).then_some("[redacted]");
        CredentialView {
            token_url: self.token_url.as_str(),
            client_id: &self.client_id,
            client_secret: inline(&self.client_secret),
            client_secret_file: self.client_secret.path(),
            client_auth: self.client_auth,
            refresh_token: inline(&self.refresh_token),
            refresh_token_file: self.refresh_token.path(),
            scope: self.scope.as_deref(),
            state_file: &self.state_file,
            refresh: &self.refresh,
            retry: &self.retry,
            http: &self.http,
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    path: PathBuf,
    #[serde(default)]
    format: OutputFormat,
    #[serde(default = "default_mode_text")]
    mode: String,
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
    let refresh_token = exactly_one(
        rc.refresh_token,
        rc.refresh_token_file,
        &key("refresh_token"),
        src,
    )?;

    let url_text = rc.token_url.unwrap_or_else(|| BLNK_TOKEN_URL.to_owned());
    let token_url = Url::parse(&url_text)
        .map_err(|e| src.error(&key("token_url"), format!("not a URL: {e}")))?;
    check_token_url(&token_url, rc.http.allow_insecure_http)
        .map_err(|m| src.error(&key("token_url"), m))?;

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

    let mut outputs = Vec::new();
    for (i, o) in rc.outputs.into_iter().enumerate() {
        let okey = |k: &str| format!("credentials.{name}.outputs[{i}].{k}");
        let mode = parse_mode(&o.mode).map_err(|m| src.error(&okey("mode"), m))?;
        if o.path.as_os_str().is_empty() || o.path.file_name().is_none() {
            return Err(src.error(&okey("path"), "must name a file"));
        }
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
        });
    }

    let state_file = rc
        .state_file
        .unwrap_or_else(|| state_dir.join(format!("{name}.json")));
    if outputs.iter().any(|o| o.path == state_file) {
        return Err(src.error(&key("outputs"), "an output may not be the state file"));
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
    })
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
fn check_token_url(url: &Url, allow_insecure_http: bool) -> Result<(), String> {
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

mod mode_text {
    pub fn serialize<S: serde::Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{mode:04o}"))
    }
}

/// Durations as humantime strings (`"90s"`, `"1h 30m"`).
mod duration_text {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
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
        assert_eq!(b.token_url.as_str(), BLNK_TOKEN_URL);
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
    fn modes_parse_as_octal() {
        assert_eq!(parse_mode("0640"), Ok(0o640));
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("").is_err());
        assert!(parse_mode("01777").is_err());
    }
}
