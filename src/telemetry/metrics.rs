//! Prometheus metrics (SPEC §9), per credential, in the classic text format that every
//! scraper and `promtool check metrics` accept.
//!
//! Counters and the duration histogram are recorded as refreshes happen; the gauges that
//! describe a credential's condition are set from its [`Health`] at each scrape.

use std::time::{Duration, SystemTime};

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::telemetry::health::Health;

/// How a refresh attempt ended, as the `result` label says it.
#[derive(Debug, Clone, Copy)]
pub enum AttemptResult {
    Success,
    Transient,
    Ambiguous,
    Permanent,
    Unexpected,
    /// Nothing was sent: a local file could not be read.
    Local,
}

impl AttemptResult {
    const ALL: [AttemptResult; 6] = [
        AttemptResult::Success,
        AttemptResult::Transient,
        AttemptResult::Ambiguous,
        AttemptResult::Permanent,
        AttemptResult::Unexpected,
        AttemptResult::Local,
    ];

    fn label(self) -> &'static str {
        match self {
            AttemptResult::Success => "success",
            AttemptResult::Transient => "transient",
            AttemptResult::Ambiguous => "ambiguous",
            AttemptResult::Permanent => "permanent",
            AttemptResult::Unexpected => "unexpected",
            AttemptResult::Local => "local",
        }
    }
}

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

/// A store operation (SPEC §11), as the `op` label of
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

/// Every series tokend exports.
pub struct Metrics {
    registry: Registry,
    expiry: GaugeVec,
    last_success: GaugeVec,
    chain_age: GaugeVec,
    chain_end: GaugeVec,
    chain_warning: IntGaugeVec,
    ready: IntGaugeVec,
    blocked: IntGaugeVec,
    attempts: IntCounterVec,
    duration: HistogramVec,
    hooks: IntCounterVec,
    leader: IntGaugeVec,
    generation: IntGaugeVec,
    coordination_errors: IntCounterVec,
}

const CREDENTIAL: &[&str] = &["credential"];

