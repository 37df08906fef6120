//! Several replicas on one chain (design.md §11): several `tokend run`
//! processes, the strict emulator, which revokes a token family on any reuse, and a
//! shared store: real etcd members, or the Kubernetes API stand-in over a real etcd.
//! `cluster.rs` holds the harness, `stores.rs` the two stores; each other module one
//! concern.

#[path = "../common/mod.rs"]
mod common;

/// Runs `async fn $test(Backend)` as two tests, `$test::etcd` and `$test::kubernetes`:
/// the same protocol, each store.
macro_rules! with_each_store {
    ($test:ident) => {
        mod $test {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn etcd() {
                super::$test(crate::stores::Backend::Etcd).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn kubernetes() {
                super::$test(crate::stores::Backend::Kubernetes).await
            }
        }
    };
}

mod cluster;
mod failover;
mod in_flight;
mod kubernetes;
mod outages;
mod security;
mod sharing;
mod soak;
mod stores;
