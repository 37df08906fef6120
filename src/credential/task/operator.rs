//! What a person does to a credential, and blocking until they do: a chain handed over
//! by `tokend login`, a new bootstrap token or client secret on disk, SIGHUP, SIGUSR1;
//! and the chain-age warning that asks for a login.

use std::time::SystemTime;

use secrecy::SecretString;
use tracing::{error, info, warn};

use crate::config::{CredentialConfig, SecretReadError};
use crate::credential::machine::{Block, Bootstrap, Marks, Resume, Unblocked};
use crate::credential::schedule;
use crate::credential::task::{Credential, LOG};
use crate::rfc3339;
use crate::store::{bootstrap_digest, sha256_hex};

impl Credential {
    /// Blocks with the digests of the files that can unblock it, as they are now.
    pub(super) fn block(&mut self, why: Block) {
        let marks = Marks {
            bootstrap: mark(self.cfg.read_bootstrap()),
            secret: client_mark(&self.cfg),
        };
        self.machine.block(why, marks);
        self.report();
    }

    /// Logs the chain-age warning when it is due.
    pub(super) fn warn_chain_age(&mut self) {
        let Some(w) = self.machine.chain_warning_due(SystemTime::now()) else {
            return;
        };
        let name = &self.cfg.name;
        let when = if w.left.is_zero() {
            format!("has reached its maximum age: run `tokend login {name}`")
        } else {
            format!(
                "reaches its maximum age in {}: run `tokend login {name}` before then",
                schedule::round_for_people(w.left)
            )
        };
        warn!(
            target: LOG,
            chain_started_at = %rfc3339::format(w.started),
            chain_ends_at = %rfc3339::format(w.ends_at),
            "the refresh-token chain {when}"
        );
    }

    /// Adopts a state that `tokend login` handed over; true if there was one.
    pub(super) async fn adopt_handover(&mut self) -> bool {
        let state = match self.on_state_file(|file| file.load_handover()).await {
            Ok(Some(state)) => state,
            Ok(None) => return false,
            Err(e) => {
                error!(target: LOG, error = %e, "cannot read the state handed over by tokend login");
                return false;
            }
        };
        let stored = match self.machine.chain_started_at() {
            Some(_) => None,
            None => self
                .on_state_file(|file| file.load())
                .await
                .ok()
                .flatten()
                .map(|s| s.chain_started_at),
        };
        if !self.machine.is_newer_chain(&state, stored) {
            let _ = self.on_state_file(|file| file.clear_handover()).await;
            return false;
        }
        info!(
            target: LOG,
            "adopting the refresh-token chain that `tokend login` started"
        );
        self.machine.adopt(state, SystemTime::now());
        self.save().await;
        if !self.machine.needs_save()
            && let Err(e) = self.on_state_file(|file| file.clear_handover()).await
        {
            // Not adopted twice (see `is_newer_chain`), but litter holding a token.
            warn!(target: LOG, error = %e, "cannot remove the handed-over state file; remove it by hand");
        }
        true
    }

    /// While blocked: a new bootstrap token or client secret on disk resumes refreshing.
    pub(super) async fn check_unblock_files(&mut self) {
        if self.adopt_handover().await {
            return;
        }
        let bootstrap = self.cfg.read_bootstrap().ok().map(digested);
        let secret = client_mark(&self.cfg);
        let in_file = self.cfg.client_file().is_some();
        let now = SystemTime::now();
        match self
            .machine
            .unblock_by_files(now, bootstrap, secret, in_file)
        {
            Some(Unblocked::Bootstrap) => info!(
                target: LOG,
                "a new bootstrap refresh token appeared; resuming"
            ),
            Some(Unblocked::Secret) => {
                let what = match self.cfg.client_secret {
                    Some(_) => "the client secret",
                    None => "the client's assertion key",
                };
                info!(target: LOG, "{what} changed; resuming")
            }
            None => {}
        }
    }

    /// SIGHUP: adopt a new login or a changed bootstrap token; give a blocked credential
    /// another try.
    pub(super) async fn resume(&mut self) {
        if self.adopt_handover().await {
            return;
        }
        let bootstrap = self.cfg.read_bootstrap().ok().map(digested);
        match self.machine.resume(SystemTime::now(), bootstrap) {
            Resume::Restart => self.start().await,
            Resume::AdoptedBootstrap => info!(
                target: LOG,
                "the bootstrap refresh token changed; adopting it"
            ),
            Resume::Retrying => info!(target: LOG, "retrying after reload"),
            Resume::Unchanged => {}
        }
    }

    /// SIGUSR1.
    pub(super) fn refresh_now(&mut self) {
        if let Err(why) = self.machine.refresh_now(SystemTime::now()) {
            warn!(target: LOG, "not refreshing: {}", self.machine.block_message(why));
        }
    }
}

/// A bootstrap token with its digest.
pub(super) fn digested(token: SecretString) -> Bootstrap {
    let digest = bootstrap_digest(&token);
    Bootstrap { token, digest }
}

/// A digest of a secret's current value, if it can be read: what a blocked credential
/// compares to notice a new bootstrap token or client secret.
fn mark(read: Result<SecretString, SecretReadError>) -> Option<String> {
    read.ok().map(|t| bootstrap_digest(&t))
}

/// The mark of what the client authenticates with: its secret, or its assertion key
/// file's content (a certificate is read once, when the credential starts).
fn client_mark(cfg: &CredentialConfig) -> Option<String> {
    match (&cfg.client_secret, cfg.client_file()) {
        (Some(secret), _) => mark(secret.read()),
        (None, Some(key_file)) => std::fs::read(key_file).ok().map(|pem| sha256_hex(&pem)),
        (None, None) => None,
    }
}
