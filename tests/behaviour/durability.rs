//! design.md §4's write discipline, checked on the real binary's system calls (strace): a new
//! state file is fsync'd, renamed into place and its directory fsync'd before any output
//! is written; after that, each rotation is one write and one data sync into it.

use std::time::Duration;

use crate::common::{BIN, Env};

#[tokio::test]
async fn state_is_durable_before_outputs_are_written() {
    let env = Env::new(Duration::from_secs(3600)).await;
    let cfg = env.write_config(&["c"]);
    let trace = env.path("strace.txt");
    let status = tokio::process::Command::new("strace")
        .args([
            "-f",
            "-o",
            trace.to_str().unwrap(),
            "-e",
            "trace=openat,linkat,renameat,renameat2,rename,fsync,fdatasync",
        ])
        .args([BIN, "once", "-c", cfg.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .status()
        .await
        .expect("strace is needed for this test (apt-get install strace)");
    assert!(status.success());
    let text = std::fs::read_to_string(&trace).unwrap();
    let calls: Vec<&str> = text
        .lines()
        .map(|l| l.split_once(' ').map_or(l, |(_, rest)| rest.trim_start()))
        .collect();
    let find = |pred: &dyn Fn(&str) -> bool| {
        calls
            .iter()
            .position(|l| pred(l))
            .unwrap_or_else(|| panic!("not found in:\n{text}"))
    };

    // Renames within a directory held open: renameat(DIR, ".c.json.XXXXXX", DIR, "c.json").
    let state_rename = find(&|l| l.starts_with("rename") && l.contains("\"c.json\")"));
    let access_rename = find(&|l| l.starts_with("rename") && l.contains("\"access_token\")"));
    let json_rename = find(&|l| l.starts_with("rename") && l.contains("\"token.json\")"));
    assert!(
        state_rename < access_rename && access_rename < json_rename,
        "state first, then outputs:\n{text}"
    );

    // The state directory, held open: every file in it is reached through it.
    let dir = format!("\"{}\",", env.path("state").display());
    let fd_of = |l: &str| l.rsplit("= ").next().unwrap().trim().to_owned();
    // (The last open before the rename: `once` looks at the directory first.)
    let dir_open = (0..state_rename)
        .rev()
        .find(|&i| {
            calls[i].starts_with("openat(")
                && calls[i].contains(&dir)
                && calls[i].contains("O_DIRECTORY")
        })
        .unwrap_or_else(|| panic!("the state directory is never opened:\n{text}"));
    let dir_fd = fd_of(calls[dir_open]);
    // The state's temporary file: created in the state directory with 0600, fsync'd
    // before the rename.
    let in_dir = format!("openat({dir_fd}, ");
    let tmp_open = (0..state_rename)
        .rev()
        .find(|&i| {
            let unnamed = calls[i].starts_with(&in_dir) && calls[i].contains("O_TMPFILE");
            let named = calls[i].contains(".c.json.") && calls[i].contains("O_EXCL");
            unnamed || named
        })
        .unwrap_or_else(|| panic!("no temporary file for the state:\n{text}"));
    assert!(calls[tmp_open].contains("0600"), "{}", calls[tmp_open]);
    let tmp_fd = fd_of(calls[tmp_open]);
    assert!(
        calls[tmp_open..state_rename]
            .iter()
            .any(|l| l.starts_with(&format!("fsync({tmp_fd})"))),
        "the state file is fsync'd before the rename:\n{text}"
    );
    // The directory is fsync'd after the rename, before the first output is touched.
    assert!(
        calls[state_rename..access_rename]
            .iter()
            .any(|l| l.starts_with(&format!("fsync({dir_fd})"))),
        "the state directory is fsync'd after the rename:\n{text}"
    );
}

/// With the state file in place, each rotation commits the state with one
/// write and one data sync into that file (no rename, no directory sync on the state's
/// path), before the outputs are replaced. 1,000 rotations under strace.
#[tokio::test]
async fn each_rotation_commits_the_state_with_one_data_sync() {
    const ROTATIONS: usize = 1000;
    let env = Env::new(Duration::from_secs(3600)).await;
    let cfg = env.write_config(&["c"]);
    // The state file is created (by the full protocol) first, outside the trace.
    let once = tokio::process::Command::new(BIN)
        .args(["once", "-c", cfg.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .status()
        .await
        .unwrap();
    assert!(once.success());
    let trace = env.path("strace.txt");
    let d = env.spawn_shell(
        &format!(
            "exec strace -f -o {} -e trace=openat,close,pwrite64,write,fsync,fdatasync,rename,renameat,renameat2 {BIN} run -c {}",
            trace.display(),
            cfg.display()
        ),
        "run.log",
    );
    // tokend's own pid (strace is the child), from the state's lock file.
    let lock = env.path("state/c.json.lock");
    let mut pid = None;
    crate::common::wait_for("tokend under strace", Duration::from_secs(20), || {
        pid = std::fs::read_to_string(&lock)
            .ok()
            .and_then(|h| h.split_whitespace().nth(1)?.parse::<i32>().ok())
            .filter(|p| *p as u32 != d.child.id().unwrap_or(0));
        pid.is_some() && d.log_text().contains("tokend::daemon: started")
    })
    .await;
    let pid = pid.unwrap();
    for i in 1..=ROTATIONS {
        let before = env.emu.stats().refreshes;
        unsafe { libc::kill(pid, libc::SIGUSR1) };
        crate::common::wait_for(&format!("rotation {i}"), Duration::from_secs(10), || {
            env.emu.stats().refreshes > before && d.log_text().matches(" rotated ").count() >= i
        })
        .await;
    }
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let mut d = d;
    assert_eq!(d.wait_exit(Duration::from_secs(20)).await, 0);
    let text = std::fs::read_to_string(&trace).unwrap();
    let calls: Vec<&str> = text
        .lines()
        .map(|l| l.split_once(' ').map_or(l, |(_, rest)| rest.trim_start()))
        .collect();
    // The calls on the state file, opened for writing at each commit: every descriptor
    // from its open to its close.
    let mut open_on_state: Option<String> = None;
    let mut state_calls: Vec<&str> = Vec::new();
    let mut state_syncs = std::collections::HashSet::new();
    for (i, l) in calls.iter().enumerate() {
        let fd_of = |l: &str| l.split(['(', ',', ')']).nth(1).map(str::to_owned);
        if l.starts_with("openat(") && l.contains("\"c.json\"") && l.contains("O_RDWR") {
            open_on_state = Some(l.rsplit("= ").next().unwrap().trim().to_owned());
        } else if open_on_state.is_some() && fd_of(l) == open_on_state {
            if l.starts_with("close(") {
                open_on_state = None;
            } else if ["pwrite64(", "fdatasync(", "fsync("]
                .iter()
                .any(|c| l.starts_with(c))
            {
                state_calls.push(l);
                if l.starts_with("fdatasync(") {
                    state_syncs.insert(i);
                }
            }
        }
    }
    assert!(
        !state_calls.is_empty(),
        "the state file is never written in place:\n{text}"
    );
    let writes = state_calls
        .iter()
        .filter(|l| l.starts_with("pwrite64("))
        .count();
    let syncs = state_calls
        .iter()
        .filter(|l| l.starts_with("fdatasync("))
        .count();
    let fsyncs = state_calls
        .iter()
        .filter(|l| l.starts_with("fsync("))
        .count();
    let state_renames = calls
        .iter()
        .filter(|l| l.starts_with("rename") && l.contains("\"c.json\")"))
        .count();
    crate::common::figure(
        "durability",
        &format!(
            "{ROTATIONS} rotations under strace: state pwrite64={writes} fdatasync={syncs} fsync={fsyncs} renames={state_renames}"
        ),
    );
    assert_eq!(
        writes,
        ROTATIONS,
        "one write per rotation:\n{}",
        state_calls.join("\n")
    );
    assert_eq!(syncs, ROTATIONS, "one data sync per rotation");
    assert_eq!(
        (fsyncs, state_renames),
        (0, 0),
        "no full protocol on the state's path"
    );
    // Each rotation's data sync comes before that rotation's outputs are renamed (the
    // outputs written at start, from the state as loaded, come before any).
    let mut synced: Option<usize> = None;
    for (i, l) in calls.iter().enumerate() {
        if state_syncs.contains(&i) {
            *synced.get_or_insert(0) += 1;
        } else if let Some(n) = synced
            .as_mut()
            .filter(|_| l.starts_with("rename") && l.contains("\"access_token\")"))
        {
            assert!(
                *n > 0,
                "an output was replaced before the state was durable"
            );
            *n -= 1;
        }
    }
}
