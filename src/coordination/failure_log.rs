//! Store failures, logged once per kind and counted every time
//! (`tokend_coordination_errors_total`), with what to do about them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tracing::{error, info, warn};

use crate::coordination::LOG;
use crate::coordination::error::{Kind, Op, Store, StoreFailure};
use crate::telemetry::Board;

/// One credential's (or, with an empty name, the process's) store failures.
#[derive(Clone)]
pub struct FailureLog {
    credential: String,
    store: Store,
    board: Arc<Board>,
    /// The kind of the last failure of each operation, until it succeeds again.
    last: Arc<Mutex<HashMap<Op, Kind>>>,
}

impl FailureLog {
    pub fn new(credential: &str, store: Store, board: Arc<Board>) -> Self {
        FailureLog {
            credential: credential.to_owned(),
            store,
            board,
            last: Arc::default(),
        }
    }

    pub fn failed(&self, f: &StoreFailure) {
        self.board
            .metrics
            .coordination_error(&self.credential, f.op);
        let first = {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            last.insert(f.op, f.kind) != Some(f.kind)
        };
        if !first {
            return;
        }
        let (op, remedy, store) = (f.op.label(), f.kind.remedy(self.store), self.store.name());
        match f.kind {
            Kind::ConditionFailed => info!(target: LOG, op, error = %f.detail, "{remedy}"),
            Kind::Timeout | Kind::Unreachable => {
                warn!(target: LOG, op, error = %f.detail, "{store} failed: {remedy}")
            }
            Kind::AuthRefused | Kind::Corrupt => {
                error!(target: LOG, op, error = %f.detail, "{store} failed: {remedy}")
            }
        }
    }

    pub fn ok(&self, op: Op) {
        let was = self
            .last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&op);
        if was.is_some_and(|k| k != Kind::ConditionFailed) {
            info!(target: LOG, op = op.label(), "{} answers again", self.store.name());
        }
    }
}
