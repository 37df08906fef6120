//! What a refresh does to the machine: which token goes out, and what a usable answer,
//! a failure or a write does to the state, the flags and the backoff.

use std::time::{Duration, SystemTime};

use secrecy::SecretString;

use crate::credential::machine::Machine;
use crate::credential::machine::types::{Block, Phase, Reaction, RetryKind, Rotated};
use crate::credential::schedule;
use crate::oauth::{Failure, FailureKind, Origin, Permanent, TokenAnswer};
use crate::store::{LastError, State, VERSION};

impl Machine {
    /// The refresh token to send (none for the client-credentials grant), and whether
    /// it is the bootstrap token; `None` when a chain has neither state nor bootstrap.
    pub fn token_to_send(&self) -> Option<(Option<SecretString>, bool)> {
        if !self.cfg.has_chain() {
            return Some((None, false));
        }
        match (&self.bootstrap, &self.state) {
            (Some(b), _) => Some((Some(b.token.clone()), true)),
            // A state without one (the credential was a client-credentials one) has
            // no chain to go on with.
            (None, Some(s)) => s.refresh_token.clone().map(|t| (Some(t), false)),
            (None, None) => None,
        }
    }

    fn chain_origin(&self, sent_at: SystemTime, from_bootstrap: bool) -> Origin {
        let (chain_started_at, bootstrap_sha256) = match (&self.bootstrap, &self.state) {
            (Some(b), _) if from_bootstrap => (sent_at, b.digest.clone()),
            (_, Some(s)) => (s.chain_started_at, s.bootstrap_sha256.clone()),
            (_, None) => (sent_at, String::new()),
        };
        Origin {
            sent_at,
            chain_started_at,
            bootstrap_sha256,
        }
    }

    /// A usable answer: the new state replaces the old one, to be saved before anything
    /// else; outputs and hooks follow.
    pub fn succeeded(
        &mut self,
        answer: TokenAnswer,
        sent: Option<SecretString>,
        sent_at: SystemTime,
        from_bootstrap: bool,
    ) -> Rotated {
        let origin = self.chain_origin(sent_at, from_bootstrap);
        let previous = self.state.as_ref();
        let fallback_scope = self
            .cfg
            .scope
            .clone()
            .or(previous.and_then(|s| s.scope.clone()));
        let refused = previous.and_then(|s| s.refused_bootstrap_sha256.clone());
        let generation = self.generation() + 1;
        let mut state = answer.into_state(
            sent,
            origin,
            self.cfg.refresh.default_lifetime,
            fallback_scope,
        );
        state.refused_bootstrap_sha256 = refused;
        state.generation = generation;
        if !self.cfg.has_chain() {
            // RFC 6749 §4.4.3: none should come; one that does would never be used.
            state.refresh_token = None;
        }
        let expires_at = state.expires_at.unwrap_or(sent_at);
        self.state = Some(state);
        self.bootstrap = None;
        self.unsaved = true;
        self.published = false;
        self.hooks_due = true;
        self.phase = Phase::Scheduled;
        self.failures = 0;
        self.quick_retry_used = false;
        self.last_failure = None;
        self.last_error = None;
        Rotated {
            expires_at,
            lifetime: expires_at.duration_since(sent_at).unwrap_or_default(),
        }
    }

