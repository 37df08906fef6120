//! The clock leases are judged on: `CLOCK_BOOTTIME`, which keeps running while the
//! machine is suspended (a frozen VM, a paused container's host), where `Instant`
//! (`CLOCK_MONOTONIC`) stops. A replica frozen between its intent and its request must
//! not wake up believing its lease is as fresh as when it froze.

use std::time::{Duration, Instant};

use nix::time::{ClockId, clock_gettime};

/// A moment on the boot clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Boot(Duration);

impl Boot {
    pub fn now() -> Boot {
        // The boot clock exists on every Linux since 2.6.39; should reading it fail,
        // the monotonic one is the nearest (it only errs towards a fresher lease when
        // the machine was suspended).
        let ts = clock_gettime(ClockId::CLOCK_BOOTTIME)
            .or_else(|_| clock_gettime(ClockId::CLOCK_MONOTONIC))
            .unwrap_or_else(|_| nix::sys::time::TimeSpec::new(0, 0));
        Boot(Duration::new(
            u64::try_from(ts.tv_sec()).unwrap_or(0),
            u32::try_from(ts.tv_nsec()).unwrap_or(0),
        ))
    }

    /// How long from `earlier` to this moment; zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Boot) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    /// How long from now until this moment; zero once it has passed.
    pub fn left(self) -> Duration {
        self.saturating_duration_since(Boot::now())
    }

    /// The same moment on the monotonic clock, for a timer to wake at (a suspend in
    /// between wakes it late, never early).
    pub fn as_instant(self) -> Instant {
        Instant::now() + self.left()
    }
}

impl std::ops::Add<Duration> for Boot {
    type Output = Boot;
    fn add(self, d: Duration) -> Boot {
        Boot(self.0 + d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boot_clock_moves_with_the_monotonic_one() {
        let (b, i) = (Boot::now(), Instant::now());
        std::thread::sleep(Duration::from_millis(20));
        let (db, di) = (Boot::now().saturating_duration_since(b), i.elapsed());
        assert!(
            db >= Duration::from_millis(20) && db <= di + Duration::from_millis(5),
            "{db:?} {di:?}"
        );
        let later = Boot::now() + Duration::from_secs(5);
        assert!(later.left() <= Duration::from_secs(5) && later.left() > Duration::from_secs(4));
        assert_eq!(b.saturating_duration_since(later), Duration::ZERO);
    }
}
