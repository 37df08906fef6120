//! `tokend emulator`: the built-in token server alone, printing what a client needs
//! (docs/emulator.md).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use signal_hook::consts::{SIGINT, SIGTERM};

use crate::cli::exit;
use crate::config::{ClientAuth, LogConfig};
use crate::emulator::{Emulator, EmulatorConfig, TlsIdentity};
use crate::out::{errln, outln};
use crate::telemetry::logging;

/// What `tokend emulator` was asked for.
pub struct Options {
    pub listen: SocketAddr,
    pub lifetime: Duration,
    pub reuse_grace: Duration,
    pub client_id: String,
    pub client_secret: Option<String>,
    /// A public key file: the client authenticates by `private_key_jwt`.
    pub assertion_key: Option<PathBuf>,
    /// Certificate chain and key files, for HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// `tokend emulator`: the emulator alone, printing what a client needs.
pub async fn run(o: Options) -> u8 {
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
    if let Some(path) = o.assertion_key {
        match std::fs::read(&path) {
            Ok(pem) => {
                cfg.auth = ClientAuth::PrivateKeyJwt;
                cfg.assertion_key = Some(pem);
            }
            Err(e) => {
                errln!(
                    "tokend: cannot read the assertion key {}: {e}",
                    path.display()
                );
                return exit::CONFIG;
            }
        }
    }
    let tls = match o.tls {
        None => None,
        Some((cert, key)) => match (std::fs::read(&cert), std::fs::read(&key)) {
            (Ok(cert_chain_pem), Ok(key_pem)) => Some(TlsIdentity {
                cert_chain_pem,
                key_pem,
                client_ca_pem: None,
            }),
            (Err(e), _) | (_, Err(e)) => {
                errln!("tokend: cannot read the TLS certificate or key: {e}");
                return exit::CONFIG;
            }
        },
    };
    let emulator = match Emulator::start_with(cfg, o.listen, tls).await {
        Ok(e) => e,
        Err(e) => {
            errln!("tokend: cannot serve on {}: {e}", o.listen);
            return exit::OTHER;
        }
    };
    let c = emulator.config();
    outln!("token_url     {}", emulator.token_url());
    outln!("client_id     {}", c.client_id);
    match c.auth {
        ClientAuth::PrivateKeyJwt => outln!("client_auth   private_key_jwt"),
        _ => outln!("client_secret {}", c.client_secret),
    }
    outln!("refresh_token {}", emulator.issue_refresh_token());
    outln!("resource_url  {}", emulator.resource_url());
    let mut signals = match signal_hook_tokio::Signals::new([SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            errln!("tokend: cannot install signal handlers: {e}");
            return exit::OTHER;
        }
    };
    signals.next().await;
    exit::OK
}
