//! The emulator's public data: the paths it serves, its configuration, the faults a
//! test can queue, and what a test reads back.

use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::ClientAuth;
use rand::Rng;

/// The token path, as on Blnk Cloud.
pub const TOKEN_PATH: &str = "/oauth/token";
/// The authorization endpoint, as on Blnk Cloud. It approves at once (there is no user
/// to ask), unless told to answer with an error; PKCE S256 is required.
pub const AUTHORIZE_PATH: &str = "/oauth/authorize";
/// RFC 8414 metadata for the issuer `<scheme>://<addr>`.
pub const METADATA_PATH: &str = "/.well-known/oauth-authorization-server";
/// A protected resource that answers 200 to a valid access token, 401 otherwise.
pub const RESOURCE_PATH: &str = "/resource";

#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    pub client_id: String,
    pub client_secret: String,
    pub auth: ClientAuth,
    /// With `private_key_jwt`: the client's public key (PEM), which its assertions
    /// must be signed with.
    pub assertion_key: Option<Vec<u8>>,
    pub access_lifetime: Duration,
    /// A rotated refresh token presented again within this time returns the same new pair.
    pub reuse_grace: Duration,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            client_id: "tokend-demo".into(),
            client_secret: format!("demo-secret-{}", random_text(16)),
            auth: ClientAuth::Basic,
            assertion_key: None,
            access_lifetime: Duration::from_secs(3600),
            reuse_grace: Duration::ZERO,
        }
    }
}

/// A way to misbehave, consumed by the next token request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answer with this status, body and optional `Retry-After`; nothing rotates.
    Status {
        status: u16,
        #[serde(default)]
        body: String,
        #[serde(default)]
        retry_after: Option<String>,
    },
    /// Wait, then answer normally.
    Delay { ms: u64 },
    /// Close the connection without answering, before processing anything.
    Reset,
    /// Rotate, then close the connection without answering.
    RotateThenReset,
    /// Rotate, then wait before answering: a request the server has acted on whose
    /// answer is still on its way (a client killed or cut off meanwhile never gets it).
    SlowAnswer { ms: u64 },
    /// `200` with a body that is not JSON; nothing rotates.
    Garbage,
    /// `200` with a body of this many bytes; nothing rotates.
    HugeBody { bytes: usize },
    /// Succeed without `refresh_token`; the presented one stays valid.
    OmitRefreshToken,
    /// Succeed without `expires_in` (the token still lives `access_lifetime`).
    OmitExpiresIn,
    /// Rotate, answering with this `expires_in` (0, negative, a century, a string...).
    ExpiresIn { value: serde_json::Value },
    /// Rotate, answering with this access token (a newline, control characters...): a
    /// 2xx with a new refresh token but an unusable rest.
    AccessToken { value: String },
    /// `200` with a body that is not UTF-8; nothing rotates.
    InvalidUtf8,
    /// `200` with JSON nested this deep; nothing rotates.
    NestedJson { depth: usize },
    /// Rotate, answering sloppily but with the new refresh token readable: servers do.
    Sloppy { shape: Sloppiness },
}

/// How a [`Fault::Sloppy`] answer is sloppy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sloppiness {
    /// The new refresh token holds a space (RFC 6749 allows any VSCHAR).
    SpaceInToken,
    /// The new refresh token holds a double quote.
    QuoteInToken,
    /// `refresh_token` twice in the object: a stale one first, the new one last.
    DuplicateKeys,
    /// A UTF-8 byte order mark before the JSON.
    Bom,
    /// A NUL byte after the JSON.
    TrailingNul,
}

/// A refresh token as the server sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshTokenStatus {
    /// Usable: the next refresh with it rotates.
    Live,
    /// Rotated away this long ago; presenting it again is a reuse (or a grace replay).
    Rotated {
        ago: Duration,
    },
    /// Its family was revoked.
    Revoked,
    Unknown,
}

/// Counters a test reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    pub token_requests: u64,
    pub refreshes: u64,
    /// Rotated refresh tokens presented again outside any grace window.
    pub reuses: u64,
    /// Reuses answered from the grace window.
    pub grace_replays: u64,
    pub faults_served: u64,
    pub auth_failures: u64,
    /// Access tokens issued to the client-credentials grant.
    pub client_tokens: u64,
}

/// One successful rotation, for checking when the client refreshed.
#[derive(Debug, Clone)]
pub struct Rotation {
    pub at: SystemTime,
    /// When the presented refresh token (and its access token) was issued.
    pub previous_issued_at: SystemTime,
    pub previous_lifetime: Duration,
    /// The presented token was a bootstrap token, not one issued with an access token.
    pub from_bootstrap: bool,
}

/// One token request as received, for checking retries.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub at: Instant,
    /// Every form parameter as sent, in order, repeats included.
    pub params: Vec<(String, String)>,
}

impl TokenRequest {
    /// The first value sent for `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The refresh token presented; empty when none was.
    pub fn refresh_token(&self) -> &str {
        self.param("refresh_token").unwrap_or_default()
    }
}

/// A certificate chain and private key, PEM-encoded, for serving HTTPS.
pub struct TlsIdentity {
    pub cert_chain_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// When set, every client must present a certificate that chains to one of these
    /// (mutual TLS, RFC 8705), or the handshake fails.
    pub client_ca_pem: Option<Vec<u8>>,
}

/// Random letters and digits, for secrets and tokens.
pub fn random_text(n: usize) -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}
