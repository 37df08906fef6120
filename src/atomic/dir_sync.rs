//! Group commit of directory syncs. A rename (or any change to a directory's entries) is
//! durable once the directory has been fsync'd after it; one fsync that starts after
//! several renames into a directory makes all of them durable. So a writer that has
//! renamed takes a ticket and waits for a sync that started after its ticket was
//! issued: the first writer to find no sync running runs one for every ticket issued so
//! far, and the others that arrived meanwhile wait for it or the next. A writer alone in
//! its directory syncs at once, as before.
//!
//! A sync that fails fails every writer it was to cover, even when a later sync
//! succeeds: after a failed fsync the kernel may have dropped the changes and cleared
//! the error, so a second fsync proves nothing about them (the "fsyncgate" lesson).

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

/// The directories being synced or waited on now; an entry lives while it has writers.
static DIRS: Mutex<BTreeMap<PathBuf, Arc<Group>>> = Mutex::new(BTreeMap::new());

#[derive(Default)]
struct Group {
    tickets: Mutex<Tickets>,
    synced: Condvar,
}

#[derive(Default)]
struct Tickets {
    /// The last ticket issued.
    issued: u64,
    /// Every ticket up to this one is covered by a successful sync.
    synced: u64,
    /// A sync is running.
    running: bool,
    /// The tickets of failed syncs, as ranges (after, up to]: their writers fail.
    failed: Vec<(u64, u64)>,
}

/// Returns once `dir` has been fsync'd after the caller's change to its entries (a
/// rename, a new file or directory).
pub fn sync_dir(dir: &super::Dir) -> io::Result<()> {
    let group = {
        let mut dirs = lock(&DIRS);
        Arc::clone(dirs.entry(dir.path().to_owned()).or_default())
    };
    let result = group.wait(&|| nix::unistd::fsync(dir.fd()).map_err(io::Error::from));
    let mut dirs = lock(&DIRS);
    // Two holders, the map and this writer: nobody else is syncing or waiting.
    if Arc::strong_count(&group) == 2 {
        dirs.remove(dir.path());
    }
    result
}

impl Group {
    /// Waits for a run of `sync` that starts after this call, running it when none is.
    fn wait(&self, sync: &dyn Fn() -> io::Result<()>) -> io::Result<()> {
        let mut tickets = lock(&self.tickets);
        tickets.issued += 1;
        let mine = tickets.issued;
        loop {
            if tickets
                .failed
                .iter()
                .any(|(after, to)| (*after + 1..=*to).contains(&mine))
            {
                return Err(io::Error::other(
                    "a sync of the directory after this change failed: the change may be lost",
                ));
            }
            if tickets.synced >= mine {
                return Ok(());
            }
            if !tickets.running {
                tickets.running = true;
                let covers = tickets.issued;
                let after = tickets.synced;
                drop(tickets);
                let result = sync();
                let mut tickets = lock(&self.tickets);
                tickets.running = false;
                match &result {
                    Ok(()) => tickets.synced = covers,
                    // Every writer it was to cover fails with it.
                    Err(_) => tickets.failed.push((after, covers)),
                }
                self.synced.notify_all();
                return result;
            }
            tickets = self
                .synced
                .wait(tickets)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::*;

    #[test]
    fn every_writer_returns_after_a_sync_that_started_after_its_rename_and_syncs_are_shared() {
        let group = Group::default();
        // Renames are numbered; a sync covers those numbered up to `renamed` at its start.
        let renamed = AtomicU64::new(0);
        let durable = AtomicU64::new(0);
        let syncs = AtomicU64::new(0);
        let sync = || {
            let covers = renamed.load(Ordering::SeqCst);
            syncs.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(1));
            durable.fetch_max(covers, Ordering::SeqCst);
            Ok(())
        };
        std::thread::scope(|s| {
            for _ in 0..16 {
                s.spawn(|| {
                    for _ in 0..50 {
                        let mine = renamed.fetch_add(1, Ordering::SeqCst) + 1;
                        group.wait(&sync).unwrap();
                        assert!(durable.load(Ordering::SeqCst) >= mine);
                    }
                });
            }
        });
        let syncs = syncs.load(Ordering::SeqCst);
        assert!(syncs < 800 / 2, "800 renames took {syncs} syncs");
    }

    #[test]
    fn a_failed_sync_fails_every_writer_it_was_to_cover() {
        let group = Group::default();
        let calls = AtomicU64::new(0);
        let sync = || {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                std::thread::sleep(Duration::from_millis(100));
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            Ok(())
        };
        let results: Vec<_> = std::thread::scope(|s| {
            let first = s.spawn(|| group.wait(&sync));
            while !lock(&group.tickets).running {
                std::thread::yield_now();
            }
            let waiting: Vec<_> = (0..4).map(|_| s.spawn(|| group.wait(&sync))).collect();
            std::iter::once(first)
                .chain(waiting)
                .map(|t| t.join().unwrap().is_ok())
                .collect()
        });
        // The runner issued its ticket first and fails; the others waited for a sync
        // that started after their tickets: the second one, which succeeds.
        assert_eq!(results, [false, true, true, true, true]);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // A writer covered by a failed sync that another writer ran fails too, rather
        // than running a sync of its own that would succeed and prove nothing.
        let group = Group::default();
        let calls = AtomicU64::new(0);
        let sync = || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(100));
            if n == 1 {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            Ok(())
        };
        let results: Vec<_> = std::thread::scope(|s| {
            let first = s.spawn(|| group.wait(&sync));
            while !lock(&group.tickets).running {
                std::thread::yield_now();
            }
            let waiting: Vec<_> = (0..2).map(|_| s.spawn(|| group.wait(&sync))).collect();
            std::iter::once(first)
                .chain(waiting)
                .map(|t| t.join().unwrap().is_ok())
                .collect()
        });
        assert_eq!(results, [true, false, false]);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn the_directorys_entry_is_gone_with_its_writers() {
        let dir = tempfile::tempdir().unwrap();
        sync_dir(&super::super::Dir::open(dir.path()).unwrap()).unwrap();
        assert!(!lock(&DIRS).contains_key(dir.path()));
    }
}
