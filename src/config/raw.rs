//! The raw forms, as serde reads them from the merged file and environment: unknown
//! keys are errors here; whether the values make sense is [`super::validate`]'s job.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::config::coordination::RawCoordination;
use crate::config::model::{
    AssertionAlg, ClientAuth, GrantType, HealthConfig, HttpConfig, LogConfig, OutputFormat,
    RefreshPolicy, RetryPolicy,
};
use crate::config::text::{duration_text, mode_text};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub state_dir: Option<PathBuf>,
    #[serde(default)]
    pub log: LogConfig,
    pub health: Option<HealthConfig>,
    pub coordination: Option<RawCoordination>,
    #[serde(default)]
    pub credentials: BTreeMap<String, RawCredential>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCredential {
    #[serde(default)]
    pub grant: GrantType,
    pub token_url: Option<String>,
    pub issuer: Option<String>,
    pub authorize_url: Option<String>,
    pub redirect_uri: Option<String>,
    #[serde(default)]
    pub authorize_params: BTreeMap<String, String>,
    #[serde(default, with = "duration_text::option")]
    pub refresh_token_max_age: Option<Duration>,
    #[serde(default, with = "duration_text::option")]
    pub warn_before: Option<Duration>,
    pub client_id: Option<String>,
    pub client_secret: Option<SecretString>,
    pub client_secret_file: Option<PathBuf>,
    #[serde(default)]
    pub client_auth: ClientAuth,
    pub client_assertion_key_file: Option<PathBuf>,
    pub client_assertion_alg: Option<AssertionAlg>,
    pub client_assertion_kid: Option<String>,
    pub client_assertion_audience: Option<String>,
    pub refresh_token: Option<SecretString>,
    pub refresh_token_file: Option<PathBuf>,
    pub scope: Option<String>,
    #[serde(default)]
    pub token_params: BTreeMap<String, String>,
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
pub enum RawAccount {
    Id(u32),
    Name(String),
}

impl<'de> Deserialize<'de> for RawAccount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RawAccount;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a user or group name, or a numeric id")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawAccount, E> {
                Ok(RawAccount::Name(v.to_owned()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawAccount, E> {
                u32::try_from(v).map(RawAccount::Id).map_err(|_| {
                    E::custom(format!(
                        "{v} is not an id: expected a user or group name, or a numeric id"
                    ))
                })
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawAccount, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(-1))
            }
        }
        d.deserialize_any(V)
    }
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
