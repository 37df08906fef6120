//! Where a credential's state lives (SPEC §4): the record, the store interface, and the
//! local file with its lock.
//!
//! - [`state`]: the record ([`State`]) and the [`StateStore`] interface
//! - [`file`]: the local state file and `tokend login`'s handover
//! - [`dir`]: the state directory, checked and shared; [`lock`]: one process per file
//! - [`slots`]: the file's layout: two checksummed slots written in turn

pub mod dir;
pub mod file;
pub mod lock;
pub mod slots;
pub mod state;

pub use file::FileStore;
pub use state::{LastError, State, StateStore, StoreError, VERSION, bootstrap_digest, sha256_hex};
