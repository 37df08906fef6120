//! The shared record of one credential (design.md §11): design.md §4's state, which carries the
//! chain's `generation`, plus the leader's intent to refresh. Stored as JSON.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::rfc3339;
use crate::store::State;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Record {
    /// `None` before the first refresh (an intent to refresh the bootstrap token).
    pub state: Option<State>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<Intent>,
}

/// "I am about to send the refresh token of this generation": written, conditionally,
/// before every refresh, so that a deposed leader fails before it reaches the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub identity: String,
    #[serde(with = "rfc3339")]
    pub since: SystemTime,
    pub generation: u64,
}

impl Record {
    pub fn generation(&self) -> u64 {
        self.state.as_ref().map_or(0, |s| s.generation)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // A State always serializes (strings, numbers and times).
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The record in `bytes`; the error never quotes them (they hold tokens).
    pub fn from_bytes(bytes: &[u8]) -> Result<Record, String> {
        serde_json::from_slice(bytes).map_err(|e| {
            format!(
                "not a tokend record (line {}, column {}: {:?})",
                e.line(),
                e.column(),
                e.classify()
            )
        })
    }
}

/// The record as last read from the store, with the revision every write is
/// conditional on (etcd's mod_revision; 0 when there is no record).
#[derive(Debug, Clone, Default)]
pub struct Stored {
    pub record: Option<Record>,
    pub revision: i64,
    /// The key holds something that is not a record: nobody refreshes until it is fixed.
    pub corrupt: Option<String>,
}

impl Stored {
    pub fn read(bytes: Option<&[u8]>, revision: i64) -> Stored {
        match bytes.map(Record::from_bytes) {
            None => Stored::default(),
            Some(Ok(record)) => Stored {
                record: Some(record),
                revision,
                corrupt: None,
            },
            Some(Err(e)) => Stored {
                record: None,
                revision,
                corrupt: Some(e),
            },
        }
    }

    pub fn generation(&self) -> u64 {
        self.record.as_ref().map_or(0, Record::generation)
    }

    pub fn state(&self) -> Option<&State> {
        self.record.as_ref().and_then(|r| r.state.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupt_record_is_named_not_quoted() {
        let s = Stored::read(Some(b"{\"state\": \"secret-token-value"), 7);
        let why = s.corrupt.unwrap();
        assert!(!why.contains("secret-token-value"), "{why}");
        assert_eq!(s.revision, 7);
        assert_eq!(Stored::read(None, 0).generation(), 0);
    }
}
