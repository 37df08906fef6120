//! Group commit of directory syncs. A rename (or any change to a directory's entries) is
//! durable once the directory has been fsync'd after it; one fsync that starts after
//! several renames into a directory makes all of them durable. So a writer that has
//! renamed takes a ticket and waits for a sync that started after its ticket was
//! issued: the first writer to find no sync running runs one for every ticket issued so
//! far, and the others that arrived meanwhile wait for it or the next. A writer alone in
//! its directory syncs at once, as before.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
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
}

/// Returns once `dir` has been fsync'd after the caller's change to its entries (a
/// rename, a new file or directory).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    let group = {
        let mut dirs = lock(&DIRS);
        Arc::clone(dirs.entry(dir.to_owned()).or_default())
    };
    let result = group.wait(&|| sync(dir));
    let mut dirs = lock(&DIRS);
    // Two holders, the map and this writer: nobody else is syncing or waiting.
    if Arc::strong_count(&group) == 2 {
        dirs.remove(dir);
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
            if tickets.synced >= mine {
                return Ok(());
            }
            if !tickets.running {
                tickets.running = true;
                let covers = tickets.issued;
                drop(tickets);
                let result = sync();
                let mut tickets = lock(&self.tickets);
                tickets.running = false;
                // A failed sync covers nothing: its runner has the error, and the
                // writers waiting on it run another.
                if result.is_ok() {
                    tickets.synced = covers;
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

fn sync(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
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
    fn a_failed_sync_fails_its_runner_and_the_writers_waiting_on_it_run_another() {
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
        assert_eq!(results, [false, true, true, true, true]);
        assert!(calls.load(Ordering::SeqCst) >= 2);
    }

    #[test]
    fn the_directorys_entry_is_gone_with_its_writers() {
        let dir = tempfile::tempdir().unwrap();
        sync_dir(dir.path()).unwrap();
        assert!(!lock(&DIRS).contains_key(dir.path()));
        let gone = dir.path().join("no-such-directory");
        assert_eq!(sync_dir(&gone).unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
