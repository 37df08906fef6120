//! The Kubernetes backend (design.md §11): a `coordination.k8s.io/v1` Lease per credential for
//! leadership, a Secret per credential for the record, through the API server.
//!
//! - [`api`]: the calls (get, list, watch, create, conditional replace), the token
//! - [`objects`]: the Lease and the Secret as the API carries them
//! - [`election`]: who may take or must renew a Lease, when (client-go's rules)
//! - [`member`]: one credential's handle: the view, the Secret's conditional writes
//! - [`keeper`]: the task behind it: the Lease held or followed, both objects watched
//! - this file: the reads and writes outside a running daemon (`status`, `login`)

pub mod api;
pub mod election;
pub mod keeper;
pub mod member;
pub mod objects;

use std::time::Duration;

use crate::config::coordination::KubernetesConfig;
use crate::coordination::error::{Kind, Op, StoreFailure};
use crate::coordination::record::{Record, Stored};
use crate::store::State;
use api::{Api, Resource, Written};
use objects::{Lease, Secret};

/// A connection to the API server and the names of each credential's objects.
pub struct Kubernetes {
    pub api: std::sync::Arc<Api>,
    cfg: KubernetesConfig,
}

impl Kubernetes {
    /// Fills in the pod's defaults; fails when they cannot be found (not in a pod, no
    /// namespace) or the CA cannot be read.
    pub fn new(cfg: &KubernetesConfig, lease: Duration) -> Result<Kubernetes, StoreFailure> {
        let target = cfg
            .in_this_pod()
            .map_err(|why| StoreFailure::new(Op::Read, Kind::Unreachable, why))?;
        let api = Api::new(target, cfg.timeout, lease)?;
        Ok(Kubernetes {
            api: std::sync::Arc::new(api),
            cfg: cfg.clone(),
        })
    }

    /// The name of `credential`'s Lease and Secret.
    pub fn object_name(&self, credential: &str) -> String {
        self.cfg.object_name(credential)
    }

    /// The credential's leader (the Lease's holder) and record, read once (`status`).
    pub async fn describe(
        &self,
        credential: &str,
    ) -> Result<(Option<String>, Stored), StoreFailure> {
        let name = self.object_name(credential);
        let lease: Option<Lease> = self.api.get(Op::Read, Resource::Lease, &name).await?;
        let leader = lease.and_then(|l| l.spec.holder().map(str::to_owned));
        let (_, stored) = self.read_secret(&name).await?;
        Ok((leader, stored))
    }

    /// The Secret named `name`, if any, and the record it holds.
    async fn read_secret(&self, name: &str) -> Result<(Option<Secret>, Stored), StoreFailure> {
        let secret: Option<Secret> = self.api.get(Op::Read, Resource::Secret, name).await?;
        let stored = match &secret {
            Some(s) => s.stored(s.metadata.revision(Op::Read)?),
            None => Stored::default(),
        };
        Ok((secret, stored))
    }

    /// `tokend login`: makes `state` the credential's record, as the newest generation,
    /// whoever leads. Conditional like every write: a Secret that moved meanwhile is
    /// read again and the write retried. Returns the generation written.
    pub async fn seed(&self, credential: &str, state: &State) -> Result<u64, StoreFailure> {
        let name = self.object_name(credential);
        for _ in 0..5 {
            let (current, stored) = self.read_secret(&name).await?;
            // Stored already (the daemon that adopted this login pushed it): done.
            if let Some(there) = stored.state()
                && crate::coordination::reconcile::same_token(there, state)
            {
                return Ok(there.generation);
            }
            let mut state = state.clone();
            state.generation = stored.generation() + 1;
            let record = Record {
                state: Some(state),
                intent: None,
            };
            let written = match current {
                None => {
                    let secret = Secret::new(&name, &record);
                    self.api
                        .create(Op::Write, Resource::Secret, &secret)
                        .await?
                }
                Some(mut secret) => {
                    secret.set_record(&record);
                    self.api
                        .replace(Op::Write, Resource::Secret, &name, &secret)
                        .await?
                }
            };
            if let Written::Done(_) = written {
                return Ok(record.generation());
            }
        }
        Err(StoreFailure::condition(Op::Write))
    }
}