    /// A failed refresh: keeps a refresh token the server rotated anyway, records the
    /// error, and decides when to try again (the caller saves first, if need be).
    pub fn failed(
        &mut self,
        failure: &mut Failure,
        sent_at: SystemTime,
        from_bootstrap: bool,
        now: SystemTime,
        random: f64,
    ) -> Reaction {
        if let Some(rotated) = failure.rotated.take()
            && self.cfg.has_chain()
        {
            self.keep_rotated(rotated, sent_at, from_bootstrap);
        }
        self.failures = self.failures.saturating_add(1);
        self.last_failure = Some(failure.kind);
        // A backoff never sleeps past the expiry of a token still in use (design.md §6); a
        // server's own Retry-After is still honoured.
        let left = self.time_left(now).map(|l| l.max(self.cfg.retry.initial));
        let cap = |d: Duration| left.map_or(d, |l| d.min(l));
        let backoff = cap(schedule::backoff(
            &self.cfg.retry,
            self.failures - 1,
            random,
        ));
        let retry_after = failure.retry_after.unwrap_or(Duration::ZERO);
        let (delay, kind) = match failure.kind {
            FailureKind::Transient | FailureKind::Untrusted => {
                (backoff.max(retry_after), RetryKind::Transient)
            }
            FailureKind::Ambiguous if !self.quick_retry_used => {
                self.quick_retry_used = true;
                (schedule::AMBIGUOUS_RETRY, RetryKind::Quick)
            }
            FailureKind::Ambiguous => (backoff, RetryKind::Ambiguous),
            FailureKind::Unexpected => (
                cap(self.cfg.retry.max).max(retry_after),
                RetryKind::Unexpected,
            ),
            FailureKind::Permanent(Permanent::Grant) if from_bootstrap && self.fall_back() => {
                self.record_error(now, &failure.detail, false);
                self.phase = Phase::RetryAt(now);
                return Reaction::FellBack;
            }
            FailureKind::Permanent(p) => {
                self.record_error(now, &failure.detail, true);
                return Reaction::Block(Block::Server(p));
            }
            FailureKind::Local => {
                self.record_error(now, &failure.detail, true);
                return Reaction::Block(Block::Local);
            }
        };
        self.record_error(now, &failure.detail, false);
        self.phase = Phase::RetryAt(now + delay);
        Reaction::Retry {
            delay,
            kind,
            token_expired: self.current_token(now).is_none(),
        }
    }

    /// A bootstrap token adopted over a live chain was refused: back to that chain, and
    /// the refused token remembered (in the state, across restarts) so that it is never
    /// sent again until the bootstrap file changes. False when there is no chain to
    /// fall back to.
    fn fall_back(&mut self) -> bool {
        let (Some(bootstrap), Some(state)) = (&self.bootstrap, &mut self.state) else {
            return false;
        };
        state.refused_bootstrap_sha256 = Some(bootstrap.digest.clone());
        self.bootstrap = None;
        self.unsaved = true;
        true
    }

    /// The server rotated in an answer we cannot use: keep the new token, the old one
    /// is probably dead.
    fn keep_rotated(&mut self, rotated: SecretString, sent_at: SystemTime, from_bootstrap: bool) {
        let origin = self.chain_origin(sent_at, from_bootstrap);
        let generation = self.generation() + 1;
        let mut state = match self.state.take() {
            Some(mut s) => {
                s.refresh_token = Some(rotated);
                s.chain_started_at = origin.chain_started_at;
                s.bootstrap_sha256 = origin.bootstrap_sha256;
                s
            }
            None => State {
                version: VERSION,
                generation,
                refresh_token: Some(rotated),
                access_token: None,
                token_type: String::new(),
                scope: None,
                obtained_at: None,
                expires_at: None,
                chain_started_at: origin.chain_started_at,
                bootstrap_sha256: origin.bootstrap_sha256,
                refused_bootstrap_sha256: None,
                last_error: None,
            },
        };
        state.generation = generation;
        self.state = Some(state);
        self.bootstrap = None;
        self.unsaved = true;
    }

    fn record_error(&mut self, at: SystemTime, message: &str, blocked: bool) {
        self.last_error = Some(message.to_owned());
        if let Some(s) = &mut self.state {
            s.last_error = Some(LastError {
                at,
                message: message.to_owned(),
                blocked,
            });
            self.unsaved = true;
        }
    }

    // ---- writes ----

    pub fn saved(&mut self) {
        self.unsaved = false;
        self.write_error = None;
    }

    pub fn save_failed(&mut self, error: String) {
        self.write_error = Some(error);
    }

    /// Every output holds the current token; true when this rotation's hooks are due.
    pub fn published_ok(&mut self) -> bool {
        self.published = true;
        if !self.unsaved {
            self.write_error = None;
        }
        std::mem::take(&mut self.hooks_due)
    }

    pub fn publish_failed(&mut self, error: String) {
        self.write_error = Some(error);
    }

    pub fn write_error(&self) -> Option<&str> {
        self.write_error.as_deref()
    }

    /// The last refresh failure (or write failure), for `once`.
    pub fn last_error_text(&self) -> String {
        self.last_error
            .clone()
            .or_else(|| self.write_error.clone())
            .unwrap_or_else(|| "refresh failed".into())
    }
}
