//! Telling systemd what the daemon is doing (design.md §9), when `NOTIFY_SOCKET` is set:
//! `READY=1` once every credential's outputs hold a valid token, `STATUS=`, watchdog
//! pings, `RELOADING=1` and `STOPPING=1`. Without systemd every call is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;
use tracing::debug;

/// Pinned log target: operators filter on it, whatever the module is called.
const LOG: &str = "tokend::notify";

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        debug!(target: LOG, error = %e, "cannot notify systemd");
    }
}

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

pub fn reloading() {
    // MONOTONIC_USEC lets Type=notify-reload match this message to the reload it asked for.
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often to ping the watchdog: half of `WatchdogSec`, if systemd set one for us.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .map(|d| d / 2)
        .filter(|d| !d.is_zero())
}
