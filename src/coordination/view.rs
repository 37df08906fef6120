//! What a credential sees of the store: who leads it, and the record as last read,
//! applied in the store's revision order.

use crate::coordination::record::Stored;

/// Who refreshes a credential, as this replica knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// The store cannot be read: nobody is known to lead, and this replica does not.
    #[default]
    Unknown,
    Follower,
    /// This replica leads. `fence` names its term: with etcd the leader key's
    /// create_revision, which every write is conditional on; with Kubernetes the Lease's
    /// `leaseTransitions` (writes there are conditional on the Secret's version alone).
    Leader {
        fence: i64,
    },
}

impl Role {
    pub fn is_leader(self) -> bool {
        matches!(self, Role::Leader { .. })
    }

    pub fn label(self) -> &'static str {
        match self {
            Role::Unknown => "unknown",
            Role::Follower => "follower",
            Role::Leader { .. } => "leader",
        }
    }
}

/// A credential's condition in the store, as last read.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub role: Role,
    /// The leader's identity, when there is one.
    pub leader: Option<String>,
    /// The record; `None` until the store has been read once.
    pub stored: Option<Stored>,
    /// The store revision the record is known as of: older news is ignored.
    pub(super) observed: i64,
}

impl View {
    /// Takes `stored` as the record as of revision `at`; true when it changed.
    pub(super) fn apply_state(&mut self, stored: Stored, at: i64) -> bool {
        if at < self.observed {
            return false;
        }
        self.observed = at;
        let before = self
            .stored
            .as_ref()
            .map(|s| (s.revision, s.corrupt.is_some()));
        let after = (stored.revision, stored.corrupt.is_some());
        self.stored = Some(stored);
        before != Some(after)
    }

    pub(super) fn set_leader(&mut self, leader: Option<String>, role: Role) -> bool {
        let changed = self.leader != leader || self.role != role;
        self.leader = leader;
        self.role = role;
        changed
    }
}
