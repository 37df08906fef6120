//! Errors that stop the daemon, or one of its credentials, from starting.

use crate::oauth::EndpointError;
use crate::store::StoreError;

/// Errors that stop the daemon from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("credentials.{name}: {err}")]
    Endpoint { name: String, err: EndpointError },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// The store's client could not be set up (its CA, certificate or token file).
    #[error("{table}: {}", .failure.detail)]
    Coordination {
        table: &'static str,
        failure: crate::coordination::StoreFailure,
    },
    #[error("health.listen {addr}: {err}")]
    Listen {
        addr: std::net::SocketAddr,
        err: std::io::Error,
    },
}
