//! One pass for `tokend once`: refresh only what is due, write the outputs, say how it
//! went (the exit code follows from it).

use std::time::SystemTime;

use crate::credential::machine::{Block, Phase};
use crate::credential::schedule;
use crate::credential::task::Credential;
use crate::oauth::FailureKind;

/// How a single pass of `once` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnceResult {
    Fresh,
    Temporary(String),
    /// The server refused: only a person can fix it (exit 77).
    Permanent(String),
    /// Something on this host is missing: a file, a first token (exit 78).
    Local(String),
    Other(String),
}

impl Credential {
    /// One pass for `tokend once`: refresh only if due, make sure the outputs are written.
    pub async fn once(mut self) -> OnceResult {
        self.one_pass = true;
        self.start().await;
        let mut tries = 0;
        loop {
            if let Phase::Blocked { why, .. } = self.machine.phase() {
                let message = self.machine.block_message(*why);
                return match why {
                    Block::Server(_) => OnceResult::Permanent(message),
                    // One pass does not wait for the file to become readable.
                    Block::Local => OnceResult::Local(format!(
                        "{}; nothing was sent",
                        self.machine.last_error_text()
                    )),
                    Block::NoBootstrap => OnceResult::Local(message),
                    Block::UnreadableState => OnceResult::Other(message),
                };
            }
            if !self.machine.is_due(SystemTime::now()) {
                break;
            }
            tries += 1;
            let slot = self.endpoint.slot().await;
            self.attempt(slot).await;
            match self.machine.last_failure() {
                None => break,
                // The one quick retry after an ambiguous answer; then leave the rest to the caller.
                Some(FailureKind::Ambiguous) if tries == 1 => {
                    tokio::time::sleep(schedule::AMBIGUOUS_RETRY).await
                }
                // Blocked: the top of the loop says how.
                Some(FailureKind::Permanent(_) | FailureKind::Local) => {}
                Some(FailureKind::Unexpected) => {
                    return OnceResult::Other(self.machine.last_error_text());
                }
                Some(FailureKind::Untrusted) => {
                    return OnceResult::Local(self.machine.last_error_text());
                }
                Some(_) => return OnceResult::Temporary(self.machine.last_error_text()),
            }
        }
        self.reap_hooks();
        self.catch_up_writes().await;
        // The process exits next: let this run's hooks finish (each within its timeout).
        while self.hooks.join_next().await.is_some() {}
        if self.machine.needs_save() || self.machine.needs_publish() {
            return OnceResult::Temporary(
                self.machine
                    .write_error()
                    .unwrap_or("outputs not written")
                    .to_owned(),
            );
        }
        OnceResult::Fresh
    }
}
