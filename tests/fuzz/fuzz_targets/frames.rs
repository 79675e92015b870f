//! The frame reader and every message decoder: arbitrary bytes, split at an arbitrary point,
//! as a client's stream and as a server's; whatever decodes re-encodes to what decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshwork_protocol::FrameReader;
use meshwork_protocol::codec::decode_payload;
use meshwork_protocol::wire::{ClientMsg, ServerMsg, peek_hello_version};

fuzz_target!(|data: &[u8]| {
    let cut = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let (a, b) = data.split_at(cut);
    let mut reader = FrameReader::new();
    for part in [a, b] {
        if reader.push(part).is_err() {
            return;
        }
        while let Ok(Some(payload)) = reader.next_payload() {
            let _ = peek_hello_version(&payload);
            let _ = ClientMsg::payload_is_submit(&payload);
            if let Ok(msg) = decode_payload::<ClientMsg>(&payload) {
                let again = postcard::to_allocvec(&msg).expect("a decoded message encodes");
                assert!(decode_payload::<ClientMsg>(&again).is_ok());
            }
            let _ = decode_payload::<ServerMsg>(&payload);
        }
    }
    // A whole buffer as one message of each kind, too.
    let _ = decode_payload::<ClientMsg>(data);
    let _ = decode_payload::<ServerMsg>(data);
});
