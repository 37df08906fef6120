//! One credential's task: load its state, publish, sleep until the machine says so,
//! refresh, persist, publish, repeat. Every decision is the [`Machine`]'s; this is
//! where the clock is read and the disk, the network and the logs are touched.
//!
//! The order after a successful refresh is the point of the whole daemon: the new state
//! is saved before anything else happens, so a crash can lose at most the answer that was
//! being written, never a refresh token that was already acknowledged.
//!
//! - this file: the loop and start-up
//! - [`refresh`]: one refresh: sent, and its answer acted on
//! - [`once`]: one pass, for `tokend once`
//! - [`operator`]: what a person does: a login handed over, a new bootstrap token or
//!   secret, SIGHUP, SIGUSR1, and blocking until then
//! - [`writes`]: saving, publishing, hooks and health reports
//! - [`shared`]: with coordination, following the stored record and the leader's
//!   fenced writes around each refresh (design.md §11)

mod once;
mod operator;
mod refresh;
mod shared;
mod writes;

pub use once::OnceResult;
pub use writes::DISK_THREADS;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use crate::config::CredentialConfig;
use crate::config::coordination::UnfinishedIntent;
use crate::coordination::Member;
use crate::credential::machine::{Block, Machine, Start};
use crate::credential::mailbox::{Command, Inbox};
use crate::oauth::Endpoint;
use crate::rfc3339;
use crate::store::{State, StateFile};
use crate::telemetry::Board;
use crate::telemetry::health::{Report, Reporter};

use operator::digested;
use shared::Replica;
use writes::SharedStateFile;

/// Pinned log target: operators and tests filter on it, whatever the module is called.
const LOG: &str = "tokend::credential";
/// How many times (a second apart) a stopping credential retries saving its state.
const STOP_SAVE_TRIES: u32 = 10;
/// The longest single sleep, so that wall-clock jumps and suspends are noticed.
const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// How a credential's task ended: what it was doing, and a rotated refresh token it
/// could not save, handed to the task that replaces it ([`Command::Restart`]).
#[derive(Debug)]
pub struct Ended {
    pub stopped: Stopped,
    pub unsaved: Option<State>,
}

/// What a credential was doing when it was told to stop: the daemon's last log line
/// counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Nothing was due.
    Idle,
    /// A refresh was in flight: it was finished, and saved, first.
    Finished,
    /// A refresh was due and not started: the next start sends it.
    LeftDue,
}

/// One credential and everything it needs to keep its token fresh.
pub struct Credential {
    /// Shared with the daemon's configuration: one copy per credential.
    cfg: Arc<CredentialConfig>,
    /// Shared with the blocking pool, where its files are read and written.
    state_file: SharedStateFile,
    endpoint: Endpoint,
    machine: Machine,
    hooks: JoinSet<()>,
    health: Reporter,
    board: Arc<Board>,
    /// `tokend once`: no retry follows a failure but the quick one.
    one_pass: bool,
    /// With coordination: this credential's place among the replicas. Boxed: the task's
    /// size is every credential's cost, and most do not coordinate.
    replica: Option<Box<Replica>>,
    /// A rotation the task this one replaces could not save: newer than the state
    /// file, so the chain goes on from it, and it is saved first. Boxed: rarely there.
    carried: Option<Box<State>>,
}

impl Credential {
    pub fn new(
        cfg: Arc<CredentialConfig>,
        state_file: StateFile,
        endpoint: Endpoint,
        board: Arc<Board>,
    ) -> (Self, Arc<Report>) {
        let (health, rx) = Reporter::new();
        let machine = Machine::new(Arc::clone(&cfg));
        let cred = Credential {
            cfg,
            state_file: Arc::new(Mutex::new(state_file)),
            endpoint,
            machine,
            hooks: JoinSet::new(),
            health,
            board,
            one_pass: false,
            replica: None,
            carried: None,
        };
        (cred, rx)
    }

    /// Goes on from `unsaved`, a rotation the task before this one (which SIGHUP
    /// replaced) could not save, rather than from the older state file.
    pub fn carrying(mut self, unsaved: Option<State>) -> Self {
        self.carried = unsaved.map(Box::new);
        self
    }

    /// Shares the chain with other replicas through `member` (design.md §11); `policy` says
    /// what to do about another replica's unfinished refresh.
    pub fn with_member(mut self, member: Member, policy: UnfinishedIntent) -> Self {
        self.replica = Some(Box::new(Replica::new(member, policy)));
        self
    }

