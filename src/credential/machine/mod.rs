//! A credential's state machine: which refresh token to send and when, and what each
//! outcome does to its phase, its backoff and its flags.
//!
//! Pure: time comes in as `now`, chance as a number in [0, 1), and whatever was read
//! from disk (the stored state, the bootstrap token, digests of secret files) as
//! values. The task around it ([`super::task`]) sleeps, sends, saves, publishes and
//! logs; this module only decides. Its tests run in milliseconds.

//!
//! - [`types`]: the values it keeps and gives back
//! - this file: where the chain comes from, when to refresh, blocking and resuming
//! - [`refresh`]: a refresh's token, answer, failure, and the writes that follow
//! - [`report`]: health, readiness, the chain-age warning

mod refresh;
mod report;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub use tests::config as tests_config;
pub mod types;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use secrecy::SecretString;

use crate::config::CredentialConfig;
use crate::credential::schedule;
use crate::oauth::FailureKind;
use crate::store::State;

pub use types::{
    Block, Bootstrap, ChainWarning, Marks, Phase, Reaction, Resume, RetryKind, Rotated, Start,
    Unblocked,
};

/// How often the files that can unblock a credential are checked while it is blocked.
pub const BLOCKED_POLL: Duration = Duration::from_secs(5);
/// The longest a follower sleeps when nothing else wakes it.
pub const MAX_FOLLOWER_SLEEP: Duration = Duration::from_secs(3600);
/// How soon a failed state save or output write is tried again.
pub const WRITE_RETRY: Duration = Duration::from_secs(5);

/// One credential's decisions and everything they depend on.
#[derive(Debug)]
pub struct Machine {
    /// The policies it decides by: shared with the task, not copied.
    cfg: Arc<CredentialConfig>,
    state: Option<State>,
    /// A bootstrap token to use instead of the state's chain.
    bootstrap: Option<Bootstrap>,
    /// The state in memory is newer than the stored one.
    unsaved: bool,
    /// Every output holds the state's current access token.
    published: bool,
    phase: Phase,
    /// Consecutive failures, for backoff.
    failures: u32,
    /// The quick retry after an ambiguous failure has been used.
    quick_retry_used: bool,
    last_failure: Option<FailureKind>,
    /// The last refresh failure, for `once`, health and `status`.
    last_error: Option<String>,
    write_error: Option<String>,
    /// A rotation whose hooks run once its outputs are written.
    hooks_due: bool,
    /// When the chain-age warning was last logged.
    chain_warned_at: Option<SystemTime>,
}

impl Machine {
    pub fn new(cfg: Arc<CredentialConfig>) -> Self {
        Machine {
            cfg,
            state: None,
            bootstrap: None,
            unsaved: false,
            published: false,
            phase: Phase::Scheduled,
            failures: 0,
            quick_retry_used: false,
            last_failure: None,
            last_error: None,
            write_error: None,
            hooks_due: false,
            chain_warned_at: None,
        }
    }

    pub fn state(&self) -> Option<&State> {
        self.state.as_ref()
    }

