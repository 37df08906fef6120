//! A credential's condition as the rest of the process sees it: readiness, expiry, the
//! last refresh and error, the chain's age. Credentials publish it; the board, metrics,
//! systemd notifications and `/readyz` read it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::telemetry::tally::{AttemptResult, Tally};

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
    /// With coordination (design.md §11): whether this replica leads, and the generation
    /// of the chain in hand.
    pub shared: Option<Shared>,
}

/// A credential's part in a shared chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Shared {
    pub leader: bool,
    pub generation: u64,
    /// Since when another replica's unfinished refresh is being waited on, if one is.
    pub waiting_since: Option<SystemTime>,
}

/// A credential's health as its task last reported it: the task writes through its
/// [`Reporter`], the board reads. (A `watch` channel would do, but costs 480 bytes per
/// credential for wake-ups nobody waits on.)
#[derive(Debug, Default)]
pub struct Report {
    health: Mutex<Health>,
    /// The task's loop still runs.
    alive: AtomicBool,
    /// Its refresh attempts, for the metrics: here rather than in a map of the board's,
    /// so that counting one needs no lookup and costs no entry.
    tally: Tally,
}

impl Report {
    pub fn get(&self) -> Health {
        self.peek(Health::clone)
    }

    /// Looks at the health without copying it.
    pub fn peek<T>(&self, look: impl FnOnce(&Health) -> T) -> T {
        look(&self.health.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    pub fn tally(&self) -> &Tally {
        &self.tally
    }
}

/// The task's end of a [`Report`]; when it is dropped, the loop has ended.
#[derive(Debug)]
pub struct Reporter(Arc<Report>);

impl Reporter {
    pub fn new() -> (Reporter, Arc<Report>) {
        let report = Arc::new(Report {
            health: Mutex::default(),
            alive: AtomicBool::new(true),
            tally: Tally::default(),
        });
        (Reporter(report.clone()), report)
    }

    /// Replaces the health; `on_change` sees the old and new one first. True when it
    /// changed.
    pub fn set(&self, health: Health, on_change: impl FnOnce(&Health, &Health)) -> bool {
        let mut current = self.0.health.lock().unwrap_or_else(|e| e.into_inner());
        if *current == health {
            return false;
        }
        on_change(&current, &health);
        *current = health;
        true
    }

    /// Counts one refresh attempt and how long its request took.
    pub fn attempt(&self, result: AttemptResult, took: Duration) {
        self.0.tally.record(result, took);
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::Release);
    }
}
