//! The board of every credential's health: what `/readyz`, `/metrics`, systemd's
//! `STATUS=` and the daemon's readiness read.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::SystemTime;

use tokio::sync::{Notify, watch};

use crate::telemetry::health::Health;
use crate::telemetry::metrics::Metrics;

/// What the daemon knows of its credentials, shared with the health server.
#[derive(Default)]
pub struct Board {
    entries: RwLock<BTreeMap<String, watch::Receiver<Health>>>,
    /// Poked whenever a credential's health changes.
    pub changed: Notify,
    pub metrics: Metrics,
}

/// One credential's health as of now; `alive` is false once its loop has ended.
pub struct Entry {
    pub name: String,
    pub health: Health,
    pub alive: bool,
}

impl Board {
    pub fn set(&self, name: &str, health: watch::Receiver<Health>) {
        self.metrics.register(name);
        self.write().insert(name.to_owned(), health);
        self.changed.notify_one();
    }

    pub fn remove(&self, name: &str) {
        self.write().remove(name);
        self.metrics.forget(name);
        self.changed.notify_one();
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, watch::Receiver<Health>>> {
        self.entries.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn entries(&self) -> Vec<Entry> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .map(|(name, rx)| Entry {
                name: name.clone(),
                health: rx.borrow().clone(),
                // The sender lives as long as the credential's loop.
                alive: rx.has_changed().is_ok(),
            })
            .collect()
    }

    /// `Ok` when every credential is ready, else a line per credential that is not.
    pub fn readiness(&self) -> Result<(), String> {
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
        let entries = self.entries();
        let ready = entries.iter().filter(|e| e.health.ready).count();
        let mut text = format!("{ready}/{} credentials ready", entries.len());
        let blocked: Vec<&str> = entries
            .iter()
            .filter(|e| e.health.blocked)
            .map(|e| e.name.as_str())
            .collect();
        if !blocked.is_empty() {
            text.push_str(&format!("; blocked: {}", blocked.join(", ")));
        }
        text
    }

    /// Every metric, with the condition gauges set as of now.
    pub fn metrics_text(&self) -> String {
        let now = SystemTime::now();
        for e in self.entries() {
            self.metrics.observe(&e.name, &e.health, now);
        }
        self.metrics.encode()
    }
}
