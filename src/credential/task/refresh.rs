//! One refresh: the token sent (once the store allows it, with coordination), and what
//! the answer leads to: saved first, then shared, published and logged (design.md §4, §6).

use std::time::{Duration, Instant, SystemTime};

use secrecy::SecretString;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, error, info, warn};

use crate::credential::machine::{Block, Reaction, RetryKind};
use crate::credential::task::{Credential, LOG};
use crate::oauth::{Failure, FailureKind, Grant, TokenAnswer};
use crate::rfc3339;
use crate::telemetry::tally::AttemptResult;

impl Credential {
    /// Sends one refresh and acts on the answer.
    pub(super) async fn attempt(&mut self, slot: Option<OwnedSemaphorePermit>) {
        let Some((token, from_bootstrap)) = self.machine.token_to_send() else {
            return self.block(Block::NoBootstrap);
        };
        // Every network step before the request itself comes before the store's
        // permission, which holds only for the request's own time: the token URL of an
        // issuer-only configuration is discovered here, not after the lease was judged.
        if let Err(failure) = self.endpoint.token_url().await {
            self.health
                .attempt(attempt_result(failure.kind), Duration::ZERO);
            return self
                .on_failure(failure, SystemTime::now(), from_bootstrap)
                .await;
        }
        if !self.allowed_to_send().await {
            return;
        }
        let sent_at = SystemTime::now();
        let started = Instant::now();
        debug!(target: LOG, from_bootstrap, "refreshing");
        let grant = match &token {
            Some(token) => Grant::Refresh(token),
            None => Grant::ClientCredentials,
        };
        let outcome = self.endpoint.refresh_in(grant, &slot).await;
        let took = started.elapsed();
        let result = match &outcome {
            Ok(_) => AttemptResult::Success,
            Err(f) => attempt_result(f.kind),
        };
        self.health.attempt(result, took);
        match outcome {
            Ok(answer) => {
                self.on_success(answer, token, sent_at, from_bootstrap, took, slot)
                    .await
            }
            Err(failure) => {
                self.on_failure(failure, sent_at, from_bootstrap).await;
                drop(slot);
            }
        }
    }

    async fn on_success(
        &mut self,
        answer: TokenAnswer,
        sent: Option<SecretString>,
        sent_at: SystemTime,
        from_bootstrap: bool,
        took: Duration,
        slot: Option<OwnedSemaphorePermit>,
    ) {
        let answered = Instant::now();
        let rotated = self
            .machine
            .succeeded(answer, sent, sent_at, from_bootstrap);
        // Durable first (here, then in the shared store); outputs and the success log
        // line only after. The request slot is given back once the state is on disk.
        self.save().await;
        drop(slot);
        let durable = Instant::now();
        self.share().await;
        self.publish().await;
        info!(
            target: LOG,
            expires_at = %rfc3339::format(rotated.expires_at),
            lifetime = %humantime::format_duration(Duration::from_secs(rotated.lifetime.as_secs())),
            duration_ms = took.as_millis() as u64,
            // The crash window: from the answer in hand to the state durable.
            state_us = durable.duration_since(answered).as_micros() as u64,
            // Then to the outputs visible (and, coordinated, the record stored).
            publish_us = durable.elapsed().as_micros() as u64,
            saved = !self.machine.needs_save(),
            generation = self.machine.generation(),
            "rotated"
        );
    }

    async fn on_failure(
        &mut self,
        mut failure: Failure,
        sent_at: SystemTime,
        from_bootstrap: bool,
    ) {
        let now = SystemTime::now();
        let generation = self.machine.generation();
        let reaction = self.machine.failed(
            &mut failure,
            sent_at,
            from_bootstrap,
            now,
            rand::random::<f64>(),
        );
        // A rotated refresh token kept from an unusable answer, and the error: on disk
        // before anything else, then (coordinated) stored for the other replicas.
        self.save_if_needed().await;
        if self.machine.generation() != generation {
            self.share().await;
        } else if failure.kind != FailureKind::Ambiguous {
            // Nothing rotated: no replica need wait on this one's intent.
            self.withdraw_intent().await;
        }
        let detail = &failure.detail;
        match reaction {
            Reaction::Block(why) => {
                match why {
                    Block::Server(p) => {
                        error!(target: LOG, error = %detail, "refreshing stopped: {}", p.remedy())
                    }
                    // `once` says why, once, with its exit code.
                    _ if self.one_pass => {}
                    _ => error!(
                        target: LOG,
                        error = %detail,
                        "cannot refresh: nothing was sent; refreshing resumes when the file can be read"
                    ),
                }
                self.block(why);
            }
            Reaction::FellBack => warn!(
                target: LOG,
                error = %detail,
                "the new bootstrap refresh token was refused; going on with the chain in the state file, which was live before it. The refused token is not sent again until the bootstrap file changes"
            ),
            Reaction::Retry {
                delay,
                kind,
                token_expired,
            } => {
                let retry_in = fmt_delay(delay);
                match kind {
                    // `once` gives up here; its caller says why, once, with the exit code.
                    RetryKind::Transient | RetryKind::Ambiguous | RetryKind::Unexpected
                        if self.one_pass =>
                    {
                        return;
                    }
                    RetryKind::Transient => {
                        warn!(target: LOG, error = %detail, retry_in = %retry_in, "refresh failed; will retry")
                    }
                    RetryKind::Quick if !self.cfg.has_chain() => {
                        warn!(target: LOG, error = %detail, retry_in = %retry_in, "the token request may have reached the server; retrying at once")
                    }
                    RetryKind::Quick => {
                        warn!(target: LOG, error = %detail, retry_in = %retry_in, "refresh may have reached the server; retrying at once with the same refresh token")
                    }
                    RetryKind::Ambiguous => {
                        warn!(target: LOG, error = %detail, retry_in = %retry_in, "refresh failed after sending; will retry")
                    }
                    RetryKind::Unexpected => {
                        error!(target: LOG, error = %detail, retry_in = %retry_in, "unexpected answer from the token endpoint; retrying at the maximum backoff")
                    }
                }
                if token_expired {
                    warn!(
                        target: LOG,
                        "no unexpired access token is published until a refresh succeeds"
                    );
                }
            }
        }
    }
}

/// How an attempt ended, as the metrics' `result` label says it.
fn attempt_result(kind: FailureKind) -> AttemptResult {
    match kind {
        FailureKind::Transient => AttemptResult::Transient,
        FailureKind::Ambiguous => AttemptResult::Ambiguous,
        FailureKind::Permanent(_) => AttemptResult::Permanent,
        FailureKind::Local | FailureKind::Untrusted => AttemptResult::Local,
        FailureKind::Unexpected => AttemptResult::Unexpected,
    }
}

fn fmt_delay(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
}
