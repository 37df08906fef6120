//! One credential's place among the replicas, through its Lease and its Secret: the
//! handle the credential task holds. It writes the Secret, conditionally on the
//! resourceVersion last read; [`super::keeper`] keeps the view and the Lease.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::coordination::clock::Boot;
use crate::coordination::error::{Kind, Op, StoreFailure};
use crate::coordination::failure_log::FailureLog;
use crate::coordination::kubernetes::api::{Api, Resource, Written};
use crate::coordination::kubernetes::keeper::{Keeper, Reply, Shared};
use crate::coordination::kubernetes::objects::Secret;
use crate::coordination::record::Record;
use crate::coordination::view::View;

/// A credential's handle on its membership: the view, and the conditional writes.
pub struct Member {
    shared: Arc<Shared>,
    view: watch::Receiver<View>,
    identity: String,
    deadline: watch::Receiver<Option<Boot>>,
    renew: mpsc::Sender<Reply>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Member {
    pub fn start(
        api: Arc<Api>,
        name: String,
        identity: &str,
        lease: Duration,
        failures: FailureLog,
    ) -> Member {
        let (view_tx, view) = watch::channel(View::default());
        let shared = Arc::new(Shared {
            api,
            name,
            view: view_tx,
            secret: Mutex::new(None),
            failures,
        });
        let (deadline_tx, deadline) = watch::channel(None);
        let (renew, renew_rx) = mpsc::channel(8);
        let (stop, stop_rx) = watch::channel(false);
        let keeper = Keeper::new(shared.clone(), identity, lease, deadline_tx);
        let task = tokio::spawn(keeper.run(renew_rx, stop_rx));
        Member {
            shared,
            view,
            identity: identity.to_owned(),
            deadline,
            renew,
            stop,
            task,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn views(&self) -> &watch::Receiver<View> {
        &self.view
    }

    pub fn views_mut(&mut self) -> &mut watch::Receiver<View> {
        &mut self.view
    }

    /// The deadline of this replica's hold on the Lease, while it holds it.
    pub fn lease(&self) -> Option<Boot> {
        let deadline = *self.deadline.borrow();
        deadline.filter(|d| *d > Boot::now())
    }

    /// Renews the Lease now (before an intent), returning its fresh deadline.
    pub async fn renew(&self) -> Result<Boot, StoreFailure> {
        let (tx, rx) = oneshot::channel();
        let gone =
            || StoreFailure::new(Op::Lease, Kind::Unreachable, "the lease keeper has stopped");
        self.renew.send(tx).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Writes `record` into the Secret if this replica holds the Lease and the Secret's
    /// resourceVersion is still `expected` (0: there is none); otherwise reads what is
    /// there into the view and fails with `ConditionFailed`. Returns the new version.
    pub async fn write(&self, record: &Record, op: Op, expected: i64) -> Result<i64, StoreFailure> {
        let leading = self.view.borrow().role.is_leader() && self.lease().is_some();
        if !leading {
            let f = StoreFailure::condition(op);
            self.shared.failures.failed(&f);
            return Err(f);
        }
        self.put(record, op, expected).await
    }

    /// Stores `record` if the Secret's resourceVersion is still `expected`, leading or
    /// not: this replica finishing its own refresh, conditional on the version of the
    /// intent it wrote. Nobody else can have moved the Secret past an intent they never
    /// completed, so the write is safe after the Lease is gone.
    pub async fn finish(&self, record: &Record, expected: i64) -> Result<i64, StoreFailure> {
        self.put(record, Op::Write, expected).await
    }

    /// The Secret replaced (or made), conditionally on its version being `expected`.
    async fn put(&self, record: &Record, op: Op, expected: i64) -> Result<i64, StoreFailure> {
        let s = &self.shared;
        let current = s.secret.lock().unwrap_or_else(|e| e.into_inner()).clone();
        // The Secret as the caller last knew it, or nothing: a newer one is the caller's
        // to adopt first.
        let known = match &current {
            Some(secret) => secret.metadata.revision(op).ok() == Some(expected),
            None => expected == 0,
        };
        if !known {
            let f = StoreFailure::condition(op);
            s.failures.failed(&f);
            return Err(f);
        }
        let written = match current {
            None => {
                s.api
                    .create(op, Resource::Secret, &Secret::new(&s.name, record))
                    .await
            }
            Some(mut secret) => {
                secret.set_record(record);
                s.api.replace(op, Resource::Secret, &s.name, &secret).await
            }
        };
        let failure = match written {
            Ok(Written::Done(secret)) => match secret.metadata.revision(op) {
                Ok(at) => {
                    s.failures.ok(op);
                    s.apply_secret(Some(secret), at);
                    return Ok(at);
                }
                Err(f) => f,
            },
            Ok(Written::Conflict) => {
                if let Err(f) = s.reread_secret(Op::Read).await {
                    s.failures.failed(&f);
                }
                StoreFailure::condition(op)
            }
            Err(f) => f,
        };
        s.failures.failed(&failure);
        Err(failure)
    }

    /// Stops watching; a Lease this replica holds is released, so that another replica
    /// leads now (there is no process-wide lease to take it along).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
