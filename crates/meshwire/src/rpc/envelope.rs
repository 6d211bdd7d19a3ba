//! What RPC puts inside pub/sub payloads. Envelopes are postcard (compact,
//! serde, and safe to decode from any bytes); bodies are postcard or JSON,
//! chosen per call ([`Codec`]).
//!
//! Subjects, for service `S` and instance node `N`:
//! - `_RPC.S.N` — calls and cancellations to one instance;
//! - `_RPC.HB.S` — instance heartbeats (discovery and failure detection);
//! - `_RPC.PROBE.S` — a new client asks every instance to announce itself.

use serde::{Deserialize, Serialize};

/// How a call's body (and its reply) is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Codec {
    /// Compact binary (postcard). The default.
    #[default]
    Binary,
    /// JSON, so that any service can be called from the CLI or by hand.
    Json,
}

/// Why a call failed, as carried back to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Status {
    /// The handler returned its own error (body: the encoded error).
    Application,
    DeadlineExceeded,
    Cancelled,
    UnknownMethod,
    BadRequest,
    Internal,
}

/// Client → instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ToServer {
    Call {
        method: String,
        /// Remaining budget in microseconds when sent; 0 = no deadline.
        budget_us: u64,
        codec: Codec,
        metadata: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Drop the handler of the call whose replies go to `inbox`.
    Cancel { inbox: String },
}

/// The `Call` variant of [`ToServer`], encoded from borrowed parts: the
/// client sends the same body to each instance it tries without copying it
/// or collecting its metadata first. Postcard writes exactly the bytes of
/// `ToServer::Call` (variant 0; a map and a byte slice encode like a `Vec`
/// of pairs and a `Vec<u8>`), which a test holds it to.
#[derive(Debug, Serialize)]
pub(crate) enum CallRef<'a> {
    Call {
        method: &'a str,
        budget_us: u64,
        codec: Codec,
        metadata: &'a super::Metadata,
        #[serde(with = "bytes_ref")]
        body: &'a [u8],
    },
}

/// Serialises a byte slice as postcard's bytes (varint length + bytes),
/// the same encoding a `Vec<u8>` gets.
mod bytes_ref {
    pub(super) fn serialize<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b)
    }
}

/// Instance → client (to the call's reply inbox).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ToClient {
    /// A unary result.
    Ok {
        metadata: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// One item of a server stream.
    Item { body: Vec<u8> },
    /// The end of a server stream.
    End { metadata: Vec<(String, String)> },
    /// The call failed.
    Err {
        status: Status,
        message: String,
        body: Vec<u8>,
    },
}

/// An instance announcing itself (`_RPC.HB.S`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Heartbeat {
    pub(crate) node: [u8; 16],
    pub(crate) weight: u32,
    /// Sent once when the instance stops serving: leave balancers now.
    pub(crate) leaving: bool,
    /// Milliseconds between heartbeats, so clients can size their timeout.
    pub(crate) interval_ms: u32,
    /// Methods the service declares idempotent: clients fail them over
    /// even when the caller did not say so.
    pub(crate) idempotent: Vec<String>,
}

/// Checks a service name: one subject token, not one of the names the
/// discovery subjects use.
pub(crate) fn check_service_name(name: &str) -> Result<(), crate::Error> {
    let bad = name.is_empty()
        || name == "HB"
        || name == "PROBE"
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if bad {
        return Err(crate::Error::Config(format!(
            "service name {name:?}: use letters, digits, `-` and `_` (and not HB or PROBE)"
        )));
    }
    Ok(())
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising these plain structs into a Vec cannot fail.
    postcard_vec(v).unwrap_or_default()
}

/// A small head start for postcard's output: growing from empty one push
/// at a time reallocated four or five times per call (callgrind: 5% of a
/// serial RPC's instructions).
const ENCODE_CAPACITY: usize = 256;

fn postcard_vec<T: Serialize + ?Sized>(v: &T) -> postcard::Result<Vec<u8>> {
    postcard::to_extend(v, Vec::with_capacity(ENCODE_CAPACITY))
}

/// Postcard is not self-describing: bytes of another type often decode.
/// Insisting that the value uses every byte catches most such mismatches.
fn postcard_exact<'a, T: Deserialize<'a>>(b: &'a [u8]) -> Result<T, String> {
    match postcard::take_from_bytes(b) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(format!(
            "{} bytes left over: the body is not of the method's type",
            rest.len()
        )),
        Err(e) => Err(e.to_string()),
    }
}

pub(crate) fn decode<'a, T: Deserialize<'a>>(b: &'a [u8]) -> Result<T, String> {
    postcard_exact(b)
}

/// Encodes a body with the call's codec.
pub(crate) fn encode_body<T: Serialize>(codec: Codec, v: &T) -> Result<Vec<u8>, String> {
    match codec {
        Codec::Binary => postcard_vec(v).map_err(|e| e.to_string()),
        Codec::Json => serde_json::to_vec(v).map_err(|e| e.to_string()),
    }
}

/// Decodes a body with the call's codec.
pub(crate) fn decode_body<T: serde::de::DeserializeOwned>(
    codec: Codec,
    b: &[u8],
) -> Result<T, String> {
    match codec {
        Codec::Binary => postcard_exact(b),
        Codec::Json => serde_json::from_slice(b).map_err(|e| e.to_string()),
    }
}

pub(crate) fn instance_subject(service: &str, node: &str) -> String {
    format!("_RPC.{service}.{node}")
}

pub(crate) fn heartbeat_subject(service: &str) -> String {
    format!("_RPC.HB.{service}")
}

pub(crate) fn probe_subject(service: &str) -> String {
    format!("_RPC.PROBE.{service}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_garbage_is_an_error() {
        let call = ToServer::Call {
            method: "add".into(),
            budget_us: 1500,
            codec: Codec::Json,
            metadata: vec![("k".into(), "v".into())],
            body: b"{\"a\":1}".to_vec(),
        };
        assert_eq!(decode::<ToServer>(&encode(&call)).unwrap(), call);
        // The borrowed form encodes to the very same bytes.
        let metadata: super::super::Metadata = [("k".to_owned(), "v".to_owned())].into();
        let borrowed = CallRef::Call {
            method: "add",
            budget_us: 1500,
            codec: Codec::Json,
            metadata: &metadata,
            body: b"{\"a\":1}",
        };
        assert_eq!(encode(&borrowed), encode(&call));
        for garbage in [&b""[..], b"\xff\xff\xff", b"\x05abc"] {
            assert!(decode::<ToServer>(garbage).is_err());
        }
        let v: (i64, String) = decode_body(Codec::Json, br#"[1,"x"]"#).unwrap();
        assert_eq!(v, (1, "x".into()));
        assert!(decode_body::<i64>(Codec::Binary, b"").is_err());
    }
}
