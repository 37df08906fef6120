//! The raw forms, as serde reads them from the merged file and environment: unknown
//! keys are errors here; whether the values make sense is [`super::validate`]'s job.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::config::model::{
    ClientAuth, HealthConfig, HttpConfig, LogConfig, OutputFormat, RefreshPolicy, RetryPolicy,
};
use crate::config::text::{duration_text, mode_text};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub state_dir: Option<PathBuf>,
    #[serde(default)]
    pub log: LogConfig,
    pub health: Option<HealthConfig>,
    #[serde(default)]
    pub credentials: BTreeMap<String, RawCredential>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCredential {
    pub token_url: Option<String>,
    pub issuer: Option<String>,
    pub authorize_url: Option<String>,
    pub redirect_uri: Option<String>,
    #[serde(default, with = "duration_text::option")]
    pub refresh_token_max_age: Option<Duration>,
    #[serde(default, with = "duration_text::option")]
    pub warn_before: Option<Duration>,
    pub client_id: Option<String>,
    pub client_secret: Option<SecretString>,
    pub client_secret_file: Option<PathBuf>,
    #[serde(default)]
    pub client_auth: ClientAuth,
    pub refresh_token: Option<SecretString>,
    pub refresh_token_file: Option<PathBuf>,
    pub scope: Option<String>,
    pub state_file: Option<PathBuf>,
    #[serde(default)]
    pub refresh: RefreshPolicy,
    #[serde(default)]
    pub retry: RetryPolicy,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub outputs: Vec<RawOutput>,
    pub publish_dir: Option<PathBuf>,
    pub on_rotate: Option<RawHook>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHook {
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default = "default_hook_timeout", with = "duration_text")]
    pub timeout: Duration,
    pub signal: Option<String>,
    pub pid_file: Option<PathBuf>,
}

fn default_hook_timeout() -> Duration {
    Duration::from_secs(30)
}

/// A user or group by name or numeric id (TOML integer or a string of digits).
#[derive(Deserialize)]
#[serde(untagged)]
pub enum RawAccount {
    Id(u32),
    Name(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutput {
    pub path: PathBuf,
    #[serde(default)]
    pub format: OutputFormat,
    #[serde(
        default = "default_mode_text",
        deserialize_with = "mode_text::deserialize"
    )]
    pub mode: String,
    pub owner: Option<RawAccount>,
    pub group: Option<RawAccount>,
}

fn default_mode_text() -> String {
    "0640".into()
}
