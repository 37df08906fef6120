//! The values the state machine keeps and gives back.

use std::time::{Duration, SystemTime};

use secrecy::SecretString;

use crate::oauth::Permanent;

/// Why refreshing stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    Server(Permanent),
    /// A local file the request needs (the client secret's) cannot be read; nothing was
    /// sent. Resumes when the file changes.
    Local,
    /// The state file cannot be read; using the bootstrap token instead could replay a
    /// token rotated away long ago and revoke the chain the file still holds.
    UnreadableState,
    NoBootstrap,
}

/// Where the credential stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the scheduled refresh of the current token.
    Scheduled,
    /// Waiting to try again after a failure (or to refresh at once).
    RetryAt(SystemTime),
    /// Waiting for a person: a new bootstrap token, a new client secret, or SIGHUP.
    Blocked { why: Block, marks: Marks },
}

/// Digests of the files a person may change to unblock a credential, as they were when
/// it blocked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marks {
    pub bootstrap: Option<String>,
    pub secret: Option<String>,
}

/// A bootstrap refresh token and its digest.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    pub token: SecretString,
    pub digest: String,
}

/// What [`Machine::start`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The stored chain goes on.
    Resumed,
    /// The bootstrap token changed since the state was made: it replaces the chain.
    BootstrapChanged,
    /// No state yet: the chain starts from the bootstrap token.
    FromBootstrap,
    /// No state and no bootstrap token: the caller blocks.
    NoBootstrap,
    /// No state, and no chain to need one: the client-credentials grant asks at once.
    ClientCredentials,
}

/// What a failed refresh leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    Retry {
        delay: Duration,
        kind: RetryKind,
        /// No unexpired access token is left to publish meanwhile.
        token_expired: bool,
    },
    /// Refreshing stops until a person acts: the caller blocks with fresh marks.
    Block(Block),
    /// A new bootstrap token was refused while the chain before it was live: that chain
    /// goes on at once, and the refused token is never sent again.
    FellBack,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryKind {
    /// Nothing was sent, or the server said try later.
    Transient,
    /// The one quick retry with the same refresh token after an ambiguous failure.
    Quick,
    /// Ambiguous again: ordinary backoff.
    Ambiguous,
    /// An answer design.md §6's table does not cover: the maximum backoff.
    Unexpected,
}

/// What SIGHUP did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// The state could not be read or there was none: start over (the caller reloads).
    Restart,
    AdoptedBootstrap,
    /// A blocked credential tries again.
    Retrying,
    Unchanged,
}

/// Why a blocked credential resumed by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unblocked {
    Bootstrap,
    Secret,
}

/// A successful rotation, for its log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotated {
    pub expires_at: SystemTime,
    pub lifetime: Duration,
}

/// The chain-age warning, when one is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainWarning {
    pub started: SystemTime,
    pub ends_at: SystemTime,
    pub left: Duration,
}
