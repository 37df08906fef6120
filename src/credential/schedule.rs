//! When to refresh and how long to back off: pure functions of time, policy and chance.
//!
//! Nothing here reads a clock or a random source; callers pass `now` and a random
//! number, so tests are exact and instant.

use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::config::{ChainPolicy, RefreshPolicy, RetryPolicy};

/// Never refresh sooner than this after a token was obtained, whatever the server says,
/// so that a zero or tiny `expires_in` cannot turn the daemon into a request loop.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// How soon the first retry after an ambiguous failure goes out (design.md §6).
pub const AMBIGUOUS_RETRY: Duration = Duration::from_millis(800);

/// The chain-age warning repeats this often while it applies.
pub const CHAIN_WARNING_EVERY: Duration = Duration::from_secs(86_400);

/// Where a refresh-token chain stands against its maximum age.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainAge {
    /// When the chain is expected to die and a person must log in again.
    pub ends_at: SystemTime,
    /// From when to warn.
    pub warn_from: SystemTime,
}

impl ChainAge {
    /// `None` when the policy sets no maximum age.
    pub fn of(policy: &ChainPolicy, started: SystemTime) -> Option<ChainAge> {
        let ends_at = started + policy.max_age?;
        let warn_from = ends_at
            .checked_sub(policy.warn_before)
            .map_or(started, |t| t.max(started));
        Some(ChainAge { ends_at, warn_from })
    }

    pub fn warning(&self, now: SystemTime) -> bool {
        now >= self.warn_from
    }

    /// When to log the warning next: at `warn_from`, then once a day after the last one.
    pub fn next_warning(&self, last_warned: Option<SystemTime>) -> SystemTime {
        match last_warned {
            Some(at) if at >= self.warn_from => at + CHAIN_WARNING_EVERY,
            _ => self.warn_from,
        }
    }
}

/// The moment to refresh a token obtained at `obtained` and expiring at `expires`.
///
/// `at` of the lifetime has passed, shifted by `jitter_unit * jitter` of the lifetime
/// (`jitter_unit` in [-1, 1]), and never later than `expires - min_remaining`. When the
/// lifetime is shorter than `min_remaining` that bound cannot be kept, and the fraction
/// alone decides.
pub fn refresh_deadline(
    policy: &RefreshPolicy,
    obtained: SystemTime,
    expires: SystemTime,
    jitter_unit: f64,
) -> SystemTime {
    let lifetime = expires.duration_since(obtained).unwrap_or(Duration::ZERO);
    let fraction = (policy.at + policy.jitter * jitter_unit.clamp(-1.0, 1.0)).clamp(0.0, 1.0);
    let mut offset = lifetime.mul_f64(fraction);
    if let Some(latest) = lifetime.checked_sub(policy.min_remaining)
        && !latest.is_zero()
    {
        offset = offset.min(latest);
    }
    obtained + offset.max(MIN_REFRESH_INTERVAL.min(lifetime))
}

