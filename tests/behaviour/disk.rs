//! Disk faults, on real file systems: the state directory on a full tmpfs
//! (ENOSPC: rotations still commit into the state file's slots; a file to create anew
//! cannot be), the output directory remounted read-only, and the output directory deleted.
//! The rotated refresh token stays in memory, writes are retried, readiness is false
//! meanwhile, and everything recovers without a restart and with nothing lost. Mounting
//! needs root: elsewhere these tests fail and say so.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::{Env, free_port, get, wait_for};
use tokend::emulator::RefreshTokenStatus;

const SEC: Duration = Duration::from_secs(1);

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        crate::common::require_root("mounts a tmpfs");
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mount -t tmpfs on {} failed", at.display());
        Tmpfs(at.to_owned())
    }

    fn remount(&self, option: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,{option}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn config(env: &Env, port: u16) -> PathBuf {
    env.bootstrap("c");
    env.write_config_text(&format!(
        "state_dir = \"{}/state\"\n[health]\nlisten = \"127.0.0.1:{port}\"\n{}",
        env.dir.path().display(),
        env.credential_toml("c", "")
    ))
}

async fn ready(port: u16) -> (u16, String) {
    get(&format!("http://127.0.0.1:{port}/readyz")).await
}

fn state_rt(env: &Env) -> String {
    env.state("c").unwrap()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_state_disk_loses_nothing_and_recovers_by_itself() {
    let env = Env::new(3600 * SEC).await;
    let fs = Tmpfs::mount(&env.path("state"), "256k");
    let port = free_port();
    let cfg = config(&env, port);
    let mut d = env.spawn(&["run", "-c", cfg.to_str().unwrap()], "tokend.log", &[]);
    wait_for("ready", 10 * SEC, || env.state("c").is_some()).await;
    let before = state_rt(&env);

    // Fill the file system to the last byte.
    let filler = fs.0.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=4k"])
        .arg(format!("of={}", filler.display()))
        .output();
    // A rotation is a write into the state file's own (allocated) slots, so a
    // full disk no longer stops it.
    env.rotate(&d, "a rotation on a full disk", 5 * SEC).await;
    wait_for("the rotated token on disk", 5 * SEC, || {
        state_rt(&env) != before
    })
    .await;
    assert_eq!(
        env.emu.refresh_token_status(&state_rt(&env)),
        RefreshTokenStatus::Live
    );
    assert!(!d.log_text().contains("cannot save the state"));

    // What still needs space is a new file: a credential added (SIGHUP) while the disk
    // is full rotates its bootstrap token and cannot create its state file.
    env.bootstrap("d");
    std::fs::write(
        &cfg,
        format!(
            "{}\n{}",
            std::fs::read_to_string(&cfg).unwrap(),
            env.credential_toml("d", "")
        ),
    )
    .unwrap();
    let before = env.emu.stats().refreshes;
    d.signal(libc::SIGHUP);
    wait_for("d's first refresh", 5 * SEC, || {
        env.emu.stats().refreshes > before
    })
    .await;
    wait_for("the save error", 5 * SEC, || {
        d.log_text().contains("cannot save the state")
    })
    .await;
    assert!(
        d.log_text().contains("No space left on device"),
        "{}",
        d.log_text()
    );
    // The server has rotated d's bootstrap token; the disk holds nothing of d; tokend
    // holds the new token in memory.
    assert!(env.state("d").is_none());
    // The error is logged as the save fails; the health follows when the task next
    // reports (after its other writes), so readiness is polled for it.
    let start = std::time::Instant::now();
    let (status, body) = loop {
        let (status, body) = ready(port).await;
        if body.contains("the state is not saved") || start.elapsed() > 5 * SEC {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("the state is not saved"), "{body}");

    // Space returns: the retry saves the rotated token, without a restart.
    std::fs::remove_file(&filler).unwrap();
    wait_for("d's state saved", 10 * SEC, || env.state("d").is_some()).await;
    let saved = env.state("d").unwrap()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        env.emu.refresh_token_status(&saved),
        RefreshTokenStatus::Live
    );
    let start = std::time::Instant::now();
    while ready(port).await.0 != 200 {
        assert!(start.elapsed() < 5 * SEC, "not ready after recovery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the chain goes on: no reuse, no invalid_grant.
    env.rotate(&d, "a later rotation", 5 * SEC).await;
    assert_eq!(env.emu.stats().reuses, 0);
    assert_eq!(d.stop().await, 0);
    crate::common::figure(
        "disk",
        "ENOSPC on the state directory: rotations still committed into the file's slots; a state file to create anew kept in memory, saved when space returned, 0 reuses, no restart",
    );
    drop(fs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_or_deleted_output_directory_recovers_by_itself() {
    let env = Env::new(3600 * SEC).await;
    let fs = Tmpfs::mount(&env.path("out"), "1m");
    let port = free_port();
    let cfg = config(&env, port);
    let mut d = env.spawn(&["run", "-c", cfg.to_str().unwrap()], "tokend.log", &[]);
    wait_for("first token", 10 * SEC, || env.raw_output("c").is_some()).await;

    // Read-only: the state is saved, the outputs cannot be, readiness says so.
    fs.remount("ro");
    env.rotate(&d, "the rotation", 5 * SEC).await;
    wait_for("the output error", 5 * SEC, || {
        d.log_text().contains("cannot write an output")
    })
    .await;
    assert!(
        d.log_text().contains("Read-only file system"),
        "{}",
        d.log_text()
    );
    let (status, body) = ready(port).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("outputs not written"), "{body}");
    let saved_token = env.state("c").unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(env.raw_output("c").as_deref(), Some(saved_token.as_str()));
    fs.remount("rw");
    wait_for("outputs rewritten", 10 * SEC, || {
        env.raw_output("c").as_deref() == Some(saved_token.as_str())
    })
    .await;

    // Deleted: the next write makes the directory again.
    std::fs::remove_dir_all(env.path("out/c")).unwrap();
    env.rotate(&d, "the rotation", 5 * SEC).await;
    wait_for("outputs recreated", 5 * SEC, || {
        env.raw_output("c").is_some()
    })
    .await;
    let start = std::time::Instant::now();
    while ready(port).await.0 != 200 {
        assert!(start.elapsed() < 5 * SEC, "not ready after recovery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(env.emu.stats().reuses, 0);
    assert_eq!(d.stop().await, 0);
    crate::common::figure(
        "disk",
        "read-only output directory: state saved, outputs retried and written after remount rw; deleted output directory: recreated at the next write",
    );
    drop(fs);
}

/// `chattr [+-]i path`: an immutable file cannot be written, replaced or removed, even by
/// root (the state directory is on ext4 here; tmpfs has no such flag).
fn immutable(path: &Path, on: bool) {
    let ok = Command::new("chattr")
        .arg(if on { "+i" } else { "-i" })
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "chattr needs root and a file system with the immutable flag (ext4, xfs)"
    );
}

/// A SIGHUP that changes a credential while its rotated refresh token cannot be saved:
/// the new task goes on from the unsaved token, never from the older one on disk, and
/// saves it once it can. Against a strict server: 0 reuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_while_the_state_cannot_be_saved_keeps_the_rotation() {
    let env = Env::new(3600 * SEC).await;
    let cfg = config(&env, free_port());
    let mut d = env.spawn(&["run", "-c", cfg.to_str().unwrap()], "tokend.log", &[]);
    wait_for("the first state", 10 * SEC, || env.state("c").is_some()).await;
    d.wait_started().await;
    let on_disk = state_rt(&env);
    let state = env.path("state/c.json");

    immutable(&state, true);
    env.rotate(&d, "a rotation that cannot be saved", 5 * SEC)
        .await;
    wait_for("the save error", 5 * SEC, || {
        d.log_text().contains("cannot save the state")
    })
    .await;
    // The credential changes (its backoff), and the daemon reloads it.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("max = \"2s\"", "max = \"3s\"");
    std::fs::write(&cfg, text).unwrap();
    d.signal(libc::SIGHUP);
    wait_for("the restart", 5 * SEC, || {
        d.log_text().contains("changed; restarting it")
    })
    .await;
    tokio::time::sleep(2 * SEC).await;
    assert_eq!(
        state_rt(&env),
        on_disk,
        "the file still holds the older token"
    );

    immutable(&state, false);
    wait_for("the rotated token saved", 10 * SEC, || {
        state_rt(&env) != on_disk
    })
    .await;
    assert_eq!(
        env.emu.refresh_token_status(&state_rt(&env)),
        RefreshTokenStatus::Live
    );
    env.rotate(&d, "a rotation after the reload", 5 * SEC).await;
    assert_eq!(env.emu.stats().reuses, 0, "{}", d.log_text());
    assert!(
        d.log_text()
            .contains("the task before this reload could not save")
    );
    assert_eq!(d.stop().await, 0);
}

/// The state directory removed under the running daemon: the next rotation makes it
/// again and is saved there, and a restart goes on with the chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_state_directory_is_made_again_and_the_chain_goes_on() {
    let env = Env::new(3600 * SEC).await;
    let cfg = config(&env, free_port());
    let mut d = env.spawn(&["run", "-c", cfg.to_str().unwrap()], "tokend.log", &[]);
    wait_for("the first state", 10 * SEC, || env.state("c").is_some()).await;
    d.wait_started().await;
    std::fs::remove_dir_all(env.path("state")).unwrap();
    env.rotate(&d, "a rotation without a state directory", 5 * SEC)
        .await;
    wait_for("the state saved again", 10 * SEC, || {
        env.state("c").is_some()
    })
    .await;
    assert_eq!(
        env.emu.refresh_token_status(&state_rt(&env)),
        RefreshTokenStatus::Live
    );
    assert_eq!(crate::common::mode(&env.path("state")), 0o700);
    assert_eq!(d.stop().await, 0);
    assert!(!d.log_text().contains("it is lost"), "{}", d.log_text());
    // A second daemon would find the lock taken again: the restarted one goes on.
    let d = env.spawn(&["run", "-c", cfg.to_str().unwrap()], "tokend-2.log", &[]);
    d.wait_started().await;
    env.rotate(&d, "a rotation after the restart", 5 * SEC)
        .await;
    assert_eq!(env.emu.stats().reuses, 0);
}
