//! The state file's layout (format 2): two slots of equal size, written in turn, so that
//! a commit is one `pwrite` and one `fdatasync` into a file that already exists, and a
//! reader (locked or not) always finds a whole version.
//!
//! ```text
//! offset 0     slot 0: "TKS2" | sequence u64 | length u32 | crc32 u32 | record (JSON) | zeros
//! offset S     slot 1: the same
//! ```
//!
//! All integers are little-endian; the checksum covers the sequence, the length and
//! the record. The file is `2 × S` bytes from its creation (zeros included), so a slot
//! write never changes its size and `fdatasync` has no metadata to flush. The valid slot
//! with the higher sequence is the state; a torn or corrupt slot fails its checksum and
//! the other slot is used. A record larger than a slot is written into a new file with
//! larger slots, by the full replace protocol ([`super::file`] does that; this file
//! holds the layout and the writer of slots).

use std::ffi::OsStr;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};

use nix::fcntl::OFlag;

use crate::atomic::Dir;

/// What every slot starts with.
pub const MAGIC: &[u8; 4] = b"TKS2";
/// Magic, sequence, length, checksum.
pub const HEADER: usize = 4 + 8 + 4 + 4;
/// The smallest slot: one page holds a record with ordinary tokens.
pub const MIN_SLOT: usize = 4096;

/// One valid slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub sequence: u64,
    pub record: Vec<u8>,
}

/// What a state file's bytes hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Contents {
    /// Format 2; `newest` is the index and content of the valid slot with the higher
    /// sequence, `None` when neither slot is valid.
    Slots {
        slot_size: usize,
        newest: Option<(usize, Slot)>,
    },
    /// Format 1: the whole file is one JSON record, replaced by rename.
    Json,
}

/// The slot size for a record of `len` bytes: a power of two with room to spare, so that
/// records that grow a little (a longer token) still fit.
pub fn slot_size_for(len: usize) -> usize {
    (2 * (HEADER + len)).next_power_of_two().max(MIN_SLOT)
}

/// A new file holding `record` in slot 0 (sequence 1), slot 1 empty.
pub fn new_file(record: &[u8]) -> Vec<u8> {
    let size = slot_size_for(record.len());
    let mut bytes = vec![0u8; 2 * size];
    let slot = encode(1, record);
    bytes[..slot.len()].copy_from_slice(&slot);
    bytes
}

/// One slot's bytes: the header, then the record.
pub fn encode(sequence: u64, record: &[u8]) -> Vec<u8> {
    let len = u32::try_from(record.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(HEADER + record.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&sequence.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&checksum(sequence, len, record).to_le_bytes());
    out.extend_from_slice(record);
    out
}

/// Whether a record of `len` bytes fits a slot of `slot_size`.
pub fn fits(len: usize, slot_size: usize) -> bool {
    HEADER + len <= slot_size
}

fn checksum(sequence: u64, len: u32, record: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&sequence.to_le_bytes());
    h.update(&len.to_le_bytes());
    h.update(record);
    h.finalize()
}

/// The slot in `bytes` (one slot's span), if it is whole and valid.
pub fn decode(bytes: &[u8]) -> Option<Slot> {
    if bytes.len() < HEADER || &bytes[..4] != MAGIC {
        return None;
    }
    let sequence = u64::from_le_bytes(bytes[4..12].try_into().ok()?);
    let len = u32::from_le_bytes(bytes[12..16].try_into().ok()?);
    let crc = u32::from_le_bytes(bytes[16..20].try_into().ok()?);
    let record = bytes.get(HEADER..HEADER + len as usize)?;
    (checksum(sequence, len, record) == crc).then(|| Slot {
        sequence,
        record: record.to_vec(),
    })
}

/// Reads a whole file's bytes: format 2 when it starts like one or has its shape,
/// format 1 otherwise (the caller parses that JSON, and refuses what is neither).
pub fn read(bytes: &[u8]) -> Contents {
    let shaped = bytes.len() >= 2 * MIN_SLOT && bytes.len().is_power_of_two();
    let starts = bytes.starts_with(MAGIC);
    // A format 2 file whose slot 0 is torn does not start with the magic; its size
    // says what it is (a JSON record is never a power of two of 8 KiB or more with
    // nothing but zeros and a slot after it).
    let format_2 = starts || (shaped && bytes[bytes.len() / 2..].starts_with(MAGIC));
    if !format_2 {
        return Contents::Json;
    }
    let slot_size = bytes.len() / 2;
    let newest = [0, 1]
        .into_iter()
        .filter_map(|i| decode(&bytes[i * slot_size..(i + 1) * slot_size]).map(|s| (i, s)))
        .max_by_key(|(_, s)| s.sequence);
    Contents::Slots { slot_size, newest }
}

/// Writes versions into the slots of a format 2 file, in turn.
pub struct SlotWriter {
    pub slot_size: usize,
    /// The file (device, inode) the position was learned from.
    file: (u64, u64),
    /// The slot the next version goes to: the one not holding the newest.
    next: usize,
    /// The newest version's sequence.
    sequence: u64,
}

impl SlotWriter {
    /// Slots of the file `name` in `dir` as it is now, whose newest version is `at`.
    pub fn new(dir: &Dir, name: &OsStr, at: Position) -> std::io::Result<SlotWriter> {
        let meta = dir.open_file(name, OFlag::O_RDONLY, 0)?.metadata()?;
        Ok(SlotWriter {
            file: (meta.dev(), meta.ino()),
            slot_size: at.slot_size,
            next: 1 - at.newest,
            sequence: at.sequence,
        })
    }

