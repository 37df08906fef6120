//! Interoperability with real third-party OAuth servers: django-oauth-toolkit, pinned,
//! installed into tests/interop/.venv by its script on first use (needs python3 and
//! PyPI); and node-oidc-provider, pinned, installed into tests/interop/oidc/node_modules
//! (needs node and npm).

use std::process::Command;
use std::sync::Mutex;

/// The two django runs share the venv the script installs: one at a time.
static VENV: Mutex<()> = Mutex::new(());
/// The two oidc-provider runs share the node_modules their scripts install.
static NODE: Mutex<()> = Mutex::new(());

/// Runs `tests/interop/SCRIPT --tokend BIN ARGS...`, which must end with the line
/// `interop: 1 passed, 0 failed`.
fn run_script(script: &str, args: &[&str]) {
    let script = format!("{}/tests/interop/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(&script)
        .args(["--tokend", env!("CARGO_BIN_EXE_tokend")])
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("python3 is needed for the interoperability tests");
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

fn run_dot(mode: &str, rotations: &str) {
    let _one_at_a_time = VENV.lock().unwrap_or_else(|e| e.into_inner());
    run_script("run_dot.py", &["--rotations", rotations, "--mode", mode]);
}

/// The first refresh token from the server's password grant, then 6 rotations.
#[test]
fn rotates_against_django_oauth_toolkit() {
    run_dot("password", "6");
}

/// `tokend login` against an OpenID provider that grants a refresh token only
/// with `offline_access` and `prompt=consent` (OpenID Connect Core §11), through its
/// development login and consent pages; then `tokend run` for 3 rotations, every
/// published token active per the provider's introspection.
#[test]
fn login_against_an_openid_provider_that_enforces_consent() {
    let _one_at_a_time = NODE.lock().unwrap_or_else(|e| e.into_inner());
    run_script("run_oidc.py", &["--rotations", "3"]);
}

/// The client-credentials grant against the same provider, one credential by
/// `client_secret_basic` (a secret holding `+ / : = %`) and one by `private_key_jwt`:
/// an unknown key is refused (`invalid_client`) and blocks until the key file holds the
/// right one; then both rotate 5 s tokens for a minute, every published token active
/// per the provider's introspection.
#[test]
fn client_credentials_against_an_openid_provider() {
    let _one_at_a_time = NODE.lock().unwrap_or_else(|e| e.into_inner());
    run_script("run_oidc_m2m.py", &["--seconds", "60"]);
}

/// `tokend login` through the server's real login and consent pages (cancel,
/// then authorize), with discovery and PKCE, then `tokend run` for 3 rotations.
#[test]
fn login_against_django_oauth_toolkit() {
    run_dot("login", "3");
}
