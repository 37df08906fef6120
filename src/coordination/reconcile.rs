//! Which copy of a shared chain goes on: the stored record or the state this replica
//! holds. Pure: the credential task asks, then adopts, pushes or does nothing.
//!
//! A chain that started later wins whatever the generations: a `tokend login`, or a new
//! bootstrap token, starts a chain that replaces every older one, even one whose
//! generation counted higher (a login over a corrupt record starts again from 1). On
//! one chain, the higher generation wins; on a tie, the stored record does.

use secrecy::ExposeSecret;

use crate::store::State;

/// What to do with the stored record and the chain in hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconcile {
    /// Nothing to do: they agree, or the local one is ahead and may not be stored now.
    Nothing,
    /// The stored record is further along: take it, save it, publish it.
    Adopt,
    /// The local state is further along: store it.
    Push,
}

/// Whether `a` is further along the chain than `b`.
pub fn newer(a: &State, b: &State) -> bool {
    (started(a), a.generation) > (started(b), b.generation)
}

/// When the chain started, to the millisecond: the precision states are stored with,
/// so that a copy read back compares equal to the one in memory.
fn started(s: &State) -> u128 {
    s.chain_started_at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// The same link of the same chain.
pub fn same_link(a: &State, b: &State) -> bool {
    a.generation == b.generation && same_token(a, b)
}

/// The same refresh token of the same chain, whatever generation each copy counts
/// (a login's chain is numbered when it is first stored).
pub fn same_token(a: &State, b: &State) -> bool {
    started(a) == started(b)
        && a.refresh_token.as_ref().map(ExposeSecret::expose_secret)
            == b.refresh_token.as_ref().map(ExposeSecret::expose_secret)
}

/// The decision, given the `local` state, the `stored` one, and whether this replica
/// may store its own (`may_push`: it leads, or the stored record still holds its own
/// unfinished intent).
pub fn decide(local: Option<&State>, stored: Option<&State>, may_push: bool) -> Reconcile {
    match (local, stored) {
        (None, Some(_)) => Reconcile::Adopt,
        (Some(l), Some(s)) if newer(s, l) => Reconcile::Adopt,
        // One position, two tokens: the stored one is the truth.
        (Some(l), Some(s)) if !newer(l, s) && !same_link(l, s) => Reconcile::Adopt,
        (Some(l), Some(s)) if newer(l, s) && may_push => Reconcile::Push,
        (Some(_), None) if may_push => Reconcile::Push,
        _ => Reconcile::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use secrecy::SecretString;

    use super::*;

    fn state(started: u64, generation: u64, token: &str) -> State {
        State {
            version: crate::store::VERSION,
            generation,
            refresh_token: Some(SecretString::from(token.to_owned())),
            access_token: None,
            token_type: "Bearer".into(),
            scope: None,
            obtained_at: None,
            expires_at: None,
            chain_started_at: SystemTime::UNIX_EPOCH + Duration::from_secs(started),
            bootstrap_sha256: String::new(),
            refused_bootstrap_sha256: None,
            last_error: None,
        }
    }

    #[test]
    fn a_copy_read_back_at_millisecond_precision_is_the_same_link() {
        let mut local = state(100, 3, "rt-3");
        local.chain_started_at += Duration::from_nanos(123_456);
        let stored = state(100, 3, "rt-3");
        assert!(same_link(&local, &stored) && !newer(&local, &stored));
        assert_eq!(
            decide(Some(&local), Some(&stored), true),
            Reconcile::Nothing
        );
    }

    #[test]
    fn the_table() {
        use Reconcile::*;
        let old3 = state(100, 3, "rt-3");
        let old4 = state(100, 4, "rt-4");
        let other3 = state(100, 3, "rt-x");
        let login1 = state(200, 1, "rt-login");
        let cases: &[(Option<&State>, Option<&State>, bool, Reconcile)] = &[
            // Nothing stored: a leader (or the intent's author) stores its own.
            (Some(&old3), None, true, Push),
            (Some(&old3), None, false, Nothing),
            (None, Some(&old3), false, Adopt),
            (None, None, true, Nothing),
            // One chain: the higher generation wins.
            (Some(&old3), Some(&old4), true, Adopt),
            (Some(&old4), Some(&old3), true, Push),
            (Some(&old4), Some(&old3), false, Nothing),
            (Some(&old3), Some(&old3), true, Nothing),
            // A tie with another token: the stored one.
            (Some(&old3), Some(&other3), true, Adopt),
            // A login's new chain wins over any older one, whatever its generation...
            (Some(&old4), Some(&login1), true, Adopt),
            // ...and is pushed over an older one by whoever may store.
            (Some(&login1), Some(&old4), true, Push),
            (Some(&login1), Some(&old4), false, Nothing),
        ];
        for (local, stored, may_push, want) in cases {
            assert_eq!(
                decide(*local, *stored, *may_push),
                *want,
                "local {:?}, stored {:?}, may push {may_push}",
                local.map(|s| (s.chain_started_at, s.generation)),
                stored.map(|s| (s.chain_started_at, s.generation)),
            );
        }
    }
}