    /// Runs until told to stop (or the daemon goes away).
    // Not an `async fn`: those keep a second copy of their arguments in the future
    // (rust-lang/rust#62958), and this future is every credential's standing cost.
    #[allow(clippy::manual_async_fn)]
    pub fn run(mut self, mut commands: Inbox) -> impl Future<Output = Ended> + Send {
        async move { self.run_loop(&mut commands).await }
    }

    async fn run_loop(&mut self, commands: &mut Inbox) -> Ended {
        // The rarely taken paths are boxed where they are awaited: the run future is
        // every credential's standing cost, and holds the largest of its await points.
        Box::pin(self.start()).await;
        let command;
        let mut stopped = Stopped::Idle;
        loop {
            self.sync_shared().await;
            self.reap_hooks();
            if self.writes_pending() {
                Box::pin(self.catch_up_writes()).await;
            }
            self.report();
            let now = SystemTime::now();
            let mut sleep = self
                .machine
                .next_wake(now, self.may_refresh())
                .duration_since(now)
                .unwrap_or(Duration::ZERO)
                .min(MAX_SLEEP);
            if self.ahead_of_store() {
                // A rotation the store does not have yet: try again soon.
                sleep = sleep.min(shared::NOT_NOW);
            }
            // Biased: a stop outranks a refresh that fell due at the same moment.
            tokio::select! {
                biased;
                received = commands.recv() => match received {
                    Command::Stop | Command::Leave | Command::Restart => {
                        command = received;
                        if stopped == Stopped::Idle && self.is_due_here(SystemTime::now()) {
                            stopped = Stopped::LeftDue;
                        }
                        break;
                    }
                    Command::RefreshNow => self.refresh_now(),
                    Command::Resume => Box::pin(self.resume()).await,
                },
                _ = tokio::time::sleep(sleep) => {}
                _ = member_changed(&mut self.replica) => {}
            }
            self.sync_shared().await;
            if self.is_due_here(SystemTime::now()) {
                // A stop while queued for a request slot leaves the refresh to the next
                // start: with thousands due at once, the queue would outlast any stop
                // timeout.
                let slot = tokio::select! {
                    biased;
                    received = commands.until_stop() => {
                        command = received;
                        stopped = Stopped::LeftDue;
                        break;
                    }
                    slot = self.endpoint.slot() => slot,
                };
                // Boxed, once a request slot is free: a refresh holds an HTTP request,
                // several KiB of future that a parked or queued credential should not
                // carry.
                Box::pin(self.attempt(slot)).await;
                if commands.stop_pending() {
                    stopped = Stopped::Finished;
                }
            } else if self.machine.is_blocked() {
                Box::pin(self.check_unblock_files()).await;
            }
            self.warn_chain_age();
        }
        // Boxed: what stopping holds (a state to hand over) is no parked task's cost.
        Box::pin(self.end(command, stopped)).await
    }

    /// Finishes the work in hand after `command` told the task to end.
    async fn end(&mut self, command: Command, stopped: Stopped) -> Ended {
        let unsaved = if command == Command::Restart {
            // The task that replaces this one saves it: one try here, no waiting.
            self.catch_up_writes().await;
            self.machine
                .needs_save()
                .then(|| self.machine.state().cloned())
                .flatten()
        } else {
            self.finish_writes().await;
            if self.machine.needs_save() {
                error!(
                    target: LOG,
                    error = self.machine.write_error().unwrap_or("not saved"),
                    "stopping without having saved the rotated refresh token: it is lost, and the server will refuse the one in the state file. A person must start the chain again: run `tokend login {}`, or write a new refresh token to the bootstrap file",
                    self.cfg.name
                );
            }
            None
        };
        // Hooks still running are killed: stopping is bounded by the request timeout.
        self.hooks.shutdown().await;
        if let Some(replica) = self.replica.take() {
            replica.into_member().stop(command != Command::Stop).await;
        }
        self.report();
        Ended { stopped, unsaved }
    }

    /// A refresh is due and this replica may send it.
    fn is_due_here(&self, now: SystemTime) -> bool {
        self.machine.is_due(now) && self.may_refresh()
    }

    /// The writes a stopping credential owes: a rotated refresh token that is not on
    /// disk dies with this task, so a failed save is retried for a while (a full disk
    /// may clear).
    async fn finish_writes(&mut self) {
        self.catch_up_writes().await;
        for _ in 0..STOP_SAVE_TRIES {
            if !self.machine.needs_save() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            self.save().await;
        }
    }

