//! Prometheus metrics (design.md §9) in the classic text format that every scraper and
//! `promtool check metrics` accept.
//!
//! The series every credential has are made at each scrape ([`super::series`]); the
//! ones here appear on first use: rotation hooks and coordination errors.

use prometheus::proto::MetricFamily;
use prometheus::{Encoder, IntCounterVec, Opts, Registry, TextEncoder};

/// Which rotation hook ran, and how it ended, as the labels say it.
#[derive(Debug, Clone, Copy)]
pub enum HookKind {
    Command,
    Signal,
}

#[derive(Debug, Clone, Copy)]
pub enum HookResult {
    Ok,
    Failed,
    Timeout,
}

impl HookKind {
    const ALL: [HookKind; 2] = [HookKind::Command, HookKind::Signal];

    fn label(self) -> &'static str {
        match self {
            HookKind::Command => "command",
            HookKind::Signal => "signal",
        }
    }
}

impl HookResult {
    const ALL: [HookResult; 3] = [HookResult::Ok, HookResult::Failed, HookResult::Timeout];

    fn label(self) -> &'static str {
        match self {
            HookResult::Ok => "ok",
            HookResult::Failed => "failed",
            HookResult::Timeout => "timeout",
        }
    }
}

/// A store operation (design.md §11), as the `op` label of
/// `tokend_coordination_errors_total` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreOp {
    /// Granting or renewing this replica's lease.
    Lease,
    /// Trying to become a credential's leader.
    Campaign,
    /// Reading or watching the shared record.
    Read,
    /// Recording the intent to refresh.
    Intent,
    /// Storing a rotated (or newer local) record.
    Write,
    /// Giving the lease back on stop.
    Release,
}

impl StoreOp {
    pub const ALL: [StoreOp; 6] = [
        StoreOp::Lease,
        StoreOp::Campaign,
        StoreOp::Read,
        StoreOp::Intent,
        StoreOp::Write,
        StoreOp::Release,
    ];

    pub fn label(self) -> &'static str {
        match self {
            StoreOp::Lease => "lease",
            StoreOp::Campaign => "campaign",
            StoreOp::Read => "read",
            StoreOp::Intent => "intent",
            StoreOp::Write => "write",
            StoreOp::Release => "release",
        }
    }
}

/// The series that appear on first use.
pub struct Metrics {
    registry: Registry,
    hooks: IntCounterVec,
    coordination_errors: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        // The names and help texts are constants, so building them cannot fail at run time;
        // the tests exercise every one of them.
        let m = Metrics {
            registry: Registry::new(),
            hooks: IntCounterVec::new(
                Opts::new(
                    "tokend_hook_runs_total",
                    "Rotation hooks run, by hook and result.",
                ),
                &["credential", "hook", "result"],
            )
            .expect("valid metric"),
            coordination_errors: IntCounterVec::new(
                Opts::new(
                    "tokend_coordination_errors_total",
                    "Failed store operations by operation; credential is empty for the replica's lease.",
                ),
                &["credential", "op"],
            )
            .expect("valid metric"),
        };
        for c in [m.hooks.clone(), m.coordination_errors.clone()] {
            m.registry
                .register(Box::new(c))
                .expect("distinct metric names");
        }
        m
    }
}

impl Metrics {
    /// Counts one run of a rotation hook.
    pub fn hook(&self, credential: &str, kind: HookKind, result: HookResult) {
        self.hooks
            .with_label_values(&[credential, kind.label(), result.label()])
            .inc();
    }

    /// Counts one failed store operation (design.md §11); `credential` is empty for the
    /// replica's own lease.
    pub fn coordination_error(&self, credential: &str, op: StoreOp) {
        self.coordination_errors
            .with_label_values(&[credential, op.label()])
            .inc();
    }

    /// Drops every series of a credential that no longer exists.
    pub fn forget(&self, credential: &str) {
        for op in StoreOp::ALL {
            let _ = self
                .coordination_errors
                .remove_label_values(&[credential, op.label()]);
        }
        for kind in HookKind::ALL {
            for result in HookResult::ALL {
                let _ = self
                    .hooks
                    .remove_label_values(&[credential, kind.label(), result.label()]);
            }
        }
    }

    /// The text exposition of these series and the credentials' `per_credential` ones.
    pub fn encode(&self, per_credential: Vec<MetricFamily>) -> String {
        let mut families = self.registry.gather();
        families.extend(per_credential);
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::new();
        if TextEncoder::new().encode(&families, &mut out).is_err() {
            out.clear();
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_appear_on_use_and_are_forgotten() {
        let m = Metrics::default();
        assert_eq!(m.encode(Vec::new()), "");
        m.hook("c", HookKind::Command, HookResult::Timeout);
        m.coordination_error("c", StoreOp::Write);
        let text = m.encode(Vec::new());
        for name in [
            "tokend_hook_runs_total{credential=\"c\",hook=\"command\",result=\"timeout\"} 1",
            "tokend_coordination_errors_total{credential=\"c\",op=\"write\"} 1",
        ] {
            assert!(text.contains(name), "{name} in\n{text}");
        }
        m.forget("c");
        assert!(!m.encode(Vec::new()).contains("credential=\"c\""));
    }
}
