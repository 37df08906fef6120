//! Leadership of one credential's Lease, decided as client-go's `tryAcquireOrRenew`
//! decides it: a Lease held by another replica is free only once `leaseDurationSeconds`
//! have passed since **this** replica last saw it change, on its own monotonic clock
//! (the holder's clock and ours never meet). Pure: time comes in as arguments.

use std::time::{Duration, Instant, SystemTime};

use crate::coordination::kubernetes::objects::{Lease, LeaseSpec, micro_time};

/// The Lease as last read, and when it was last seen to change.
#[derive(Debug, Clone)]
pub struct Observed {
    pub lease: Lease,
    pub revision: i64,
    pub since: Instant,
}

impl Observed {
    /// Takes `lease` (at `revision`) if it is newer than what was seen; a change restarts
    /// the holder's time. True when it changed.
    pub fn update(seen: &mut Option<Observed>, lease: Lease, revision: i64, now: Instant) -> bool {
        match seen {
            Some(o) if revision <= o.revision => false,
            _ => {
                *seen = Some(Observed {
                    lease,
                    revision,
                    since: now,
                });
                true
            }
        }
    }

    /// When the holder's time runs out in this replica's eyes.
    pub fn expires(&self, ours: Duration) -> Instant {
        let theirs = self
            .lease
            .spec
            .lease_duration_seconds
            .map_or(ours, |s| Duration::from_secs(s.max(0) as u64));
        self.since + theirs
    }
}

/// What to do about the Lease now.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Another replica holds it: nothing until `until`, unless it changes meanwhile.
    Wait { until: Instant },
    /// There is no Lease: create it, held by this replica.
    Create(LeaseSpec),
    /// Replace the Lease read with this spec: take it, or renew it as its holder.
    Update(LeaseSpec),
}

/// The next step for replica `me`, whose lease lasts `ours` (written in whole seconds,
/// rounded up: other replicas then wait at least as long as this one leads).
pub fn next_step(
    seen: Option<&Observed>,
    me: &str,
    ours: Duration,
    now: Instant,
    wall: SystemTime,
) -> Step {
    let time = Some(micro_time(wall));
    let seconds = Some(
        i32::try_from(ours.as_secs() + u64::from(ours.subsec_nanos() > 0)).unwrap_or(i32::MAX),
    );
    let Some(o) = seen else {
        return Step::Create(LeaseSpec {
            holder_identity: Some(me.to_owned()),
            lease_duration_seconds: seconds,
            acquire_time: time.clone(),
            renew_time: time,
            lease_transitions: Some(0),
            other: Default::default(),
        });
    };
    let old = &o.lease.spec;
    let mut spec = old.clone();
    spec.lease_duration_seconds = seconds;
    spec.renew_time = time.clone();
    spec.holder_identity = Some(me.to_owned());
    match old.holder() {
        Some(holder) if holder == me => {}
        Some(_) if now < o.expires(ours) => {
            return Step::Wait {
                until: o.expires(ours),
            };
        }
        // Free (released, or its holder's time is up): a new term.
        _ => {
            spec.acquire_time = time;
            spec.lease_transitions = Some(old.lease_transitions.unwrap_or(0).saturating_add(1));
        }
    }
    Step::Update(spec)
}

/// What a leader writes when it stops: nobody holds the Lease, so that another replica
/// takes it at once rather than when its time would have run out (client-go's
/// ReleaseOnCancel).
pub fn released(held: &LeaseSpec, wall: SystemTime) -> LeaseSpec {
    let time = Some(micro_time(wall));
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        acquire_time: time.clone(),
        renew_time: time,
        lease_transitions: held.lease_transitions,
        other: held.other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: Option<&str>, seconds: i32, since: Instant, revision: i64) -> Observed {
        let spec = LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: Some(seconds),
            lease_transitions: Some(4),
            acquire_time: Some("2026-01-01T00:00:00.000000Z".into()),
            ..Default::default()
        };
        Observed {
            lease: Lease::new("tokend-c", spec),
            revision,
            since,
        }
    }

    #[test]
    fn a_lease_changes_hands_only_after_its_holder_s_time_as_seen_here() {
        let t0 = Instant::now();
        let wall = SystemTime::UNIX_EPOCH;
        let ours = Duration::from_millis(2500);
        // None yet: create it, for 3 whole seconds.
        let Step::Create(spec) = next_step(None, "a", ours, t0, wall) else {
            panic!()
        };
        assert_eq!(spec.lease_duration_seconds, Some(3));
        assert_eq!(spec.holder(), Some("a"));
        // Held by b for 10 s, seen at t0: wait until t0 + 10 s, then take it.
        let b = held_by(Some("b"), 10, t0, 7);
        let later = t0 + Duration::from_secs(9);
        assert_eq!(
            next_step(Some(&b), "a", ours, later, wall),
            Step::Wait {
                until: t0 + Duration::from_secs(10)
            }
        );
        let Step::Update(spec) = next_step(Some(&b), "a", ours, t0 + Duration::from_secs(10), wall)
        else {
            panic!()
        };
        assert_eq!(spec.holder(), Some("a"));
        assert_eq!(spec.lease_transitions, Some(5));
        assert_ne!(spec.acquire_time, b.lease.spec.acquire_time);
        // A renewal keeps the term: same acquireTime, same transitions.
        let mine = held_by(Some("a"), 3, t0, 8);
        let Step::Update(spec) = next_step(Some(&mine), "a", ours, t0, wall) else {
            panic!()
        };
        assert_eq!(spec.lease_transitions, Some(4));
        assert_eq!(spec.acquire_time, mine.lease.spec.acquire_time);
        // Released (no holder, or an empty one): taken at once.
        for free in [None, Some("")] {
            let r = held_by(free, 1, t0, 9);
            assert!(matches!(
                next_step(Some(&r), "a", ours, t0, wall),
                Step::Update(_)
            ));
        }
    }

    #[test]
    fn only_a_newer_version_restarts_the_holder_s_time() {
        let t0 = Instant::now();
        let mut seen = Some(held_by(Some("b"), 10, t0, 7));
        let later = t0 + Duration::from_secs(5);
        // The same version again (a re-list) changes nothing.
        assert!(!Observed::update(
            &mut seen,
            held_by(Some("b"), 10, t0, 7).lease,
            7,
            later
        ));
        assert_eq!(seen.as_ref().unwrap().since, t0);
        // A renewal does.
        assert!(Observed::update(
            &mut seen,
            held_by(Some("b"), 10, t0, 8).lease,
            8,
            later
        ));
        assert_eq!(
            seen.as_ref().unwrap().expires(Duration::ZERO),
            later + Duration::from_secs(10)
        );
        let r = released(&seen.unwrap().lease.spec, SystemTime::UNIX_EPOCH);
        assert_eq!(r.holder(), None);
        assert_eq!(r.lease_transitions, Some(4));
    }
}
