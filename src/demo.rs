//! `tokend demo` and `tokend emulator`: the zero-setup first run, and the emulator alone.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use secrecy::SecretString;
use signal_hook::consts::{SIGINT, SIGTERM};
use tracing::error;

use crate::cli::{exit, start_error_code};
use crate::config::{
    ChainPolicy, ClientAuth, Config, CredentialConfig, HttpConfig, LogConfig, LoginConfig,
    OutputConfig, OutputFormat, RefreshPolicy, RetryPolicy, SecretSource,
};
use crate::daemon::{ConfigSource, Daemon};
use crate::emulator::{Emulator, EmulatorConfig, TlsIdentity};
use crate::logging;

/// Lifetime of the demo's access tokens: short enough to watch rotations happen.
const DEMO_LIFETIME: Duration = Duration::from_secs(8);

/// The demo's configuration: one credential against the emulator, outputs in `dir`.
pub fn demo_config(
    dir: &Path,
    emulator: &Emulator,
    bootstrap: String,
) -> Result<Config, url::ParseError> {
    let emu = emulator.config();
    let credential = CredentialConfig {
        name: "demo".into(),
        token_url: Some(emulator.token_url().parse()?),
        client_id: emu.client_id,
        client_secret: SecretSource::Inline(SecretString::from(emu.client_secret)),
        client_auth: ClientAuth::Basic,
        refresh_token: Some(SecretSource::Inline(SecretString::from(bootstrap))),
        scope: None,
        state_file: dir.join("state/demo.json"),
        refresh: RefreshPolicy {
            at: 0.75,
            jitter: 0.05,
            min_remaining: Duration::from_secs(1),
            default_lifetime: DEMO_LIFETIME,
        },
        retry: RetryPolicy {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(4),
        },
        http: HttpConfig {
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            ca_file: None,
            allow_insecure_http: true,
        },
        outputs: vec![
            OutputConfig {
                path: dir.join("access_token"),
                format: OutputFormat::Raw,
                mode: 0o600,
                owner: None,
                group: None,
            },
            OutputConfig {
                path: dir.join("token.json"),
                format: OutputFormat::Json,
                mode: 0o600,
                owner: None,
                group: None,
            },
        ],
        publish_dir: None,
        on_rotate: None,
        login: LoginConfig::default(),
        chain: ChainPolicy {
            max_age: None,
            warn_before: Duration::from_secs(5 * 86_400),
        },
    };
    Ok(Config {
        state_dir: dir.join("state"),
        log: LogConfig::default(),
        health: None,
        credentials: BTreeMap::from([("demo".to_owned(), credential)]),
    })
}

pub async fn run(dir: &Path) -> u8 {
    logging::init(&LogConfig::default());
    let emu_cfg = EmulatorConfig {
        access_lifetime: DEMO_LIFETIME,
        ..EmulatorConfig::default()
    };
    let emulator = match Emulator::start(emu_cfg, SocketAddr::from(([127, 0, 0, 1], 0))).await {
        Ok(e) => e,
        Err(e) => {
            error!(error = %e, "cannot start the emulator");
            return exit::OTHER;
        }
    };
    let config = match demo_config(dir, &emulator, emulator.issue_refresh_token()) {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "cannot build the demo configuration");
            return exit::OTHER;
        }
    };
    let shown = dir.display();
    eprintln!(
        "tokend demo: emulator at {} (access tokens live {}s)",
        emulator.token_url(),
        DEMO_LIFETIME.as_secs()
    );
    eprintln!(
        "tokend demo: keeping {shown}/access_token and {shown}/token.json fresh; Ctrl-C stops"
    );
    eprintln!(
        "tokend demo: try  curl -H \"Authorization: Bearer $(cat {shown}/access_token)\" {}",
        emulator.resource_url()
    );
    let started = match crate::daemon::signals() {
        Ok(signals) => Daemon::start(ConfigSource::Fixed, &config)
            .await
            .map(|d| (signals, d)),
        Err(e) => Err(e),
    };
    match started {
        Ok((signals, d)) => match d.run_until_signalled(signals).await {
            Ok(()) => exit::OK,
            Err(e) => {
                error!(error = %e, "demo failed");
                start_error_code(&e)
            }
        },
        Err(e) => {
            error!(error = %e, "cannot start");
            start_error_code(&e)
        }
    }
}

/// What `tokend emulator` was asked for.
pub struct EmulatorOptions {
    pub listen: SocketAddr,
    pub lifetime: Duration,
    pub reuse_grace: Duration,
    pub client_id: String,
    pub client_secret: Option<String>,
    /// Certificate chain and key files, for HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
}

pub async fn emulator(o: EmulatorOptions) -> u8 {
    logging::init(&LogConfig::default());
    let mut cfg = EmulatorConfig {
        client_id: o.client_id,
        access_lifetime: o.lifetime,
        reuse_grace: o.reuse_grace,
        ..EmulatorConfig::default()
    };
    if let Some(s) = o.client_secret {
        cfg.client_secret = s;
    }
    let tls = match o.tls {
        None => None,
        Some((cert, key)) => match (std::fs::read(&cert), std::fs::read(&key)) {
            (Ok(cert_chain_pem), Ok(key_pem)) => Some(TlsIdentity {
                cert_chain_pem,
                key_pem,
            }),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("tokend: cannot read the TLS certificate or key: {e}");
                return exit::CONFIG;
            }
        },
    };
    let emulator = match Emulator::start_with(cfg, o.listen, tls).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("tokend: cannot serve on {}: {e}", o.listen);
            return exit::OTHER;
        }
    };
    let c = emulator.config();
    println!("token_url     {}", emulator.token_url());
    println!("client_id     {}", c.client_id);
    println!("client_secret {}", c.client_secret);
    println!("refresh_token {}", emulator.issue_refresh_token());
    println!("resource_url  {}", emulator.resource_url());
    let mut signals = match signal_hook_tokio::Signals::new([SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tokend: cannot install signal handlers: {e}");
            return exit::OTHER;
        }
    };
    signals.next().await;
    exit::OK
}
