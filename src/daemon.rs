//! The daemon: one task per credential, and the signals that steer them (SPEC §7).
//!
//! SIGTERM/SIGINT stop every credential after the work in hand (a refresh in flight is
//! finished and saved); SIGHUP reloads the configuration without losing state; SIGUSR1
//! refreshes everything now. systemd hears about each step (see [`crate::notify`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use futures_util::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook_tokio::Signals;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{Instrument, error, info, info_span, warn};

use crate::config::{self, Config, CredentialConfig, HealthConfig, LogConfig};
use crate::credential::{Command, Credential, Health};
use crate::endpoint::{Clients, Endpoint, EndpointError};
use crate::health::Board;
use crate::notify;
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
    #[error("health.listen {addr}: {err}")]
    Listen {
        addr: std::net::SocketAddr,
        err: std::io::Error,
    },
}

/// The signals the daemon handles. Install them before anything else, so that a signal
/// sent during start-up is handled rather than killing the process.
pub fn signals() -> Result<Signals, StartError> {
    Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1]).map_err(StartError::Signals)
}

/// Takes the credential's lock and builds its client, without starting it.
pub fn prepare(
    cfg: &CredentialConfig,
    board: &Arc<Board>,
    clients: &Clients,
) -> Result<(Credential<FileStore>, watch::Receiver<Health>), StartError> {
    let store = FileStore::open(&cfg.state_file)?;
    let endpoint = Endpoint::new(cfg, clients).map_err(|err| StartError::Endpoint {
        name: cfg.name.clone(),
        err,
    })?;
    Ok(Credential::new(cfg.clone(), store, endpoint, board.clone()))
}

/// A running credential.
struct Running {
    config: CredentialConfig,
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<()>,
}

/// The set of running credentials.
pub struct Daemon {
    source: ConfigSource,
    log: LogConfig,
    health: Option<HealthConfig>,
    board: Arc<Board>,
    clients: Clients,
    running: BTreeMap<String, Running>,
    health_server: Option<JoinHandle<()>>,
}

impl Daemon {
    /// Locks every state file, binds the health listener, and starts every credential;
    /// nothing starts if any of that fails.
    pub async fn start(source: ConfigSource, config: &Config) -> Result<Self, StartError> {
        let board = Arc::new(Board::default());
        let clients = Clients::default();
        let mut prepared = Vec::new();
        for cfg in config.credentials.values() {
            prepared.push((cfg, prepare(cfg, &board, &clients)?));
        }
        let health_server = match &config.health {
            Some(h) => {
                let listener = tokio::net::TcpListener::bind(h.listen)
                    .await
                    .map_err(|err| StartError::Listen {
                        addr: h.listen,
                        err,
                    })?;
                info!(listen = %h.listen, "serving /healthz, /readyz and /metrics");
                Some(tokio::spawn(crate::health::serve(listener, board.clone())))
            }
            None => None,
        };
        let mut daemon = Daemon {
            source,
            log: config.log.clone(),
            health: config.health.clone(),
            board,
            clients,
            running: BTreeMap::new(),
            health_server,
        };
        for (cfg, (cred, health)) in prepared {
            daemon.spawn(cfg, cred, health);
        }
        Ok(daemon)
    }

    fn spawn(
        &mut self,
        cfg: &CredentialConfig,
        credential: Credential<FileStore>,
        health: watch::Receiver<Health>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let span = info_span!("credential", credential = %cfg.name);
        let task = tokio::spawn(credential.run(rx).instrument(span));
        self.board.set(&cfg.name, health);
        self.running.insert(
            cfg.name.clone(),
            Running {
                config: cfg.clone(),
                commands: tx,
                task,
            },
        );
    }

    /// Runs until SIGTERM or SIGINT, then stops every credential cleanly.
    pub async fn run_until_signalled(mut self, mut signals: Signals) -> Result<(), StartError> {
        info!(credentials = self.running.len(), "started");
        let mut watchdog = notify::watchdog_interval().map(tokio::time::interval);
        let mut announced = false;
        loop {
            let status = self.board.summary();
            if !announced && self.board.readiness().is_ok() {
                info!("every credential is ready");
                notify::ready(&status);
                announced = true;
            } else {
                notify::status(&status);
            }
            tokio::select! {
                signal = signals.next() => match signal {
                    Some(SIGHUP) => {
                        notify::reloading();
                        self.reload().await;
                        // The reload is done; readiness of tokens is /readyz's business.
                        notify::ready(&self.board.summary());
                    }
                    Some(SIGUSR1) => {
                        info!("SIGUSR1: refreshing every credential now");
                        self.broadcast(Command::RefreshNow);
                    }
                    _ => break,
                },
                _ = self.board.changed.notified() => {}
                _ = tick(&mut watchdog) => notify::watchdog(),
            }
        }
        signals.handle().close();
        info!("stopping");
        notify::stopping();
        self.stop_all().await;
        if let Some(server) = self.health_server.take() {
            server.abort();
        }
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
            self.board.remove(name);
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
        if new.log != self.log || new.health != self.health {
            warn!("log and health settings take effect at the next start");
        }
    }

    fn add(&mut self, cfg: &CredentialConfig) {
        match prepare(cfg, &self.board, &self.clients) {
            Ok((cred, health)) => self.spawn(cfg, cred, health),
            Err(e) => error!(credential = %cfg.name, error = %e, "cannot start this credential"),
        }
    }
}

/// Waits for the next watchdog tick, or forever when there is no watchdog.
async fn tick(watchdog: &mut Option<tokio::time::Interval>) {
    match watchdog {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending::<()>().await,
    }
}
