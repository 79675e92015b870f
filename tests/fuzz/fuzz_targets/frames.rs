//! The frame reader and every message decoder: arbitrary bytes, split at an arbitrary point,
//! as a client's stream and as a server's; whatever decodes re-encodes to what decodes the same
//! (compact motions too, unpacked and packed again); packs unpack or are refused, within bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshwork_protocol::FrameReader;
use meshwork_protocol::codec::decode_payload;
use meshwork_protocol::motion::Motion;
use meshwork_protocol::packed::{PRESENCE_V1, Packed, RAW, Unpacker};
use std::sync::{LazyLock, Mutex};
use meshwork_protocol::wire::{ClientMsg, ServerMsg, peek_hello_version};

/// A motion that unpacks packs again into one that unpacks to the same parts.
fn motion_round_trip(m: &Motion) {
    if let Ok(content) = m.decode() {
        let again = Motion::encode(&content).expect("a decoded motion encodes");
        let back = again.decode().expect("a re-encoded motion decodes");
        assert_eq!(back.moving.len(), content.moving.len());
        assert_eq!(back.ended, content.ended);
        assert_eq!(back.figure.is_some(), content.figure.is_some());
    }
}

/// Packs, through one decoder as a client keeps it (its dictionary loaded once).
fn unpack(p: &Packed) -> Result<Vec<ServerMsg>, meshwork_protocol::packed::PackError> {
    static UNPACKER: LazyLock<Mutex<Unpacker>> = LazyLock::new(|| Mutex::new(Unpacker::new()));
    let mut u = UNPACKER.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let out = u.unpack(p);
    if let Ok(msgs) = &out {
        assert!(msgs.len() <= meshwork_protocol::packed::MAX_UNPACKED_BYTES);
    }
    out
}

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
                if let ClientMsg::Motion(m) = &msg {
                    motion_round_trip(m);
                }
            }
            match decode_payload::<ServerMsg>(&payload) {
                Ok(ServerMsg::Motion(m)) => {
                    let _ = m.expand();
                }
                Ok(ServerMsg::Packed(p)) => {
                    let _ = unpack(&p);
                }
                _ => {}
            }
        }
    }
    // A whole buffer as one message of each kind, too.
    let _ = decode_payload::<ClientMsg>(data);
    let _ = decode_payload::<ServerMsg>(data);
    motion_round_trip(&Motion {
        bytes: data.to_vec(),
    });
    // The bytes as a compressed pack's: a zstd frame for the presence dictionary, or not.
    for dictionary in [RAW, PRESENCE_V1] {
        let _ = unpack(&Packed {
            dictionary,
            bytes: data.to_vec(),
        });
    }
});
