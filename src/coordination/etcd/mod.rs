//! The etcd backend (design.md §11), through etcd's JSON gateway.
//!
//! - [`gateway`]: the calls, bounded by `coordination.etcd.timeout`, classified
//! - [`wire`]: the gateway's JSON
//! - [`session`]: this replica's lease, kept alive
//! - [`member`]: one credential's leadership and its watch on the record
//! - this file: the reads and writes outside a running daemon (`status`, `login`)

pub mod gateway;
pub mod member;
pub mod session;
pub mod wire;

pub use gateway::Gateway as Etcd;

use crate::coordination::error::{Op, StoreFailure};
use crate::coordination::record::{Record, Stored};
use crate::store::State;

impl Etcd {
    /// The credential's leader identity and record, read once (for `status`).
    pub async fn describe(
        &self,
        credential: &str,
    ) -> Result<(Option<String>, Stored), StoreFailure> {
        let cfg = self.config();
        let listing = self.list(Op::Read, &cfg.key(credential, "")).await?;
        let (leader_key, state_key) = (cfg.key(credential, "leader"), cfg.key(credential, "state"));
        let mut leader = None;
        let mut stored = Stored::default();
        for kv in &listing.kvs {
            if kv.key == leader_key.as_bytes() {
                leader = Some(String::from_utf8_lossy(&kv.value).into_owned());
            } else if kv.key == state_key.as_bytes() {
                stored = Stored::read(Some(&kv.value), kv.mod_revision);
            }
        }
        Ok((leader, stored))
    }

    /// `tokend login`: makes `state` the credential's record, as the newest generation,
    /// whoever leads. Conditional like every write: a record that moved meanwhile is
    /// read again and the write retried. Returns the generation written.
    pub async fn seed(&self, credential: &str, state: &State) -> Result<u64, StoreFailure> {
        let key = self.config().key(credential, "state");
        for _ in 0..5 {
            let (_, stored) = self.describe(credential).await?;
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
            let txn = wire::Txn::default().when("MOD", &key, stored.revision).put(
                &key,
                &record.to_bytes(),
                None,
            );
            if self.txn(Op::Write, txn).await?.succeeded {
                return Ok(record.generation());
            }
        }
        Err(StoreFailure::condition(Op::Write))
    }
}
