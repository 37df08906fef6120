//! `tokend login NAME`: the command around [`crate::oauth::login`], and its summary.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::cli::exit::{self, load_config};
use crate::config::CredentialConfig;
use crate::config::coordination::CoordinationConfig;
use crate::credential::schedule::ChainAge;
use crate::oauth::login::{self, LoginError, Options, Outcome, Written};
use crate::out::{errln, out, outln};
use crate::rfc3339;

/// Logs in credential `name`; the exit code says how it went.
pub async fn login(path: &Path, name: &str, options: &Options) -> u8 {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(cred) = config.credentials.get(name) else {
        return exit::unknown_credential(name, path, &config);
    };
    let show = |url: &url::Url| {
        errln!("tokend: open this URL in a browser and authorize tokend:");
        outln!("{url}");
    };
    match login::login(cred, options, show).await {
        Ok(outcome) => {
            print_login(cred, &outcome);
            match &config.coordination {
                Some(c) => seed_store(c, cred, &outcome).await,
                None => exit::OK,
            }
        }
        Err(e) => {
            errln!("tokend: login failed: {e}");
            match e {
                LoginError::Config(_) => exit::CONFIG,
                LoginError::Refused(_) => exit::NOPERM,
                LoginError::Temporary(_) => exit::TEMPFAIL,
                LoginError::Other(_) => exit::OTHER,
            }
        }
    }
}

/// With `[coordination]`: the new chain becomes the shared record, as the newest
/// generation, so that every replica adopts it (design.md §11).
async fn seed_store(c: &CoordinationConfig, cred: &CredentialConfig, outcome: &Outcome) -> u8 {
    let store = c.store.name();
    let seeded = match crate::coordination::Connection::open(c) {
        Ok(connection) => connection.seed(&cred.name, &outcome.state).await,
        Err(e) => Err(e),
    };
    match seeded {
        Ok(generation) => {
            outln!("  stored in {store} as generation {generation}: every replica adopts it");
            exit::OK
        }
        Err(e) => {
            errln!(
                "tokend: the new chain is saved on this host only: {store} could not be written ({e}). Run `tokend login {}` again once {store} is reachable; until then the other replicas go on with the old chain",
                cred.name
            );
            exit::TEMPFAIL
        }
    }
}

/// The summary of a login: expiry, scope and chain, never a token.
fn print_login(cred: &CredentialConfig, outcome: &Outcome) {
    let s = &outcome.state;
    outln!("logged in: credential {}", cred.name);
    if let Some(exp) = s.expires_at {
        let left = exp
            .duration_since(SystemTime::now())
            .map(|d| humantime::format_duration(Duration::from_secs(d.as_secs())).to_string())
            .unwrap_or_else(|_| "expired".into());
        outln!(
            "  access token expires: {} (in {left})",
            rfc3339::format(exp)
        );
    }
    outln!("  scope: {}", s.scope.as_deref().unwrap_or("(not stated)"));
    out!(
        "  refresh-token chain started: {}",
        rfc3339::format(s.chain_started_at)
    );
    match ChainAge::of(&cred.chain, s.chain_started_at) {
        Some(age) => outln!("; log in again before {}", rfc3339::format(age.ends_at)),
        None => outln!(),
    }
    match &outcome.written {
        Written::StateFile(p) => outln!("  saved to {}", p.display()),
        Written::Adopted(pid) => {
            outln!("  handed to the running tokend (pid {pid}), which adopted it")
        }
        Written::HandedOver { path, holder } => outln!(
            "  left at {} for the running tokend ({holder}); it adopts it on SIGHUP, at start, or within seconds if blocked",
            path.display()
        ),
    }
}
