//! `tokend run` and `tokend once`: the daemon until told to stop, or one pass.

use std::path::Path;
use std::sync::Arc;

use tracing::{Instrument, error, warn};

use crate::cli::exit::{self, load_config, start_error_code, worse};
use crate::cli::preflight::{self, Pass};
use crate::config::{Config, CredentialConfig};
use crate::credential::OnceResult;
use crate::daemon::{self, ConfigSource, Daemon};
use crate::oauth::Clients;
use crate::telemetry::{Board, logging};

/// Pinned log target: operators filter on it, whatever the module is called.
const LOG: &str = "tokend::cli";

/// The daemon, until SIGTERM or SIGINT.
pub async fn run(path: &Path) -> u8 {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    logging::init(&config.log);
    let result = match daemon::signals() {
        Ok(controls) => {
            // After the signal handlers, so that a signal during start-up is handled.
            if !preflight(&config, path, Pass::Run) {
                return exit::CONFIG;
            }
            match Daemon::start(ConfigSource::File(path.to_owned()), &config).await {
                Ok(d) => d.run(controls).await,
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => exit::OK,
        Err(e) => {
            error!(target: LOG, error = %e, "cannot start");
            start_error_code(&e)
        }
    }
}

/// Every credential fresh and published, once; the worst outcome is the exit code.
pub async fn once(path: &Path) -> u8 {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    logging::init(&config.log);
    if config.coordination.is_some() {
        // One pass cannot hold a lease: refreshing outside it could replay a token the
        // leader already rotated.
        error!(target: LOG, "tokend once does not take part in [coordination]: replicas share the chain through `tokend run`");
        return exit::CONFIG;
    }
    if !preflight(&config, path, Pass::Once) {
        return exit::CONFIG;
    }
    let mut worst = exit::OK;
    let board = Arc::new(Board::default());
    let clients = Clients::default();
    for cfg in config.credentials.values() {
        let span = tracing::info_span!(target: LOG, "credential", credential = %cfg.name);
        let code = once_one(cfg, &board, &clients).instrument(span).await;
        worst = worse(worst, code);
    }
    worst
}

async fn once_one(cfg: &Arc<CredentialConfig>, board: &Arc<Board>, clients: &Clients) -> u8 {
    match daemon::prepare(cfg, board, clients) {
        Err(e) => {
            error!(target: LOG, error = %e, "cannot start");
            start_error_code(&e)
        }
        Ok((cred, _health)) => match cred.once().await {
            OnceResult::Fresh => exit::OK,
            OnceResult::Temporary(m) => {
                error!(target: LOG, error = %m, "no fresh token yet; try again later");
                exit::TEMPFAIL
            }
            OnceResult::Local(m) => {
                error!(target: LOG, error = %m, "cannot refresh");
                exit::CONFIG
            }
            OnceResult::Permanent(m) => {
                error!(target: LOG, error = %m, "refused");
                exit::NOPERM
            }
            OnceResult::Other(m) => {
                error!(target: LOG, error = %m, "failed");
                exit::OTHER
            }
        },
    }
}

/// Logs what `check` would warn about, and says whether the start may go on: a path
/// that could never be written stops it before anything is sent. Other errors surface
/// where they bite, each with its own message (a blocked credential, a refused start).
fn preflight(config: &Config, path: &Path, pass: Pass) -> bool {
    let findings = preflight::preflight(config, path, pass);
    for w in &findings.warnings {
        warn!(target: LOG, "{w}");
    }
    if let Some(w) = crate::hardening::root_warning() {
        warn!(target: LOG, "{w}");
    }
    for e in &findings.errors {
        error!(target: LOG, "configuration error: {e}");
    }
    findings.errors.is_empty()
}
