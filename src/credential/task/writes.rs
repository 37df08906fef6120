//! A credential's writes and reports: the state saved, the outputs published, the
//! rotation hooks started, and its health on the board.
//!
//! Every file operation runs on tokio's blocking pool, and the task waits for it there:
//! a save or an output write ends in a disk sync, and the runtime thread meanwhile
//! serves every other credential and the health endpoints. The order of one
//! credential's writes is unchanged: it waits for each before the next.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use tokio::sync::Semaphore;
use tracing::{error, info, warn};

use crate::credential::task::{Credential, LOG};
use crate::publish::{self, Published};
use crate::store::StateFile;
use crate::telemetry::health::Shared;

/// Threads for the state saves and output writes (each ends in a disk sync) that run
/// beside the one runtime thread. Concurrent syncs share the file system's work;
/// more threads than token requests in flight (16) buy nothing.
pub const DISK_THREADS: usize = 16;

/// Places for file work: a credential waits for one (in its own future, at no cost)
/// before its work goes to the blocking pool, whose queue has no bound: 10,000
/// credentials starting at once queued 10,000 jobs there, each with its closure and
/// then its result.
static DISK: Semaphore = Semaphore::const_new(DISK_THREADS);

/// Runs `work` on the blocking pool and waits for it.
pub(super) async fn off_thread<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    // The semaphore is never closed; should acquiring fail, the work runs unbounded.
    let place = DISK.acquire().await.ok();
    let work = move || {
        let _place = place;
        work()
    };
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // A blocking task is cancelled only when the runtime shuts down, which drops
        // this task too: there is no caller left to answer.
        Err(_) => std::future::pending().await,
    }
}

impl Credential {
    /// Runs `work` with the state file, on the blocking pool.
    pub(super) async fn on_state_file<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut StateFile) -> T + Send + 'static,
    ) -> T {
        let file = self.state_file.clone();
        off_thread(move || work(&mut lock(&file))).await
    }

    pub(super) async fn save(&mut self) {
        let Some(state) = self.machine.state().cloned() else {
            return;
        };
        match self.on_state_file(move |file| file.save(&state)).await {
            Ok(()) => self.machine.saved(),
            Err(e) => {
                error!(target: LOG, error = %e, "cannot save the state; the refresh token is kept in memory and the write is retried");
                self.machine.save_failed(e.to_string());
            }
        }
    }

    pub(super) async fn save_if_needed(&mut self) {
        if self.machine.needs_save() {
            self.save().await;
        }
    }

    pub(super) async fn publish(&mut self) {
        let Some(state) = self.machine.state() else {
            return;
        };
        let Some(access_token) = state.valid_access_token(SystemTime::now()).cloned() else {
            return;
        };
        let Some(expires_at) = state.expires_at else {
            return;
        };
        // Only what the outputs hold goes to the writing thread; the refresh token stays.
        let token_type = state.token_type.clone();
        let scope = state.scope.clone();
        let cfg = self.cfg.clone();
        let written = off_thread(move || {
            let published = Published {
                access_token: &access_token,
                token_type: &token_type,
                expires_at,
                scope: scope.as_deref(),
            };
            publish::publish(&cfg, &published)
        })
        .await;
        match written {
            Ok(()) => {
                if self.machine.published_ok()
                    && let Some(hook) = &self.cfg.on_rotate
                {
                    self.hooks.spawn(publish::hooks::run(
                        (**hook).clone(),
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

    /// A state save or output write that failed earlier, or was left for the loop.
    pub(super) fn writes_pending(&self) -> bool {
        self.machine.needs_save() || self.machine.needs_publish()
    }

    /// Retries a state save or output write that failed earlier.
    pub(super) async fn catch_up_writes(&mut self) {
        self.save_if_needed().await;
        if self.machine.needs_publish() {
            self.publish().await;
        }
    }

    /// Reaps finished hooks (their outcome is already logged and counted).
    pub(super) fn reap_hooks(&mut self) {
        while self.hooks.try_join_next().is_some() {}
    }

    /// Publishes the credential's health to the board, logging readiness changes.
    pub(super) fn report(&self) {
        let now = SystemTime::now();
        let mut health = self.machine.health(now);
        if let Some(r) = &self.replica {
            health.shared = Some(Shared {
                leader: r.member().peek(|v| v.role.is_leader()),
                generation: self.machine.generation(),
                waiting_since: r.waiting.as_ref().map(|i| i.since),
            });
            if let (false, Some(intent)) = (health.ready, &r.waiting) {
                health.reason = Some(format!(
                    "waiting for replica {} to store the refresh of generation {} it began at {}",
                    intent.identity,
                    intent.generation,
                    crate::rfc3339::format(intent.since)
                ));
            }
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

/// The state file, even after a write panicked while holding it: each save writes a
/// whole record, so nothing half-done in memory carries over.
fn lock(file: &Mutex<StateFile>) -> std::sync::MutexGuard<'_, StateFile> {
    file.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The state file as the task and its blocking work share it.
pub(super) type SharedStateFile = Arc<Mutex<StateFile>>;
