//! Interoperability with a real third-party OAuth server: django-oauth-toolkit, pinned,
//! installed into tests/interop/.venv by the script on first use (needs python3 and PyPI).

use std::process::Command;

#[test]
fn rotates_against_django_oauth_toolkit() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/run_dot.py");
    let out = Command::new("python3")
        .args([
            script,
            "--tokend",
            env!("CARGO_BIN_EXE_tokend"),
            "--rotations",
            "6",
        ])
        .env_remove("RUST_LOG")
        .output()
        .expect("python3 is needed for the interoperability test");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success(),
        "interoperability test failed:\n{text}"
    );
    assert!(text.contains("interop: 1 passed, 0 failed"), "{text}");
}
