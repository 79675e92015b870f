//! Packs: the presence-lane messages a member is owed in one server tick, in one datagram,
//! compressed with a zstd dictionary both sides hold.
//!
//! A client says which dictionaries it can read ([`Codecs`], once joined; `ClientConnection`
//! sends it). From then on the server gathers what it relays to that client on the unreliable
//! lane (others' motions, presence, previews, element selections) for one tick and sends it as
//! one [`Packed`] per datagram: the messages' encodings, each behind its length, compressed with
//! the first dictionary the client named that the server has ([`RAW`]: not compressed). A
//! client that never sends `Codecs` is sent every message on its own, as before.
//!
//! The dictionary is trained from the test kit's typical session (`meshwork-wire-budget
//! --train-dictionary`), versioned by its number here, and never changes once released: a new
//! one gets a new number. Decoding is ruzstd (pure Rust, so the browser's wasm has it too),
//! bounded to [`MAX_UNPACKED_BYTES`].

use alloc::vec::Vec;

use ruzstd::decoding::errors::FrameDecoderError;
use ruzstd::decoding::{BlockDecodingStrategy, Dictionary, FrameDecoder};
use serde::{Deserialize, Serialize};

use crate::codec::decode_payload;
use crate::wire::ServerMsg;

/// The pack is not compressed.
pub const RAW: u32 = 0;
/// zstd with [`PRESENCE_V1_DICTIONARY`].
pub const PRESENCE_V1: u32 = 1;
/// The first presence-lane dictionary: trained on the typical session's packs.
pub static PRESENCE_V1_DICTIONARY: &[u8] = include_bytes!("../dict/presence-v1.zdict");
/// Every dictionary this build reads, best first: what [`Codecs`] offers.
pub const READABLE: [u32; 2] = [PRESENCE_V1, RAW];
/// Most bytes a pack may unpack to (a datagram's worth of messages, with room to spare).
pub const MAX_UNPACKED_BYTES: usize = 16 * 1024;
/// Most bytes of messages the server gathers in one pack before it starts another: with the
/// framing and when compression gains nothing, a pack still fits one QUIC datagram.
pub const MAX_PACK_INPUT: usize = 1_000;

/// Several unreliable-lane server messages in one frame (`ServerMsg::Packed`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packed {
    /// How `bytes` is compressed: [`RAW`] or a dictionary's number.
    pub dictionary: u32,
    /// The messages: each one's encoding behind its length (a varint), compressed as said.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

/// The dictionaries a client reads (`ClientMsg::Codecs`), best first. Sent once per
/// connection, after the `Welcome`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Codecs {
    /// Dictionary numbers; [`RAW`] for packs without compression.
    pub dictionaries: Vec<u32>,
}

impl Codecs {
    /// What this build reads.
    #[must_use]
    pub fn readable() -> Self {
        Self {
            dictionaries: READABLE.to_vec(),
        }
    }
}

/// Why a pack did not unpack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PackError {
    /// A dictionary this build does not have.
    #[error("pack compressed with unknown dictionary {0}")]
    UnknownDictionary(u32),
    /// Not a zstd frame this dictionary decodes.
    #[error("pack does not decompress")]
    Corrupt,
    /// It would unpack to more than [`MAX_UNPACKED_BYTES`].
    #[error("pack unpacks to more than 16 KiB")]
    TooLarge,
    /// The unpacked bytes are not a sequence of server messages.
    #[error("pack holds something that is not a server message")]
    BadMessage,
}

/// Appends one message's encoding to a pack's uncompressed bytes.
pub fn push_message(raw: &mut Vec<u8>, payload: &[u8]) {
    let mut len = [0u8; 5];
    // A varint of a length: postcard cannot fail on it.
    if let Ok(prefix) = postcard::to_slice(&(payload.len() as u64), &mut len) {
        raw.extend_from_slice(prefix);
    }
    raw.extend_from_slice(payload);
}

/// The messages of a pack's uncompressed bytes.
///
/// # Errors
/// [`PackError::BadMessage`] if they are not a sequence of length-prefixed server messages.
pub fn split_messages(mut raw: &[u8]) -> Result<Vec<ServerMsg>, PackError> {
    let mut out = Vec::new();
    while !raw.is_empty() {
        let (len, rest) =
            postcard::take_from_bytes::<u64>(raw).map_err(|_| PackError::BadMessage)?;
        let len = usize::try_from(len).map_err(|_| PackError::BadMessage)?;
        let payload = rest.get(..len).ok_or(PackError::BadMessage)?;
        out.push(decode_payload::<ServerMsg>(payload).map_err(|_| PackError::BadMessage)?);
        raw = rest.get(len..).unwrap_or_default();
    }
    Ok(out)
}

