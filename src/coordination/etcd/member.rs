//! One credential's place among the replicas: who leads it, and the record as last
//! read. A task campaigns for the leader key whenever it is free, watches the
//! credential's keys, and re-lists after a broken or compacted watch and every
//! [`RE_READ`] as a safety net. Writes are the credential task's, through [`Member`].

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::coordination::error::{Op, StoreFailure};
use crate::coordination::etcd::Etcd;
use crate::coordination::etcd::session::{Lease, Session};
use crate::coordination::etcd::wire::{Kv, Txn};
use crate::coordination::failure_log::FailureLog;
use crate::coordination::record::{Record, Stored};
use crate::coordination::view::{Role, View};
use crate::coordination::{Next, RE_READ, RETRY};

/// The keys of one credential and what the task and the handle share.
struct Keys {
    leader: String,
    state: String,
    prefix: String,
    identity: String,
}

/// A credential's handle on its membership: the view, and the conditional writes.
pub struct Member {
    etcd: Arc<Etcd>,
    keys: Arc<Keys>,
    view_tx: Arc<watch::Sender<View>>,
    view: watch::Receiver<View>,
    session: Session,
    failures: FailureLog,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Member {
    pub fn start(
        etcd: Arc<Etcd>,
        session: Session,
        credential: &str,
        identity: &str,
        failures: FailureLog,
    ) -> Member {
        let cfg = etcd.config();
        let keys = Arc::new(Keys {
            leader: cfg.key(credential, "leader"),
            state: cfg.key(credential, "state"),
            prefix: cfg.key(credential, ""),
            identity: identity.to_owned(),
        });
        let (view_tx, view) = watch::channel(View::default());
        let view_tx = Arc::new(view_tx);
        let (stop, stop_rx) = watch::channel(false);
        let follower = Follower {
            etcd: etcd.clone(),
            keys: keys.clone(),
            view: view_tx.clone(),
            lease: session.watch(),
            failures: failures.clone(),
        };
        let task = tokio::spawn(follower.run(stop_rx));
        Member {
            etcd,
            keys,
            view_tx,
            view,
            session,
            failures,
            stop,
            task,
        }
    }

    pub fn identity(&self) -> &str {
        &self.keys.identity
    }

    pub fn views(&self) -> &watch::Receiver<View> {
        &self.view
    }

    pub fn views_mut(&mut self) -> &mut watch::Receiver<View> {
        &mut self.view
    }

    /// The lease this replica holds now, if any.
    pub fn lease(&self) -> Option<Lease> {
        self.session.current()
    }

    /// Renews the lease now (before an intent), returning its fresh deadline.
    pub async fn renew(&self) -> Result<Lease, StoreFailure> {
        self.session.renew().await
    }

    /// Writes `record` if this replica still leads and the record's mod_revision is
    /// still `expected`; otherwise reads what is there into the view and fails with
    /// `ConditionFailed`. Returns the new revision.
    pub async fn write(&self, record: &Record, op: Op, expected: i64) -> Result<i64, StoreFailure> {
        let (read, role) = {
            let v = self.view_tx.borrow();
            (v.stored.is_some(), v.role)
        };
        let (true, Role::Leader { fence }) = (read, role) else {
            let f = StoreFailure::condition(op);
            self.failures.failed(&f);
            return Err(f);
        };
        self.put(record, op, expected, Some(fence)).await
    }

    /// Stores `record` if the record's mod_revision is still `expected`, leading or not:
    /// this replica finishing its own refresh, conditional on the revision of the intent
    /// it wrote. Nobody else can have moved the record past an intent they never
    /// completed, so the write is safe after the lease is gone.
    pub async fn finish(&self, record: &Record, expected: i64) -> Result<i64, StoreFailure> {
        self.put(record, Op::Write, expected, None).await
    }

    /// The conditional write: on `expected`, and on the leader key's `fence` if given.
    async fn put(
        &self,
        record: &Record,
        op: Op,
        expected: i64,
        fence: Option<i64>,
    ) -> Result<i64, StoreFailure> {
        let keys = &self.keys;
        let mut txn = Txn::default().when("MOD", &keys.state, expected);
        if let Some(fence) = fence {
            txn = txn.when("CREATE", &keys.leader, fence);
        }
        let txn = txn
            .put(&keys.state, &record.to_bytes(), None)
            .or_list(&keys.prefix);
        let answer = match self.etcd.txn(op, txn).await {
            Ok(a) => a,
            Err(f) => {
                self.failures.failed(&f);
                return Err(f);
            }
        };
        let at = answer.revision;
        if answer.succeeded {
            self.failures.ok(op);
            let stored = Stored {
                record: Some(record.clone()),
                revision: at,
                corrupt: None,
            };
            self.view_tx.send_if_modified(|v| v.apply_state(stored, at));
            return Ok(at);
        }
        let lease = self.session.current();
        for kv in &answer.kvs {
            apply(&self.view_tx, &self.keys, kv, lease, at);
        }
        let f = StoreFailure::condition(op);
        self.failures.failed(&f);
        Err(f)
    }

    /// Stops watching. With `resign`, a leader key this replica holds is deleted, so
    /// that another replica leads now; otherwise it goes with the process's lease.
    pub async fn stop(self, resign: bool) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let role = self.view_tx.borrow().role;
        if let (true, Role::Leader { fence }) = (resign, role) {
            let keys = &self.keys;
            let txn = Txn::default()
                .when("CREATE", &keys.leader, fence)
                .delete(&keys.leader);
            if let Err(f) = self.etcd.txn(Op::Release, txn).await {
                self.failures.failed(&f);
            }
        }
    }
}

