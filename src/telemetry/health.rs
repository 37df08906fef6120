//! A credential's condition as the rest of the process sees it: readiness, expiry, the
//! last refresh and error, the chain's age. Credentials publish it; the board, metrics,
//! systemd notifications and `/readyz` read it.

use std::time::SystemTime;

/// A credential's condition, as health checks and `status` see it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Health {
    /// An unexpired access token is saved and written to every output.
    pub ready: bool,
    pub expires_at: Option<SystemTime>,
    pub last_refresh: Option<SystemTime>,
    pub last_error: Option<String>,
    /// Refreshing has stopped until a person acts.
    pub blocked: bool,
    pub chain_started_at: Option<SystemTime>,
    /// When the refresh-token chain reaches `refresh_token_max_age`, if one is set.
    pub chain_ends_at: Option<SystemTime>,
    /// Past the `warn_before` point: a person should run `tokend login` soon.
    pub chain_warning: bool,
    /// Why it is not ready, when it is not.
    pub reason: Option<String>,
    /// With coordination (SPEC §11): whether this replica leads, and the generation
    /// of the chain in hand.
    pub shared: Option<Shared>,
}

/// A credential's part in a shared chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Shared {
    pub leader: bool,
    pub generation: u64,
}
