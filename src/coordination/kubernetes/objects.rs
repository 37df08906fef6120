//! The two objects a credential has in the cluster, as the API reads and writes them:
//! a `coordination.k8s.io/v1` Lease for leadership and a `v1` Secret whose
//! `data["state.json"]` holds the record. What tokend does not use (labels, annotations,
//! other keys) is kept as read, so that a replace does not erase it.

use std::collections::BTreeMap;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::coordination::error::{Kind, Op, StoreFailure};
use crate::coordination::record::{Record, Stored};

/// The key of the Secret's data that holds the record.
pub const STATE_KEY: &str = "state.json";

/// `metadata`: the name, the resourceVersion every write is conditional on, and the
/// rest as read.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Meta {
    pub name: String,
    #[serde(
        rename = "resourceVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub resource_version: String,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl Meta {
    /// A new object's metadata: its name, and who manages it.
    pub fn new(name: &str) -> Meta {
        let mut other = Map::new();
        other.insert(
            "labels".into(),
            serde_json::json!({"app.kubernetes.io/managed-by": "tokend"}),
        );
        Meta {
            name: name.to_owned(),
            resource_version: String::new(),
            other,
        }
    }

    /// The resourceVersion as a number, to order what is read. The API calls it
    /// opaque, but every API server stores objects in etcd and gives its revision.
    pub fn revision(&self, op: Op) -> Result<i64, StoreFailure> {
        self.resource_version.parse().map_err(|_| {
            StoreFailure::new(
                op,
                Kind::Unreachable,
                format!(
                    "resourceVersion {:?} is not a number; tokend orders what it reads by it",
                    self.resource_version
                ),
            )
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lease {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    pub metadata: Meta,
    #[serde(default)]
    pub spec: LeaseSpec,
}

/// A Lease's spec, as client-go's leader election fills it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_duration_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquire_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_transitions: Option<i32>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl LeaseSpec {
    /// Who holds it; a released Lease (no holder, or an empty one) is free.
    pub fn holder(&self) -> Option<&str> {
        self.holder_identity.as_deref().filter(|h| !h.is_empty())
    }
}

impl Lease {
    pub fn new(name: &str, spec: LeaseSpec) -> Lease {
        Lease {
            api_version: "coordination.k8s.io/v1".into(),
            kind: "Lease".into(),
            metadata: Meta::new(name),
            spec,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Secret {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    pub metadata: Meta,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind_of_secret: Option<String>,
    /// Base64 values, as the API carries them.
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl Secret {
    /// A new Secret holding `record`.
    pub fn new(name: &str, record: &Record) -> Secret {
        let mut s = Secret {
            api_version: "v1".into(),
            kind: "Secret".into(),
            metadata: Meta::new(name),
            kind_of_secret: Some("Opaque".into()),
            data: BTreeMap::new(),
            other: Map::new(),
        };
        s.set_record(record);
        s
    }

    pub fn set_record(&mut self, record: &Record) {
        self.data
            .insert(STATE_KEY.into(), B64.encode(record.to_bytes()));
    }

    /// The record as of this Secret's resourceVersion (corrupt when it cannot be read).
    pub fn stored(&self, revision: i64) -> Stored {
        match self.data.get(STATE_KEY).map(|b| B64.decode(b)) {
            None => Stored {
                record: None,
                revision,
                corrupt: Some(format!("the Secret has no {STATE_KEY}")),
            },
            Some(Err(_)) => Stored {
                record: None,
                revision,
                corrupt: Some(format!("{STATE_KEY} is not base64")),
            },
            Some(Ok(bytes)) => Stored::read(Some(&bytes), revision),
        }
    }
}

/// A `metav1.MicroTime`, as client-go writes it.
pub fn micro_time(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_tokend_does_not_use_survives_a_round_trip() {
        let text = r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"tokend-c",
            "resourceVersion":"42","labels":{"team":"pay"},"uid":"u-1"},"type":"Opaque",
            "data":{"state.json":"bm90IGpzb24=","other":"eA=="},"immutable":false}"#;
        let s: Secret = serde_json::from_str(text).unwrap();
        assert_eq!(s.metadata.revision(Op::Read).unwrap(), 42);
        let stored = s.stored(42);
        assert!(stored.corrupt.is_some());
        let back = serde_json::to_value(&s).unwrap();
        assert_eq!(back["metadata"]["labels"]["team"], "pay");
        assert_eq!(back["metadata"]["uid"], "u-1");
        assert_eq!(back["data"]["other"], "eA==");
        assert_eq!(back["immutable"], false);
        let record = Record::default();
        let fresh = Secret::new("tokend-c", &record);
        assert!(fresh.stored(0).corrupt.is_none());
        let shown = serde_json::to_value(&fresh).unwrap();
        assert!(shown["metadata"].get("resourceVersion").is_none());
        assert_eq!(
            micro_time(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000000Z"
        );
    }
}
