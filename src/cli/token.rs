//! `tokend token`: one credential's access token on stdout, read from its state file
//! while the daemon runs (a state file is only ever replaced whole).

use std::path::Path;
use std::time::SystemTime;

use secrecy::ExposeSecret;

use crate::cli::exit::{self, load_config};
use crate::out::errln;
use crate::store::file::read_state_file;

/// Prints the access token of one credential, without a newline.
pub fn run(path: &Path, name: Option<&str>) -> u8 {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let cred = match name {
        Some(n) => config.credentials.get(n),
        None if config.credentials.len() == 1 => config.credentials.values().next(),
        None => {
            errln!(
                "tokend: name the credential: {}",
                config
                    .credentials
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            return exit::USAGE;
        }
    };
    let Some(cred) = cred else {
        return exit::unknown_credential(name.unwrap_or(""), path, &config);
    };
    match read_state_file(&cred.state_file) {
        Ok(Some(s)) => match s.valid_access_token(SystemTime::now()) {
            Some(t) => {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                if out
                    .write_all(t.expose_secret().as_bytes())
                    .and_then(|_| out.flush())
                    .is_err()
                {
                    return exit::OTHER;
                }
                exit::OK
            }
            None => {
                errln!("tokend: {}: the access token has expired", cred.name);
                exit::OTHER
            }
        },
        Ok(None) => {
            errln!("tokend: {}: no token yet", cred.name);
            exit::OTHER
        }
        Err(e) => {
            errln!("tokend: {e}");
            exit::OTHER
        }
    }
}
