//! The daemon: one task per credential, steered by a stream of [`Control`]s (design.md §10).
//!
//! Stop ends every credential after the work in hand (a refresh in flight is finished
//! and saved); Reload re-reads the configuration without losing state; RefreshNow
//! refreshes everything now. systemd hears about each step (see [`super::notify`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use tokio::task::JoinHandle;
use tracing::{Instrument, error, info, info_span, warn};

use crate::config::{self, Config, CredentialConfig, HealthConfig, LogConfig};
use crate::coordination::Coordination;
use crate::credential::{Command, Credential, Ended, Mailbox, Stopped, mailbox};
use crate::daemon::control::Control;
use crate::daemon::error::StartError;
use crate::daemon::notify;
use crate::oauth::{Clients, Endpoint};
use crate::store::State;
use crate::store::StateFile;
use crate::telemetry::Board;
use crate::telemetry::health::Report;

/// Pinned log target: operators and tests filter on it, whatever the module is called.
const LOG: &str = "tokend::daemon";

/// Where the configuration comes from, so SIGHUP knows what to reload.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    File(PathBuf),
    /// Built in code (`demo`): nothing to reload.
    Fixed,
}

/// Takes the credential's lock and builds its client, without starting it.
pub fn prepare(
    cfg: &Arc<CredentialConfig>,
    board: &Arc<Board>,
    clients: &Clients,
) -> Result<(Credential, Arc<Report>), StartError> {
    let store = StateFile::open(&cfg.state_file)?;
    let endpoint = Endpoint::new(cfg, clients).map_err(|err| StartError::Endpoint {
        name: cfg.name.clone(),
        err,
    })?;
    Ok(Credential::new(cfg.clone(), store, endpoint, board.clone()))
}

