//! A replica fed whatever a hostile server may send: the input as a stream of frames (seeded
//! with the server messages' golden fixtures), each decoded message handed to the replica. It
//! may refuse them and ask for a resync; it must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshwork_protocol::FrameReader;
use meshwork_protocol::codec::decode_payload;
use meshwork_protocol::replica::Replica;
use meshwork_protocol::wire::ServerMsg;

fuzz_target!(|data: &[u8]| {
    let mut replica = Replica::new();
    let mut reader = FrameReader::new();
    if reader.push(data).is_err() {
        return;
    }
    while let Ok(Some(payload)) = reader.next_payload() {
        if let Ok(msg) = decode_payload::<ServerMsg>(&payload) {
            let _ = replica.on_message(&msg);
            let _ = replica.scene().state_hash();
        }
    }
});
