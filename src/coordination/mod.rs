//! Several replicas, one chain (design.md §11): leadership per credential and the shared,
//! fenced record, in a distributed store. A layer beside the state file: the
//! credential task asks it who leads and what is stored, and writes through it.
//!
//! - this file: the process's [`Coordination`], and one-off [`Connection`]s
//! - [`view`]: what a credential sees ([`View`], [`Role`])
//! - [`clock`]: the boot clock leases are judged on
//! - [`member`]: a credential's handle, whichever the store
//! - [`record`]: the shared record and its intent; [`reconcile`]: which copy goes on
//! - [`error`]: the store's failures, classified; [`failure_log`]: logged once, counted
//! - [`transport`]: the HTTP client and streamed answers both stores use
//! - [`etcd`]: the etcd backend (connection, lease, per-credential member)
//! - [`kubernetes`]: the Kubernetes backend (Lease and Secret per credential)

pub mod clock;
pub mod error;
pub mod etcd;
pub mod failure_log;
pub mod kubernetes;
pub mod member;
pub mod reconcile;
pub mod record;
pub mod transport;
pub mod view;

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::coordination::{CoordinationConfig, StoreConfig};
use crate::store::State;
use crate::telemetry::Board;

pub use error::{Kind, Op, Store, StoreFailure};
pub use member::Member;
pub use record::{Intent, Record, Stored};
pub use view::{Role, View};

/// Pinned log target: operators and tests filter on it, whatever the module is called.
pub const LOG: &str = "tokend::coordination";

/// The slow periodic re-read of every credential, in case a watch missed something
/// silently.
pub const RE_READ: std::time::Duration = std::time::Duration::from_secs(30);

/// How soon a failed store request is tried again, by either store's members.
pub const RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// What a member's follow loop does after one round of reading and watching a
/// credential's keys, in either store.
pub(crate) enum Next {
    Stop,
    /// Read again (and campaign if the lease is free).
    Relist,
    /// Not knowing who leads is not leading: wait [`RETRY`], then read again.
    Retry,
}

/// The process's part in coordination: its store connection (and with etcd, its lease).
pub struct Coordination {
    cfg: CoordinationConfig,
    board: Arc<Board>,
    backend: Backend,
}

enum Backend {
    Etcd {
        etcd: Arc<etcd::Etcd>,
        session: etcd::session::Session,
        stop: watch::Sender<bool>,
        task: JoinHandle<()>,
    },
    Kubernetes(kubernetes::Kubernetes),
}

impl Coordination {
    /// Starts keeping this replica's lease (etcd); nothing here waits for the store.
    /// Fails only when the store's configuration cannot be used (TLS files; outside a
    /// pod, no Kubernetes server).
    pub fn start(
        cfg: &CoordinationConfig,
        board: Arc<Board>,
    ) -> Result<Coordination, StoreFailure> {
        let backend = match &cfg.store {
            StoreConfig::Etcd(e) => {
                let etcd = Arc::new(etcd::Etcd::new(e.clone(), cfg.lease)?);
                let (stop, stop_rx) = watch::channel(false);
                let failures = failure_log::FailureLog::new("", Store::Etcd, board.clone());
                let (session, task) =
                    etcd::session::Session::start(etcd.clone(), cfg.lease, failures, stop_rx);
                Backend::Etcd {
                    etcd,
                    session,
                    stop,
                    task,
                }
            }
            StoreConfig::Kubernetes(k) => {
                Backend::Kubernetes(kubernetes::Kubernetes::new(k, cfg.lease)?)
            }
        };
        tracing::info!(target: LOG, identity = %cfg.identity(), "coordinating through {}", cfg.store.name());
        Ok(Coordination {
            cfg: cfg.clone(),
            board,
            backend,
        })
    }

    pub fn config(&self) -> &CoordinationConfig {
        &self.cfg
    }

    /// Starts following one credential.
    pub fn member(&self, credential: &str) -> Member {
        let identity = self.cfg.identity();
        match &self.backend {
            Backend::Etcd { etcd, session, .. } => {
                let failures =
                    failure_log::FailureLog::new(credential, Store::Etcd, self.board.clone());
                Member::Etcd(etcd::member::Member::start(
                    etcd.clone(),
                    session.clone(),
                    credential,
                    &identity,
                    failures,
                ))
            }
            Backend::Kubernetes(k) => {
                let failures =
                    failure_log::FailureLog::new(credential, Store::Kubernetes, self.board.clone());
                Member::Kubernetes(kubernetes::member::Member::start(
                    k.api.clone(),
                    k.object_name(credential),
                    &identity,
                    self.cfg.lease,
                    failures,
                ))
            }
        }
    }

    /// Gives the process's lease back (etcd), so that other replicas lead at once. Call
    /// after every credential has stopped (a Kubernetes Lease goes with its credential).
    pub async fn release(self) {
        if let Backend::Etcd { stop, task, .. } = self.backend {
            let _ = stop.send(true);
            let _ = task.await;
        }
    }
}

/// A one-off connection, for `status` and `login`.
pub enum Connection {
    Etcd(etcd::Etcd),
    Kubernetes(kubernetes::Kubernetes),
}

impl Connection {
    pub fn open(cfg: &CoordinationConfig) -> Result<Connection, StoreFailure> {
        Ok(match &cfg.store {
            StoreConfig::Etcd(e) => Connection::Etcd(etcd::Etcd::new(e.clone(), cfg.lease)?),
            StoreConfig::Kubernetes(k) => {
                Connection::Kubernetes(kubernetes::Kubernetes::new(k, cfg.lease)?)
            }
        })
    }

    /// The credential's leader identity and record, read once.
    pub async fn describe(
        &self,
        credential: &str,
    ) -> Result<(Option<String>, Stored), StoreFailure> {
        match self {
            Connection::Etcd(e) => e.describe(credential).await,
            Connection::Kubernetes(k) => k.describe(credential).await,
        }
    }

    /// Makes `state` the credential's record as the newest generation (`tokend login`).
    pub async fn seed(&self, credential: &str, state: &State) -> Result<u64, StoreFailure> {
        match self {
            Connection::Etcd(e) => e.seed(credential, state).await,
            Connection::Kubernetes(k) => k.seed(credential, state).await,
        }
    }
}