/// A running credential.
struct Running {
    config: Arc<CredentialConfig>,
    commands: Mailbox,
    task: JoinHandle<Ended>,
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
    /// With `[coordination]`: this replica's lease and store connection.
    coordination: Option<Coordination>,
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
                info!(target: LOG, listen = %h.listen, "serving /healthz, /readyz and /metrics");
                Some(tokio::spawn(crate::telemetry::server::serve(
                    listener,
                    board.clone(),
                )))
            }
            None => None,
        };
        let coordination = match &config.coordination {
            Some(c) => Some(Coordination::start(c, board.clone()).map_err(|failure| {
                StartError::Coordination {
                    table: c.store.table(),
                    failure,
                }
            })?),
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
            coordination,
        };
        for (cfg, (cred, health)) in prepared {
            daemon.spawn(cfg, cred, health);
        }
        Ok(daemon)
    }

    fn spawn(&mut self, cfg: &Arc<CredentialConfig>, credential: Credential, health: Arc<Report>) {
        let credential = match &self.coordination {
            Some(c) => credential.with_member(c.member(&cfg.name), c.config().unfinished_intent),
            None => credential,
        };
        let (tx, rx) = mailbox();
        let span = info_span!(target: LOG, "credential", credential = %cfg.name);
        // On the board before its first report, so that the board counts it.
        self.board.set(&cfg.name, health);
        let task = tokio::spawn(credential.run(rx).instrument(span));
        self.running.insert(
            cfg.name.clone(),
            Running {
                config: cfg.clone(),
                commands: tx,
                task,
            },
        );
    }

    /// Runs until told to stop (or until `controls` ends), then stops every credential
    /// cleanly. Signals reach it through [`super::control::signals`]; tests send
    /// [`Control`]s directly.
    pub async fn run(
        mut self,
        mut controls: impl Stream<Item = Control> + Unpin,
    ) -> Result<(), StartError> {
        info!(target: LOG, credentials = self.running.len(), "started");
        let mut watchdog = notify::watchdog_interval().map(tokio::time::interval);
        let mut announced = false;
        loop {
            let status = self.board.summary();
            if !announced && self.board.all_ready() {
                info!(target: LOG, "every credential is ready");
                notify::ready(&status);
                announced = true;
            } else {
                notify::status(&status);
            }
            tokio::select! {
                control = controls.next() => match control {
                    Some(Control::Reload) => {
                        notify::reloading();
                        self.reload().await;
                        // The reload is done; readiness of tokens is /readyz's business.
                        notify::ready(&self.board.summary());
                    }
                    Some(Control::RefreshNow) => {
                        info!(target: LOG, "SIGUSR1: refreshing every credential now");
                        self.broadcast(Command::RefreshNow);
                    }
                    Some(Control::Stop) | None => break,
                },
                _ = self.board.changed.notified() => {}
                _ = tick(&mut watchdog) => notify::watchdog(),
            }
        }
        info!(target: LOG, "stopping");
        notify::stopping();
        self.stop_all().await;
        if let Some(coordination) = self.coordination.take() {
            coordination.release().await;
        }
        if let Some(server) = self.health_server.take() {
            server.abort();
        }
        info!(target: LOG, "stopped");
        Ok(())
    }

    fn broadcast(&self, command: Command) {
        for r in self.running.values() {
            r.commands.send(command);
        }
    }

    /// Stops every credential. The stop is bounded by the request timeout whatever
    /// their number: refreshes in flight are finished and saved, queued ones are not
    /// started.
    async fn stop_all(&mut self) {
        // Every credential is told first, so that they finish their work side by side.
        // The process's lease, revoked next, takes every leadership with it.
        for r in self.running.values() {
            r.commands.send(Command::Stop);
        }
        let (mut finished, mut left) = (0, 0);
        let names: Vec<String> = self.running.keys().cloned().collect();
        for name in names {
            match self.stop(&name, Command::Stop).await.map(|e| e.stopped) {
                Some(Stopped::Finished) => finished += 1,
                Some(Stopped::LeftDue) => left += 1,
                _ => {}
            }
        }
        info!(
            target: LOG,
            finished,
            left,
            "credentials stopped: the refreshes in flight were finished and saved; the due ones not started are left for the next start"
        );
    }

    /// Stops one credential with `how`: [`Command::Stop`], or [`Command::Leave`] when
    /// the process goes on without it (a leadership it holds is given up), or
    /// [`Command::Restart`] when another task takes its place.
    async fn stop(&mut self, name: &str, how: Command) -> Option<Ended> {
        let r = self.running.remove(name)?;
        r.commands.send(how);
        let stopped = match r.task.await {
            Ok(stopped) => Some(stopped),
            Err(e) => {
                error!(target: LOG, credential = name, error = %e, "credential task ended abnormally");
                None
            }
        };
        self.board.remove(name);
        stopped
    }

    /// SIGHUP: a valid new configuration replaces the old one credential by credential;
    /// an invalid one is refused and the old one keeps running.
    async fn reload(&mut self) {
        let path = match &self.source {
            ConfigSource::File(p) => p.clone(),
            ConfigSource::Fixed => {
                info!(target: LOG,
                    "SIGHUP: built-in configuration, nothing to reload; retrying blocked credentials"
                );
                return self.broadcast(Command::Resume);
            }
        };
        let new = match config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                error!(target: LOG, error = %e, "SIGHUP: the new configuration is invalid and was refused; the old one keeps running");
                return;
            }
        };
        info!(target: LOG, path = %path.display(), "SIGHUP: reloading the configuration");
        let old: Vec<String> = self.running.keys().cloned().collect();
        for name in &old {
            match new.credentials.get(name) {
                None => {
                    info!(target: LOG, credential = %name, "removed; stopping it");
                    self.stop(name, Command::Leave).await;
                }
                Some(cfg) if self.running.get(name).is_some_and(|r| r.config != *cfg) => {
                    // Refused before the running task stops, so that it keeps running.
                    if let Err(err) = Endpoint::new(cfg, &self.clients) {
                        error!(target: LOG, credential = %name, error = %err, "SIGHUP: the changed credential cannot be used; it keeps running as it was");
                        continue;
                    }
                    info!(target: LOG, credential = %name, "changed; restarting it from its state");
                    let unsaved = self
                        .stop(name, Command::Restart)
                        .await
                        .and_then(|e| e.unsaved);
                    self.add_carrying(cfg, unsaved);
                }
                Some(_) => {
                    if let Some(r) = self.running.get(name) {
                        r.commands.send(Command::Resume);
                    }
                }
            }
        }
        for (name, cfg) in &new.credentials {
            if !self.running.contains_key(name) && !old.contains(name) {
                info!(target: LOG, credential = %name, "added");
                self.add(cfg);
            }
        }
        let coordination = self.coordination.as_ref().map(|c| c.config());
        if new.log != self.log
            || new.health != self.health
            || new.coordination.as_ref() != coordination
        {
            warn!(target: LOG, "log, health and coordination settings take effect at the next start");
        }
    }

    fn add(&mut self, cfg: &Arc<CredentialConfig>) {
        self.add_carrying(cfg, None);
    }

    /// Starts a credential, going on from `unsaved`: a rotation the task it replaces
    /// could not save.
    fn add_carrying(&mut self, cfg: &Arc<CredentialConfig>, unsaved: Option<State>) {
        match prepare(cfg, &self.board, &self.clients) {
            Ok((cred, health)) => self.spawn(cfg, cred.carrying(unsaved), health),
            Err(e) if unsaved.is_some() => {
                error!(target: LOG, credential = %cfg.name, error = %e, "cannot start this credential again, and the rotated refresh token its task could not save is lost with it: run `tokend login {}` once it can start", cfg.name)
            }
            Err(e) => {
                error!(target: LOG, credential = %cfg.name, error = %e, "cannot start this credential")
            }
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tokio::sync::mpsc;

    use super::*;
    use crate::emulator::{Emulator, EmulatorConfig};

    /// A stream of the controls sent on `rx`, as signals would produce them.
    fn controls(rx: mpsc::UnboundedReceiver<Control>) -> impl Stream<Item = Control> + Unpin {
        Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|c| (c, rx))
        }))
    }

    async fn until(what: &str, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn controls_drive_the_daemon_without_signals() {
        let emu = Emulator::start(EmulatorConfig::default(), ([127, 0, 0, 1], 0).into())
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("access_token");
        let text = format!(
            r#"
            state_dir = "{state}"
            [credentials.c]
            token_url = "{url}"
            client_id = "{id}"
            client_secret = "{secret}"
            refresh_token = "{bootstrap}"
            [credentials.c.http]
            allow_insecure_http = true
            [[credentials.c.outputs]]
            path = "{out}"
            "#,
            state = dir.path().join("state").display(),
            url = emu.token_url(),
            id = emu.config().client_id,
            secret = emu.config().client_secret,
            bootstrap = emu.issue_refresh_token(),
            out = out.display(),
        );
        let config = config::load_from_str(&text, "t.toml", []).unwrap();
        let daemon = Daemon::start(ConfigSource::Fixed, &config).await.unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let running = tokio::spawn(daemon.run(controls(rx)));

        until("the first token", || out.exists()).await;
        assert_eq!(emu.stats().refreshes, 1);
        tx.send(Control::RefreshNow).unwrap();
        until("a refresh on request", || emu.stats().refreshes == 2).await;
        // A fixed configuration has nothing to reload; the daemon keeps running.
        tx.send(Control::Reload).unwrap();
        tx.send(Control::Stop).unwrap();
        running.await.unwrap().unwrap();
        assert_eq!(emu.stats().reuses, 0);
        let token = std::fs::read_to_string(&out).unwrap();
        assert!(emu.accepts(&token));
    }
}
