//! What the machine tells the outside: health, why it is not ready, the chain-age warning.

use std::time::{Duration, SystemTime};

use crate::credential::machine::Machine;
use crate::credential::machine::types::{Block, ChainWarning, Phase};
use crate::credential::schedule::ChainAge;
use crate::telemetry::Health;

impl Machine {
    pub(super) fn chain_age(&self) -> Option<ChainAge> {
        ChainAge::of(&self.cfg.chain, self.state.as_ref()?.chain_started_at)
    }

    /// The chain-age warning, when it is due (at the warning point, then daily); it
    /// counts as given once returned.
    pub fn chain_warning_due(&mut self, now: SystemTime) -> Option<ChainWarning> {
        let age = self.chain_age()?;
        let started = self.chain_started_at()?;
        if now < age.next_warning(self.chain_warned_at) {
            return None;
        }
        self.chain_warned_at = Some(now);
        Some(ChainWarning {
            started,
            ends_at: age.ends_at,
            left: age.ends_at.duration_since(now).unwrap_or(Duration::ZERO),
        })
    }

    /// The credential's condition as of `now`.
    pub fn health(&self, now: SystemTime) -> Health {
        let blocked = self.is_blocked();
        let state = self.state.as_ref();
        let ready =
            !blocked && !self.unsaved && self.published && self.current_token(now).is_some();
        let chain_age = self.chain_age();
        Health {
            ready,
            // The client-credentials grant has no chain to age.
            chain_started_at: state
                .filter(|_| self.cfg.has_chain())
                .map(|s| s.chain_started_at),
            chain_ends_at: chain_age.map(|a| a.ends_at),
            chain_warning: chain_age.is_some_and(|a| a.warning(now)),
            reason: (!ready).then(|| self.public_reason(now)),
            expires_at: state.and_then(|s| s.expires_at),
            last_refresh: state.and_then(|s| s.obtained_at),
            last_error: self.write_error.clone().or_else(|| self.last_error.clone()),
            blocked,
            shared: None,
        }
    }

    /// Why the credential is not ready, in a few words, for the log.
    pub fn unready_reason(&self, now: SystemTime) -> String {
        match self.phase {
            Phase::Blocked { why, .. } => format!("blocked: {}", self.block_message(why)),
            _ => self.unready_detail(now),
        }
    }

    /// The same without file paths, for `/readyz`, which may be reachable from the pod
    /// network: what is wrong, and that the log names the file.
    fn public_reason(&self, now: SystemTime) -> String {
        match self.phase {
            Phase::Blocked {
                why: Block::Local, ..
            } => "blocked: a file the request needs cannot be read (the log names it)".into(),
            Phase::Blocked {
                why: Block::UnreadableState,
                ..
            } => "blocked: the state file cannot be read (the log names it)".into(),
            _ => self.unready_reason(now),
        }
    }

    fn unready_detail(&self, now: SystemTime) -> String {
        if self.current_token(now).is_none() {
            "no unexpired access token".into()
        } else if self.unsaved {
            "the state is not saved".into()
        } else {
            "outputs not written".into()
        }
    }
}
