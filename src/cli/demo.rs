//! `tokend demo`: the zero-setup first run, tokend against the built-in emulator.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::error;

use crate::cli::exit::{self, start_error_code};
use crate::config::{self, Config, LogConfig};
use crate::daemon::{self, ConfigSource, Daemon};
use crate::emulator::{Emulator, EmulatorConfig};
use crate::out::errln;
use crate::telemetry::logging;

/// Pinned log target: operators filter on it, whatever the module is called.
const LOG: &str = "tokend::demo";

/// Lifetime of the demo's access tokens: short enough to watch rotations happen.
const DEMO_LIFETIME: Duration = Duration::from_secs(8);

/// The demo's configuration: one credential against the emulator, outputs in `dir`. It
/// goes through the same loader as a file, so every default is the documented one.
pub fn demo_config(
    dir: &Path,
    emulator: &Emulator,
    bootstrap: String,
) -> Result<Config, config::ConfigError> {
    let emu = emulator.config();
    let q = |v: String| toml::Value::String(v).to_string();
    let path = |p: PathBuf| q(p.display().to_string());
    let text = format!(
        r#"
state_dir = {state}

[credentials.demo]
token_url = {url}
client_id = {id}
client_secret = {secret}
refresh_token = {bootstrap}
state_file = {state_file}

[credentials.demo.refresh]
min_remaining = "1s"
default_lifetime = "{lifetime}s"

[credentials.demo.retry]
initial = "500ms"
max = "4s"

[credentials.demo.http]
timeout = "5s"
connect_timeout = "2s"
allow_insecure_http = true

[[credentials.demo.outputs]]
path = {raw}
mode = "0600"

[[credentials.demo.outputs]]
path = {json}
format = "json"
mode = "0600"
"#,
        state = path(dir.join("state")),
        url = q(emulator.token_url()),
        id = q(emu.client_id),
        secret = q(emu.client_secret),
        bootstrap = q(bootstrap),
        state_file = path(dir.join("state/demo.json")),
        lifetime = DEMO_LIFETIME.as_secs(),
        raw = path(dir.join("access_token")),
        json = path(dir.join("token.json")),
    );
    // The environment's TOKEND_ variables configure a real daemon, not the demo.
    config::load_from_str(&text, "(demo)", std::iter::empty())
}

/// `tokend demo`: the emulator and the daemon against it, until Ctrl-C.
pub async fn run(dir: &Path) -> u8 {
    logging::init(&LogConfig::default());
    // Fail before promising anything: the banner below names files in `dir`.
    // The state directory is the demo's own: 0700 whatever the umask (tokend refuses
    // one that others may write).
    let state = dir.join("state");
    let made = crate::atomic::create_dirs(dir, 0o755, None)
        .and_then(|()| crate::atomic::create_dirs(&state, 0o700, None))
        .and_then(|()| {
            std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        });
    if let Err(e) = made {
        error!(target: LOG, dir = %dir.display(), error = %e, "cannot use the demo directory");
        return exit::OTHER;
    }
    let emu_cfg = EmulatorConfig {
        access_lifetime: DEMO_LIFETIME,
        ..EmulatorConfig::default()
    };
    let emulator = match Emulator::start(emu_cfg, SocketAddr::from(([127, 0, 0, 1], 0))).await {
        Ok(e) => e,
        Err(e) => {
            error!(target: LOG, error = %e, "cannot start the emulator");
            return exit::OTHER;
        }
    };
    let config = match demo_config(dir, &emulator, emulator.issue_refresh_token()) {
        Ok(c) => c,
        Err(e) => {
            error!(target: LOG, error = %e, "cannot build the demo configuration");
            return exit::OTHER;
        }
    };
    let shown = dir.display();
    errln!(
        "tokend demo: emulator at {} (access tokens live {}s)",
        emulator.token_url(),
        DEMO_LIFETIME.as_secs()
    );
    errln!("tokend demo: keeping {shown}/access_token and {shown}/token.json fresh; Ctrl-C stops");
    errln!(
        "tokend demo: try  curl -H \"Authorization: Bearer $(cat {shown}/access_token)\" {}",
        emulator.resource_url()
    );
    let started = match daemon::signals() {
        Ok(controls) => Daemon::start(ConfigSource::Fixed, &config)
            .await
            .map(|d| (controls, d)),
        Err(e) => Err(e),
    };
    match started {
        Ok((controls, d)) => match d.run(controls).await {
            Ok(()) => exit::OK,
            Err(e) => {
                error!(target: LOG, error = %e, "demo failed");
                start_error_code(&e)
            }
        },
        Err(e) => {
            error!(target: LOG, error = %e, "cannot start");
            start_error_code(&e)
        }
    }
}
