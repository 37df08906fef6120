//! What etcd's JSON gateway reads and writes: int64 fields as JSON strings, bytes as
//! base64, fields at their default value left out (`succeeded` is absent when false).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::coordination::error::{Kind, Op, StoreFailure};

/// One key-value as etcd returns it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Kv {
    #[serde(default, with = "bytes")]
    pub key: Vec<u8>,
    #[serde(default, with = "bytes")]
    pub value: Vec<u8>,
    #[serde(default, with = "int64")]
    pub create_revision: i64,
    #[serde(default, with = "int64")]
    pub mod_revision: i64,
    #[serde(default, with = "int64")]
    pub lease: i64,
}

#[derive(Debug, Default, Deserialize)]
pub struct Header {
    #[serde(default, with = "int64")]
    pub revision: i64,
}

/// The keys under a prefix as of `revision`.
#[derive(Debug, Default)]
pub struct Listing {
    pub revision: i64,
    pub kvs: Vec<Kv>,
}

/// A transaction's outcome: the store revision after it, and what its `get`s read.
#[derive(Debug, Default)]
pub struct TxnAnswer {
    pub revision: i64,
    pub succeeded: bool,
    pub kvs: Vec<Kv>,
}

/// One watch message.
#[derive(Debug, Default)]
pub struct WatchBatch {
    /// The watch was cancelled or compacted past: list again.
    pub broken: bool,
    /// (deleted, key-value) in revision order.
    pub events: Vec<(bool, Kv)>,
}

/// The conditions and writes of a transaction, as the gateway spells them.
#[derive(Default)]
pub struct Txn {
    compare: Vec<Value>,
    success: Vec<Value>,
    failure: Vec<Value>,
}

impl Txn {
    /// `key`'s mod_revision (MOD) or create_revision (CREATE) equals `revision`; 0 for
    /// a key that does not exist.
    pub fn when(mut self, target: &str, key: &str, revision: i64) -> Txn {
        let field = if target == "MOD" {
            "mod_revision"
        } else {
            "create_revision"
        };
        self.compare.push(json!({
            "key": B64.encode(key),
            "result": "EQUAL",
            "target": target,
            field: revision.to_string(),
        }));
        self
    }

    pub fn put(mut self, key: &str, value: &[u8], lease: Option<i64>) -> Txn {
        let mut put = json!({"key": B64.encode(key), "value": B64.encode(value)});
        if let Some(id) = lease {
            put["lease"] = json!(id.to_string());
        }
        self.success.push(json!({ "request_put": put }));
        self
    }

    pub fn delete(mut self, key: &str) -> Txn {
        self.success
            .push(json!({"request_delete_range": {"key": B64.encode(key)}}));
        self
    }

    /// The request body.
    pub fn body(self) -> Value {
        json!({"compare": self.compare, "success": self.success, "failure": self.failure})
    }

    /// What to read when a condition fails: every key under `prefix`.
    pub fn or_list(mut self, prefix: &str) -> Txn {
        self.failure.push(json!({"request_range": range(prefix)}));
        self
    }
}

/// A range request for every key under `prefix`.
pub fn range(prefix: &str) -> Value {
    json!({"key": B64.encode(prefix), "range_end": B64.encode(prefix_end(prefix.as_bytes()))})
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

pub fn parse_watch(line: &[u8]) -> Result<WatchBatch, StoreFailure> {
    let bad = |e: String| {
        StoreFailure::new(
            Op::Read,
            Kind::Unreachable,
            format!("unexpected watch message: {e}"),
        )
    };
    let v: Value = serde_json::from_slice(line).map_err(|e| bad(e.to_string()))?;
    if let Some(error) = v.get("error") {
        return Err(bad(error.to_string().chars().take(200).collect()));
    }
    let result = &v["result"];
    let broken =
        result["canceled"].as_bool().unwrap_or(false) || int64::of(&result["compact_revision"]) > 0;
    let mut events = Vec::new();
    for e in result["events"].as_array().into_iter().flatten() {
        let kv: Kv = serde_json::from_value(e["kv"].clone()).map_err(|e| bad(e.to_string()))?;
        events.push((e["type"].as_str() == Some("DELETE"), kv));
    }
    Ok(WatchBatch { broken, events })
}

/// int64 fields: JSON strings (or numbers), absent at 0.
pub mod int64 {
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    pub fn of(v: &Value) -> i64 {
        match v {
            Value::String(s) => s.parse().unwrap_or(0),
            Value::Number(n) => n.as_i64().unwrap_or(0),
            _ => 0,
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        Ok(of(&Value::deserialize(d)?))
    }
}

/// bytes fields: base64.
mod bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        super::B64.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_as_the_gateway_writes_them() {
        let line = br#"{"result":{"header":{"revision":"18"},"events":[{"kv":{"key":"L3gvbGVhZGVy","create_revision":"18","mod_revision":"18","version":"1","value":"bWU=","lease":"7"}},{"type":"DELETE","kv":{"key":"L3gvc3RhdGU=","mod_revision":"19"}}]}}"#;
        let batch = parse_watch(line).unwrap();
        assert!(!batch.broken);
        assert_eq!(batch.events.len(), 2);
        let (deleted, kv) = &batch.events[0];
        assert!(!deleted);
        assert_eq!(
            (kv.key.as_slice(), kv.value.as_slice()),
            (&b"/x/leader"[..], &b"me"[..])
        );
        assert_eq!((kv.create_revision, kv.lease), (18, 7));
        assert!(batch.events[1].0);
        let compacted =
            parse_watch(br#"{"result":{"compact_revision":"40","canceled":true}}"#).unwrap();
        assert!(compacted.broken);
        assert_eq!(prefix_end(b"/t/c/"), b"/t/c0");
    }
}
