//! OTLP protobuf export requests through the collector's ingest path.
//!
//! Input: one selector byte, then the request body.
//! - bits 0..2 (mod 3): the signal (traces, logs, metrics);
//! - bits 2..4: the ingest variant (agent-style enrichment, tight attribute limits);
//! - bit 4: enter as OTLP/gRPC does (decode first, then `Ingest::export_batch`) instead of
//!   as OTLP/HTTP does (`Ingest::export_bytes`, which keeps the raw protobuf when it can).
//!
//! Decoding, validation (`ingest::validate::sanitize`), enrichment (`ingest::enrich`,
//! including the append to the raw protobuf) and the WAL payload encoding all run; the
//! sink checks that the payload decodes to the batch handed to the stores. Whatever prost
//! decodes, `prescan::scan` frames too, with the same item count and a decoded size at
//! least `Batch::heap_size`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lookout_fuzz::{bytes_of, ingest, runtime, Input, Variant};
use lookout_ingest::batch::Batch;
use lookout_ingest::signal::{Signal, Transport};
use lookout_ingest::{Encoding, IngestError};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let sel = input.byte();
    let signal = Signal::ALL[usize::from(sel & 3) % 3];
    let ingest = ingest(Variant::from_bits(sel >> 2));
    let body = input.rest();
    // Whatever prost decodes, the wire walk frames, with the same items and a bound of
    // the decoded size (admission charges that bound before decoding).
    if let Ok(batch) = Batch::decode_protobuf(signal, body) {
        let shape = lookout_ingest::prescan::scan(signal, body).expect("prost decoded it");
        assert_eq!(shape.items, batch.item_count());
        assert!(shape.decoded_bytes >= batch.heap_size());
    }
    let result = if sel & 0x10 != 0 {
        // The gRPC receiver gets the request decoded by tonic's prost codec.
        let Ok(batch) = Batch::decode_protobuf(signal, body) else {
            return;
        };
        runtime().block_on(ingest.export_batch(batch, Transport::Grpc, body.len()))
    } else {
        runtime().block_on(ingest.export_bytes(
            signal,
            Transport::Http,
            bytes_of(body),
            Encoding::Protobuf,
        ))
    };
    match result {
        Ok(a) => assert!(
            a.rejected > 0 || a.message.is_empty(),
            "a message without rejected items: {a:?}"
        ),
        // Undecodable or wholly invalid data; the sink never fails and the budget is huge.
        Err(IngestError::Invalid(_)) => {}
        Err(e) => panic!("unexpected ingest error: {e:?}"),
    }
});