/// Reads packs: holds the zstd decoder with this build's dictionaries loaded once.
pub struct Unpacker {
    decoder: FrameDecoder,
    presence_v1: Option<u32>,
}

impl core::fmt::Debug for Unpacker {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Unpacker")
            .field("presence_v1", &self.presence_v1)
            .finish_non_exhaustive()
    }
}

impl Default for Unpacker {
    fn default() -> Self {
        Self::new()
    }
}

impl Unpacker {
    /// A decoder with every dictionary of this build.
    #[must_use]
    pub fn new() -> Self {
        let mut decoder = FrameDecoder::new();
        decoder.set_max_window_size(MAX_UNPACKED_BYTES as u64);
        let presence_v1 = Dictionary::decode_dict(PRESENCE_V1_DICTIONARY)
            .ok()
            .and_then(|d| {
                let id = d.id;
                decoder.add_dict(d).ok().map(|()| id)
            });
        Self {
            decoder,
            presence_v1,
        }
    }

    /// The messages in `pack`, in the order the server gathered them.
    ///
    /// # Errors
    /// [`PackError`] for a pack this build cannot read; nothing of it is handled then.
    pub fn unpack(&mut self, pack: &Packed) -> Result<Vec<ServerMsg>, PackError> {
        match pack.dictionary {
            RAW => {
                if pack.bytes.len() > MAX_UNPACKED_BYTES {
                    return Err(PackError::TooLarge);
                }
                split_messages(&pack.bytes)
            }
            PRESENCE_V1 => {
                let id = self
                    .presence_v1
                    .ok_or(PackError::UnknownDictionary(PRESENCE_V1))?;
                let raw = self.decompress(&pack.bytes, id)?;
                split_messages(&raw)
            }
            other => Err(PackError::UnknownDictionary(other)),
        }
    }

    fn decompress(&mut self, mut input: &[u8], dictionary: u32) -> Result<Vec<u8>, PackError> {
        self.decoder.reset(&mut input).map_err(|e| match e {
            // The frame says it needs more room than a pack may take: refused unread.
            FrameDecoderError::WindowSizeTooBig { .. } => PackError::TooLarge,
            _ => PackError::Corrupt,
        })?;
        if self.decoder.content_size() > MAX_UNPACKED_BYTES as u64 {
            return Err(PackError::TooLarge);
        }
        // Frames leave the dictionary's id out (4 bytes a datagram): the number said which.
        self.decoder
            .force_dict(dictionary)
            .map_err(|_| PackError::Corrupt)?;
        inflate_frame(&mut self.decoder, input, MAX_UNPACKED_BYTES).map_err(|e| match e {
            Inflate::TooLarge => PackError::TooLarge,
            Inflate::Corrupt => PackError::Corrupt,
        })
    }
}

/// Why a zstd frame did not inflate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Inflate {
    /// It would inflate past the bound.
    TooLarge,
    /// It does not decode, or bytes follow it.
    Corrupt,
}

/// Inflates the rest of the frame `decoder` was reset to from `input`, holding at most `max`
/// bytes of output (and the decoder's window): refused as soon as more come. The whole of
/// `input` must be that one frame. Packs and snapshots both inflate through it.
pub(crate) fn inflate_frame(
    decoder: &mut FrameDecoder,
    mut input: &[u8],
    max: usize,
) -> Result<Vec<u8>, Inflate> {
    let mut out = Vec::new();
    loop {
        decoder
            .decode_blocks(
                &mut input,
                BlockDecodingStrategy::UptoBytes(max.clamp(1, 1 << 16)),
            )
            .map_err(|_| Inflate::Corrupt)?;
        if let Some(bytes) = decoder.collect() {
            out.extend_from_slice(&bytes);
        }
        if out.len() > max {
            return Err(Inflate::TooLarge);
        }
        if decoder.is_finished() {
            break;
        }
    }
    if input.is_empty() {
        Ok(out)
    } else {
        Err(Inflate::Corrupt)
    }
}

#[cfg(test)]
mod tests;
