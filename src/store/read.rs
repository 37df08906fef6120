//! Reading a state file: format 2's newest whole slot, or format 1's one JSON record;
//! never through a symbolic link.

use std::ffi::OsStr;
use std::path::Path;

use crate::atomic::Dir;
use crate::store::error::StoreError;
use crate::store::names::split;
use crate::store::slots::{self, Contents, Position};
use crate::store::state::{State, VERSION};

/// Reads a state file without locking it (for `status` and `token`): a slot being
/// written fails its checksum and the other is read, so a reader sees a whole version.
/// A symlink at its name is refused, not followed.
pub fn read_state_file(path: &Path) -> Result<Option<State>, StoreError> {
    let (dir, name) = split(path)?;
    let dir = match Dir::open(dir) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => {
            return Err(StoreError::Io {
                path: path.to_owned(),
                err,
            });
        }
    };
    Ok(read_with_position(&dir, name, path)?.map(|(state, _)| state))
}

/// The state in file `name` of `dir` (at `path`, for errors) and, in format 2, where
/// its newest version is.
pub(super) fn read_with_position(
    dir: &Dir,
    name: &OsStr,
    path: &Path,
) -> Result<Option<(State, Option<Position>)>, StoreError> {
    let bytes = match dir.read(name) {
        Ok(Some(b)) => b,
        Ok(None) => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(StoreError::Unsafe {
                path: path.to_owned(),
                why:
                    "is a symbolic link: tokend never follows one in its state directory; remove it"
                        .into(),
            });
        }
        Err(err) => {
            return Err(StoreError::Io {
                path: path.to_owned(),
                err,
            });
        }
    };
    let corrupt = |message: String| StoreError::Corrupt {
        path: path.to_owned(),
        message,
    };
    let (record, position) = match slots::read(&bytes) {
        Contents::Json => (std::borrow::Cow::Borrowed(bytes.as_slice()), None),
        Contents::Slots { newest: None, .. } => {
            return Err(corrupt(
                "neither of its two slots holds a whole version (both torn or damaged)".into(),
            ));
        }
        Contents::Slots {
            slot_size,
            newest: Some((newest, slot)),
        } => (
            std::borrow::Cow::Owned(slot.record),
            Some(Position {
                slot_size,
                newest,
                sequence: slot.sequence,
            }),
        ),
    };
    let state: State = serde_json::from_slice(&record).map_err(|e| corrupt(e.to_string()))?;
    if state.version != VERSION {
        return Err(corrupt(format!("unknown version {}", state.version)));
    }
    Ok(Some((state, position)))
}
