//! The strict OTLP/JSON decoders of `lookout-proto` (the three signals).
//!
//! Input: one selector byte (mod 3: traces, logs, metrics), then the JSON body.
//!
//! A body that decodes must survive the codec's promise: its canonical encoding decodes
//! back to an equal message (compared through the protobuf encoding, so NaN doubles
//! compare equal), and encoding is stable over a second round.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lookout_proto::json;
use prost::Message;

/// Decode, then check the round trip; `enc` and `dec` are the codec's pair for one signal.
fn round_trip<T: Message + Default + std::fmt::Debug>(
    body: &[u8],
    dec: fn(&[u8]) -> Result<T, json::JsonError>,
    enc: fn(&T) -> Vec<u8>,
) {
    let Ok(first) = dec(body) else {
        return;
    };
    let encoded = enc(&first);
    let second = match dec(&encoded) {
        Ok(v) => v,
        Err(e) => panic!(
            "canonical encoding does not decode: {e}\nencoding: {}",
            String::from_utf8_lossy(&encoded)
        ),
    };
    assert_eq!(
        first.encode_to_vec(),
        second.encode_to_vec(),
        "round trip changed the message\nencoding: {}",
        String::from_utf8_lossy(&encoded)
    );
    assert_eq!(enc(&second), encoded, "encoding is not canonical");
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    match sel % 3 {
        0 => round_trip(body, json::decode_traces, json::encode_traces),
        1 => round_trip(body, json::decode_logs, json::encode_logs),
        _ => round_trip(body, json::decode_metrics, json::encode_metrics),
    }
});
