//! A credential whose chain several replicas share (design.md §11): following the stored
//! record, and the fenced writes around each refresh. The decisions about the chain stay
//! the machine's and [`reconcile::decide`]'s; this file adds the store's say on who may
//! refresh, and what a refresh leaves behind for the others.
//!
//! A leader records its intent before it sends a refresh token. Until it stores the
//! answer (or learns that nothing rotated), only it may finish that refresh: it stores
//! the rotated record conditionally on its intent's revision, even after its lease is
//! gone; the next leader does not send the intent's token while its author may come back
//! with the rotated one (`coordination.unfinished_intent`).

use std::time::{Duration, SystemTime};

use tracing::{debug, error, info, warn};

use crate::config::coordination::{LEASE_MARGIN, UnfinishedIntent};
use crate::coordination::reconcile::{self, Reconcile};
use crate::coordination::{Intent, Kind, Member, Op, Record, View};
use crate::credential::machine::Block;
use crate::credential::task::{Credential, LOG};
use crate::rfc3339;
use crate::store::State;

/// How soon a refresh the store did not allow is considered again (client-go's retry
/// period).
pub const NOT_NOW: Duration = Duration::from_secs(2);

/// A credential's part among the replicas: the store's handle, and what the task keeps
/// of the record between looks.
pub struct Replica {
    member: Member,
    policy: UnfinishedIntent,
    /// The stored record has been read once and the chain's origin decided.
    synced: bool,
    /// The revision of the stored record this task last reconciled with or wrote:
    /// every leader's write is conditional on it, not on whatever the view holds by then.
    known_revision: i64,
    /// This replica's own intent while its refresh is unfinished: the revision it was
    /// written at, which its rotated record is stored conditionally on.
    intent: Option<i64>,
    /// Another replica's unfinished intent this one waits on (reported while it lasts).
    pub(super) waiting: Option<Intent>,
    /// A corrupt stored record has been reported.
    corrupt_logged: bool,
    /// Whether this replica led at the last look, for the log.
    leading: Option<bool>,
    /// The local state file could not be read at start: only the stored record can say
    /// where the chain is.
    pub(super) local_unreadable: bool,
}

impl Replica {
    pub fn new(member: Member, policy: UnfinishedIntent) -> Replica {
        Replica {
            member,
            policy,
            synced: false,
            known_revision: 0,
            intent: None,
            waiting: None,
            corrupt_logged: false,
            leading: None,
            local_unreadable: false,
        }
    }

    pub fn member(&self) -> &Member {
        &self.member
    }

    pub fn member_mut(&mut self) -> &mut Member {
        &mut self.member
    }

    pub fn into_member(self) -> Member {
        self.member
    }

    /// Whether this replica may store its state now: it leads, or the stored record
    /// still holds its own unfinished intent.
    fn may_push(&self, view: &View) -> bool {
        let own_intent = self.intent.is_some_and(|rev| {
            view.stored
                .as_ref()
                .is_some_and(|s| s.revision == rev && s.corrupt.is_none())
        });
        view.role.is_leader() || own_intent
    }
}

impl Credential {
    /// Whether this replica may refresh now: always alone; with coordination only as
    /// the leader, holding the stored generation, on a live lease.
    pub(super) fn may_refresh(&self) -> bool {
        let Some(r) = &self.replica else {
            return true;
        };
        let in_sync_leader = r.member.peek(|view| {
            view.role.is_leader()
                && view.stored.as_ref().is_some_and(|s| {
                    s.corrupt.is_none() && s.generation() == self.machine.generation()
                })
        });
        r.synced && in_sync_leader && r.member.lease().is_some()
    }

    /// A rotation this replica holds and the store does not (it pushes it as leader,
    /// or as the author of the intent the store still holds).
    pub(super) fn ahead_of_store(&self) -> bool {
        let Some(local) = self.machine.state() else {
            return false;
        };
        self.replica.as_ref().is_some_and(|r| {
            r.member.peek(|v| {
                v.stored
                    .as_ref()
                    .and_then(|s| s.state())
                    .is_some_and(|s| reconcile::newer(local, s))
            })
        })
    }

    // The store's work is boxed where the task calls it: its futures hold HTTP requests
    // to etcd and are large, and a credential that does not coordinate should not carry
    // their size (kilobytes) in its task.

    /// With coordination, [`Self::reconcile`]; nothing otherwise.
    pub(super) async fn sync_shared(&mut self) {
        if self.replica.is_some() {
            Box::pin(self.reconcile()).await;
        }
    }

    /// With coordination, [`Self::gate`]; always allowed otherwise.
    pub(super) async fn allowed_to_send(&mut self) -> bool {
        self.replica.is_none() || Box::pin(self.gate()).await
    }

