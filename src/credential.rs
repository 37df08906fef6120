//! One credential's life: load its state, publish, sleep until the deadline, refresh,
//! persist, publish, repeat; back off on failure; stop and wait for a person on a
//! permanent one.
//!
//! The order after a successful refresh is the point of the whole daemon: the new state
//! is saved before anything else happens, so a crash can lose at most the answer that was
//! being written, never a refresh token that was already acknowledged.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use secrecy::SecretString;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use crate::config::{CredentialConfig, SecretReadError};
use crate::endpoint::{Endpoint, Failure, FailureKind, Permanent, TokenAnswer};
use crate::health::Board;
use crate::metrics::AttemptResult;
use crate::outputs::{self, Published};
use crate::schedule;
use crate::state::{self, LastError, State, StateStore, bootstrap_digest, rfc3339};

/// How often the files that can unblock a credential are checked while it is blocked.
pub const BLOCKED_POLL: Duration = Duration::from_secs(5);
/// How soon a failed state save or output write is tried again.
const WRITE_RETRY: Duration = Duration::from_secs(5);
/// How many times (a second apart) a stopping credential retries saving its state.
const STOP_SAVE_TRIES: u32 = 10;
/// The longest single sleep, so that wall-clock jumps and suspends are noticed.
const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// What the daemon can ask of a running credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Refresh now (SIGUSR1).
    RefreshNow,
    /// Re-check the bootstrap token and retry a blocked credential (SIGHUP).
    Resume,
    /// Finish the work in hand and return.
    Stop,
}

/// A credential's condition, as health checks and `status` see it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Health {
    /// An unexpired access token is saved and written to every output.
    pub ready: bool,
    pub expires_at: Option<SystemTime>,
    pub last_refresh: Option<SystemTime>,
    pub last_error: Option<String>,
    /// Refreshing has stopped until a person acts.
    pub blocked: bool,
    pub chain_started_at: Option<SystemTime>,
    /// When the refresh-token chain reaches `refresh_token_max_age`, if one is set.
    pub chain_ends_at: Option<SystemTime>,
    /// Past the `warn_before` point: a person should run `tokend login` soon.
    pub chain_warning: bool,
    /// Why it is not ready, when it is not.
    pub reason: Option<String>,
}

/// Why refreshing stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Server(Permanent),
    /// The state file cannot be read; using the bootstrap token instead could replay a
    /// token rotated away long ago and revoke the chain the file still holds.
    UnreadableState,
    NoBootstrap,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Waiting for the scheduled refresh of the current token.
    Scheduled,
    /// Waiting to try again after a failure (or to refresh at once).
    RetryAt(SystemTime),
    /// Waiting for a person: a new bootstrap token, a new client secret, or SIGHUP.
    Blocked {
        why: Block,
        bootstrap_mark: Option<String>,
        secret_mark: Option<String>,
    },
}

/// How a single pass of `once` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnceResult {
    Fresh,
    Temporary(String),
    Permanent(String),
    Other(String),
}

/// One credential and everything it needs to keep its token fresh.
pub struct Credential<S: StateStore> {
    cfg: CredentialConfig,
    store: S,
    endpoint: Endpoint,
    state: Option<State>,
    /// A bootstrap token (and its digest) to use instead of the state's chain.
    bootstrap: Option<(SecretString, String)>,
    /// The state in memory is newer than the stored one.
    unsaved: bool,
    /// Every output holds the state's current access token.
    published: bool,
    phase: Phase,
    /// Consecutive failures, for backoff.
    failures: u32,
    /// The quick retry after an ambiguous failure has been used.
    quick_retry_used: bool,
    last_failure: Option<FailureKind>,
    /// The last refresh failure, for `once`, health and `status`.
    last_error: Option<String>,
    write_error: Option<String>,
    /// A rotation whose hooks run once its outputs are written.
    hooks_due: bool,
    hooks: JoinSet<()>,
    /// When the chain-age warning was last logged.
    chain_warned_at: Option<SystemTime>,
    health: watch::Sender<Health>,
    board: Arc<Board>,
}