impl Default for Metrics {
    // Long because it declares every series in one list, which is what it is for.
    fn default() -> Self {
        // The names and help texts are constants, so building them cannot fail at run time;
        // the tests exercise every one of them.
        let gauge = |name: &str, help: &str| {
            GaugeVec::new(Opts::new(name, help), CREDENTIAL).expect("valid metric")
        };
        let int_gauge = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(name, help), CREDENTIAL).expect("valid metric")
        };
        let m = Metrics {
            registry: Registry::new(),
            expiry: gauge(
                "tokend_access_token_expiry_timestamp_seconds",
                "When the published access token expires (Unix time).",
            ),
            last_success: gauge(
                "tokend_last_success_timestamp_seconds",
                "When the last successful refresh was sent (Unix time).",
            ),
            chain_age: gauge(
                "tokend_refresh_token_chain_age_seconds",
                "Time since the bootstrap token of the current refresh-token chain was first used.",
            ),
            chain_end: gauge(
                "tokend_refresh_token_chain_end_timestamp_seconds",
                "When the refresh-token chain reaches refresh_token_max_age (Unix time); absent without one.",
            ),
            chain_warning: int_gauge(
                "tokend_refresh_token_chain_warning",
                "1 once the chain is within warn_before of its maximum age: run tokend login.",
            ),
            ready: int_gauge(
                "tokend_ready",
                "1 when an unexpired access token is saved and published.",
            ),
            blocked: int_gauge(
                "tokend_blocked",
                "1 when refreshing stopped until a person acts.",
            ),
            attempts: IntCounterVec::new(
                Opts::new(
                    "tokend_refresh_attempts_total",
                    "Refresh attempts by result.",
                ),
                &["credential", "result"],
            )
            .expect("valid metric"),
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "tokend_refresh_duration_seconds",
                    "Duration of refresh requests.",
                )
                .buckets(prometheus::exponential_buckets(0.005, 2.0, 12).expect("valid buckets")),
                CREDENTIAL,
            )
            .expect("valid metric"),
            hooks: IntCounterVec::new(
                Opts::new(
                    "tokend_hook_runs_total",
                    "Rotation hooks run, by hook and result.",
                ),
                &["credential", "hook", "result"],
            )
            .expect("valid metric"),
            leader: int_gauge(
                "tokend_leader",
                "With coordination: 1 on the replica that refreshes the credential, 0 elsewhere.",
            ),
            generation: int_gauge(
                "tokend_state_generation",
                "With coordination: the generation of the chain this replica holds.",
            ),
            coordination_errors: IntCounterVec::new(
                Opts::new(
                    "tokend_coordination_errors_total",
                    "Failed store operations by operation; credential is empty for the replica's lease.",
                ),
                &["credential", "op"],
            )
            .expect("valid metric"),
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 13] = [
            Box::new(m.expiry.clone()),
            Box::new(m.last_success.clone()),
            Box::new(m.chain_age.clone()),
            Box::new(m.chain_end.clone()),
            Box::new(m.chain_warning.clone()),
            Box::new(m.ready.clone()),
            Box::new(m.blocked.clone()),
            Box::new(m.attempts.clone()),
            Box::new(m.duration.clone()),
            Box::new(m.hooks.clone()),
            Box::new(m.leader.clone()),
            Box::new(m.generation.clone()),
            Box::new(m.coordination_errors.clone()),
        ];
        for c in collectors {
            m.registry.register(c).expect("distinct metric names");
        }
        m
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Metrics {
    /// Creates a credential's counters and histogram at zero, so that every series is
    /// there from the first scrape, not from the first attempt.
    pub fn register(&self, credential: &str) {
        for result in AttemptResult::ALL {
            self.attempts
                .with_label_values(&[credential, result.label()]);
        }
        self.duration.with_label_values(&[credential]);
    }

    /// Counts one refresh attempt and how long its request took.
    pub fn attempt(&self, credential: &str, result: AttemptResult, took: Duration) {
        self.attempts
            .with_label_values(&[credential, result.label()])
            .inc();
        self.duration
            .with_label_values(&[credential])
            .observe(took.as_secs_f64());
    }

    /// Counts one run of a rotation hook.
    pub fn hook(&self, credential: &str, kind: HookKind, result: HookResult) {
        self.hooks
            .with_label_values(&[credential, kind.label(), result.label()])
            .inc();
    }

    /// Counts one failed store operation (SPEC §11); `credential` is empty for the
    /// replica's own lease.
    pub fn coordination_error(&self, credential: &str, op: StoreOp) {
        self.coordination_errors
            .with_label_values(&[credential, op.label()])
            .inc();
    }

    /// Sets the condition gauges of one credential, as of `now`.
    pub fn observe(&self, credential: &str, health: &Health, now: SystemTime) {
        let set = |family: &GaugeVec, value: Option<f64>| match value {
            Some(v) => family.with_label_values(&[credential]).set(v),
            None => {
                let _ = family.remove_label_values(&[credential]);
            }
        };
        set(&self.expiry, health.expires_at.map(unix_seconds));
        set(&self.last_success, health.last_refresh.map(unix_seconds));
        let age = health.chain_started_at.map(|c| {
            now.duration_since(c)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0)
        });
        set(&self.chain_age, age);
        set(&self.chain_end, health.chain_ends_at.map(unix_seconds));
        self.chain_warning
            .with_label_values(&[credential])
            .set(health.chain_warning as i64);
        self.ready
            .with_label_values(&[credential])
            .set(health.ready as i64);
        self.blocked
            .with_label_values(&[credential])
            .set(health.blocked as i64);
        if let Some(shared) = &health.shared {
            self.leader
                .with_label_values(&[credential])
                .set(shared.leader as i64);
            self.generation
                .with_label_values(&[credential])
                .set(shared.generation as i64);
        }
    }

    /// Drops every series of a credential that no longer exists.
    pub fn forget(&self, credential: &str) {
        for family in [
            &self.expiry,
            &self.last_success,
            &self.chain_age,
            &self.chain_end,
        ] {
            let _ = family.remove_label_values(&[credential]);
        }
        let _ = self.chain_warning.remove_label_values(&[credential]);
        let _ = self.ready.remove_label_values(&[credential]);
        let _ = self.blocked.remove_label_values(&[credential]);
        let _ = self.leader.remove_label_values(&[credential]);
        let _ = self.generation.remove_label_values(&[credential]);
        for op in StoreOp::ALL {
            let _ = self
                .coordination_errors
                .remove_label_values(&[credential, op.label()]);
        }
        let _ = self.duration.remove_label_values(&[credential]);
        for result in AttemptResult::ALL {
            let _ = self
                .attempts
                .remove_label_values(&[credential, result.label()]);
        }
        for kind in HookKind::ALL {
            for result in HookResult::ALL {
                let _ = self
                    .hooks
                    .remove_label_values(&[credential, kind.label(), result.label()]);
            }
        }
    }

    /// The text exposition of every series.
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .is_err()
        {
            out.clear();
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_is_exported_and_forgotten() {
        let m = Metrics::default();
        let now = SystemTime::now();
        let health = Health {
            ready: true,
            expires_at: Some(now),
            last_refresh: Some(now),
            chain_started_at: Some(now - Duration::from_secs(10)),
            chain_ends_at: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000)),
            chain_warning: true,
            ..Health::default()
        };
        m.observe("c", &health, now);
        m.attempt("c", AttemptResult::Success, Duration::from_millis(3));
        m.hook("c", HookKind::Command, HookResult::Timeout);
        let text = m.encode();
        for name in [
            "tokend_access_token_expiry_timestamp_seconds{credential=\"c\"}",
            "tokend_last_success_timestamp_seconds{credential=\"c\"}",
            "tokend_refresh_token_chain_age_seconds{credential=\"c\"} 10",
            "tokend_ready{credential=\"c\"} 1",
            "tokend_refresh_token_chain_end_timestamp_seconds{credential=\"c\"} 2000000000",
            "tokend_refresh_token_chain_warning{credential=\"c\"} 1",
            "tokend_blocked{credential=\"c\"} 0",
            "tokend_refresh_attempts_total{credential=\"c\",result=\"success\"} 1",
            "tokend_refresh_duration_seconds_count{credential=\"c\"} 1",
            "tokend_hook_runs_total{credential=\"c\",hook=\"command\",result=\"timeout\"} 1",
        ] {
            assert!(text.contains(name), "{name} in\n{text}");
        }
        m.forget("c");
        assert!(!m.encode().contains("credential=\"c\""));
    }
}
