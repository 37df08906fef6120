//! `tokend check`: validate the configuration, look at what it names on this host, and
//! print it with every secret redacted.

use std::path::Path;

use crate::cli::exit::{self, load_config};
use crate::cli::preflight::{Pass, preflight};
use crate::out::{errln, out};

/// Validates, reports what this host would refuse (exit 78) or should be warned about,
/// prints the redacted configuration.
pub fn check(path: &Path) -> u8 {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let findings = preflight(&config, path, Pass::Check);
    for w in &findings.warnings {
        errln!("tokend: warning: {w}");
    }
    for e in &findings.errors {
        errln!("tokend: configuration error: {e}");
    }
    if !findings.errors.is_empty() {
        return exit::CONFIG;
    }
    out!("{}", config.redacted_toml());
    exit::OK
}
