//! One credential's refresh attempts, counted as they happen: plain atomics that the
//! metrics read at each scrape ([`super::series`]), kept in the credential's report.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
    pub(super) const ALL: [AttemptResult; 6] = [
        AttemptResult::Success,
        AttemptResult::Transient,
        AttemptResult::Ambiguous,
        AttemptResult::Permanent,
        AttemptResult::Unexpected,
        AttemptResult::Local,
    ];

    pub(super) fn label(self) -> &'static str {
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

/// Upper bounds of `tokend_refresh_duration_seconds`: 5 ms doubling to 10.24 s.
pub(super) const BUCKETS: usize = 12;

pub(super) fn upper_bound(i: usize) -> f64 {
    0.005 * f64::from(1u32 << i)
}

/// One credential's refresh counters, since the process started.
#[derive(Debug, Default)]
pub struct Tally {
    pub(super) attempts: [AtomicU64; AttemptResult::ALL.len()],
    /// Requests that took at most each upper bound (not cumulative here).
    pub(super) buckets: [AtomicU64; BUCKETS],
    pub(super) sum_nanos: AtomicU64,
    pub(super) count: AtomicU64,
}

impl Tally {
    /// Counts one attempt and how long its request took.
    pub fn record(&self, result: AttemptResult, took: Duration) {
        self.attempts[result as usize].fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        if let Some(i) = (0..BUCKETS).find(|&i| secs <= upper_bound(i)) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}
