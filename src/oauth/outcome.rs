//! What a token request comes to: a usable answer, or a failure of a kind the state
//! machine acts on (design.md §6), and the state an answer leads to.

use std::time::{Duration, SystemTime};

use secrecy::SecretString;

use crate::store::{State, VERSION};

/// A usable answer to a refresh (RFC 6749 §5.1).
#[derive(Debug)]
pub struct TokenAnswer {
    pub access_token: SecretString,
    pub token_type: String,
    pub expires_in: Option<Duration>,
    pub refresh_token: Option<SecretString>,
    pub scope: Option<String>,
}

/// What went wrong, and what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Nothing useful happened; retry with backoff.
    Transient,
    /// The request may have reached the server; retry soon with the same refresh token.
    Ambiguous,
    /// The server refused for a reason only a person can fix.
    Permanent(Permanent),
    /// Nothing was sent: something on this host (the client secret's file) is missing
    /// or unreadable. A person fixes it; the server has said nothing.
    Local,
    /// Nothing was sent: the server's certificate is not trusted (`http.ca_file`, the
    /// system's roots). A setup problem, retried with backoff in case it is the
    /// server's to fix; `once` reports it as configuration.
    Untrusted,
    /// An answer the table does not cover; retry at the maximum backoff, loudly.
    Unexpected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permanent {
    /// `invalid_grant`: the refresh token is dead.
    Grant,
    /// `invalid_client` / `unauthorized_client`: the client credentials are refused.
    Client,
    /// `unsupported_grant_type` / `invalid_scope`: the configuration is wrong.
    Configuration,
}

impl Permanent {
    /// What the operator must do, for logs and `status`.
    pub fn remedy(self) -> &'static str {
        match self {
            Permanent::Grant => {
                "the refresh token is dead: authorize again and write the new refresh token to the \
                 bootstrap file (refresh_token_file), or send SIGHUP after changing the configuration"
            }
            Permanent::Client => {
                "the client credentials were refused: check client_id, client_auth and the client's \
                 secret, assertion key or certificate, then update the secret or key file or send SIGHUP"
            }
            Permanent::Configuration => {
                "the server refused the request as configured (grant type or scope): fix the configuration and send SIGHUP"
            }
        }
    }
}

/// A refresh that did not produce a usable token.
#[derive(Debug)]
pub struct Failure {
    pub kind: FailureKind,
    /// The server's `Retry-After`, already turned into a delay.
    pub retry_after: Option<Duration>,
    /// A short, secret-free description for logs and `status`.
    pub detail: String,
    /// A new refresh token from a 2xx answer whose other parts were unusable: it must be
    /// kept, because the one we sent is probably dead now.
    pub rotated: Option<SecretString>,
}

impl Failure {
    pub(crate) fn new(kind: FailureKind, detail: impl Into<String>) -> Self {
        Failure {
            kind,
            retry_after: None,
            detail: detail.into(),
            rotated: None,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for Failure {}

pub type Outcome = Result<TokenAnswer, Failure>;

/// Where a new state's refresh-token chain comes from: when the request went out, when
/// the chain began, and the digest of the bootstrap token it began with.
pub struct Origin {
    pub sent_at: SystemTime,
    pub chain_started_at: SystemTime,
    pub bootstrap_sha256: String,
}

impl TokenAnswer {
    /// The state this answer leads to, with RFC 6749's defaults: no new refresh token
    /// means `kept_refresh_token` stays (§6); no `expires_in` means `default_lifetime`;
    /// no scope means `fallback_scope`. The lifetime counts from when the request was sent.
    pub fn into_state(
        self,
        kept_refresh_token: Option<SecretString>,
        origin: Origin,
        default_lifetime: Duration,
        fallback_scope: Option<String>,
    ) -> State {
        let lifetime = self.expires_in.unwrap_or(default_lifetime);
        State {
            version: VERSION,
            generation: 0,
            refresh_token: self.refresh_token.or(kept_refresh_token),
            access_token: Some(self.access_token),
            token_type: self.token_type,
            scope: self.scope.or(fallback_scope),
            obtained_at: Some(origin.sent_at),
            expires_at: Some(origin.sent_at + lifetime),
            chain_started_at: origin.chain_started_at,
            bootstrap_sha256: origin.bootstrap_sha256,
            refused_bootstrap_sha256: None,
            last_error: None,
        }
    }
}
