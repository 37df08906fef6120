//! The board of every credential's health: what `/readyz`, `/metrics`, systemd's
//! `STATUS=` and the daemon's readiness read.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;

use crate::telemetry::health::{Health, Report};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::series::{self, AttemptResult, Sample, Tally};

/// One credential on the board.
struct Slot {
    health: Arc<Report>,
    tally: Tally,
}

/// What the daemon knows of its credentials, shared with the health server.
#[derive(Default)]
pub struct Board {
    entries: RwLock<BTreeMap<String, Slot>>,
    /// Poked whenever a credential's health changes.
    pub changed: Notify,
    /// How many credentials are ready, and blocked: kept as their health changes, so
    /// that readiness and systemd's status line cost nothing per credential (with
    /// thousands, recounting at each change made every refresh O(N); issue 19).
    ready: AtomicUsize,
    blocked: AtomicUsize,
    pub metrics: Metrics,
}

/// One credential's health as of now; `alive` is false once its loop has ended.
pub struct Entry {
    pub name: String,
    pub health: Health,
    pub alive: bool,
}

impl Board {
    pub fn set(&self, name: &str, health: Arc<Report>) {
        let slot = Slot {
            health,
            tally: Tally::default(),
        };
        if let Some(old) = self.write().insert(name.to_owned(), slot) {
            self.counted(&old.health.get(), &Health::default());
        }
        self.changed.notify_one();
    }

    /// Keeps the counts as a credential's health goes from `before` to `after`.
    pub fn counted(&self, before: &Health, after: &Health) {
        for (counter, was, is) in [
            (&self.ready, before.ready, after.ready),
            (&self.blocked, before.blocked, after.blocked),
        ] {
            match (was, is) {
                (false, true) => counter.fetch_add(1, Ordering::Relaxed),
                (true, false) => counter.fetch_sub(1, Ordering::Relaxed),
                _ => 0,
            };
        }
    }

    /// Every credential is ready.
    pub fn all_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) == self.read().len()
    }

    /// Counts one refresh attempt of `name` and how long its request took.
    pub fn attempt(&self, name: &str, result: AttemptResult, took: Duration) {
        if let Some(slot) = self.read().get(name) {
            slot.tally.record(result, took);
        }
    }

    pub fn remove(&self, name: &str) {
        if let Some(slot) = self.write().remove(name) {
            self.counted(&slot.health.get(), &Health::default());
        }
        self.metrics.forget(name);
        self.changed.notify_one();
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<String, Slot>> {
        self.entries.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<String, Slot>> {
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn entries(&self) -> Vec<Entry> {
        self.read()
            .iter()
            .map(|(name, slot)| Entry {
                name: name.clone(),
                health: slot.health.get(),
                alive: slot.health.alive(),
            })
            .collect()
    }

    /// `Ok` when every credential is ready, else a line per credential that is not.
    pub fn readiness(&self) -> Result<(), String> {
        if self.all_ready() {
            return Ok(());
        }
        let reasons: Vec<String> = self
            .entries()
            .into_iter()
            .filter(|e| !e.health.ready)
            .map(|e| {
                format!(
                    "{}: {}",
                    e.name,
                    e.health.reason.as_deref().unwrap_or("not ready")
                )
            })
            .collect();
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons.join("\n"))
        }
    }

    /// A one-line summary for systemd's STATUS=.
    pub fn summary(&self) -> String {
        let entries = self.read();
        let ready = self.ready.load(Ordering::Relaxed);
        let mut text = format!("{ready}/{} credentials ready", entries.len());
        if self.blocked.load(Ordering::Relaxed) > 0 {
            let blocked: Vec<&str> = entries
                .iter()
                .filter(|(_, slot)| slot.health.get().blocked)
                .map(|(name, _)| name.as_str())
                .collect();
            text.push_str(&format!("; blocked: {}", blocked.join(", ")));
        }
        text
    }

    /// Every metric, the credentials' conditions as of now.
    pub fn metrics_text(&self) -> String {
        let entries = self.read();
        // Copies of each health, so that no credential waits on a scrape to report.
        let healths: Vec<Health> = entries.values().map(|s| s.health.get()).collect();
        let samples: Vec<Sample> = entries
            .iter()
            .zip(&healths)
            .map(|((name, slot), health)| Sample {
                name,
                health,
                tally: &slot.tally,
            })
            .collect();
        let families = series::families(&samples, SystemTime::now());
        drop(samples);
        drop(entries);
        self.metrics.encode(families)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::health::Reporter;

    #[test]
    fn counts_follow_reports_and_removals() {
        let board = Board::default();
        let (a, report_a) = Reporter::new();
        let (b, report_b) = Reporter::new();
        board.set("a", report_a);
        board.set("b", report_b);
        let ready = Health {
            ready: true,
            ..Health::default()
        };
        let report = |reporter: &Reporter, health: &Health| {
            reporter.set(health.clone(), |old, new| board.counted(old, new));
        };
        report(&a, &ready);
        assert!(!board.all_ready());
        assert_eq!(board.summary(), "1/2 credentials ready");
        report(&b, &ready);
        report(&b, &ready); // unchanged: counted once
        assert!(board.all_ready() && board.readiness().is_ok());
        let blocked = Health {
            blocked: true,
            ..Health::default()
        };
        report(&a, &blocked);
        assert_eq!(board.summary(), "1/2 credentials ready; blocked: a");
        board.remove("a");
        assert_eq!(board.summary(), "1/1 credentials ready");
        assert!(board.all_ready());
        // A credential set again under the same name starts from nothing.
        let (_c, report_c) = Reporter::new();
        board.set("b", report_c);
        assert_eq!(board.summary(), "0/1 credentials ready");
        drop(b);
    }
}
