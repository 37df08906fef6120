//! The daemon: one task per credential, and the signals that steer them (SPEC §7).
//!
//! SIGTERM/SIGINT stop every credential after the work in hand (a refresh in flight is
//! finished and saved); SIGHUP reloads the configuration without losing state; SIGUSR1
//! refreshes everything now.

use std::collections::BTreeMap;
use std::path::PathBuf;

use futures_util::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook_tokio::Signals;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{Instrument, error, info, info_span, warn};

use crate::config::{self, Config, CredentialConfig, LogConfig};
use crate::credential::{Command, Credential, Health};
use crate::endpoint::{Endpoint, EndpointError};
use crate::state::{FileStore, StoreError};

/// Where the configuration comes from, so SIGHUP knows what to reload.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    File(PathBuf),
    /// Built in code (`demo`): nothing to reload.
    Fixed,
}

/// Errors that stop the daemon from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("credentials.{name}: {err}")]
    Endpoint { name: String, err: EndpointError },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// The signals the daemon handles. Install them before anything else, so that a signal
/// sent during start-up is handled rather than killing the process.
pub fn signals() -> Result<Signals, StartError> {
    Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1]).map_err(StartError::Signals)
}

/// A running credential.
struct Running {
    config: CredentialConfig,
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<()>,
    health: watch::Receiver<Health>,
}

/// Takes the credential's lock and builds its client, without starting it.
pub fn prepare(
    cfg: &CredentialConfig,
) -> Result<(Credential<FileStore>, watch::Receiver<Health>), StartError> {
    let store = FileStore::open(&cfg.state_file)?;
    let endpoint = Endpoint::new(cfg).map_err(|err| StartError::Endpoint {
        name: cfg.name.clone(),
        err,
    })?;
    Ok(Credential::new(cfg.clone(), store, endpoint))
}

fn spawn(
    cfg: &CredentialConfig,
    credential: Credential<FileStore>,
    health: watch::Receiver<Health>,
) -> Running {
    let (tx, rx) = mpsc::unbounded_channel();
    let span = info_span!("credential", credential = %cfg.name);
    let task = tokio::spawn(credential.run(rx).instrument(span));
    Running {
        config: cfg.clone(),
        commands: tx,
        task,
        health,
    }
}

/// The set of running credentials.
pub struct Daemon {
    source: ConfigSource,
    log: LogConfig,
    running: BTreeMap<String, Running>,
}

impl Daemon {
    /// Locks every state file and starts every credential; nothing starts if any lock is held.
    pub fn start(source: ConfigSource, config: &Config) -> Result<Self, StartError> {
        let mut prepared = Vec::new();
        for cfg in config.credentials.values() {
            prepared.push((cfg, prepare(cfg)?));
        }
        let running = prepared
            .into_iter()
            .map(|(cfg, (cred, health))| (cfg.name.clone(), spawn(cfg, cred, health)))
            .collect();
        Ok(Daemon {
            source,
            log: config.log.clone(),
            running,
        })
    }

    /// Each credential's health, by name.
    pub fn health(&self) -> BTreeMap<String, watch::Receiver<Health>> {
        self.running
            .iter()
            .map(|(n, r)| (n.clone(), r.health.clone()))
            .collect()
    }

    /// Runs until SIGTERM or SIGINT, then stops every credential cleanly.
    pub async fn run_until_signalled(mut self, mut signals: Signals) -> Result<(), StartError> {
        info!(credentials = self.running.len(), "started");
        while let Some(signal) = signals.next().await {
            match signal {
                SIGHUP => self.reload().await,
                SIGUSR1 => {
                    info!("SIGUSR1: refreshing every credential now");
                    self.broadcast(Command::RefreshNow);
                }
                _ => break,
            }
        }
        signals.handle().close();
        info!("stopping");
        self.stop_all().await;
        info!("stopped");
        Ok(())
    }

    fn broadcast(&self, command: Command) {
        for r in self.running.values() {
            let _ = r.commands.send(command);
        }
    }

    async fn stop_all(&mut self) {
        let names: Vec<String> = self.running.keys().cloned().collect();
        for name in names {
            self.stop(&name).await;
        }
    }

    async fn stop(&mut self, name: &str) {
        if let Some(r) = self.running.remove(name) {
            let _ = r.commands.send(Command::Stop);
            if let Err(e) = r.task.await {
                error!(credential = name, error = %e, "credential task ended abnormally");
            }
        }
    }

    /// SIGHUP: a valid new configuration replaces the old one credential by credential;
    /// an invalid one is refused and the old one keeps running.
    async fn reload(&mut self) {
        let path = match &self.source {
            ConfigSource::File(p) => p.clone(),
            ConfigSource::Fixed => {
                info!(
                    "SIGHUP: built-in configuration, nothing to reload; retrying blocked credentials"
                );
                return self.broadcast(Command::Resume);
            }
        };
        let new = match config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                error!(error = %e, "SIGHUP: the new configuration is invalid and was refused; the old one keeps running");
                return;
            }
        };
        info!(path = %path.display(), "SIGHUP: reloading the configuration");
        let old: Vec<String> = self.running.keys().cloned().collect();
        for name in &old {
            match new.credentials.get(name) {
                None => {
                    info!(credential = %name, "removed; stopping it");
                    self.stop(name).await;
                }
                Some(cfg) if self.running.get(name).is_some_and(|r| r.config != *cfg) => {
                    info!(credential = %name, "changed; restarting it from its state");
                    self.stop(name).await;
                    self.add(cfg);
                }
                Some(_) => {
                    if let Some(r) = self.running.get(name) {
                        let _ = r.commands.send(Command::Resume);
                    }
                }
            }
        }
        for (name, cfg) in &new.credentials {
            if !self.running.contains_key(name) && !old.contains(name) {
                info!(credential = %name, "added");
                self.add(cfg);
            }
        }
        if new.log != self.log {
            warn!("log settings take effect at the next start");
        }
    }

    fn add(&mut self, cfg: &CredentialConfig) {
        match prepare(cfg) {
            Ok((cred, health)) => {
                self.running
                    .insert(cfg.name.clone(), spawn(cfg, cred, health));
            }
            Err(e) => error!(credential = %cfg.name, error = %e, "cannot start this credential"),
        }
    }
}
