//! What the daemon asks of a running credential, delivered as a few bits and a
//! wake-up. Requests of one kind coalesce (two SIGUSR1s before the task looks are one
//! refresh), and a stop outranks the rest. A channel would do, but allocates a block of
//! 32 slots, 512 bytes, for every credential.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::sync::Notify;

/// What the daemon can ask of a running credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Refresh now (SIGUSR1).
    RefreshNow,
    /// Re-check the bootstrap token and retry a blocked credential (SIGHUP).
    Resume,
    /// Finish the work in hand and return.
    Stop,
    /// Stop, and give up a leadership this replica holds (design.md §11): the process goes
    /// on without this credential (SIGHUP removed it).
    Leave,
    /// Leave, for a task that replaces this one (SIGHUP changed the credential): a
    /// rotated refresh token not saved yet is handed to it rather than waited for.
    Restart,
}

impl Command {
    /// Highest rank first: what [`Inbox::recv`] hands out when several are pending.
    const BY_RANK: [Command; 5] = [
        Command::Restart,
        Command::Leave,
        Command::Stop,
        Command::Resume,
        Command::RefreshNow,
    ];

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// The bits of the commands that end the task.
const STOPS: u8 =
    1 << Command::Stop as u8 | 1 << Command::Leave as u8 | 1 << Command::Restart as u8;

#[derive(Default)]
struct Shared {
    pending: AtomicU8,
    wake: Notify,
}

/// The daemon's end. Dropping it stops the credential, as a closed channel would.
pub struct Mailbox(Arc<Shared>);

/// The credential's end.
pub struct Inbox(Arc<Shared>);

/// A connected pair.
pub fn mailbox() -> (Mailbox, Inbox) {
    let shared = Arc::new(Shared::default());
    (Mailbox(shared.clone()), Inbox(shared))
}

impl Mailbox {
    pub fn send(&self, command: Command) {
        self.0.pending.fetch_or(command.bit(), Ordering::AcqRel);
        // notify_one keeps a permit when the task is not waiting yet: nothing is missed.
        self.0.wake.notify_one();
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        self.send(Command::Stop);
    }
}

impl Inbox {
    /// The highest-ranked pending command, waiting for one if none is.
    pub async fn recv(&mut self) -> Command {
        loop {
            if let Some(command) = self.take() {
                return command;
            }
            self.0.wake.notified().await;
        }
    }

    /// Waits for a stop (or a leave) only, and takes it; other requests stay pending
    /// for [`Self::recv`]. What a credential queued for a request slot listens for.
    pub async fn until_stop(&mut self) -> Command {
        loop {
            if let Some(command) = self.take_stop() {
                return command;
            }
            self.0.wake.notified().await;
        }
    }

    /// Whether a stop (or a leave) is pending, without taking it.
    pub fn stop_pending(&self) -> bool {
        self.0.pending.load(Ordering::Acquire) & STOPS != 0
    }

    fn take_stop(&self) -> Option<Command> {
        if !self.stop_pending() {
            return None;
        }
        self.take()
    }

    fn take(&self) -> Option<Command> {
        let pending = self.0.pending.load(Ordering::Acquire);
        let command = Command::BY_RANK
            .into_iter()
            .find(|c| pending & c.bit() != 0)?;
        self.0.pending.fetch_and(!command.bit(), Ordering::AcqRel);
        Some(command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commands_coalesce_and_stop_outranks_the_rest() {
        let (tx, mut rx) = mailbox();
        tx.send(Command::RefreshNow);
        tx.send(Command::RefreshNow);
        tx.send(Command::Resume);
        assert_eq!(rx.recv().await, Command::Resume);
        assert_eq!(rx.recv().await, Command::RefreshNow);
        assert!(rx.take().is_none(), "two refresh requests are one");
        tx.send(Command::RefreshNow);
        tx.send(Command::Stop);
        assert_eq!(rx.recv().await, Command::Stop);
        tx.send(Command::Leave);
        assert_eq!(rx.recv().await, Command::Leave);
        tx.send(Command::Stop);
        tx.send(Command::Restart);
        assert_eq!(rx.recv().await, Command::Restart);
    }

    #[tokio::test]
    async fn waiting_for_a_stop_leaves_the_other_requests_pending() {
        let (tx, mut rx) = mailbox();
        let waiter = tokio::spawn(async move {
            let stop = rx.until_stop().await;
            (stop, rx.recv().await)
        });
        tokio::task::yield_now().await;
        tx.send(Command::RefreshNow);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "a refresh request is not a stop");
        tx.send(Command::Stop);
        assert_eq!(waiter.await.unwrap(), (Command::Stop, Command::RefreshNow));
        let (tx, rx) = mailbox();
        assert!(!rx.stop_pending());
        tx.send(Command::Leave);
        assert!(rx.stop_pending());
    }

    #[tokio::test]
    async fn a_waiting_task_wakes_and_a_dropped_mailbox_stops_it() {
        let (tx, mut rx) = mailbox();
        let waiter = tokio::spawn(async move {
            let first = rx.recv().await;
            (first, rx.recv().await)
        });
        tokio::task::yield_now().await;
        tx.send(Command::RefreshNow);
        tokio::task::yield_now().await;
        drop(tx);
        assert_eq!(waiter.await.unwrap(), (Command::RefreshNow, Command::Stop));
    }
}