/// A per-cycle jitter in [-1, 1], derived from the credential and the moment its token was
/// obtained: random-looking across credentials and cycles, yet the same after a restart,
/// so a restarted daemon keeps the schedule it had.
pub fn jitter_unit(credential: &str, obtained: SystemTime) -> f64 {
    let nanos = obtained
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let digest = Sha256::new()
        .chain_update(credential.as_bytes())
        .chain_update(nanos.to_le_bytes())
        .finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    let unit = (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
    unit * 2.0 - 1.0
}

/// A time left, rounded as a person would say it: whole hours from an hour up, whole
/// minutes from a minute up, seconds below.
pub fn round_for_people(left: Duration) -> String {
    let secs = left.as_secs();
    let rounded = match secs {
        3600.. => secs / 3600 * 3600,
        60.. => secs / 60 * 60,
        _ => secs,
    };
    humantime::format_duration(Duration::from_secs(rounded)).to_string()
}

/// Exponential backoff with full jitter: uniform between `initial` and
/// `min(max, initial * 2^attempt)`; `random` is uniform in [0, 1).
pub fn backoff(policy: &RetryPolicy, attempt: u32, random: f64) -> Duration {
    let ceiling = policy
        .initial
        .saturating_mul(1u32 << attempt.min(30))
        .min(policy.max);
    let span = ceiling.saturating_sub(policy.initial);
    policy.initial + span.mul_f64(random.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use crate::config::ChainPolicy;

    #[test]
    fn chain_age_warns_from_the_warning_point_once_a_day() {
        let day = Duration::from_secs(86_400);
        let start = SystemTime::UNIX_EPOCH + 1000 * day;
        let policy = ChainPolicy {
            max_age: Some(30 * day),
            warn_before: 5 * day,
        };
        let age = ChainAge::of(&policy, start).unwrap();
        assert_eq!(age.ends_at, start + 30 * day);
        assert_eq!(age.warn_from, start + 25 * day);
        assert!(!age.warning(start + 25 * day - Duration::from_secs(1)));
        assert!(age.warning(start + 25 * day));
        // Never warned: the first one is due at the warning point.
        assert_eq!(age.next_warning(None), start + 25 * day);
        // A warning from before the point (an older chain's) does not count.
        assert_eq!(age.next_warning(Some(start)), start + 25 * day);
        let warned = start + 25 * day + Duration::from_secs(7);
        assert_eq!(age.next_warning(Some(warned)), warned + day);
        // No maximum, no warning; a warning period longer than the age warns from the start.
        assert!(
            ChainAge::of(
                &ChainPolicy {
                    max_age: None,
                    ..policy.clone()
                },
                start
            )
            .is_none()
        );
        let long = ChainPolicy {
            max_age: Some(day),
            warn_before: 5 * day,
        };
        assert_eq!(ChainAge::of(&long, start).unwrap().warn_from, start);
    }

    use super::*;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn policy(at: f64, jitter: f64, min_remaining: u64) -> RefreshPolicy {
        RefreshPolicy {
            at,
            jitter,
            min_remaining: Duration::from_secs(min_remaining),
            ..RefreshPolicy::default()
        }
    }

    #[test]
    fn refreshes_at_the_fraction_with_jitter() {
        let p = policy(0.75, 0.05, 60);
        assert_eq!(refresh_deadline(&p, t(0), t(3600), 0.0), t(2700));
        assert_eq!(refresh_deadline(&p, t(0), t(3600), 1.0), t(2880));
        assert_eq!(refresh_deadline(&p, t(0), t(3600), -1.0), t(2520));
    }

    #[test]
    fn never_later_than_min_remaining_before_expiry() {
        let p = policy(0.9, 0.05, 600);
        assert_eq!(refresh_deadline(&p, t(0), t(3600), 1.0), t(3000));
    }

    #[test]
    fn short_lifetimes_fall_back_to_the_fraction_and_a_floor() {
        let p = policy(0.75, 0.0, 60);
        assert_eq!(refresh_deadline(&p, t(0), t(8), 0.0), t(6));
        assert_eq!(refresh_deadline(&p, t(0), t(0), 0.0), t(0));
        let d = refresh_deadline(&p, t(0), t(1) + Duration::from_millis(100), 0.0);
        assert_eq!(d, t(1), "floor of one second");
    }

    #[test]
    fn jitter_is_stable_per_cycle_and_spreads() {
        assert_eq!(jitter_unit("a", t(5)), jitter_unit("a", t(5)));
        let values: Vec<f64> = (0..1000)
            .map(|i| jitter_unit(&format!("c{i}"), t(0)))
            .collect();
        assert!(values.iter().all(|v| (-1.0..=1.0).contains(v)));
        let below = values.iter().filter(|v| **v < 0.0).count();
        assert!((400..600).contains(&below), "{below}");
    }

    #[test]
    fn time_left_is_rounded_as_people_say_it() {
        assert_eq!(
            round_for_people(Duration::from_secs(5 * 86_400 + 7)),
            "5days"
        );
        assert_eq!(round_for_people(Duration::from_secs(179)), "2m");
        assert_eq!(round_for_people(Duration::from_secs(42)), "42s");
    }

    #[test]
    fn backoff_grows_within_bounds() {
        let p = RetryPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
        };
        assert_eq!(backoff(&p, 0, 0.99), Duration::from_secs(1));
        assert_eq!(backoff(&p, 3, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(&p, 3, 0.5), Duration::from_millis(4500));
        assert_eq!(backoff(&p, 40, 1.0), Duration::from_secs(300));
    }
}
