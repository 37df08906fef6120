//! Where a credential's state lives on this host (design.md §4): the record, and the
//! state file with its lock. (The store replicas share is [`crate::coordination`]'s.)
//!
//! - [`state`]: the record ([`State`])
//! - [`file`]: the local state file and `tokend login`'s handover; [`read`]: reading one
//! - [`dir`]: the state directory, checked and shared; [`lock`]: one process per file
//! - [`names`]: the files beside a state file; [`error`]: what goes wrong with them
//! - [`slots`]: the file's layout: two checksummed slots written in turn

pub mod dir;
pub mod error;
pub mod file;
pub mod lock;
pub mod names;
pub mod read;
pub mod slots;
pub mod state;

pub use error::{Holder, StoreError};
pub use file::StateFile;
pub use state::{LastError, State, VERSION, bootstrap_digest, sha256_hex};
