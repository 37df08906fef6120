//! A credential's durable record (design.md §4), and the interface of whatever keeps it.

use std::time::SystemTime;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::rfc3339;

/// The current state-file format.
pub const VERSION: u32 = 1;

/// One credential's durable state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// Grows by one with every new refresh token, so that replicas sharing a chain
    /// (design.md §11) can tell which copy is newer; 0 in files written before it existed.
    #[serde(default)]
    pub generation: u64,
    /// The chain's current link; `None` for the client-credentials grant, which has
    /// no chain (design.md §12).
    #[serde(
        default,
        with = "option_secret_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub refresh_token: Option<SecretString>,
    /// Absent only when a server rotated the refresh token in an otherwise unusable answer
    /// before any access token was obtained.
    #[serde(default, with = "option_secret_text")]
    pub access_token: Option<SecretString>,
    #[serde(default)]
    pub token_type: String,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default, with = "rfc3339::option")]
    pub obtained_at: Option<SystemTime>,
    #[serde(default, with = "rfc3339::option")]
    pub expires_at: Option<SystemTime>,
    #[serde(with = "rfc3339")]
    pub chain_started_at: SystemTime,
    pub bootstrap_sha256: String,
    /// A bootstrap token the server refused (`invalid_grant`) while this chain was live:
    /// never adopted again until the bootstrap file holds something else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_bootstrap_sha256: Option<String>,
    /// The last failed refresh, cleared by the next success; for `tokend status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastError {
    #[serde(with = "rfc3339")]
    pub at: SystemTime,
    pub message: String,
    /// True when refreshing has stopped until a person acts.
    pub blocked: bool,
}

impl State {
    /// The access token, if there is one and it has not expired at `now`.
    pub fn valid_access_token(&self, now: SystemTime) -> Option<&SecretString> {
        match (&self.access_token, self.expires_at) {
            (Some(t), Some(exp)) if exp > now => Some(t),
            _ => None,
        }
    }
}

/// The digest by which a state remembers which bootstrap token its chain came from.
pub fn bootstrap_digest(token: &SecretString) -> String {
    sha256_hex(token.expose_secret().as_bytes())
}

/// SHA-256 in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

mod option_secret_text {
    use super::*;
    pub fn serialize<S: serde::Serializer>(
        v: &Option<SecretString>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(v.expose_secret()),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SecretString>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.map(SecretString::from))
    }
}