    /// Loads the state and decides which refresh token the chain continues from. With
    /// coordination the decision waits for the stored record (see [`shared`]); the
    /// state file only serves the outputs until then.
    async fn start(&mut self) {
        if let Some(state) = self.carried.take() {
            // Newer than anything on disk: going on from the file would replay a token
            // the server has already rotated away.
            info!(target: LOG, generation = state.generation, "going on from the rotated refresh token that the task before this reload could not save; saving it");
            self.machine.adopt(*state, SystemTime::now());
            if self.replica.is_none() {
                self.save().await;
            }
            return;
        }
        // A login that was handed over but not yet adopted (say, tokend was stopped
        // first) starts the new chain now.
        if self.adopt_handover().await {
            return;
        }
        let stored = match self.on_state_file(|file| file.load()).await {
            Ok(stored) => stored,
            // With coordination the chain lives in the store; this file is a copy.
            Err(e) if let Some(r) = &mut self.replica => {
                warn!(target: LOG, error = %e, "cannot read the local state file; going on from the shared record, which replaces it");
                r.local_unreadable = true;
                None
            }
            Err(e) => {
                error!(target: LOG, error = %e, "cannot read the state file; not refreshing, so that the chain it holds is not revoked by replaying an old token. Repair the file, or run `tokend login`, or write a new refresh token to the bootstrap file. Removing the file starts over from the bootstrap token, which has usually been rotated away: the server then refuses it, and a strict one revokes the chain");
                return self.block(Block::UnreadableState);
            }
        };
        if self.replica.is_some() {
            if stored.is_some() {
                self.machine.start(SystemTime::now(), stored, None);
            }
            return;
        }
        self.begin(stored);
    }

    /// Decides where the chain continues from, given the newest state known.
    fn begin(&mut self, stored: Option<State>) {
        let bootstrap = self.cfg.read_bootstrap();
        let bootstrap_error = bootstrap.as_ref().err().map(ToString::to_string);
        let now = SystemTime::now();
        match self
            .machine
            .start(now, stored, bootstrap.ok().map(digested))
        {
            Start::BootstrapChanged => {
                info!(
                    target: LOG,
                    "the bootstrap refresh token changed since the state was made; adopting it"
                );
                self.log_resuming();
            }
            Start::Resumed => self.log_resuming(),
            Start::FromBootstrap | Start::ClientCredentials => {}
            Start::NoBootstrap => {
                error!(target: LOG, error = %bootstrap_error.unwrap_or_default(), "no state yet and no bootstrap refresh token to start from");
                self.block(Block::NoBootstrap);
            }
        }
    }

    fn log_resuming(&self) {
        let expires_at = self.machine.state().and_then(|s| s.expires_at);
        debug!(target: LOG, expires_at = ?expires_at.map(rfc3339::format), "resuming from the state file");
    }
}

/// Waits for a change in the store, or forever without coordination. Boxed, so that
/// the task of a credential that does not coordinate stays its size (a boxed `pending`
/// allocates nothing).
fn member_changed(
    replica: &mut Option<Box<Replica>>,
) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
    match replica {
        Some(r) => Box::pin(r.member_mut().changed()),
        None => Box::pin(std::future::pending()),
    }
}

#[cfg(test)]
mod footprint {
    use crate::store::StateFile;

    /// A parked credential's future is its standing cost: a refresh in it
    /// must stay boxed, `run` must not keep two copies of the credential, and the
    /// credential reads its configuration rather than copying it.
    #[test]
    fn a_parked_credential_is_small() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = crate::credential::machine::tests_config();
        cfg.state_file = dir.path().join("c.json");
        let store = StateFile::open(&cfg.state_file).unwrap();
        let cfg = std::sync::Arc::new(cfg);
        let endpoint =
            crate::oauth::Endpoint::new(&cfg, &crate::oauth::Clients::default()).unwrap();
        let (cred, _report) = super::Credential::new(cfg, store, endpoint, Default::default());
        let credential = std::mem::size_of_val(&cred);
        let (_mailbox, inbox) = crate::credential::mailbox();
        let future = std::mem::size_of_val(&cred.run(inbox));
        assert!(
            future <= credential + 512,
            "the run future is {future} bytes for a {credential}-byte credential"
        );
        // The configuration is shared through an Arc, not copied into the future.
        assert!(future <= 1024, "the run future is {future} bytes");
        // The configuration lives in an Arc for the process's life. Above 556 bytes (572
        // with the Arc's counts) musl's allocator gives it the next size class, a
        // 672-byte slot, and every credential pays the difference.
        let config = std::mem::size_of::<crate::config::CredentialConfig>();
        assert!(
            config <= 556,
            "a credential's configuration is {config} bytes"
        );
    }
}
