//! A credential's writes and reports: the state saved, the outputs published, the
//! rotation hooks started, and its health on the board.

use std::time::SystemTime;

use tracing::{error, info, warn};

use crate::credential::task::{Credential, LOG};
use crate::publish::{self, Published};
use crate::store::StateStore;
use crate::telemetry::health::Shared;

impl<S: StateStore> Credential<S> {
    pub(super) fn save(&mut self) {
        let Some(state) = self.machine.state() else {
            return;
        };
        match self.store.save(state) {
            Ok(()) => self.machine.saved(),
            Err(e) => {
                error!(target: LOG, error = %e, "cannot save the state; the refresh token is kept in memory and the write is retried");
                self.machine.save_failed(e.to_string());
            }
        }
    }

    pub(super) fn save_if_needed(&mut self) {
        if self.machine.needs_save() {
            self.save();
        }
    }

    pub(super) fn publish(&mut self) {
        let Some(state) = self.machine.state() else {
            return;
        };
        let Some(token) = state.valid_access_token(SystemTime::now()) else {
            return;
        };
        let Some(expires_at) = state.expires_at else {
            return;
        };
        let published = Published {
            access_token: token,
            token_type: &state.token_type,
            expires_at,
            scope: state.scope.as_deref(),
        };
        match publish::publish(&self.cfg, &published) {
            Ok(()) => {
                if self.machine.published_ok()
                    && let Some(hook) = &self.cfg.on_rotate
                {
                    self.hooks.spawn(publish::hooks::run(
                        hook.clone(),
                        self.cfg.name.clone(),
                        expires_at,
                        self.board.clone(),
                    ));
                }
            }
            Err(e) => {
                error!(target: LOG, error = %e, "cannot write an output; retrying");
                self.machine.publish_failed(e.to_string());
            }
        }
    }

    /// Retries a state save or output write that failed earlier.
    pub(super) fn catch_up_writes(&mut self) {
        // Reap finished hooks (their outcome is already logged and counted).
        while self.hooks.try_join_next().is_some() {}
        self.save_if_needed();
        if self.machine.needs_publish() {
            self.publish();
        }
    }

    /// Publishes the credential's health to the board, logging readiness changes.
    pub(super) fn report(&self) {
        let now = SystemTime::now();
        let mut health = self.machine.health(now);
        if let Some(member) = &self.member {
            health.shared = Some(Shared {
                leader: member.peek(|v| v.role.is_leader()),
                generation: self.machine.generation(),
            });
        }
        let changed = self.health.set(health, |old, new| {
            match (old.ready, new.ready) {
                (false, true) => info!(target: LOG, "ready"),
                (true, false) => {
                    warn!(target: LOG, reason = %self.machine.unready_reason(now), "not ready")
                }
                _ => {}
            }
            self.board.counted(old, new);
        });
        if changed {
            self.board.changed.notify_one();
        }
    }
}
