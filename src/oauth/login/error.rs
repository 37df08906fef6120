//! Why a login failed; each kind has its exit code.

/// Why a login failed; each kind has its exit code.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The configuration cannot support a login (exit 78).
    #[error("{0}")]
    Config(String),
    /// The server or the user refused (exit 77).
    #[error("{0}")]
    Refused(String),
    /// Try again later: timeout, network, server trouble (exit 75).
    #[error("{0}")]
    Temporary(String),
    /// Anything else, a mismatched `state` among them (exit 1).
    #[error("{0}")]
    Other(String),
}
