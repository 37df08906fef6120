//! Several replicas, one chain (SPEC §11): leadership per credential and the shared,
//! fenced record, in a distributed store. A layer beside the state file: the
//! credential task asks it who leads and what is stored, and writes through it.
//!
//! - this file: the process's [`Coordination`] and what a credential sees ([`View`])
//! - [`record`]: the shared record and its intent
//! - [`error`]: the store's failures, classified; [`report`]: logged once, counted
//! - [`etcd`]: the etcd backend (connection, lease, per-credential member)

pub mod error;
pub mod etcd;
pub mod record;
pub mod report;

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::coordination::CoordinationConfig;
use crate::telemetry::Board;

pub use error::{Kind, Op, StoreFailure};
pub use etcd::member::Member;
pub use record::{Intent, Record, Stored};

/// Pinned log target: operators and tests filter on it, whatever the module is called.
pub const LOG: &str = "tokend::coordination";

/// Who refreshes a credential, as this replica knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// The store cannot be read: nobody is known to lead, and this replica does not.
    #[default]
    Unknown,
    Follower,
    /// This replica holds the leader key; `fence` is the key's create_revision, which
    /// every write is conditional on.
    Leader {
        fence: i64,
    },
}

impl Role {
    pub fn is_leader(self) -> bool {
        matches!(self, Role::Leader { .. })
    }

    pub fn label(self) -> &'static str {
        match self {
            Role::Unknown => "unknown",
            Role::Follower => "follower",
            Role::Leader { .. } => "leader",
        }
    }
}

/// A credential's condition in the store, as last read.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub role: Role,
    /// The leader's identity, when there is one.
    pub leader: Option<String>,
    /// The record; `None` until the store has been read once.
    pub stored: Option<Stored>,
    /// The store revision the record is known as of: older news is ignored.
    observed: i64,
}

impl View {
    /// Takes `stored` as the record as of revision `at`; true when it changed.
    fn apply_state(&mut self, stored: Stored, at: i64) -> bool {
        if at < self.observed {
            return false;
        }
        self.observed = at;
        let before = self
            .stored
            .as_ref()
            .map(|s| (s.revision, s.corrupt.is_some()));
        let after = (stored.revision, stored.corrupt.is_some());
        self.stored = Some(stored);
        before != Some(after)
    }

    fn set_leader(&mut self, leader: Option<String>, role: Role) -> bool {
        let changed = self.leader != leader || self.role != role;
        self.leader = leader;
        self.role = role;
        changed
    }
}

/// The process's part in coordination: its store connection and lease.
pub struct Coordination {
    cfg: CoordinationConfig,
    etcd: Arc<etcd::Etcd>,
    session: etcd::session::Session,
    board: Arc<Board>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Coordination {
    /// Starts keeping this replica's lease; nothing here waits for the store. Fails
    /// only when its TLS files cannot be used.
    pub fn start(
        cfg: &CoordinationConfig,
        board: Arc<Board>,
    ) -> Result<Coordination, StoreFailure> {
        let etcd = Arc::new(etcd::Etcd::new(cfg.etcd.clone(), cfg.lease)?);
        let (stop, stop_rx) = watch::channel(false);
        let complaints = report::Complaints::new("", board.clone());
        let (session, task) =
            etcd::session::Session::start(etcd.clone(), cfg.lease, complaints, stop_rx);
        tracing::info!(target: LOG, identity = %cfg.identity(), "coordinating through etcd");
        Ok(Coordination {
            cfg: cfg.clone(),
            etcd,
            session,
            board,
            stop,
            task,
        })
    }

    pub fn config(&self) -> &CoordinationConfig {
        &self.cfg
    }

    /// Starts following one credential.
    pub fn member(&self, credential: &str) -> Member {
        let complaints = report::Complaints::new(credential, self.board.clone());
        Member::start(
            self.etcd.clone(),
            self.session.clone(),
            credential,
            &self.cfg.identity(),
            complaints,
        )
    }

    /// Gives the lease back, so that other replicas lead at once. Call after every
    /// credential has stopped.
    pub async fn release(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// A one-off connection, for `status` and `login`.
pub fn connect(cfg: &CoordinationConfig) -> Result<etcd::Etcd, StoreFailure> {
    etcd::Etcd::new(cfg.etcd.clone(), cfg.lease)
}
