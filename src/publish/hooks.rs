//! Rotation hooks: after a rotation's outputs are written, signal the process named in a
//! pid file and run a command, in the background, so that a slow or broken hook never
//! delays the next refresh. Each run is logged and counted.

use std::sync::Arc;
use std::time::SystemTime;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::process::Command;
use tracing::{info, warn};

use crate::config::HookConfig;
use crate::rfc3339;
use crate::telemetry::Board;
use crate::telemetry::metrics::{HookKind, HookResult};

/// Pinned log target: operators filter on it, whatever the module is called.
const LOG: &str = "tokend::hooks";

/// Runs the hooks of one rotation to completion (or to the timeout).
pub async fn run(hook: HookConfig, credential: String, expires_at: SystemTime, board: Arc<Board>) {
    if let (Some(signal), Some(pid_file)) = (hook.signal, &hook.pid_file) {
        let result = match send_signal(signal, pid_file) {
            Ok(pid) => {
                info!(target: LOG, pid, signal = signal.as_str(), "signalled after rotation");
                HookResult::Ok
            }
            Err(e) => {
                warn!(target: LOG, pid_file = %pid_file.display(), error = %e, "cannot signal after rotation");
                HookResult::Failed
            }
        };
        board.metrics.hook(&credential, HookKind::Signal, result);
    }
    if !hook.command.is_empty() {
        let result = run_command(&hook, &credential, expires_at).await;
        board.metrics.hook(&credential, HookKind::Command, result);
    }
}

/// Reads the pid file afresh (the process may have restarted) and signals that pid.
/// As systemd's `PIDFile=` does, a pid file is believed only when root or tokend's own
/// user owns it, and never through a symlink: whoever else could write it could point
/// a root tokend's signal at any process.
fn send_signal(signal: Signal, pid_file: &std::path::Path) -> Result<i32, String> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let (dir, name) = match (pid_file.parent(), pid_file.file_name()) {
        (Some(dir), Some(name)) => (dir, name),
        _ => return Err("is not a file".into()),
    };
    let mut file = crate::atomic::Dir::open(dir)
        .and_then(|d| d.open_file(name, nix::fcntl::OFlag::O_RDONLY, 0))
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => "is a symbolic link, which is not followed".to_owned(),
            _ => e.to_string(),
        })?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(format!(
            "is owned by uid {}, neither root nor tokend's user (uid {me}): not believed, since its owner could name any process",
            meta.uid()
        ));
    }
    let mut text = String::new();
    file.by_ref()
        .take(64)
        .read_to_string(&mut text)
        .map_err(|_| "does not hold a process id".to_owned())?;
    let pid: i32 = text
        .trim()
        .parse()
        .map_err(|_| "does not hold a process id".to_owned())?;
    // 0 and negative ids mean process groups, 1 is init: never what a pid file means.
    if pid <= 1 {
        return Err(format!("holds {pid}, which is not a single process"));
    }
    kill(Pid::from_raw(pid), signal).map_err(|e| format!("pid {pid}: {e}"))?;
    Ok(pid)
}

/// Kills the hook's whole process group if the hook is abandoned (timeout, or the
/// credential stopping), so that no shell's children outlive it.
struct GroupGuard(Option<Pid>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(group) = self.0 {
            let _ = killpg(group, Signal::SIGKILL);
        }
    }
}

async fn run_command(hook: &HookConfig, credential: &str, expires_at: SystemTime) -> HookResult {
    let program = &hook.command[0];
    let mut cmd = Command::new(program);
    cmd.args(&hook.command[1..])
        .stdin(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: between fork and exec the closure makes only system calls (getrlimit,
    // setrlimit), which are async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(crate::hardening::restore_core_limit_in_child);
    }
    // The hook inherits tokend's environment minus its configuration, which may hold
    // secrets (TOKEND_CREDENTIALS__X__CLIENT_SECRET); it gets what it needs instead.
    for (key, _) in std::env::vars_os() {
        if key.as_encoded_bytes().starts_with(b"TOKEND_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("TOKEND_CREDENTIAL", credential)
        .env("TOKEND_EXPIRES_AT", rfc3339::format(expires_at));
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            warn!(target: LOG, program, error = %e, "cannot start the rotation hook");
            return HookResult::Failed;
        }
    };
    let mut guard = GroupGuard(child.id().map(|id| Pid::from_raw(id as i32)));
    match tokio::time::timeout(hook.timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => {
            guard.0 = None;
            info!(target: LOG, program, "rotation hook done");
            HookResult::Ok
        }
        Ok(Ok(status)) => {
            guard.0 = None;
            warn!(target: LOG, program, %status, "rotation hook failed");
            HookResult::Failed
        }
        Ok(Err(e)) => {
            warn!(target: LOG, program, error = %e, "cannot wait for the rotation hook");
            HookResult::Failed
        }
        Err(_) => {
            drop(guard);
            let _ = child.wait().await;
            warn!(target: LOG, program, timeout = %humantime::format_duration(hook.timeout), "rotation hook timed out and was killed");
            HookResult::Timeout
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_pid_file_is_believed_only_from_root_or_tokends_user() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("app.pid");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        std::fs::write(&pid_file, format!("{}\n", child.id())).unwrap();
        // A link to it is not followed.
        let link = dir.path().join("link.pid");
        std::os::unix::fs::symlink(&pid_file, &link).unwrap();
        let e = send_signal(Signal::SIGTERM, &link).unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
        if nix::unistd::geteuid().is_root() {
            // Someone else's pid file names a root process: not signalled.
            std::os::unix::fs::chown(&pid_file, Some(4242), None).unwrap();
            let e = send_signal(Signal::SIGTERM, &pid_file).unwrap_err();
            assert!(e.contains("owned by uid 4242"), "{e}");
            assert!(child.try_wait().unwrap().is_none());
            std::os::unix::fs::chown(&pid_file, Some(0), None).unwrap();
        }
        std::fs::set_permissions(&pid_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            send_signal(Signal::SIGTERM, &pid_file),
            Ok(child.id() as i32)
        );
        assert!(!child.wait().unwrap().success());
    }
}
