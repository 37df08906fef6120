//! What steers a running daemon, and the edge where Unix signals become it (design.md §10):
//! SIGTERM and SIGINT stop, SIGHUP reloads, SIGUSR1 refreshes every credential now.

use futures_util::{Stream, StreamExt};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook_tokio::Signals;

use crate::daemon::error::StartError;

/// A request to the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Refresh every credential now (SIGUSR1).
    RefreshNow,
    /// Reload the configuration, keeping state (SIGHUP).
    Reload,
    /// Finish the work in hand and stop (SIGTERM, SIGINT).
    Stop,
}

/// The signals the daemon handles, as [`Control`]s. Install them before anything else,
/// so that a signal sent during start-up is handled rather than killing the process.
pub fn signals() -> Result<impl Stream<Item = Control> + Unpin, StartError> {
    let signals = Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1]).map_err(StartError::Signals)?;
    Ok(signals.map(|signal| match signal {
        SIGHUP => Control::Reload,
        SIGUSR1 => Control::RefreshNow,
        _ => Control::Stop,
    }))
}
