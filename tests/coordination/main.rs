//! Several replicas on one chain (SPEC §11, issue 13): real etcd members, several
//! `tokend run` processes, and the strict emulator, which revokes a token family on any
//! reuse. `cluster.rs` holds the harness; each other module one concern.

#[path = "../common/mod.rs"]
mod common;

mod cluster;
mod failover;
mod outages;
mod security;
mod sharing;
mod soak;
