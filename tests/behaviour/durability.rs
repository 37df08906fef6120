//! SPEC §4's write discipline, checked on the real binary's system calls (strace): the
//! state is fsync'd, renamed into place and its directory fsync'd before any output is
//! written.

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

    let state_rename = find(&|l| l.starts_with("rename") && l.contains("\"c.json\")"));
    let access_rename = find(&|l| l.starts_with("rename") && l.contains("\"access_token\")"));
    let json_rename = find(&|l| l.starts_with("rename") && l.contains("\"token.json\")"));
    assert!(
        state_rename < access_rename && access_rename < json_rename,
        "state first, then outputs:\n{text}"
    );

    // The state's temporary file: created with 0600, fsync'd before the rename.
    let dir_fd = calls[state_rename]
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .split(',')
        .next()
        .unwrap();
    let tmp_open = (0..state_rename)
        .rev()
        .find(|&i| {
            let unnamed = calls[i].starts_with(&format!("openat({dir_fd}, \".\""))
                && calls[i].contains("O_TMPFILE");
            let named = calls[i].contains(".c.json.") && calls[i].contains("O_EXCL");
            unnamed || named
        })
        .unwrap_or_else(|| panic!("no temporary file for the state:\n{text}"));
    assert!(calls[tmp_open].contains("0600"), "{}", calls[tmp_open]);
    let tmp_fd = calls[tmp_open].rsplit("= ").next().unwrap().trim();
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
