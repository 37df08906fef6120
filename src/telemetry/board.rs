//! The board of every credential's health: what `/readyz`, `/metrics`, systemd's
//! `STATUS=` and the daemon's readiness read.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use tokio::sync::Notify;

use crate::telemetry::health::{Health, Report};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::series::{self, Sample};

/// What the daemon knows of its credentials, shared with the health server.
#[derive(Default)]
pub struct Board {
    entries: RwLock<BTreeMap<String, Arc<Report>>>,
    /// Poked whenever a credential's health changes.
    pub changed: Notify,
    /// How many credentials are ready, and blocked: kept as their health changes, so
    /// that readiness and systemd's status line cost nothing per credential (with
    /// thousands, recounting at each change made every refresh O(N)).
    ready: AtomicUsize,
    blocked: AtomicUsize,
    pub metrics: Metrics,
}

/// How many credentials `/readyz` names when more are not ready: during a first round
/// of thousands, a probe should not read a page per credential.
const READINESS_LINES: usize = 20;

impl Board {
    pub fn set(&self, name: &str, health: Arc<Report>) {
        if let Some(old) = self.write().insert(name.to_owned(), health) {
            self.counted(&old.get(), &Health::default());
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

    pub fn remove(&self, name: &str) {
        if let Some(report) = self.write().remove(name) {
            self.counted(&report.get(), &Health::default());
        }
        self.metrics.forget(name);
        self.changed.notify_one();
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<String, Arc<Report>>> {
        self.entries.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<String, Arc<Report>>> {
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The credentials whose loop has ended (`/healthz`): a look at a flag each, cheap
    /// enough for a probe during a refresh storm.
    pub fn ended(&self) -> Vec<String> {
        self.read()
            .iter()
            .filter(|(_, report)| !report.alive())
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// `Ok` when every credential is ready, else a line per credential that is not (the
    /// first [`READINESS_LINES`], then how many more).
    pub fn readiness(&self) -> Result<(), String> {
        if self.all_ready() {
            return Ok(());
        }
        let entries = self.read();
        let mut lines = Vec::new();
        let mut more = 0;
        for (name, report) in entries.iter() {
            let reason = report.peek(|h| {
                (!h.ready).then(|| h.reason.clone().unwrap_or_else(|| "not ready".into()))
            });
            match reason {
                Some(reason) if lines.len() < READINESS_LINES => {
                    lines.push(format!("{name}: {reason}"))
                }
                Some(_) => more += 1,
                None => {}
            }
        }
        if more > 0 {
            lines.push(format!("and {more} more not ready"));
        }
        if lines.is_empty() {
            Ok(())
        } else {
            Err(lines.join("\n"))
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
                .filter(|(_, report)| report.peek(|h| h.blocked))
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
        let healths: Vec<Health> = entries.values().map(|r| r.get()).collect();
        let samples: Vec<Sample> = entries
            .iter()
            .zip(&healths)
            .map(|((name, report), health)| Sample {
                name,
                health,
                tally: report.tally(),
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

    #[test]
    fn probes_name_a_few_credentials_and_count_the_rest() {
        let board = Board::default();
        let reporters: Vec<Reporter> = (0..READINESS_LINES + 5)
            .map(|i| {
                let (reporter, report) = Reporter::new();
                board.set(&format!("c{i:02}"), report);
                reporter
            })
            .collect();
        let why = board.readiness().unwrap_err();
        let lines: Vec<&str> = why.lines().collect();
        assert_eq!(lines.len(), READINESS_LINES + 1, "{why}");
        assert_eq!(lines[0], "c00: not ready");
        assert_eq!(lines[READINESS_LINES], "and 5 more not ready");
        assert!(board.ended().is_empty());
        let mut reporters = reporters.into_iter();
        drop(reporters.next());
        assert_eq!(board.ended(), ["c00"]);
    }
}