impl<S: StateStore> Credential<S> {
    pub fn new(
        cfg: CredentialConfig,
        store: S,
        endpoint: Endpoint,
        board: Arc<Board>,
    ) -> (Self, watch::Receiver<Health>) {
        let (health, rx) = watch::channel(Health::default());
        let cred = Credential {
            cfg,
            store,
            endpoint,
            state: None,
            bootstrap: None,
            unsaved: false,
            published: false,
            phase: Phase::Scheduled,
            failures: 0,
            quick_retry_used: false,
            last_failure: None,
            last_error: None,
            write_error: None,
            hooks_due: false,
            hooks: JoinSet::new(),
            chain_warned_at: None,
            health,
            board,
        };
        (cred, rx)
    }

    /// Runs until told to stop (or the daemon goes away).
    pub async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        self.start();
        loop {
            self.catch_up_writes();
            self.report();
            let now = SystemTime::now();
            let sleep = self
                .next_wake(now)
                .duration_since(now)
                .unwrap_or(Duration::ZERO)
                .min(MAX_SLEEP);
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Stop) | None => break,
                    Some(Command::RefreshNow) => self.refresh_now(),
                    Some(Command::Resume) => self.resume(),
                },
                _ = tokio::time::sleep(sleep) => {}
            }
            let now = SystemTime::now();
            if self.is_due(now) {
                self.attempt().await;
            } else if matches!(self.phase, Phase::Blocked { .. }) {
                self.check_unblock_files();
            }
            self.warn_chain_age(SystemTime::now());
        }
        self.catch_up_writes();
        // A rotated refresh token that is not on disk dies with this task: keep trying
        // for a while (a full disk may clear), then say so plainly.
        for _ in 0..STOP_SAVE_TRIES {
            if !self.unsaved {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            self.save();
        }
        if self.unsaved {
            error!(
                "stopping without having saved the rotated refresh token: it is lost, and a person will have to authorize again"
            );
        }
        // Hooks still running are killed: stopping is bounded by the request timeout.
        self.hooks.shutdown().await;
        self.report();
    }

    /// One pass for `tokend once`: refresh only if due, make sure the outputs are written.
    pub async fn once(mut self) -> OnceResult {
        self.start();
        let mut tries = 0;
        loop {
            if let Phase::Blocked { why, .. } = &self.phase {
                return OnceResult::Permanent(self.block_message(*why));
            }
            if !self.is_due(SystemTime::now()) {
                break;
            }
            tries += 1;
            self.attempt().await;
            match self.last_failure {
                None => break,
                // The one quick retry after an ambiguous answer; then leave the rest to the caller.
                Some(FailureKind::Ambiguous) if tries == 1 => {
                    tokio::time::sleep(schedule::AMBIGUOUS_RETRY).await
                }
                Some(FailureKind::Permanent(p)) => {
                    return OnceResult::Permanent(p.remedy().to_owned());
                }
                Some(FailureKind::Unexpected) => return OnceResult::Other(self.last_error_text()),
                Some(_) => return OnceResult::Temporary(self.last_error_text()),
            }
        }
        self.catch_up_writes();
        // The process exits next: let this run's hooks finish (each within its timeout).
        while self.hooks.join_next().await.is_some() {}
        if self.unsaved || !self.published {
            return OnceResult::Temporary(
                self.write_error
                    .clone()
                    .unwrap_or_else(|| "outputs not written".into()),
            );
        }
        OnceResult::Fresh
    }

    /// Loads the state and decides which refresh token the chain continues from.
    fn start(&mut self) {
        // A login that was handed over but not yet adopted (say, tokend was stopped
        // first) starts the new chain now.
        if self.adopt_handover() {
            return;
        }
        let bootstrap = self.cfg.read_bootstrap();
        match self.store.load() {
            Err(e) => {
                error!(error = %e, "cannot read the state file; not refreshing, so that the chain it holds is not revoked by replaying an old token. Repair or remove the file, or write a new refresh token to the bootstrap file");
                self.block(Block::UnreadableState);
            }
            Ok(Some(state)) => {
                if let Ok(token) = bootstrap {
                    let digest = bootstrap_digest(&token);
                    if digest != state.bootstrap_sha256 {
                        info!(
                            "the bootstrap refresh token changed since the state was made; adopting it"
                        );
                        self.bootstrap = Some((token, digest));
                        self.phase = Phase::RetryAt(SystemTime::now());
                    }
                }
                debug!(expires_at = ?state.expires_at.map(rfc3339::format), "resuming from the state file");
                self.state = Some(state);
            }
            Ok(None) => match bootstrap {
                Ok(token) => {
                    let digest = bootstrap_digest(&token);
                    self.bootstrap = Some((token, digest));
                    self.phase = Phase::RetryAt(SystemTime::now());
                }
                Err(e) => {
                    error!(error = %e, "no state yet and no bootstrap refresh token to start from");
                    self.block(Block::NoBootstrap);
                }
            },
        }
    }

    /// When the loop must next wake up.
    fn next_wake(&self, now: SystemTime) -> SystemTime {
        let mut wake = match &self.phase {
            Phase::Scheduled => self.deadline().unwrap_or(now),
            Phase::RetryAt(at) => *at,
            Phase::Blocked { .. } => now + BLOCKED_POLL,
        };
        if self.unsaved || (!self.published && self.current_token(now).is_some()) {
            wake = wake.min(now + WRITE_RETRY);
        }
        if let Some(age) = self.chain_age() {
            wake = wake.min(age.next_warning(self.chain_warned_at).max(now));
        }
        // Wake at expiry too, so readiness drops when it should.
        if let Some(exp) = self
            .state
            .as_ref()
            .and_then(|s| s.expires_at)
            .filter(|e| *e > now)
        {
            wake = wake.min(exp);
        }
        wake
    }

    /// The scheduled refresh time of the current access token, if there is one.
    fn deadline(&self) -> Option<SystemTime> {
        let s = self.state.as_ref()?;
        s.access_token.as_ref()?;
        let (obtained, expires) = (s.obtained_at?, s.expires_at?);
        let jitter = schedule::jitter_unit(&self.cfg.name, obtained);
        Some(schedule::refresh_deadline(
            &self.cfg.refresh,
            obtained,
            expires,
            jitter,
        ))
    }

    fn is_due(&self, now: SystemTime) -> bool {
        match &self.phase {
            Phase::Scheduled => self.deadline().is_none_or(|d| d <= now),
            Phase::RetryAt(at) => *at <= now,
            Phase::Blocked { .. } => false,
        }
    }

    fn current_token(&self, now: SystemTime) -> Option<&SecretString> {
        self.state.as_ref().and_then(|s| s.valid_access_token(now))
    }

    /// How long the current access token stays valid, if it still is.
    fn time_left(&self, now: SystemTime) -> Option<Duration> {
        self.current_token(now)?;
        self.state.as_ref()?.expires_at?.duration_since(now).ok()
    }

    /// Sends one refresh and acts on the answer.
    async fn attempt(&mut self) {
        let (token, from_bootstrap) = match (&self.bootstrap, &self.state) {
            (Some((t, _)), _) => (t.clone(), true),
            (None, Some(s)) => (s.refresh_token.clone(), false),
            (None, None) => return self.block(Block::NoBootstrap),
        };
        let sent_at = SystemTime::now();
        let started = Instant::now();
        debug!(from_bootstrap, "refreshing");
        let outcome = self.endpoint.refresh(&token).await;
        let took = started.elapsed();
        let result = match &outcome {
            Ok(_) => AttemptResult::Success,
            Err(f) => match f.kind {
                FailureKind::Transient => AttemptResult::Transient,
                FailureKind::Ambiguous => AttemptResult::Ambiguous,
                FailureKind::Permanent(_) => AttemptResult::Permanent,
                FailureKind::Unexpected => AttemptResult::Unexpected,
            },
        };
        self.board.metrics.attempt(&self.cfg.name, result, took);
        match outcome {
            Ok(answer) => self.on_success(answer, token, sent_at, from_bootstrap, took),
            Err(failure) => self.on_failure(failure, sent_at, from_bootstrap),
        }
    }

    fn chain_origin(&self, sent_at: SystemTime, from_bootstrap: bool) -> (SystemTime, String) {
        match (&self.bootstrap, &self.state) {
            (Some((_, digest)), _) if from_bootstrap => (sent_at, digest.clone()),
            (_, Some(s)) => (s.chain_started_at, s.bootstrap_sha256.clone()),
            (_, None) => (sent_at, String::new()),
        }
    }

    fn on_success(
        &mut self,
        answer: TokenAnswer,
        sent: SecretString,
        sent_at: SystemTime,
        from_bootstrap: bool,
        took: Duration,
    ) {
        let lifetime = answer
            .expires_in
            .unwrap_or(self.cfg.refresh.default_lifetime);
        let (chain_started_at, bootstrap_sha256) = self.chain_origin(sent_at, from_bootstrap);
        let previous_scope = self.state.as_ref().and_then(|s| s.scope.clone());
        let expires_at = sent_at + lifetime;
        self.state = Some(State {
            version: state::VERSION,
            // Absent means the server kept the old one (RFC 6749 §6).
            refresh_token: answer.refresh_token.unwrap_or(sent),
            access_token: Some(answer.access_token),
            token_type: answer.token_type,
            scope: answer
                .scope
                .or_else(|| self.cfg.scope.clone())
                .or(previous_scope),
            obtained_at: Some(sent_at),
            expires_at: Some(expires_at),
            chain_started_at,
            bootstrap_sha256,
            last_error: None,
        });
        self.bootstrap = None;
        self.unsaved = true;
        self.published = false;
        self.hooks_due = true;
        self.phase = Phase::Scheduled;
        self.failures = 0;
        self.quick_retry_used = false;
        self.last_failure = None;
        self.last_error = None;
        // Durable first; outputs and the success log line only after.
        let writing = Instant::now();
        self.save();
        self.publish();
        info!(
            expires_at = %rfc3339::format(expires_at),
            lifetime = %humantime::format_duration(Duration::from_secs(lifetime.as_secs())),
            duration_ms = took.as_millis() as u64,
            // From the answer in hand to the state durable and the outputs visible.
            write_us = writing.elapsed().as_micros() as u64,
            saved = !self.unsaved,
            "rotated"
        );
    }

    fn on_failure(&mut self, failure: Failure, sent_at: SystemTime, from_bootstrap: bool) {
        if let Some(rotated) = failure.rotated {
            // The server rotated in an answer we cannot use: keep the new token, the old
            // one is probably dead.
            let (chain_started_at, bootstrap_sha256) = self.chain_origin(sent_at, from_bootstrap);
            let state = match self.state.take() {
                Some(mut s) => {
                    s.refresh_token = rotated;
                    s.chain_started_at = chain_started_at;
                    s.bootstrap_sha256 = bootstrap_sha256;
                    s
                }
                None => State {
                    version: state::VERSION,
                    refresh_token: rotated,
                    access_token: None,
                    token_type: String::new(),
                    scope: None,
                    obtained_at: None,
                    expires_at: None,
                    chain_started_at,
                    bootstrap_sha256,
                    last_error: None,
                },
            };
            self.state = Some(state);
            self.bootstrap = None;
            self.unsaved = true;
            self.save();
        }
        self.failures = self.failures.saturating_add(1);
        self.last_failure = Some(failure.kind);
        let now = SystemTime::now();
        // A backoff never sleeps past the expiry of a token still in use (SPEC §5); a
        // server's own Retry-After is still honoured.
        let left = self.time_left(now).map(|l| l.max(self.cfg.retry.initial));
        let cap = |d: Duration| left.map_or(d, |l| d.min(l));
        let backoff = cap(schedule::backoff(
            &self.cfg.retry,
            self.failures - 1,
            rand::random::<f64>(),
        ));
        let retry_after = failure.retry_after.unwrap_or(Duration::ZERO);
        let detail = failure.detail;
        let delay = match failure.kind {
            FailureKind::Transient => {
                let delay = backoff.max(retry_after);
                warn!(error = %detail, retry_in = %fmt_delay(delay), "refresh failed; will retry");
                delay
            }
            FailureKind::Ambiguous if !self.quick_retry_used => {
                self.quick_retry_used = true;
                warn!(error = %detail, retry_in = %fmt_delay(schedule::AMBIGUOUS_RETRY), "refresh may have reached the server; retrying at once with the same refresh token");
                schedule::AMBIGUOUS_RETRY
            }
            FailureKind::Ambiguous => {
                warn!(error = %detail, retry_in = %fmt_delay(backoff), "refresh failed after sending; will retry");
                backoff
            }
            FailureKind::Unexpected => {
                let delay = cap(self.cfg.retry.max).max(retry_after);
                error!(error = %detail, retry_in = %fmt_delay(delay), "unexpected answer from the token endpoint; retrying at the maximum backoff");
                delay
            }
            FailureKind::Permanent(p) => {
                error!(error = %detail, "refreshing stopped: {}", p.remedy());
                self.record_error(now, &detail, true);
                return self.block(Block::Server(p));
            }
        };
        if self.current_token(now).is_none() {
            warn!("no unexpired access token is published until a refresh succeeds");
        }
        self.record_error(now, &detail, false);
        self.phase = Phase::RetryAt(now + delay);
    }

    fn record_error(&mut self, at: SystemTime, message: &str, blocked: bool) {
        self.last_error = Some(message.to_owned());
        if let Some(s) = &mut self.state {
            s.last_error = Some(LastError {
                at,
                message: message.to_owned(),
                blocked,
            });
            self.unsaved = true;
            self.save();
        }
    }

    fn block(&mut self, why: Block) {
        let bootstrap_mark = mark(self.cfg.read_bootstrap());
        let secret_mark = mark(self.cfg.client_secret.read());
        if self.last_failure.is_none() {
            self.last_failure = Some(FailureKind::Permanent(match why {
                Block::Server(p) => p,
                Block::UnreadableState | Block::NoBootstrap => Permanent::Configuration,
            }));
        }
        self.phase = Phase::Blocked {
            why,
            bootstrap_mark,
            secret_mark,
        };
        self.report();
    }

    fn block_message(&self, why: Block) -> String {
        match why {
            Block::Server(p) => p.remedy().to_owned(),
            Block::UnreadableState => {
                format!("the state file {} cannot be read", self.store.describe())
            }
            Block::NoBootstrap => format!(
                "no state and no readable bootstrap refresh token: run `tokend login {}`, or write a refresh token to the bootstrap file",
                self.cfg.name
            ),
        }
    }

    fn chain_age(&self) -> Option<schedule::ChainAge> {
        schedule::ChainAge::of(&self.cfg.chain, self.state.as_ref()?.chain_started_at)
    }

    /// Logs the chain-age warning when it is due (at the warning point, then daily).
    fn warn_chain_age(&mut self, now: SystemTime) {
        let (Some(age), Some(state)) = (self.chain_age(), &self.state) else {
            return;
        };
        if now < age.next_warning(self.chain_warned_at) {
            return;
        }
        let started = state.chain_started_at;
        self.chain_warned_at = Some(now);
        let left = age.ends_at.duration_since(now).unwrap_or(Duration::ZERO);
        warn!(
            chain_started_at = %rfc3339::format(started),
            chain_ends_at = %rfc3339::format(age.ends_at),
            "the refresh-token chain reaches its maximum age in {}: run `tokend login {}` before then",
            humantime::format_duration(Duration::from_secs(left.as_secs() / 3600 * 3600)),
            self.cfg.name
        );
    }

    /// Adopts a state that `tokend login` handed over; true if there was one.
    fn adopt_handover(&mut self) -> bool {
        let state = match self.store.load_handover() {
            Ok(Some(state)) => state,
            Ok(None) => return false,
            Err(e) => {
                error!(error = %e, "cannot read the state handed over by tokend login");
                return false;
            }
        };
        // A handover from a chain already adopted (its removal failed) must never be
        // adopted again: its refresh token has probably rotated away since.
        let current = match &self.state {
            Some(s) => Some(s.chain_started_at),
            None => self.store.load().ok().flatten().map(|s| s.chain_started_at),
        };
        if current.is_some_and(|c| state.chain_started_at <= c) {
            let _ = self.store.clear_handover();
            return false;
        }
        info!("adopting the refresh-token chain that `tokend login` started");
        self.state = Some(state);
        self.bootstrap = None;
        self.unsaved = true;
        self.published = false;
        self.hooks_due = true;
        self.chain_warned_at = None;
        self.last_error = None;
        self.unblock();
        self.phase = Phase::Scheduled;
        self.save();
        if !self.unsaved
            && let Err(e) = self.store.clear_handover()
        {
            // Not adopted twice (see above), but litter holding a token.
            warn!(error = %e, "cannot remove the handed-over state file; remove it by hand");
        }
        true
    }

    /// While blocked: a new bootstrap token or client secret on disk resumes refreshing.
    fn check_unblock_files(&mut self) {
        if self.adopt_handover() {
            return;
        }
        let Phase::Blocked {
            bootstrap_mark,
            secret_mark,
            ..
        } = &self.phase
        else {
            return;
        };
        if let Ok(token) = self.cfg.read_bootstrap() {
            let digest = bootstrap_digest(&token);
            if Some(&digest) != bootstrap_mark.as_ref() {
                info!("a new bootstrap refresh token appeared; resuming");
                return self.adopt_bootstrap(token, digest);
            }
        }
        let secret_now = mark(self.cfg.client_secret.read());
        if self.cfg.client_secret.path().is_some()
            && secret_now.is_some()
            && &secret_now != secret_mark
        {
            info!("the client secret changed; resuming");
            self.unblock();
        }
    }

    fn adopt_bootstrap(&mut self, token: SecretString, digest: String) {
        self.bootstrap = Some((token, digest));
        self.unblock();
    }

    fn unblock(&mut self) {
        self.failures = 0;
        self.quick_retry_used = false;
        self.last_failure = None;
        self.phase = Phase::RetryAt(SystemTime::now());
    }

    /// SIGHUP: adopt a new login or a changed bootstrap token; give a blocked credential
    /// another try.
    fn resume(&mut self) {
        if self.adopt_handover() {
            return;
        }
        if matches!(
            self.phase,
            Phase::Blocked {
                why: Block::UnreadableState | Block::NoBootstrap,
                ..
            }
        ) {
            self.state = None;
            self.bootstrap = None;
            self.phase = Phase::Scheduled;
            return self.start();
        }
        if let Ok(token) = self.cfg.read_bootstrap() {
            let digest = bootstrap_digest(&token);
            let chain = self
                .bootstrap
                .as_ref()
                .map(|(_, d)| d)
                .or(self.state.as_ref().map(|s| &s.bootstrap_sha256));
            if chain != Some(&digest) {
                info!("the bootstrap refresh token changed; adopting it");
                return self.adopt_bootstrap(token, digest);
            }
        }
        if matches!(self.phase, Phase::Blocked { .. }) {
            info!("retrying after reload");
            self.unblock();
        }
    }

    /// SIGUSR1.
    fn refresh_now(&mut self) {
        match self.phase {
            Phase::Blocked { why, .. } => warn!("not refreshing: {}", self.block_message(why)),
            _ => self.phase = Phase::RetryAt(SystemTime::now()),
        }
    }

    fn save(&mut self) {
        let Some(state) = &self.state else { return };
        match self.store.save(state) {
            Ok(()) => {
                self.unsaved = false;
                self.write_error = None;
            }
            Err(e) => {
                error!(error = %e, "cannot save the state; the refresh token is kept in memory and the write is retried");
                self.write_error = Some(e.to_string());
            }
        }
    }

    fn publish(&mut self) {
        let Some(state) = &self.state else { return };
        let Some(token) = state.valid_access_token(SystemTime::now()) else {
            return;
        };
        let (Some(expires_at), token_type) = (state.expires_at, &state.token_type) else {
            return;
        };
        let published = Published {
            access_token: token,
            token_type,
            expires_at,
            scope: state.scope.as_deref(),
        };
        match outputs::publish(&self.cfg, &published) {
            Ok(()) => {
                self.published = true;
                if !self.unsaved {
                    self.write_error = None;
                }
                if std::mem::take(&mut self.hooks_due)
                    && let Some(hook) = &self.cfg.on_rotate
                {
                    self.hooks.spawn(crate::hooks::run(
                        hook.clone(),
                        self.cfg.name.clone(),
                        expires_at,
                        self.board.clone(),
                    ));
                }
            }
            Err(e) => {
                error!(error = %e, "cannot write an output; retrying");
                self.write_error = Some(e.to_string());
            }
        }
    }

    /// Retries a state save or output write that failed earlier.
    fn catch_up_writes(&mut self) {
        // Reap finished hooks (their outcome is already logged and counted).
        while self.hooks.try_join_next().is_some() {}
        if self.unsaved {
            self.save();
        }
        if !self.published {
            self.publish();
        }
    }

    fn last_error_text(&self) -> String {
        self.last_error
            .clone()
            .or_else(|| self.write_error.clone())
            .unwrap_or_else(|| "refresh failed".into())
    }

    fn report(&self) {
        let now = SystemTime::now();
        let blocked = matches!(self.phase, Phase::Blocked { .. });
        let state = self.state.as_ref();
        let ready =
            !blocked && !self.unsaved && self.published && self.current_token(now).is_some();
        let chain_age = self.chain_age();
        let health = Health {
            ready,
            chain_started_at: state.map(|s| s.chain_started_at),
            chain_ends_at: chain_age.map(|a| a.ends_at),
            chain_warning: chain_age.is_some_and(|a| a.warning(now)),
            reason: (!ready).then(|| self.unready_reason(now)),
            expires_at: state.and_then(|s| s.expires_at),
            last_refresh: state.and_then(|s| s.obtained_at),
            last_error: self.write_error.clone().or_else(|| self.last_error.clone()),
            blocked,
        };
        let changed = self.health.send_if_modified(|h| {
            match (h.ready, health.ready) {
                (false, true) => info!("ready"),
                (true, false) => warn!(reason = %self.unready_reason(now), "not ready"),
                _ => {}
            }
            let changed = *h != health;
            *h = health;
            changed
        });
        if changed {
            self.board.changed.notify_one();
        }
    }

    /// Why the credential is not ready, in a few words (logs, `/readyz`).
    pub fn unready_reason(&self, now: SystemTime) -> String {
        if let Phase::Blocked { why, .. } = self.phase {
            format!("blocked: {}", self.block_message(why))
        } else if self.current_token(now).is_none() {
            "no unexpired access token".into()
        } else if self.unsaved {
            "the state is not saved".into()
        } else {
            "outputs not written".into()
        }
    }
}

/// A digest of a secret's current value, if it can be read: what a blocked credential
/// compares to notice a new bootstrap token or client secret.
fn mark(read: Result<SecretString, SecretReadError>) -> Option<String> {
    read.ok().map(|t| bootstrap_digest(&t))
}

fn fmt_delay(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
}
