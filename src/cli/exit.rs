//! Exit codes (sysexits.h, design.md §2), and the one place each kind of error is mapped to
//! its code.

use std::path::Path;

use crate::config::{self, Config};
use crate::daemon::StartError;
use crate::out::errln;
use crate::store::StoreError;

pub const OK: u8 = 0;
pub const OTHER: u8 = 1;
pub const USAGE: u8 = 2;
pub const CANTCREAT: u8 = 73;
pub const TEMPFAIL: u8 = 75;
pub const NOPERM: u8 = 77;
pub const CONFIG: u8 = 78;

/// Loads the configuration, or says why not (exit 78).
pub fn load_config(path: &Path) -> Result<Config, u8> {
    config::load(path).map_err(|e| {
        errln!("tokend: configuration error: {e}");
        CONFIG
    })
}

/// Says that `name` is not a configured credential, and which are: a usage error.
pub fn unknown_credential(name: &str, path: &Path, config: &Config) -> u8 {
    let names: Vec<&str> = config.credentials.keys().map(String::as_str).collect();
    errln!(
        "tokend: no credential named {name} in {}; configured: {}",
        path.display(),
        names.join(", ")
    );
    USAGE
}

/// The exit code for an error that stops the daemon from starting.
pub fn start_error_code(e: &StartError) -> u8 {
    match e {
        StartError::Store(StoreError::Locked { .. }) => CANTCREAT,
        StartError::Store(StoreError::Unsafe { .. }) => CONFIG,
        StartError::Endpoint { .. } | StartError::Coordination { .. } => CONFIG,
        StartError::Listen { .. } => OTHER,
        _ => OTHER,
    }
}

/// The more serious of two exit codes: configuration, lock, permanent, temporary, other.
pub fn worse(a: u8, b: u8) -> u8 {
    let rank = |c: u8| {
        [CONFIG, CANTCREAT, NOPERM, TEMPFAIL, OTHER]
            .iter()
            .position(|x| *x == c)
            .unwrap_or(usize::MAX)
    };
    if rank(b) < rank(a) { b } else { a }
}
