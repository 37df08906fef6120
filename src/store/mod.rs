//! Where a credential's state lives (design.md §4): the record, the store interface, and the
//! local file with its lock.
//!
//! - [`state`]: the record ([`State`]) and the [`StateStore`] interface
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
pub use file::FileStore;
pub use state::{LastError, State, StateStore, VERSION, bootstrap_digest, sha256_hex};