    /// The generation of the chain in hand (design.md §11); 0 without one.
    pub fn generation(&self) -> u64 {
        self.state.as_ref().map_or(0, |s| s.generation)
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    pub fn is_blocked(&self) -> bool {
        matches!(self.phase, Phase::Blocked { .. })
    }

    pub fn last_failure(&self) -> Option<FailureKind> {
        self.last_failure
    }

    /// The state in memory is not stored yet.
    pub fn needs_save(&self) -> bool {
        self.unsaved
    }

    /// The outputs do not hold the current token yet.
    pub fn needs_publish(&self) -> bool {
        !self.published
    }

    // ---- when ----

    /// The scheduled refresh time of the current access token, if there is one.
    pub fn deadline(&self) -> Option<SystemTime> {
        let s = self.state.as_ref()?;
        s.access_token.as_ref()?;
        let (obtained, expires) = (s.obtained_at?, s.expires_at?);
        let jitter = schedule::jitter_unit(&self.cfg.name, obtained);
        Some(schedule::refresh_deadline(
            &self.cfg.refresh,
            obtained,
            expires,
            jitter,
        ))
    }

    pub fn is_due(&self, now: SystemTime) -> bool {
        match &self.phase {
            Phase::Scheduled => self.deadline().is_none_or(|d| d <= now),
            Phase::RetryAt(at) => *at <= now,
            Phase::Blocked { .. } => false,
        }
    }

    /// When the loop must next wake up; `refreshing` is false on a replica that only
    /// follows a chain another one refreshes (design.md §11): its schedule is not its own.
    pub fn next_wake(&self, now: SystemTime, refreshing: bool) -> SystemTime {
        let mut wake = match &self.phase {
            _ if !refreshing => now + MAX_FOLLOWER_SLEEP,
            Phase::Scheduled => self.deadline().unwrap_or(now),
            Phase::RetryAt(at) => *at,
            Phase::Blocked { .. } => now + BLOCKED_POLL,
        };
        if self.unsaved || (!self.published && self.current_token(now).is_some()) {
            wake = wake.min(now + WRITE_RETRY);
        }
        if let Some(age) = self.chain_age() {
            wake = wake.min(age.next_warning(self.chain_warned_at).max(now));
        }
        // Wake at expiry too, so readiness drops when it should.
        if let Some(exp) = self
            .state
            .as_ref()
            .and_then(|s| s.expires_at)
            .filter(|e| *e > now)
        {
            wake = wake.min(exp);
        }
        wake
    }

    pub fn current_token(&self, now: SystemTime) -> Option<&SecretString> {
        self.state.as_ref().and_then(|s| s.valid_access_token(now))
    }

    /// How long the current access token stays valid, if it still is.
    fn time_left(&self, now: SystemTime) -> Option<Duration> {
        self.current_token(now)?;
        self.state.as_ref()?.expires_at?.duration_since(now).ok()
    }

    // ---- where the chain comes from ----

    /// Decides which refresh token the chain continues from, given what is stored
    /// (read without error) and the bootstrap token, if it can be read.
    pub fn start(
        &mut self,
        now: SystemTime,
        stored: Option<State>,
        bootstrap: Option<Bootstrap>,
    ) -> Start {
        self.bootstrap = None;
        match (stored, bootstrap) {
            (Some(state), bootstrap) => {
                let refused = state.refused_bootstrap_sha256.as_deref();
                let changed = bootstrap
                    .filter(|b| b.digest != state.bootstrap_sha256 && refused != Some(&b.digest));
                self.state = Some(state);
                match changed {
                    Some(b) => {
                        self.bootstrap = Some(b);
                        self.phase = Phase::RetryAt(now);
                        Start::BootstrapChanged
                    }
                    None => Start::Resumed,
                }
            }
            (None, Some(b)) => {
                self.bootstrap = Some(b);
                self.phase = Phase::RetryAt(now);
                Start::FromBootstrap
            }
            (None, None) if !self.cfg.has_chain() => {
                self.phase = Phase::RetryAt(now);
                Start::ClientCredentials
            }
            (None, None) => Start::NoBootstrap,
        }
    }

    /// Whether the server refused this bootstrap token while the chain in hand was live.
    fn refused(&self, digest: &str) -> bool {
        self.state
            .as_ref()
            .and_then(|s| s.refused_bootstrap_sha256.as_deref())
            == Some(digest)
    }

    /// When the chain in memory began, if there is one.
    pub fn chain_started_at(&self) -> Option<SystemTime> {
        self.state.as_ref().map(|s| s.chain_started_at)
    }

    /// Whether a state handed over by `tokend login` starts a newer chain than the one
    /// in hand (or, with none in memory, than the `stored` one). An older one must never
    /// be adopted: its refresh token has probably rotated away since.
    pub fn is_newer_chain(&self, handover: &State, stored: Option<SystemTime>) -> bool {
        let current = self.chain_started_at().or(stored);
        current.is_none_or(|c| handover.chain_started_at > c)
    }

    /// Adopts a chain someone else moved on: `tokend login`, or the leader of the
    /// replicas that share it (design.md §11). The caller saves and publishes it.
    pub fn adopt(&mut self, state: State, now: SystemTime) {
        self.state = Some(state);
        self.bootstrap = None;
        self.unsaved = true;
        self.published = false;
        self.hooks_due = true;
        self.chain_warned_at = None;
        self.last_error = None;
        self.unblock(now);
        self.phase = Phase::Scheduled;
    }

    /// Gives the chain in hand generation `generation` (a login's chain, first stored
    /// among replicas, counts on from the stored one); saved again like any change.
    pub fn renumber(&mut self, generation: u64) {
        if let Some(s) = &mut self.state {
            s.generation = generation;
            self.unsaved = true;
        }
    }

    fn adopt_bootstrap(&mut self, bootstrap: Bootstrap, now: SystemTime) {
        self.bootstrap = Some(bootstrap);
        self.unblock(now);
    }

    fn unblock(&mut self, now: SystemTime) {
        self.failures = 0;
        self.quick_retry_used = false;
        self.last_failure = None;
        self.phase = Phase::RetryAt(now);
    }

    /// SIGHUP: adopt a changed bootstrap token; give a blocked credential another try.
    /// `Restart` leaves the machine empty, for the caller to start again.
    pub fn resume(&mut self, now: SystemTime, bootstrap: Option<Bootstrap>) -> Resume {
        if matches!(
            self.phase,
            Phase::Blocked {
                why: Block::UnreadableState | Block::NoBootstrap,
                ..
            }
        ) {
            self.state = None;
            self.bootstrap = None;
            self.phase = Phase::Scheduled;
            return Resume::Restart;
        }
        if let Some(b) = bootstrap {
            let chain = self
                .bootstrap
                .as_ref()
                .map(|b| &b.digest)
                .or(self.state.as_ref().map(|s| &s.bootstrap_sha256));
            if chain != Some(&b.digest) && !self.refused(&b.digest) {
                self.adopt_bootstrap(b, now);
                return Resume::AdoptedBootstrap;
            }
        }
        if self.is_blocked() {
            self.unblock(now);
            return Resume::Retrying;
        }
        Resume::Unchanged
    }

    /// While blocked: a bootstrap token or a client secret (file) that changed since the
    /// block resumes refreshing.
    pub fn unblock_by_files(
        &mut self,
        now: SystemTime,
        bootstrap: Option<Bootstrap>,
        secret_mark: Option<String>,
        secret_in_file: bool,
    ) -> Option<Unblocked> {
        let Phase::Blocked { marks, .. } = &self.phase else {
            return None;
        };
        if let Some(b) = bootstrap
            && Some(&b.digest) != marks.bootstrap.as_ref()
            && !self.refused(&b.digest)
        {
            self.adopt_bootstrap(b, now);
            return Some(Unblocked::Bootstrap);
        }
        if secret_in_file && secret_mark.is_some() && secret_mark != marks.secret {
            self.unblock(now);
            return Some(Unblocked::Secret);
        }
        None
    }

    /// Not now: the store did not let this replica refresh (design.md §11); ask again `at`.
    pub fn postpone(&mut self, at: SystemTime) {
        if !self.is_blocked() {
            self.phase = Phase::RetryAt(at);
        }
    }

    /// SIGUSR1: refresh now, unless blocked (then `Err` with why).
    pub fn refresh_now(&mut self, now: SystemTime) -> Result<(), Block> {
        match self.phase {
            Phase::Blocked { why, .. } => Err(why),
            _ => {
                self.phase = Phase::RetryAt(now);
                Ok(())
            }
        }
    }

    /// Stops refreshing until a person acts; `marks` are the files' digests now.
    pub fn block(&mut self, why: Block, marks: Marks) {
        if self.last_failure.is_none() {
            self.last_failure = Some(match why {
                Block::Server(p) => FailureKind::Permanent(p),
                Block::Local | Block::UnreadableState | Block::NoBootstrap => FailureKind::Local,
            });
        }
        self.phase = Phase::Blocked { why, marks };
    }

    /// What the operator must do about a block.
    pub fn block_message(&self, why: Block) -> String {
        match why {
            Block::Server(p) => p.remedy().to_owned(),
            Block::Local => format!(
                "{}; nothing was sent, and refreshing resumes when the file can be read",
                self.last_error
                    .as_deref()
                    .unwrap_or("a local file cannot be read")
            ),
            Block::UnreadableState => {
                format!(
                    "the state file {} cannot be read",
                    self.cfg.state_file.display()
                )
            }
            Block::NoBootstrap => format!(
                "no refresh token to go on from (no state, or a state without a chain) and no readable bootstrap refresh token: run `tokend login {}`, or write a refresh token to the bootstrap file",
                self.cfg.name
            ),
        }
    }
}
