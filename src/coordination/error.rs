//! The store's failures, classified like the token endpoint's (design.md §11): what went
//! wrong, during which operation, and what an operator should do about it.

use std::fmt;

/// The operation that failed; it is the metrics' `op` label, so it lives there.
pub use crate::telemetry::metrics::StoreOp as Op;

/// What kind of failure it was; each kind says what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No member answered: the network, the endpoints, or the store is down.
    Unreachable,
    /// No answer within `timeout`.
    Timeout,
    /// The store refused our credentials or permissions.
    AuthRefused,
    /// The record changed since we read it: someone else moved the chain.
    ConditionFailed,
    /// The stored record cannot be read.
    Corrupt,
}

/// Which store a failure came from: the remedies differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Etcd,
    Kubernetes,
}

impl Store {
    pub fn name(self) -> &'static str {
        match self {
            Store::Etcd => "etcd",
            Store::Kubernetes => "the Kubernetes API",
        }
    }
}

impl Kind {
    /// What an operator can do about it, for the log line.
    pub fn remedy(self, store: Store) -> &'static str {
        match (self, store) {
            (Kind::Unreachable, Store::Etcd) => {
                "check coordination.etcd.endpoints and that etcd is up and reachable from this host; nobody refreshes until it is"
            }
            (Kind::Unreachable, Store::Kubernetes) => {
                "check that the API server is up and reachable from this pod (coordination.kubernetes.server); nobody refreshes until it is"
            }
            (Kind::Timeout, Store::Etcd) => {
                "etcd answered too slowly: check its health and load, or raise coordination.etcd.timeout"
            }
            (Kind::Timeout, Store::Kubernetes) => {
                "the API server answered too slowly: check its health and load, or raise coordination.kubernetes.timeout"
            }
            (Kind::AuthRefused, Store::Etcd) => {
                "check coordination.etcd.username and password_file (or the client certificate), and that the user's role may read and write the prefix"
            }
            (Kind::AuthRefused, Store::Kubernetes) => {
                "check the pod's service account token, and that its Role grants get, list, watch, create and update on the credential's Lease and Secret (see config/kubernetes/tokend-replicas-kubernetes.yaml)"
            }
            (Kind::ConditionFailed, _) => {
                "another replica moved the chain; this one adopts the stored record (nothing to do)"
            }
            (Kind::Corrupt, Store::Etcd) => {
                "the stored record is not one tokend wrote: repair or delete the key (a deleted record is seeded again from the bootstrap token)"
            }
            (Kind::Corrupt, Store::Kubernetes) => {
                "the Secret is not one tokend wrote, or the API server refused what tokend sent: repair or delete the Secret (a deleted record is seeded again from the bootstrap token)"
            }
        }
    }
}

/// One failed store operation. The detail never holds a token: records are not quoted.
#[derive(Debug, Clone)]
pub struct StoreFailure {
    pub op: Op,
    pub kind: Kind,
    pub detail: String,
}

impl fmt::Display for StoreFailure {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}: {}", self.op.label(), self.detail)
    }
}

impl std::error::Error for StoreFailure {}

impl StoreFailure {
    pub fn new(op: Op, kind: Kind, detail: impl Into<String>) -> Self {
        StoreFailure {
            op,
            kind,
            detail: detail.into(),
        }
    }

    pub fn condition(op: Op) -> Self {
        StoreFailure::new(
            op,
            Kind::ConditionFailed,
            "the record changed since it was read",
        )
    }

    pub fn timeout(op: Op, after: std::time::Duration) -> Self {
        StoreFailure::new(
            op,
            Kind::Timeout,
            format!("no answer within {}", humantime::format_duration(after)),
        )
    }
}
