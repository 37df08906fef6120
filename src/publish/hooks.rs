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
fn send_signal(signal: Signal, pid_file: &std::path::Path) -> Result<i32, String> {
    let text = std::fs::read_to_string(pid_file).map_err(|e| e.to_string())?;
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
