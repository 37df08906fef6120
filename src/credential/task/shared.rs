//! A credential whose chain several replicas share (SPEC §11): following the stored
//! record, and the leader's fenced writes around each refresh. The decisions about the
//! chain stay the machine's; this file only adds the store's say on who may refresh.

use std::time::{Duration, Instant, SystemTime};

use secrecy::ExposeSecret;
use tracing::{debug, error, info, warn};

use crate::config::coordination::LEASE_MARGIN;
use crate::coordination::{Intent, Op, Record, View};
use crate::credential::machine::Block;
use crate::credential::task::{Credential, LOG};
use crate::rfc3339;
use crate::store::{State, StateStore};

/// How soon a refresh the store did not allow is considered again (client-go's retry
/// period).
pub const NOT_NOW: Duration = Duration::from_secs(2);

impl<S: StateStore> Credential<S> {
    /// Whether this replica may refresh now: always alone; with coordination only as
    /// the leader, holding the stored generation, on a live lease.
    pub(super) fn may_refresh(&self) -> bool {
        let Some(member) = &self.member else {
            return true;
        };
        let in_sync_leader = member.peek(|view| {
            view.role.is_leader()
                && view.stored.as_ref().is_some_and(|s| {
                    s.corrupt.is_none() && s.generation() == self.machine.generation()
                })
        });
        self.synced && in_sync_leader && member.lease().is_some()
    }

    /// A rotation this replica holds and the store does not (it pushes it as leader).
    pub(super) fn ahead_of_store(&self) -> bool {
        self.member.as_ref().is_some_and(|m| {
            m.peek(|v| {
                v.stored
                    .as_ref()
                    .is_some_and(|s| self.machine.generation() > s.generation())
            })
        })
    }

    // The store's work is boxed where the task calls it: its futures hold HTTP requests
    // to etcd and are large, and a credential that does not coordinate should not carry
    // their size in its task (measured: 6.7 KiB per credential).

    /// With coordination, [`Self::reconcile`]; nothing otherwise.
    pub(super) async fn sync_shared(&mut self) {
        if self.member.is_some() {
            Box::pin(self.reconcile()).await;
        }
    }

    /// With coordination, [`Self::gate`]; always allowed otherwise.
    pub(super) async fn allowed_to_send(&mut self) -> bool {
        self.member.is_none() || Box::pin(self.gate()).await
    }

    /// With coordination, [`Self::push`] the rotated state; nothing otherwise.
    pub(super) async fn share(&mut self) {
        if self.member.is_some()
            && let Some(state) = self.machine.state().cloned()
        {
            Box::pin(self.push(state)).await;
        }
    }

    /// Brings the chain in hand and the stored record together: the first read decides
    /// where the chain continues from; later, a newer (or, on a tie, different) stored
    /// record is adopted and published; a newer local one is pushed by the leader.
    async fn reconcile(&mut self) {
        let Some(view) = self.member.as_ref().map(|m| m.view()) else {
            return;
        };
        self.note_role(&view);
        let Some(stored) = view.stored else {
            return;
        };
        self.known_revision = stored.revision;
        if let Some(why) = &stored.corrupt {
            if !self.corrupt_logged {
                warn!(target: LOG, error = %why, "the stored record cannot be read: nobody refreshes until it is repaired or deleted");
                self.corrupt_logged = true;
            }
            return;
        }
        self.corrupt_logged = false;
        let local = self.machine.state().cloned();
        let theirs = stored.state().cloned();
        if !self.synced {
            self.synced = true;
            if theirs.is_none() && self.local_unreadable {
                // Neither copy says where the chain is: the bootstrap token has probably
                // been rotated away, and sending it could revoke the chain.
                error!(target: LOG, "the local state file cannot be read and the store holds no record: not refreshing. Repair the file, or run `tokend login`");
                return self.block(Block::UnreadableState);
            }
            let from_store = match (&theirs, &local) {
                (Some(t), Some(l)) => t.generation >= l.generation && !same_link(t, l),
                (Some(_), None) => true,
                (None, _) => false,
            };
            let newer = if from_store { theirs } else { local };
            debug!(target: LOG, generation = newer.as_ref().map_or(0, |s| s.generation), leader = ?view.leader, "read the shared record");
            self.begin(newer);
            if from_store {
                // The local file becomes a copy of the record.
                self.save().await;
            }
            self.publish().await;
            return;
        }
        match (theirs, local) {
            (Some(t), l)
                if l.as_ref()
                    .is_none_or(|l| t.generation >= l.generation && !same_link(&t, l)) =>
            {
                self.adopt_shared(t, view.leader.as_deref()).await;
            }
            (_, Some(l)) if l.generation > stored.generation() && view.role.is_leader() => {
                info!(target: LOG, generation = l.generation, stored = stored.generation(), "this replica's state is newer than the stored record; storing it");
                self.push(l).await;
            }
            _ => {}
        }
    }

