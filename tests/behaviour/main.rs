//! What tokend does, end to end: the real binary against the emulator on 127.0.0.1,
//! real signals, real files. One test binary, one module per area.

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod concurrency;
mod daemon;
mod disk;
mod docs;
mod durability;
mod endpoint;
mod faults;
mod grants;
mod health;
mod login;
mod mistakes;
mod outputs;
mod packaging;
mod readers;
mod security;
mod systemd;
