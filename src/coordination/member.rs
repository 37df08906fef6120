//! A credential's handle on its membership, whichever the store: the view, the lease
//! this replica holds, and the conditional writes of design.md §11.

use tokio::sync::watch;

use crate::coordination::clock::Boot;
use crate::coordination::error::{Op, StoreFailure};
use crate::coordination::record::Record;
use crate::coordination::view::View;
use crate::coordination::{etcd, kubernetes};

pub enum Member {
    Etcd(etcd::member::Member),
    Kubernetes(kubernetes::member::Member),
}

impl Member {
    fn views(&self) -> &watch::Receiver<View> {
        match self {
            Member::Etcd(m) => m.views(),
            Member::Kubernetes(m) => m.views(),
        }
    }

    pub fn identity(&self) -> &str {
        match self {
            Member::Etcd(m) => m.identity(),
            Member::Kubernetes(m) => m.identity(),
        }
    }

    /// The view as it stands (a copy: the record in it holds the chain).
    pub fn view(&self) -> View {
        self.views().borrow().clone()
    }

    /// A look at the view without copying the record.
    pub fn peek<T>(&self, look: impl FnOnce(&View) -> T) -> T {
        look(&self.views().borrow())
    }

    /// Waits until the view changes.
    pub async fn changed(&mut self) {
        let views = match self {
            Member::Etcd(m) => m.views_mut(),
            Member::Kubernetes(m) => m.views_mut(),
        };
        if views.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// When this replica's lease ends (on the boot clock), while it holds one.
    pub fn lease(&self) -> Option<Boot> {
        match self {
            Member::Etcd(m) => m.lease().map(|l| l.deadline),
            Member::Kubernetes(m) => m.lease(),
        }
    }

    /// Renews the lease now (before an intent), returning its fresh deadline.
    pub async fn renew(&self) -> Result<Boot, StoreFailure> {
        match self {
            Member::Etcd(m) => m.renew().await.map(|l| l.deadline),
            Member::Kubernetes(m) => m.renew().await,
        }
    }

    /// Writes `record` if this replica leads and the stored record is still the one at
    /// `expected`, the revision the caller last reconciled with or wrote (not whatever
    /// the view holds by now: a record that arrived meanwhile, a login's, say, must be
    /// adopted, not overwritten). Returns the new revision; otherwise reads what is
    /// there into the view and fails with `ConditionFailed`.
    pub async fn write(&self, record: &Record, op: Op, expected: i64) -> Result<i64, StoreFailure> {
        match self {
            Member::Etcd(m) => m.write(record, op, expected).await,
            Member::Kubernetes(m) => m.write(record, op, expected).await,
        }
    }

    /// Stores `record` if the stored record is still at `expected`, the revision of this
    /// replica's own intent, whether it still leads or not: the end of its own refresh.
    pub async fn finish(&self, record: &Record, expected: i64) -> Result<i64, StoreFailure> {
        match self {
            Member::Etcd(m) => m.finish(record, expected).await,
            Member::Kubernetes(m) => m.finish(record, expected).await,
        }
    }

    /// Stops following the credential. With `resign`, leadership is given up now even
    /// where the process's lease would otherwise carry it (etcd); a Kubernetes Lease,
    /// one per credential, is always released.
    pub async fn stop(self, resign: bool) {
        match self {
            Member::Etcd(m) => m.stop(resign).await,
            Member::Kubernetes(m) => m.stop().await,
        }
    }
}
