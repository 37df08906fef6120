//! The task behind a credential's [`super::member::Member`], and what the two share.
//! It lists the Lease and the Secret, takes or renews the Lease when [`election`] says
//! so, watches both by name, and lists again after a broken watch, a 410 Gone and every
//! [`RE_READ`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};

use crate::coordination::clock::Boot;
use crate::coordination::error::{Kind, Op, StoreFailure};
use crate::coordination::failure_log::FailureLog;
use crate::coordination::kubernetes::api::{Api, Event, Resource, Watch, Written};
use crate::coordination::kubernetes::election::{self, Observed, Step};
use crate::coordination::kubernetes::objects::{Lease, Secret};
use crate::coordination::record::Stored;
use crate::coordination::view::{Role, View};
use crate::coordination::{LOG, Next, RE_READ, RETRY};

pub(super) type Reply = oneshot::Sender<Result<Boot, StoreFailure>>;

/// What the handle and the task share: the view, and the Secret it was read from.
pub(super) struct Shared {
    pub(super) api: Arc<Api>,
    pub(super) name: String,
    pub(super) view: watch::Sender<View>,
    /// The Secret as last read (`None`: there is none): a replace keeps what tokend
    /// does not write, and carries its resourceVersion.
    pub(super) secret: Mutex<Option<Secret>>,
    pub(super) failures: FailureLog,
}

impl Shared {
    /// Takes `secret` (or its absence) as of `at`, unless something newer was seen.
    pub(super) fn apply_secret(&self, secret: Option<Secret>, at: i64) {
        self.view.send_if_modified(|v| {
            if at < v.observed {
                return false;
            }
            let stored = secret
                .as_ref()
                .map_or_else(Stored::default, |s| s.stored(at));
            *self.secret.lock().unwrap_or_else(|e| e.into_inner()) = secret;
            v.apply_state(stored, at)
        });
    }

    /// Takes a listed Secret: as of its own version, or (none listed) as of the list's.
    fn apply_listed(
        &self,
        secret: Option<Secret>,
        version: &str,
        op: Op,
    ) -> Result<(), StoreFailure> {
        let at = match &secret {
            Some(s) => s.metadata.revision(op)?,
            None => version.parse().unwrap_or(0),
        };
        self.apply_secret(secret, at);
        Ok(())
    }

    /// Reads the Secret again (after a conflict).
    pub(super) async fn reread_secret(&self, op: Op) -> Result<(), StoreFailure> {
        let (secret, version) = self
            .api
            .list::<Secret>(op, Resource::Secret, &self.name)
            .await?;
        self.apply_listed(secret, &version, op)
    }
}

/// The task that keeps the view and holds or follows the Lease.
pub(super) struct Keeper {
    shared: Arc<Shared>,
    identity: String,
    lease: Duration,
    seen: Option<Observed>,
    /// When the last successful take or renewal of the Lease was sent.
    renewed: Option<Instant>,
    /// When this replica's hold ends, on the boot clock (which a suspend does not stop).
    deadline: watch::Sender<Option<Boot>>,
    /// When to look at the Lease again.
    wake: Instant,
}

impl Keeper {
    pub(super) fn new(
        shared: Arc<Shared>,
        identity: &str,
        lease: Duration,
        deadline: watch::Sender<Option<Boot>>,
    ) -> Keeper {
        Keeper {
            shared,
            identity: identity.to_owned(),
            lease,
            seen: None,
            renewed: None,
            deadline,
            wake: Instant::now(),
        }
    }

