//! One credential's life: when to refresh, what each answer means for it, and the task
//! that carries it out.
//!
//! - [`schedule`]: when to refresh and how long to back off (pure functions of time)
//! - [`machine`]: the state machine: phases, flags, backoff, blocking (pure)
//! - [`task`]: the task that sleeps, refreshes, saves, publishes and reports
//! - [`mailbox`]: what the daemon asks of a running task

pub mod machine;
pub mod mailbox;
pub mod schedule;
pub mod task;

pub use mailbox::{Command, Mailbox, mailbox};
pub use task::{Credential, DISK_THREADS, Ended, OnceResult, Stopped};
