//! The process holds refresh tokens and client secrets in memory: no core dump may
//! take them, and no other process of the same user may read them. A process that is
//! not dumpable writes no core, and its `/proc/PID/mem` (and the rest of `/proc/PID`)
//! is root's alone. Secrets are not `mlock`ed: they pass through buffers tokend does not
//! own (the HTTP client's, the JSON parser's), so locking its own copies would not keep
//! them out of swap, and containers often allow only 64 KiB of locked memory; encrypted
//! swap, or none, is the system's part.

use std::sync::OnceLock;

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// The core-file limit tokend was started with, which hooks get back.
static CORE_LIMIT: OnceLock<(u64, u64)> = OnceLock::new();

/// Makes this process undumpable and its core-file limit zero; the first thing `main`
/// does. Failures are returned for a warning: neither is worth refusing to run over.
pub fn harden() -> Result<(), String> {
    let limits = getrlimit(Resource::RLIMIT_CORE)
        .map_err(|e| format!("cannot read the core-file limit: {e}"))?;
    let _ = CORE_LIMIT.set(limits);
    // The soft limit only, so that hooks get theirs back; already 0 under the unit
    // (LimitCORE=0), whose system-call filter refuses setrlimit. An undumpable process
    // writes no core whatever the limit: this is a second lock on the same door.
    if limits.0 != 0 {
        setrlimit(Resource::RLIMIT_CORE, 0, limits.1)
            .map_err(|e| format!("cannot set the core-file limit to 0: {e}"))?;
    }
    nix::sys::prctl::set_dumpable(false)
        .map_err(|e| format!("cannot make the process undumpable: {e}"))
}

/// In a hook's child process before it runs its program: the core-file limit tokend
/// was started with, as far as it can be given back (a failure must not keep the hook
/// from running). Dumpability is reset by the program's `exec` itself.
pub fn restore_core_limit_in_child() -> std::io::Result<()> {
    if let Some((soft, hard)) = CORE_LIMIT.get().filter(|(soft, _)| *soft != 0) {
        let _ = setrlimit(Resource::RLIMIT_CORE, *soft, *hard);
    }
    Ok(())
}

/// A warning when `run` or `once` runs as root outside a systemd service: tokend needs
/// no privilege beyond its own files, and its unit runs it as its own user.
pub fn root_warning() -> Option<&'static str> {
    let under_systemd = std::env::var_os("INVOCATION_ID").is_some();
    (nix::unistd::geteuid().is_root() && !under_systemd).then_some(
        "running as root: tokend needs no privilege beyond its own files (and CAP_CHOWN for outputs given to another owner). Run it as its own user: the unit in systemd/tokend.service does, without capabilities",
    )
}