    /// Logs when this replica starts or stops leading.
    fn note_role(&mut self, view: &View) {
        let leading = view.role.is_leader();
        if self.leading == Some(leading) {
            return;
        }
        self.leading = Some(leading);
        match (leading, &view.leader) {
            (true, _) => info!(target: LOG, "leading: this replica refreshes the shared chain"),
            (false, Some(leader)) => info!(target: LOG, leader = %leader, "following"),
            (false, None) => info!(target: LOG, "following; no leader is known yet"),
        }
    }

    async fn adopt_shared(&mut self, state: State, leader: Option<&str>) {
        let generation = state.generation;
        let expires_at = state.expires_at;
        self.machine.adopt(state, SystemTime::now());
        self.save().await;
        self.publish().await;
        info!(
            target: LOG,
            generation,
            leader = leader.unwrap_or("none"),
            expires_at = ?expires_at.map(rfc3339::format),
            "adopted the shared record"
        );
    }

    /// Stores a chain this replica holds and the store does not: after a refresh, or
    /// after a restart with a local state newer than the stored one.
    async fn push(&mut self, state: State) {
        let Some(member) = &self.member else {
            return;
        };
        let generation = state.generation;
        let record = Record {
            state: Some(state),
            intent: None,
        };
        if let Ok(revision) = member.write(&record, Op::Write, self.known_revision).await {
            self.known_revision = revision;
            debug!(target: LOG, generation, "stored the record");
        }
        // A failure is logged and counted by the member; a condition that failed means
        // the stored record is adopted at the next reconcile.
    }

    /// Before a refresh: renew the lease, record the intent (conditionally), and send
    /// only with the request's timeout plus a margin of lease left.
    async fn gate(&mut self) -> bool {
        let Some(member) = &self.member else {
            return true;
        };
        let generation = self.machine.generation();
        let unfinished = member.peek(|v| {
            let intent = v.stored.as_ref()?.record.as_ref()?.intent.as_ref()?;
            (intent.identity != member.identity() && intent.generation == generation)
                .then(|| intent.clone())
        });
        if let Some(previous) = unfinished {
            warn!(
                target: LOG,
                previous_leader = %previous.identity,
                since = %rfc3339::format(previous.since),
                generation,
                "the previous leader announced a refresh of this generation and stored no result; if its request reached the server, this refresh replays that token"
            );
        }
        let lease = match member.renew().await {
            Ok(lease) => lease,
            Err(_) => return self.not_now(),
        };
        let record = Record {
            state: self.machine.state().cloned(),
            intent: Some(Intent {
                identity: member.identity().to_owned(),
                since: SystemTime::now(),
                generation,
            }),
        };
        match member.write(&record, Op::Intent, self.known_revision).await {
            Ok(revision) => self.known_revision = revision,
            Err(_) => return self.not_now(),
        }
        let budget = self.cfg.http.timeout + LEASE_MARGIN;
        let left = lease.saturating_duration_since(Instant::now());
        if left < budget {
            warn!(
                target: LOG,
                left_ms = left.as_millis() as u64,
                needed_ms = budget.as_millis() as u64,
                "not refreshing: too little of the lease is left for the request"
            );
            return self.not_now();
        }
        true
    }

    fn not_now(&mut self) -> bool {
        self.machine.postpone(SystemTime::now() + NOT_NOW);
        false
    }
}

/// The same link of the same chain.
fn same_link(a: &State, b: &State) -> bool {
    a.generation == b.generation
        && a.refresh_token.as_ref().map(ExposeSecret::expose_secret)
            == b.refresh_token.as_ref().map(ExposeSecret::expose_secret)
}
