//! `[coordination.etcd]`: the members, the key prefix, TLS and authentication.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::config::error::{ConfigError, Sources};
use crate::config::secret::SecretSource;
use crate::config::text::duration_text;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEtcd {
    #[serde(default, deserialize_with = "endpoint_list")]
    pub endpoints: Vec<String>,
    pub prefix: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    #[serde(default, with = "duration_text::option")]
    pub timeout: Option<Duration>,
}

/// A TOML array, or (from an environment variable) a comma-separated string.
fn endpoint_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of URLs, or URLs separated by commas")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Vec<String>, E> {
            Ok(text.split(',').map(|s| s.trim().to_owned()).collect())
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Vec<String>, A::Error> {
            let mut list = Vec::new();
            while let Some(url) = seq.next_element::<String>()? {
                list.push(url);
            }
            Ok(list)
        }
    }
    d.deserialize_any(V)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EtcdConfig {
    pub endpoints: Vec<Url>,
    pub prefix: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(
        rename = "password_file",
        skip_serializing_if = "Option::is_none",
        serialize_with = "password_path"
    )]
    pub password: Option<SecretSource>,
    #[serde(with = "duration_text")]
    pub timeout: Duration,
}

fn password_path<S: serde::Serializer>(p: &Option<SecretSource>, s: S) -> Result<S::Ok, S::Error> {
    // Only ever a file: the password itself is never printed.
    s.serialize_str(
        &p.as_ref()
            .and_then(SecretSource::path)
            .map_or_else(|| "[redacted]".to_owned(), |p| p.display().to_string()),
    )
}

impl EtcdConfig {
    /// The key of one credential's `what` (`leader` or `state`).
    pub fn key(&self, credential: &str, what: &str) -> String {
        format!("{}{credential}/{what}", self.prefix)
    }
}

pub(super) fn validate_etcd(
    raw: Option<RawEtcd>,
    src: &Sources,
) -> Result<EtcdConfig, ConfigError> {
    let key = |k: &str| format!("coordination.etcd.{k}");
    let raw = raw.ok_or_else(|| {
        src.error(
            "coordination.etcd",
            "is required with backend = \"etcd\": at least endpoints = [\"https://HOST:2379\"]",
        )
    })?;
    if raw.endpoints.is_empty() {
        return Err(src.error(&key("endpoints"), "needs at least one URL"));
    }
    let mut endpoints = Vec::new();
    for text in &raw.endpoints {
        let url = Url::parse(text)
            .map_err(|e| src.error(&key("endpoints"), format!("{text:?} is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(src.error(
                &key("endpoints"),
                format!("{text:?}: use http://HOST:PORT or https://HOST:PORT"),
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(src.error(
                &key("endpoints"),
                "must not carry credentials; use username and password_file",
            ));
        }
        endpoints.push(url);
    }
    let tls = endpoints.iter().any(|u| u.scheme() == "https");
    if tls && endpoints.iter().any(|u| u.scheme() == "http") {
        return Err(src.error(
            &key("endpoints"),
            "mixes http:// and https://; every member is reached the same way",
        ));
    }
    if tls && raw.ca_file.is_none() {
        return Err(src.error(
            &key("ca_file"),
            "https:// endpoints need ca_file: etcd serves certificates of its own CA",
        ));
    }
    if !tls && (raw.ca_file.is_some() || raw.cert_file.is_some()) {
        return Err(src.error(
            &key("ca_file"),
            "TLS files are given but every endpoint is http://; use https://",
        ));
    }
    if raw.cert_file.is_some() != raw.key_file.is_some() {
        return Err(src.error(
            &key("cert_file"),
            "cert_file and key_file go together: a client certificate needs its key",
        ));
    }
    if raw.username.is_some() != raw.password_file.is_some() {
        return Err(src.error(&key("username"), "username and password_file go together"));
    }
    let prefix = raw.prefix.unwrap_or_else(|| "/tokend/".into());
    if prefix.is_empty() || prefix.chars().any(char::is_control) {
        return Err(src.error(
            &key("prefix"),
            "must be non-empty printable text, such as \"/tokend/\"",
        ));
    }
    let timeout = raw.timeout.unwrap_or(Duration::from_secs(2));
    if timeout.is_zero() {
        return Err(src.error(&key("timeout"), "must be more than zero"));
    }
    Ok(EtcdConfig {
        endpoints,
        prefix,
        ca_file: raw.ca_file,
        cert_file: raw.cert_file,
        key_file: raw.key_file,
        username: raw.username,
        password: raw.password_file.map(SecretSource::File),
        timeout,
    })
}