    pub(super) async fn run(
        mut self,
        mut renew: mpsc::Receiver<Reply>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            match self.round(&mut renew, &mut stop).await {
                Next::Stop => break,
                Next::Relist => {}
                Next::Retry => {
                    // Not knowing who leads is not leading.
                    self.set_role(Role::Unknown);
                    let until = tokio::time::sleep(RETRY);
                    tokio::pin!(until);
                    loop {
                        tokio::select! {
                            _ = stop.changed() => return self.release().await,
                            _ = &mut until => break,
                            Some(reply) = renew.recv() => {
                                let _ = reply.send(self.renew_now().await);
                            }
                        }
                    }
                }
            }
        }
        self.release().await;
    }

    /// Lists the Lease and the Secret, acts on the Lease, then follows both.
    async fn round(
        &mut self,
        renew: &mut mpsc::Receiver<Reply>,
        stop: &mut watch::Receiver<bool>,
    ) -> Next {
        let s = self.shared.clone();
        let listed = async {
            let leases = s
                .api
                .list::<Lease>(Op::Read, Resource::Lease, &s.name)
                .await?;
            let secrets = s
                .api
                .list::<Secret>(Op::Read, Resource::Secret, &s.name)
                .await?;
            Ok::<_, StoreFailure>((leases, secrets))
        };
        let ((lease, lease_version), (secret, secret_version)) = match listed.await {
            Ok(l) => l,
            Err(f) => {
                s.failures.failed(&f);
                return Next::Retry;
            }
        };
        s.failures.ok(Op::Read);
        if let Err(f) = self.observe(lease) {
            s.failures.failed(&f);
            return Next::Retry;
        }
        if let Err(f) = s.apply_listed(secret, &secret_version, Op::Read) {
            s.failures.failed(&f);
            return Next::Retry;
        }
        self.act().await;
        let watches = async {
            let l = s
                .api
                .watch::<Lease>(Resource::Lease, &s.name, &lease_version)
                .await?;
            let x = s
                .api
                .watch::<Secret>(Resource::Secret, &s.name, &secret_version)
                .await?;
            Ok::<_, StoreFailure>((l, x))
        };
        match watches.await {
            Ok((leases, secrets)) => self.follow(leases, secrets, renew, stop).await,
            Err(f) => {
                s.failures.failed(&f);
                Next::Retry
            }
        }
    }

    /// Follows both watches, renewing or taking the Lease when it is time, until a
    /// watch breaks or it is time for the safety-net re-read.
    async fn follow(
        &mut self,
        mut leases: Watch<Lease>,
        mut secrets: Watch<Secret>,
        renew: &mut mpsc::Receiver<Reply>,
        stop: &mut watch::Receiver<bool>,
    ) -> Next {
        let s = self.shared.clone();
        let re_read = tokio::time::sleep(RE_READ);
        tokio::pin!(re_read);
        loop {
            tokio::select! {
                _ = stop.changed() => return Next::Stop,
                _ = &mut re_read => return Next::Relist,
                Some(reply) = renew.recv() => {
                    let _ = reply.send(self.renew_now().await);
                }
                _ = tokio::time::sleep_until(self.wake.into()) => self.act().await,
                event = leases.next() => match event {
                    Ok(Some(Event::Put(lease))) => {
                        match self.observe(Some(lease)) {
                            Ok(true) => self.act().await,
                            Ok(false) => {}
                            Err(f) => {
                                s.failures.failed(&f);
                                return Next::Retry;
                            }
                        }
                    }
                    Ok(Some(Event::Deleted(_))) => {
                        let _ = self.observe(None);
                        self.act().await;
                    }
                    Ok(Some(Event::Gone)) | Ok(None) => return Next::Relist,
                    Err(f) => {
                        s.failures.failed(&f);
                        return Next::Retry;
                    }
                },
                event = secrets.next() => match event {
                    Ok(Some(Event::Put(secret))) => match secret.metadata.revision(Op::Read) {
                        Ok(at) => s.apply_secret(Some(secret), at),
                        Err(f) => {
                            s.failures.failed(&f);
                            return Next::Retry;
                        }
                    },
                    Ok(Some(Event::Deleted(secret))) => {
                        let at = secret.metadata.revision(Op::Read).unwrap_or(0);
                        s.apply_secret(None, at);
                    }
                    Ok(Some(Event::Gone)) | Ok(None) => return Next::Relist,
                    Err(f) => {
                        s.failures.failed(&f);
                        return Next::Retry;
                    }
                },
            }
        }
    }

    /// Takes what was read of the Lease (`None`: there is none); true when it changed.
    fn observe(&mut self, lease: Option<Lease>) -> Result<bool, StoreFailure> {
        let changed = match lease {
            None => self.seen.take().is_some(),
            Some(lease) => {
                let revision = lease.metadata.revision(Op::Read)?;
                Observed::update(&mut self.seen, lease, revision, Instant::now())
            }
        };
        let mine =
            self.seen.as_ref().and_then(|o| o.lease.spec.holder()) == Some(self.identity.as_str());
        if changed && !mine && self.deadline.borrow().is_some() {
            // Taken over, or deleted: whatever time was left is not ours any more.
            self.deadline.send_replace(None);
            self.renewed = None;
        }
        Ok(changed)
    }

    fn holding(&self) -> bool {
        self.deadline.borrow().is_some_and(|d| d > Boot::now())
    }

    /// Decides about the Lease now: renew it while leading, wait while another replica
    /// holds it, take it when it is free.
    async fn act(&mut self) {
        let now = Instant::now();
        if !self.holding() && self.deadline.borrow().is_some() {
            // The deadline passed unrenewed: no longer leading.
            self.deadline.send_replace(None);
            self.set_role(Role::Unknown);
        }
        let due = self.renewed.map(|r| r + self.lease / 3);
        if self.holding() && due.is_some_and(|d| now < d) {
            self.wake = due.unwrap_or(now);
        } else {
            match self.step().await {
                Ok(_) => {}
                Err(f) if f.kind == Kind::ConditionFailed => self.wake = Instant::now(),
                Err(_) => self.wake = Instant::now() + RETRY,
            }
        }
        if let Some(d) = *self.deadline.borrow() {
            self.wake = self.wake.min(d.as_instant());
        }
    }

    /// Renews now, for the credential task's intent: the fresh deadline, or why not.
    async fn renew_now(&mut self) -> Result<Boot, StoreFailure> {
        if !self.holding() {
            return Err(StoreFailure::new(
                Op::Lease,
                Kind::ConditionFailed,
                "this replica does not hold the Lease",
            ));
        }
        let result = self.step().await;
        if let Some(d) = *self.deadline.borrow() {
            self.wake = self.wake.min(d.as_instant());
        }
        result?.ok_or_else(|| StoreFailure::condition(Op::Lease))
    }

    /// Takes one step of [`election::next_step`]: `Some(deadline)` when this replica
    /// holds the Lease afresh, `None` when it waits for another's to run out.
    async fn step(&mut self) -> Result<Option<Boot>, StoreFailure> {
        let step = election::next_step(
            self.seen.as_ref(),
            &self.identity,
            self.lease,
            Instant::now(),
            SystemTime::now(),
        );
        let op = if self.holding() {
            Op::Lease
        } else {
            Op::Campaign
        };
        let s = self.shared.clone();
        let sent = Instant::now();
        let sent_boot = Boot::now();
        let written = match step {
            Step::Wait { until } => {
                self.set_role(Role::Follower);
                self.wake = until;
                return Ok(None);
            }
            Step::Create(spec) => {
                let lease = Lease::new(&s.name, spec);
                s.api.create(op, Resource::Lease, &lease).await
            }
            Step::Update(spec) => {
                let Some(seen) = &self.seen else {
                    return Ok(None);
                };
                let mut lease = seen.lease.clone();
                lease.spec = spec;
                s.api.replace(op, Resource::Lease, &s.name, &lease).await
            }
        };
        let failure = match written {
            Ok(Written::Done(lease)) => match lease.metadata.revision(op) {
                Ok(revision) => {
                    s.failures.ok(op);
                    self.seen = Some(Observed {
                        lease,
                        revision,
                        since: sent,
                    });
                    self.renewed = Some(sent);
                    let deadline = sent_boot + self.lease;
                    self.deadline.send_replace(Some(deadline));
                    self.set_role(self.role_from_lease());
                    self.wake = sent + self.lease / 3;
                    return Ok(Some(deadline));
                }
                Err(f) => f,
            },
            Ok(Written::Conflict) => {
                // Someone else changed it first: read who, and decide again.
                match s.api.get::<Lease>(Op::Read, Resource::Lease, &s.name).await {
                    Ok(lease) => {
                        self.seen = None;
                        self.observe(lease)?;
                        self.set_role(self.role_from_lease());
                    }
                    Err(f) => s.failures.failed(&f),
                }
                StoreFailure::condition(op)
            }
            Err(f) => f,
        };
        s.failures.failed(&failure);
        Err(failure)
    }

    /// The role the Lease gives this replica.
    fn role_from_lease(&self) -> Role {
        let spec = self.seen.as_ref().map(|o| &o.lease.spec);
        match spec.and_then(|s| s.holder()) {
            Some(h) if h == self.identity && self.holding() => Role::Leader {
                fence: i64::from(spec.and_then(|s| s.lease_transitions).unwrap_or(0)),
            },
            _ => Role::Follower,
        }
    }

    fn set_role(&self, role: Role) {
        let holder = self
            .seen
            .as_ref()
            .and_then(|o| o.lease.spec.holder())
            .map(str::to_owned);
        self.shared
            .view
            .send_if_modified(|v| v.set_leader(holder, role));
    }

    /// Stop: a Lease held is given up at once, so that another replica leads now.
    async fn release(&mut self) {
        let held = self.holding();
        self.deadline.send_replace(None);
        let Some(seen) = self.seen.as_ref().filter(|_| held) else {
            return;
        };
        let mut lease = seen.lease.clone();
        lease.spec = election::released(&seen.lease.spec, SystemTime::now());
        let s = &self.shared;
        match s
            .api
            .replace(Op::Release, Resource::Lease, &s.name, &lease)
            .await
        {
            Ok(Written::Done(_)) => {
                tracing::info!(target: LOG, "released the lease: another replica can lead at once")
            }
            Ok(Written::Conflict) => s.failures.failed(&StoreFailure::condition(Op::Release)),
            Err(f) => s.failures.failed(&f),
        }
    }
}