    /// One `pwrite` and one `fdatasync`: the whole commit of a version. The file is
    /// opened for each commit rather than held: a held descriptor per credential would
    /// double the descriptors tens of thousands of credentials need. Its mode is made
    /// 0600 again if someone changed it. `NotFound` when the file is not the one this
    /// writer knows: deleted, replaced, or overwritten with other bytes (a copy of a
    /// backup), whose slots are not ours to write one of.
    pub fn commit(&mut self, dir: &Dir, name: &OsStr, record: &[u8]) -> std::io::Result<()> {
        let file = dir.open_file(name, OFlag::O_RDWR, 0)?;
        let meta = file.metadata()?;
        let replaced =
            || std::io::Error::new(std::io::ErrorKind::NotFound, "the state file was replaced");
        if (meta.dev(), meta.ino()) != self.file || meta.len() != 2 * self.slot_size as u64 {
            return Err(replaced());
        }
        // The newest slot still holds this writer's last version (a cheap look at its
        // header; the bytes are in the page cache).
        let mut header = [0u8; HEADER];
        file.read_exact_at(&mut header, ((1 - self.next) * self.slot_size) as u64)?;
        if &header[..4] != MAGIC || header[4..12] != self.sequence.to_le_bytes() {
            return Err(replaced());
        }
        if meta.mode() & 0o7777 != 0o600 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        let sequence = self.sequence + 1;
        let offset = (self.next * self.slot_size) as u64;
        file.write_all_at(&encode(sequence, record), offset)?;
        file.sync_data()?;
        self.sequence = sequence;
        self.next = 1 - self.next;
        Ok(())
    }
}

/// Where a format 2 file's newest version is.
#[derive(Debug, Clone, Copy)]
pub struct Position {
    pub slot_size: usize,
    pub newest: usize,
    pub sequence: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: usize) -> Vec<u8> {
        format!("{{\"refresh_token\":\"{}\"}}", "r".repeat(n)).into_bytes()
    }

    #[test]
    fn the_newest_valid_slot_wins() {
        let mut file = new_file(&record(10));
        assert_eq!(file.len(), 2 * MIN_SLOT);
        let Contents::Slots { slot_size, newest } = read(&file) else {
            panic!()
        };
        assert_eq!(newest.as_ref().unwrap().0, 0);
        let second = encode(2, &record(20));
        file[slot_size..slot_size + second.len()].copy_from_slice(&second);
        let Contents::Slots { newest, .. } = read(&file) else {
            panic!()
        };
        assert_eq!(
            newest,
            Some((
                1,
                Slot {
                    sequence: 2,
                    record: record(20)
                }
            ))
        );
    }

    /// A slot cut at every byte offset (a write torn there) leaves the other,
    /// older slot in force, never a mix and never nothing.
    #[test]
    fn a_slot_torn_at_any_offset_leaves_the_other() {
        let old = encode(7, &record(100));
        let new = encode(8, &record(140));
        for target in [0, 1] {
            for cut in 0..new.len() {
                let mut file = vec![0u8; 2 * MIN_SLOT];
                let other = 1 - target;
                file[other * MIN_SLOT..other * MIN_SLOT + old.len()].copy_from_slice(&old);
                // The slot being written held an older version still: what a torn write
                // leaves is its own prefix over that.
                let older = encode(6, &record(120));
                let at = target * MIN_SLOT;
                file[at..at + older.len()].copy_from_slice(&older);
                file[at..at + cut].copy_from_slice(&new[..cut]);
                let Contents::Slots { newest, .. } = read(&file) else {
                    panic!("cut at {cut} of slot {target} read as format 1")
                };
                let (i, slot) = newest.expect("a valid slot");
                assert_eq!(
                    (i, slot.sequence),
                    (other, 7),
                    "cut at {cut} of slot {target}"
                );
            }
        }
    }

    #[test]
    fn random_bytes_in_a_slot_or_both_are_detected() {
        let mut file = new_file(&record(50));
        let second = encode(2, &record(60));
        file[MIN_SLOT..MIN_SLOT + second.len()].copy_from_slice(&second);
        // One byte of the record flipped in the newer slot: the older one is used.
        file[MIN_SLOT + HEADER + 5] ^= 0x55;
        let Contents::Slots { newest, .. } = read(&file) else {
            panic!()
        };
        assert_eq!(newest.unwrap().1.sequence, 1);
        // Noise in both: nothing valid, which the store reports as unreadable.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for b in file.iter_mut().skip(4).take(200) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        file[MIN_SLOT + 4] ^= 1;
        assert_eq!(
            read(&file),
            Contents::Slots {
                slot_size: MIN_SLOT,
                newest: None
            }
        );
    }

    #[test]
    fn slot_sizes_grow_with_the_record() {
        assert_eq!(slot_size_for(100), MIN_SLOT);
        assert_eq!(slot_size_for(3000), 8192);
        assert!(fits(MIN_SLOT - HEADER, MIN_SLOT));
        assert!(!fits(MIN_SLOT - HEADER + 1, MIN_SLOT));
        // Format 1 stays format 1, even when it happens to be long.
        assert_eq!(read(b"{\"version\": 1}"), Contents::Json);
        assert_eq!(read(&[b' '; 8192]), Contents::Json);
        assert_eq!(read(b""), Contents::Json);
    }
}
