//! Saving a login's new chain as the daemon would: into the state file when no daemon
//! holds it, or beside it for the running daemon, which is then told to adopt it.

use std::path::PathBuf;
use std::time::Duration;

use crate::atomic::Perms;
use crate::config::CredentialConfig;
use crate::oauth::login::error::LoginError;
use crate::store::file::{self as state_file, StateFile};
use crate::store::{State, StoreError};

/// How long login waits for a running daemon to adopt what it handed over.
const ADOPTION_WAIT: Duration = Duration::from_secs(10);

pub enum Written {
    /// No daemon held the state: written to the state file.
    StateFile(PathBuf),
    /// Handed over to the running daemon with this pid, which adopted it.
    Adopted(i32),
    /// Handed over beside the state file; the holder has not (yet) taken it.
    HandedOver { path: PathBuf, holder: String },
}

/// Who must own what login writes: the owner of the state directory when login runs as
/// root and the daemon as someone else (systemd's `DynamicUser`, a service account), so
/// that the daemon can read its state and take its lock.
fn daemon_owner(cfg: &CredentialConfig) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let dir = cfg.state_file.parent()?;
    let meta = std::fs::metadata(dir).ok()?;
    (nix::unistd::geteuid().is_root() && meta.uid() != 0).then(|| (meta.uid(), meta.gid()))
}

/// Writes the new state as the daemon would; hands it over if a daemon holds the lock.
pub async fn write(cfg: &CredentialConfig, state: &State) -> Result<Written, LoginError> {
    let failed = |e: StoreError| {
        LoginError::Other(format!(
            "the new refresh token could not be saved: {e}; log in again once that is fixed"
        ))
    };
    let owner = daemon_owner(cfg);
    let perms = Perms {
        mode: 0o600,
        uid: owner.map(|o| o.0),
        gid: owner.map(|o| o.1),
    };
    let holder = match StateFile::open(&cfg.state_file) {
        Ok(mut store) => {
            store.replace(state, &perms).map_err(failed)?;
            if let Some((uid, gid)) = owner {
                // The lock file may be new, made by us; the daemon must be able to open it.
                let _ = store.give_lock_to(uid, gid);
            }
            // A stale handover from an earlier login must not replace this chain.
            let _ = store.clear_handover();
            return Ok(Written::StateFile(cfg.state_file.clone()));
        }
        Err(StoreError::Locked { holder, .. }) => holder,
        Err(e) => return Err(failed(e)),
    };
    let handover = crate::store::names::handover_path(&cfg.state_file);
    state_file::write_state_file(&handover, state, &perms).map_err(failed)?;
    // Only a process the kernel names as the lock's holder is signalled: the pid the
    // lock file holds is whatever its owner wrote there.
    let Some(pid) = holder.pid else {
        return Ok(Written::HandedOver {
            path: handover,
            holder: holder.to_string(),
        });
    };
    // The daemon adopts a handover on SIGHUP (a reload that keeps everything else).
    let signalled = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    );
    if signalled.is_ok() {
        let start = std::time::Instant::now();
        while start.elapsed() < ADOPTION_WAIT {
            if !handover.exists() {
                return Ok(Written::Adopted(pid));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(Written::HandedOver {
        path: handover,
        holder: holder.to_string(),
    })
}
