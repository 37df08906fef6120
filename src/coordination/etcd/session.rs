//! This replica's etcd lease: granted once, kept alive every third of its time to live,
//! renewed on demand before each refresh, revoked on stop. Every credential's leader key
//! hangs on it, so one keepalive serves them all.
//!
//! The deadline is judged on this process's boot clock ([`Boot`], which runs on while
//! the machine is suspended) from when the last successful renewal was *sent*: etcd
//! counts from when it received it, which is later, so the lease can end late in etcd's
//! eyes, never early in ours.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use crate::coordination::clock::Boot;
use crate::coordination::error::{Kind, Op, StoreFailure};
use crate::coordination::etcd::Etcd;
use crate::coordination::failure_log::FailureLog;

/// How soon a failed grant or renewal is tried again.
const RETRY: Duration = Duration::from_millis(500);

/// A live lease and when it ends on this process's boot clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    pub deadline: Boot,
}

type Reply = oneshot::Sender<Result<Lease, StoreFailure>>;

/// The handle credentials use: the lease as it stands, and renewal on demand.
#[derive(Clone)]
pub struct Session {
    lease: watch::Receiver<Option<Lease>>,
    renew: mpsc::Sender<Reply>,
}

impl Session {
    /// Starts keeping a lease of `ttl`; `stop` ends it and revokes the lease.
    pub fn start(
        etcd: Arc<Etcd>,
        ttl: Duration,
        failures: FailureLog,
        stop: watch::Receiver<bool>,
    ) -> (Session, tokio::task::JoinHandle<()>) {
        let (lease_tx, lease) = watch::channel(None);
        let (renew, renew_rx) = mpsc::channel(64);
        let keeper = Keeper {
            etcd,
            ttl,
            failures,
            lease: lease_tx,
            held: None,
            granted: ttl,
        };
        let task = tokio::spawn(keeper.run(renew_rx, stop));
        (Session { lease, renew }, task)
    }

    /// The lease, if this replica holds one now.
    pub fn current(&self) -> Option<Lease> {
        let lease = *self.lease.borrow();
        lease.filter(|l| l.deadline > Boot::now())
    }

    pub fn watch(&self) -> watch::Receiver<Option<Lease>> {
        self.lease.clone()
    }

    /// Renews the lease now and returns its new deadline.
    pub async fn renew(&self) -> Result<Lease, StoreFailure> {
        let (tx, rx) = oneshot::channel();
        let gone =
            || StoreFailure::new(Op::Lease, Kind::Unreachable, "the lease keeper has stopped");
        self.renew.send(tx).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

struct Keeper {
    etcd: Arc<Etcd>,
    ttl: Duration,
    failures: FailureLog,
    lease: watch::Sender<Option<Lease>>,
    /// The lease id and the last deadline known, even once it has passed: etcd may
    /// still hold it (a new etcd leader extends every lease), and a renewal then
    /// keeps the leader keys that hang on it.
    held: Option<Lease>,
    /// The time to live etcd granted (it may round the one asked for up).
    granted: Duration,
}

impl Keeper {
    async fn run(mut self, mut renew: mpsc::Receiver<Reply>, mut stop: watch::Receiver<bool>) {
        let mut next = Instant::now();
        loop {
            let expiry = self.held.map(|l| l.deadline).filter(|d| *d > Boot::now());
            let wake = expiry.map_or(next, |d| d.as_instant().min(next));
            tokio::select! {
                _ = stop.changed() => break,
                reply = renew.recv() => {
                    let Some(reply) = reply else { break };
                    let result = self.renew().await;
                    next = Instant::now() + if result.is_ok() { self.ttl / 3 } else { RETRY };
                    let _ = reply.send(result);
                }
                _ = tokio::time::sleep_until(wake.into()) => {
                    if Instant::now() >= next {
                        next = Instant::now() + match self.renew().await {
                            Ok(_) => self.ttl / 3,
                            Err(_) => RETRY,
                        };
                    }
                }
            }
            // A deadline that passed unrenewed: no credential leads on it any more.
            if self
                .lease
                .borrow()
                .is_some_and(|l| l.deadline <= Boot::now())
            {
                self.lease.send_replace(None);
            }
        }
        self.release().await;
    }

    /// Renews the lease held, or grants a new one when there is none (or etcd says it
    /// is gone).
    async fn renew(&mut self) -> Result<Lease, StoreFailure> {
        let result = match self.held {
            Some(held) => match self.keep_alive(held.id).await {
                Ok(Some(lease)) => Ok(lease),
                // Expired in etcd: its keys are gone; start over with a new one.
                Ok(None) => self.grant().await,
                Err(e) => Err(e),
            },
            None => self.grant().await,
        };
        match &result {
            Ok(lease) => {
                self.failures.ok(Op::Lease);
                self.held = Some(*lease);
                self.lease.send_if_modified(|current| {
                    let changed = current.map(|c| c.id) != Some(lease.id);
                    *current = Some(*lease);
                    changed
                });
            }
            Err(e) => self.failures.failed(e),
        }
        result
    }

    async fn grant(&mut self) -> Result<Lease, StoreFailure> {
        let sent = Boot::now();
        let (id, granted) = self.etcd.grant(self.ttl).await?;
        // etcd may round the time to live up; the deadline uses what it granted.
        self.granted = granted;
        Ok(Lease {
            id,
            deadline: sent + granted,
        })
    }

    /// One keepalive round trip; `None` when etcd no longer has the lease. A live lease
    /// is renewed to the time to live it was granted.
    async fn keep_alive(&self, id: i64) -> Result<Option<Lease>, StoreFailure> {
        let sent = Boot::now();
        Ok(self.etcd.keep_alive(id).await?.then(|| Lease {
            id,
            deadline: sent + self.granted,
        }))
    }

    /// Stop: the lease goes back at once, so that another replica leads now rather than
    /// when it would have expired.
    async fn release(&mut self) {
        self.lease.send_replace(None);
        if let Some(held) = self.held.take() {
            let id = held.id;
            match self.etcd.revoke(id).await {
                Ok(_) => {
                    tracing::info!(target: super::super::LOG, "released the lease: another replica can lead at once")
                }
                Err(e) => self.failures.failed(&e),
            }
        }
    }
}
