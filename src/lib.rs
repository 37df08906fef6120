//! tokend keeps OAuth 2.0 access tokens fresh for the applications beside it.
//!
//! The data flow, top-down: [`config`] → [`daemon`] (one task per credential) →
//! [`credential`] (the loop: [`schedule`] decides when, [`endpoint`] asks the server,
//! [`state`] remembers, [`outputs`] and [`publish_dir`] publish, [`hooks`] tell
//! others). [`emulator`] is the built-in server for
//! `demo` and tests; [`cli`] is the command line.

pub mod atomic;
pub mod cli;
pub mod config;
pub mod credential;
pub mod daemon;
pub mod demo;
pub mod discovery;
pub mod emulator;
pub mod endpoint;
pub mod health;
pub mod hooks;
pub mod http_server;
pub mod logging;
pub mod login;
pub mod metrics;
pub mod notify;
pub mod outputs;
pub mod publish_dir;
pub mod schedule;
pub mod state;
pub mod status;
pub mod tls;
