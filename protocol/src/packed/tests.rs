use alloc::vec;

use super::*;
use crate::ids::AuthorId;
use crate::motion::{Figure, Motion, MotionOf};
use crate::wire::{Left, Pose};

fn messages() -> Vec<ServerMsg> {
    (1..=7u32)
        .map(|a| {
            let head = Pose {
                position_mm: [i32::try_from(a).unwrap().saturating_mul(300), 1650, -250],
                rotation: [0, 3000, 0, 32000],
            };
            ServerMsg::Motion(MotionOf {
                author: AuthorId(a),
                motion: Motion::of_figure(
                    u16::try_from(a).unwrap(),
                    Figure {
                        head: Some(head),
                        ..Figure::default()
                    },
                ),
            })
        })
        .chain([ServerMsg::Left(Left {
            author: AuthorId(9),
        })])
        .collect()
}

fn raw_of(msgs: &[ServerMsg]) -> Vec<u8> {
    let mut raw = Vec::new();
    for m in msgs {
        push_message(&mut raw, &postcard::to_allocvec(m).unwrap());
    }
    raw
}

fn compress(raw: &[u8]) -> Vec<u8> {
    let mut c = zstd::bulk::Compressor::with_dictionary(3, PRESENCE_V1_DICTIONARY).unwrap();
    c.set_parameter(zstd::zstd_safe::CParameter::DictIdFlag(false))
        .unwrap();
    c.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(false))
        .unwrap();
    c.compress(raw).unwrap()
}

#[test]
fn a_raw_pack_unpacks_to_its_messages_in_order() {
    let msgs = messages();
    let pack = Packed {
        dictionary: RAW,
        bytes: raw_of(&msgs),
    };
    assert_eq!(Unpacker::new().unpack(&pack).unwrap(), msgs);
}

#[test]
fn a_pack_compressed_by_the_zstd_library_with_the_dictionary_unpacks_with_ruzstd() {
    let msgs = messages();
    let raw = raw_of(&msgs);
    let bytes = compress(&raw);
    assert!(bytes.len() < raw.len(), "{} of {}", bytes.len(), raw.len());
    let mut unpacker = Unpacker::new();
    let pack = Packed {
        dictionary: PRESENCE_V1,
        bytes,
    };
    // Twice through the same decoder: it is reset between packs.
    assert_eq!(unpacker.unpack(&pack).unwrap(), msgs);
    assert_eq!(unpacker.unpack(&pack).unwrap(), msgs);
}

#[test]
fn bad_packs_are_refused_with_their_reason() {
    let mut u = Unpacker::new();
    let raw = raw_of(&messages());
    let unknown = Packed {
        dictionary: 7,
        bytes: raw.clone(),
    };
    assert_eq!(u.unpack(&unknown), Err(PackError::UnknownDictionary(7)));
    let mut cut = raw.clone();
    cut.pop();
    assert_eq!(
        u.unpack(&Packed {
            dictionary: RAW,
            bytes: cut
        }),
        Err(PackError::BadMessage)
    );
    let compressed = compress(&raw);
    for end in [0, 3, compressed.len() / 2, compressed.len() - 1] {
        let torn = Packed {
            dictionary: PRESENCE_V1,
            bytes: compressed[..end].to_vec(),
        };
        assert!(u.unpack(&torn).is_err(), "cut at {end}");
    }
    let mut trailing = compressed.clone();
    trailing.push(0);
    assert_eq!(
        u.unpack(&Packed {
            dictionary: PRESENCE_V1,
            bytes: trailing
        }),
        Err(PackError::Corrupt)
    );
    // A bomb: 64 KiB of zeros compresses to a few bytes and is refused unread.
    let bomb = compress(&vec![0u8; 64 * 1024]);
    assert_eq!(
        u.unpack(&Packed {
            dictionary: PRESENCE_V1,
            bytes: bomb
        }),
        Err(PackError::TooLarge)
    );
    // The decoder still reads a good pack afterwards.
    let good = Packed {
        dictionary: PRESENCE_V1,
        bytes: compressed,
    };
    assert_eq!(u.unpack(&good).unwrap(), messages());
}

#[test]
fn the_dictionary_loads() {
    assert!(Unpacker::new().presence_v1.is_some());
    assert_eq!(Codecs::readable().dictionaries, vec![PRESENCE_V1, RAW]);
}

/// A bomb that does not say its size up front (a frame without its content size and with a
/// window no larger than a pack may take, so the header check passes): the decoder stops at the limit while inflating, whatever the size.
fn streamed(raw: &[u8]) -> Vec<u8> {
    let mut c = zstd::bulk::Compressor::with_dictionary(19, PRESENCE_V1_DICTIONARY).unwrap();
    for p in [
        zstd::zstd_safe::CParameter::DictIdFlag(false),
        zstd::zstd_safe::CParameter::ChecksumFlag(false),
        zstd::zstd_safe::CParameter::ContentSizeFlag(false),
        zstd::zstd_safe::CParameter::WindowLog(14),
    ] {
        c.set_parameter(p).unwrap();
    }
    c.compress(raw).unwrap()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    #[test]
    fn a_bomb_of_any_size_without_a_declared_size_is_refused_while_inflating(
        len in (MAX_UNPACKED_BYTES + 1)..crate::codec::MAX_FRAME_BYTES,
        byte in proptest::prelude::any::<u8>(),
    ) {
        let bytes = streamed(&vec![byte; len]);
        proptest::prop_assert!(bytes.len() <= MAX_PACK_INPUT, "{} B compressed", bytes.len());
        let mut u = Unpacker::new();
        proptest::prop_assert_eq!(
            u.unpack(&Packed { dictionary: PRESENCE_V1, bytes }),
            Err(PackError::TooLarge)
        );
        // At the limit the same kind of frame is read (the refusal is the size, not the form).
        let raw = raw_of(&messages());
        let fits = streamed(&raw);
        proptest::prop_assert_eq!(
            u.unpack(&Packed { dictionary: PRESENCE_V1, bytes: fits }).unwrap(),
            messages()
        );
    }

    #[test]
    fn any_bytes_unpack_or_are_refused_without_a_panic(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..MAX_PACK_INPUT),
        dictionary in 0u32..3,
    ) {
        let mut u = Unpacker::new();
        if let Ok(msgs) = u.unpack(&Packed { dictionary, bytes }) {
            let raw = raw_of(&msgs);
            proptest::prop_assert!(raw.len() <= MAX_UNPACKED_BYTES.saturating_add(msgs.len().saturating_mul(16)));
        }
    }
}