    /// With coordination, [`Self::push`] the rotated state; nothing otherwise.
    pub(super) async fn share(&mut self) {
        if self.replica.is_some()
            && let Some(state) = self.machine.state().cloned()
        {
            Box::pin(self.push(state)).await;
        }
    }

    /// After a refresh that did not rotate for sure (the server said no, or nothing was
    /// sent): this replica's intent comes off the record, so that no other replica waits
    /// on it. After an ambiguous one it stays: the server may have rotated.
    pub(super) async fn withdraw_intent(&mut self) {
        let Some(r) = &mut self.replica else { return };
        let Some(rev) = r.intent else { return };
        let record = Record {
            state: self.machine.state().cloned(),
            intent: None,
        };
        match Box::pin(r.member.finish(&record, rev)).await {
            Ok(revision) => {
                r.known_revision = revision;
                r.intent = None;
            }
            // Moved meanwhile: it is not ours to clear any more.
            Err(f) if f.kind == Kind::ConditionFailed => r.intent = None,
            // Unreachable: tried again after the next attempt, or by the next refresh.
            Err(_) => {}
        }
    }

    /// Brings the chain in hand and the stored record together: the first read decides
    /// where the chain continues from; later, a stored record further along is adopted
    /// and published; a local one further along is pushed by whoever may store it.
    async fn reconcile(&mut self) {
        let Some(r) = &mut self.replica else { return };
        let view = r.member.view();
        note_role(r, &view);
        let Some(stored) = &view.stored else { return };
        if let Some(why) = &stored.corrupt {
            if !r.corrupt_logged {
                warn!(target: LOG, error = %why, "the stored record cannot be read: nobody refreshes until it is repaired or deleted, or `tokend login` writes a new chain over it");
                r.corrupt_logged = true;
            }
            // A chain this replica holds may still be stored over it by its intent's
            // author; nothing else writes over a record that cannot be read.
            return;
        }
        r.corrupt_logged = false;
        r.known_revision = stored.revision;
        // An intent of this process's that it does not know the revision of: the answer
        // to its write was lost, and nothing was sent on it. Taken back, so that no
        // other replica waits on it.
        let me = r.member.identity();
        let lost_intent = stored
            .record
            .as_ref()
            .and_then(|rec| rec.intent.as_ref())
            .is_some_and(|i| i.identity == me && r.intent.is_none());
        if lost_intent {
            let record = Record {
                state: stored.state().cloned(),
                intent: None,
            };
            if let Ok(revision) = r.member.finish(&record, stored.revision).await {
                r.known_revision = revision;
            }
            return;
        }
        let may_push = r.may_push(&view);
        let local = self.machine.state().cloned();
        let theirs = stored.state().cloned();
        let decision = reconcile::decide(local.as_ref(), theirs.as_ref(), may_push);
        if !r.synced {
            r.synced = true;
            if theirs.is_none() && r.local_unreadable {
                // Neither copy says where the chain is: the bootstrap token has probably
                // been rotated away, and sending it could revoke the chain.
                error!(target: LOG, "the local state file cannot be read and the store holds no record: not refreshing. Repair the file, or run `tokend login`");
                return self.block(Block::UnreadableState);
            }
            let from_store = decision == Reconcile::Adopt;
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
        match (decision, theirs, local) {
            (Reconcile::Adopt, Some(t), _) => self.adopt_shared(t, view.leader.as_deref()).await,
            (Reconcile::Push, _, Some(l)) => {
                info!(target: LOG, generation = l.generation, stored = stored.generation(), "this replica's state is newer than the stored record; storing it");
                self.push(l).await;
            }
            _ => {}
        }
    }

    async fn adopt_shared(&mut self, state: State, leader: Option<&str>) {
        let generation = state.generation;
        let expires_at = state.expires_at;
        if let Some(r) = &mut self.replica {
            // Whatever this replica meant to do, the chain has moved past it.
            r.intent = None;
        }
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
    /// after a restart with a local state further along than the stored one. The end of
    /// its own refresh is stored on its intent's revision, leading or not.
    async fn push(&mut self, mut state: State) {
        let Some(r) = &mut self.replica else { return };
        // A newer chain (a login's) counts on from the stored generation: generations
        // in the store only grow.
        let stored = r
            .member
            .peek(|v| v.stored.as_ref().map_or(0, |s| s.generation()));
        if state.generation <= stored {
            state.generation = stored + 1;
            self.machine.renumber(state.generation);
        }
        let Some(r) = &mut self.replica else { return };
        let generation = state.generation;
        let record = Record {
            state: Some(state),
            intent: None,
        };
        let written = match r.intent {
            Some(rev) => r.member.finish(&record, rev).await,
            None => r.member.write(&record, Op::Write, r.known_revision).await,
        };
        match written {
            Ok(revision) => {
                r.known_revision = revision;
                r.intent = None;
                debug!(target: LOG, generation, "stored the record");
            }
            // Someone else moved the record: adopted at the next reconcile.
            Err(f) if f.kind == Kind::ConditionFailed => r.intent = None,
            // Unreachable: logged and counted by the member; the intent is kept, and the
            // record is stored on it once the store answers.
            Err(_) => {}
        }
    }

    /// Before a refresh: wait on another replica's unfinished refresh of this link,
    /// renew the lease, record the intent (conditionally), and send only with the
    /// request's timeout plus a margin of lease left.
    async fn gate(&mut self) -> bool {
        let now = SystemTime::now();
        let generation = self.machine.generation();
        let near_expiry = self
            .machine
            .state()
            .and_then(|s| s.expires_at)
            .is_none_or(|e| {
                e.duration_since(now).unwrap_or_default() <= self.cfg.refresh.min_remaining
            });
        let Some(r) = &mut self.replica else {
            return true;
        };
        let me = r.member.identity().to_owned();
        let unfinished = r.member.peek(|v| {
            let intent = v.stored.as_ref()?.record.as_ref()?.intent.as_ref()?;
            (intent.identity != me && intent.generation == generation).then(|| intent.clone())
        });
        if let Some(theirs) = unfinished {
            let go = match r.policy {
                UnfinishedIntent::Wait => false,
                UnfinishedIntent::Retry => true,
                UnfinishedIntent::RetryBeforeExpiry => near_expiry,
            };
            if r.waiting.as_ref() != Some(&theirs) {
                warn!(
                    target: LOG,
                    replica = %theirs.identity,
                    since = %rfc3339::format(theirs.since),
                    generation,
                    "another replica began a refresh of this chain and stored no result: its request may have reached the server, and the rotated token is then that replica's alone. {}",
                    match r.policy {
                        UnfinishedIntent::Wait => "Waiting for it to come back and store it; if it never does, run `tokend login` (coordination.unfinished_intent = \"wait\")",
                        UnfinishedIntent::Retry => "Sending the same refresh token now (coordination.unfinished_intent = \"retry\"): a server with a reuse grace window answers with the rotated pair; a strict one revokes the chain if that replica's request had reached it",
                        UnfinishedIntent::RetryBeforeExpiry => "Waiting while the published token lasts, then sending the same refresh token (coordination.unfinished_intent = \"retry_before_expiry\"): a strict server revokes the chain if that replica's request had reached it",
                    }
                );
                r.waiting = Some(theirs.clone());
            }
            if !go {
                return self.not_now();
            }
            warn!(target: LOG, replica = %theirs.identity, "that replica has not come back: sending the refresh token of its unfinished refresh");
        }
        r.waiting = None;
        let lease = match r.member.renew().await {
            Ok(lease) => lease,
            Err(_) => return self.not_now(),
        };
        let record = Record {
            state: self.machine.state().cloned(),
            intent: Some(Intent {
                identity: me,
                since: now,
                generation,
            }),
        };
        let Some(r) = &mut self.replica else {
            return false;
        };
        match r.member.write(&record, Op::Intent, r.known_revision).await {
            Ok(revision) => {
                r.known_revision = revision;
                r.intent = Some(revision);
            }
            Err(_) => return self.not_now(),
        }
        let budget = self.cfg.http.timeout + LEASE_MARGIN;
        let left = lease.left();
        if left < budget {
            warn!(
                target: LOG,
                left_ms = left.as_millis() as u64,
                needed_ms = budget.as_millis() as u64,
                "not refreshing: too little of the lease is left for the request"
            );
            // Nothing was sent on the intent: it is taken back.
            self.withdraw_intent().await;
            return self.not_now();
        }
        true
    }

    fn not_now(&mut self) -> bool {
        self.machine.postpone(SystemTime::now() + NOT_NOW);
        false
    }
}

/// Logs when this replica starts or stops leading.
fn note_role(r: &mut Replica, view: &View) {
    let leading = view.role.is_leader();
    if r.leading == Some(leading) {
        return;
    }
    r.leading = Some(leading);
    match (leading, &view.leader) {
        (true, _) => info!(target: LOG, "leading: this replica refreshes the shared chain"),
        (false, Some(leader)) => info!(target: LOG, leader = %leader, "following"),
        (false, None) => info!(target: LOG, "following; no leader is known yet"),
    }
}
