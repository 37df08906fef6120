//! The daemon: the set of running credentials, what steers it, and what systemd hears.
//!
//! - [`supervisor`]: starts, reloads and stops the credential tasks ([`Daemon`])
//! - [`control`]: the [`Control`] stream, and signals mapped onto it
//! - [`notify`]: systemd notifications and the watchdog
//! - [`error`]: why the daemon could not start

pub mod control;
pub mod error;
pub mod notify;
pub mod supervisor;

pub use control::{Control, signals};
pub use error::StartError;
pub use supervisor::{ConfigSource, Daemon, prepare};
