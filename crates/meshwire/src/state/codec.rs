//! How typed keys and values become the strings and bytes a map stores.
//!
//! Values are stored as JSON text, so that the CLI (`meshwire kv`), other
//! languages and typed Rust handles all read the same thing. Keys are
//! strings, so that `watch(prefix)` and `list(prefix)` mean what they say:
//! a key that serialises as a JSON string is stored as that string (no
//! quotes), any other key as its compact JSON text (`42`, `[1,2]`).

use super::MapError;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The stored form of a key.
pub(crate) fn encode_key<K: Serialize + ?Sized>(key: &K) -> Result<String, MapError> {
    match serde_json::to_value(key) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        Ok(other) => Ok(other.to_string()),
        Err(e) => Err(codec("key", e)),
    }
}

/// A key back from its stored form.
pub(crate) fn decode_key<K: DeserializeOwned>(stored: &str) -> Result<K, MapError> {
    // A string key first (the stored form of every string-like key), then
    // the JSON text of any other key.
    serde_json::from_value(serde_json::Value::String(stored.to_owned()))
        .or_else(|_| serde_json::from_str(stored))
        .map_err(|e| codec("key", e))
}

/// The stored form of a value (JSON text).
pub(crate) fn encode_value<V: Serialize + ?Sized>(value: &V) -> Result<Vec<u8>, MapError> {
    serde_json::to_vec(value).map_err(|e| codec("value", e))
}

/// A value back from its stored form.
pub(crate) fn decode_value<V: DeserializeOwned>(stored: &[u8]) -> Result<V, MapError> {
    serde_json::from_slice(stored).map_err(|e| codec("value", e))
}

fn codec(what: &'static str, e: serde_json::Error) -> MapError {
    MapError::Codec {
        what,
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_keys_are_stored_bare_and_others_as_json() {
        assert_eq!(encode_key("orders/1").unwrap(), "orders/1");
        assert_eq!(encode_key(&42u64).unwrap(), "42");
        assert_eq!(encode_key(&(1, "a")).unwrap(), "[1,\"a\"]");
        assert_eq!(decode_key::<String>("orders/1").unwrap(), "orders/1");
        assert_eq!(decode_key::<String>("42").unwrap(), "42");
        assert_eq!(decode_key::<u64>("42").unwrap(), 42);
        assert_eq!(
            decode_key::<(u8, String)>("[1,\"a\"]").unwrap(),
            (1, "a".into())
        );
        assert!(matches!(
            decode_key::<u64>("not a number"),
            Err(MapError::Codec { what: "key", .. })
        ));
    }

    #[test]
    fn values_round_trip_as_json() {
        let v = encode_value(&vec![1, 2, 3]).unwrap();
        assert_eq!(v, b"[1,2,3]");
        assert_eq!(decode_value::<Vec<u8>>(&v).unwrap(), vec![1, 2, 3]);
        assert!(decode_value::<u8>(b"\"x\"").is_err());
    }
}
