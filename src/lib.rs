//! tokend keeps OAuth 2.0 access tokens fresh for the applications beside it.
//!
//! The tree, top-down, follows the data: the command line starts the daemon, which runs
//! one task per credential; each task asks the OAuth endpoint, keeps what it learns in
//! the store, publishes the access token, and reports to telemetry.
//!
//! - [`cli`]: the command line, one file per command, exit codes in one place
//! - [`config`]: the configuration file and environment, typed and validated
//! - [`daemon`]: the set of running credentials, steered by [`daemon::Control`]s
//! - [`credential`]: one credential: schedule, state machine, task
//! - [`oauth`]: the token endpoint, its answers, discovery, `tokend login`
//! - [`store`]: the state record and the state file
//! - [`coordination`]: several replicas on one chain: leadership and the shared record
//! - [`publish`]: output files, `publish_dir`, rotation hooks
//! - [`telemetry`]: health, metrics, the health endpoints, logs
//! - [`emulator`]: the built-in token server for `demo`, `emulator` and tests
//!
//! Leaves that several layers share: [`atomic`] (durable atomic file replacement),
//! [`rfc3339`] (timestamps), [`http_server`] (a small HTTP/1 server), [`tls`] (the
//! crypto provider), [`out`] (printing that a closed pipe cannot crash), [`hardening`]
//! (no core dumps, no reading of the process's memory), [`redact`] (text that may hold
//! a token by mistake), [`host`] (its name).

pub mod atomic;
pub mod cli;
pub mod config;
pub mod coordination;
pub mod credential;
pub mod daemon;
pub mod emulator;
pub mod hardening;
pub mod host;
pub mod http_server;
pub mod oauth;
pub mod out;
pub mod publish;
pub mod redact;
pub mod rfc3339;
pub mod store;
pub mod telemetry;
pub mod tls;
