//! Hostile bytes into the decoders: never a panic, incomplete is `Ok(None)`, oversized frames
//! are refused from the header alone.
#![allow(
    clippy::unwrap_used,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    clippy::panic,
    reason = "test and benchmark code: a failed unwrap is a failed test"
)]

use meshwork_protocol::codec::{FRAME_HEADER_BYTES, FrameReader, decode_frame, to_frame};
use meshwork_protocol::wire::{Ping, Submit};
use meshwork_protocol::{
    AuthorId, ClientMsg, Command, Ed25519Signer, EntityId, EntryBody, FrameError, MAX_FRAME_BYTES,
    ServerMsg, SessionId, SignedEntry, Signer,
};
use proptest::prelude::*;

fn valid_frame() -> Vec<u8> {
    let s = Ed25519Signer::from_seed([3; 32]);
    let body = EntryBody::new(
        SessionId([1; 16]),
        AuthorId(1),
        s.public_key().key_id(),
        1,
        2,
        1,
        Command::SetName {
            entity: EntityId::new(AuthorId(1), 1),
            name: "chair".into(),
        },
    );
    let entry = SignedEntry::sign(&body, &s).unwrap();
    to_frame(&ClientMsg::Submit(Submit {
        entries: vec![entry],
    }))
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, .. ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = decode_frame::<ClientMsg>(&bytes);
        let _ = decode_frame::<ServerMsg>(&bytes);
        let _ = meshwork_protocol::codec::decode_payload::<ClientMsg>(&bytes);
        let _ = meshwork_protocol::codec::decode_payload::<ServerMsg>(&bytes);
        let _ = SignedEntry { body: bytes.clone(), signature: meshwork_protocol::sign::Signature([0; 64]) }
            .decode_body();
        let _ = meshwork_protocol::wire::peek_hello_version(&bytes);
        let mut r = FrameReader::new();
        if r.push(&bytes).is_ok() {
            while let Ok(Some(_)) = r.next_msg::<ClientMsg>() {}
        }
    }

    #[test]
    fn random_payloads_behind_a_valid_header_never_panic(
        payload in proptest::collection::vec(any::<u8>(), 0..2048)
    ) {
        let mut frame = u32::try_from(payload.len()).unwrap().to_le_bytes().to_vec();
        frame.extend_from_slice(&payload);
        let r = decode_frame::<ClientMsg>(&frame);
        prop_assert!(!matches!(r, Ok(None)), "a whole frame is never 'incomplete'");
    }

    #[test]
    fn truncated_frames_are_incomplete_not_errors(cut in 0usize..10_000) {
        let frame = valid_frame();
        let cut = cut % frame.len();
        prop_assert_eq!(decode_frame::<ClientMsg>(&frame[..cut]), Ok(None));
    }

    #[test]
    fn bit_flips_in_a_valid_frame_never_panic(at in any::<usize>(), bit in 0u8..8) {
        let mut frame = valid_frame();
        let at = FRAME_HEADER_BYTES + at % (frame.len() - FRAME_HEADER_BYTES);
        frame[at] ^= 1 << bit;
        if let Ok(Some((ClientMsg::Submit(s), _))) = decode_frame::<ClientMsg>(&frame) {
            for e in s.entries {
                let _ = e.decode_body();
            }
        }
    }

    #[test]
    fn any_header_over_the_limit_is_refused(len in (MAX_FRAME_BYTES as u64 + 1)..=u64::from(u32::MAX)) {
        let header = u32::try_from(len).unwrap().to_le_bytes();
        prop_assert_eq!(
            decode_frame::<ClientMsg>(&header),
            Err(FrameError::TooLarge { len_bytes: len })
        );
    }
}

#[test]
fn a_stream_of_frames_decodes_in_order() {
    let mut stream = valid_frame();
    stream.extend(to_frame(&ClientMsg::Ping(Ping { nonce: 9 })).unwrap());
    let (first, used) = decode_frame::<ClientMsg>(&stream).unwrap().unwrap();
    assert!(matches!(first, ClientMsg::Submit(_)));
    let (second, _) = decode_frame::<ClientMsg>(&stream[used..]).unwrap().unwrap();
    assert_eq!(second, ClientMsg::Ping(Ping { nonce: 9 }));
}
