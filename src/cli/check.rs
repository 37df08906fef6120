//! `tokend check`: validate the configuration and print it with every secret redacted.

use std::path::Path;

use crate::cli::exit::{self, load_config};

/// Validates, warns about secrets it cannot read yet, prints the redacted configuration.
pub fn check(path: &Path) -> u8 {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    for c in config.credentials.values() {
        for (what, read) in [
            ("client secret", c.client_secret.read()),
            ("bootstrap refresh token", c.read_bootstrap()),
        ] {
            if let Err(e) = read {
                eprintln!("tokend: warning: credentials.{}: {what}: {e}", c.name);
            }
        }
    }
    print!("{}", config.redacted_toml());
    exit::OK
}