/// Applies one key's value (a put; `None` value for a delete) at revision `at`.
fn apply(view: &watch::Sender<View>, keys: &Keys, kv: &Kv, lease: Option<Lease>, at: i64) {
    if kv.key == keys.state.as_bytes() {
        let stored = Stored::read(Some(&kv.value), kv.mod_revision);
        view.send_if_modified(|v| v.apply_state(stored, at));
    } else if kv.key == keys.leader.as_bytes() {
        let identity = String::from_utf8_lossy(&kv.value).into_owned();
        let role = match lease {
            Some(l) if kv.lease == l.id => Role::Leader {
                fence: kv.create_revision,
            },
            _ => Role::Follower,
        };
        view.send_if_modified(|v| v.set_leader(Some(identity), role));
    }
}

/// The task that keeps the view: leadership and the record.
struct Follower {
    etcd: Arc<Etcd>,
    keys: Arc<Keys>,
    view: Arc<watch::Sender<View>>,
    lease: watch::Receiver<Option<Lease>>,
    failures: FailureLog,
}

impl Follower {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            let next = tokio::select! {
                _ = stop.changed() => Next::Stop,
                next = self.round() => next,
            };
            match next {
                Next::Stop => return,
                Next::Relist => {}
                Next::Retry => {
                    // Not knowing who leads is not leading.
                    self.view
                        .send_if_modified(|v| v.set_leader(v.leader.clone(), Role::Unknown));
                    tokio::select! {
                        _ = stop.changed() => return,
                        _ = self.lease.changed() => {}
                        _ = tokio::time::sleep(RETRY) => {}
                    }
                }
            }
        }
    }

    /// Lists the credential's keys, campaigns if the leader key is free, then follows
    /// the watch until something calls for listing again.
    async fn round(&mut self) -> Next {
        let lease = *self.lease.borrow_and_update();
        let listed = match self.etcd.list(Op::Read, &self.keys.prefix).await {
            Ok(l) => l,
            Err(f) => {
                self.failures.failed(&f);
                return Next::Retry;
            }
        };
        self.failures.ok(Op::Read);
        let at = listed.revision;
        let mut leader_seen = false;
        let mut state_seen = false;
        for kv in &listed.kvs {
            leader_seen |= kv.key == self.keys.leader.as_bytes();
            state_seen |= kv.key == self.keys.state.as_bytes();
            apply(&self.view, &self.keys, kv, lease, at);
        }
        if !state_seen {
            self.view
                .send_if_modified(|v| v.apply_state(Stored::default(), at));
        }
        if !leader_seen && !self.campaign(lease).await {
            return Next::Retry;
        }
        self.follow(at + 1).await
    }

    /// Tries to take the free leader key on our lease; false when etcd cannot be asked.
    async fn campaign(&mut self, lease: Option<Lease>) -> bool {
        let Some(lease) = lease.filter(|l| l.deadline > crate::coordination::clock::Boot::now())
        else {
            self.view
                .send_if_modified(|v| v.set_leader(None, Role::Follower));
            return true;
        };
        let keys = &self.keys;
        let txn = Txn::default()
            .when("CREATE", &keys.leader, 0)
            .put(&keys.leader, keys.identity.as_bytes(), Some(lease.id))
            .or_list(&keys.prefix);
        let answer = match self.etcd.txn(Op::Campaign, txn).await {
            Ok(a) => a,
            Err(f) => {
                self.failures.failed(&f);
                return false;
            }
        };
        self.failures.ok(Op::Campaign);
        let at = answer.revision;
        if answer.succeeded {
            let identity = Some(keys.identity.clone());
            self.view
                .send_if_modified(|v| v.set_leader(identity, Role::Leader { fence: at }));
        } else {
            for kv in &answer.kvs {
                apply(&self.view, keys, kv, Some(lease), at);
            }
        }
        true
    }

    /// Follows the watch from `from` until it breaks, the lease changes or it is time
    /// for the safety-net re-read.
    async fn follow(&mut self, from: i64) -> Next {
        let mut stream = match self.etcd.watch(&self.keys.prefix, from).await {
            Ok(s) => s,
            Err(f) => {
                self.failures.failed(&f);
                return Next::Retry;
            }
        };
        let re_read = tokio::time::sleep(RE_READ);
        tokio::pin!(re_read);
        loop {
            let message = tokio::select! {
                _ = &mut re_read => return Next::Relist,
                _ = self.lease.changed() => return Next::Relist,
                m = stream.next() => m,
            };
            let batch = match message {
                Ok(Some(b)) => b,
                Ok(None) => return Next::Retry,
                Err(f) => {
                    self.failures.failed(&f);
                    return Next::Retry;
                }
            };
            // Compacted past us, or cancelled by etcd: list again from now.
            if batch.broken {
                return Next::Relist;
            }
            let lease = *self.lease.borrow();
            for (deleted, kv) in &batch.events {
                let at = kv.mod_revision;
                if !deleted {
                    apply(&self.view, &self.keys, kv, lease, at);
                } else if kv.key == self.keys.leader.as_bytes() {
                    // The leader is gone: campaign at once.
                    self.view
                        .send_if_modified(|v| v.set_leader(None, Role::Unknown));
                    return Next::Relist;
                } else if kv.key == self.keys.state.as_bytes() {
                    self.view
                        .send_if_modified(|v| v.apply_state(Stored::default(), at));
                }
            }
        }
    }
}
