//! Framing: length-prefixed postcard messages, check-then-parse.
//!
//! A frame is a 4-byte little-endian payload length followed by exactly that many bytes of one
//! postcard-encoded message. Decoding first checks the header: an incomplete frame is
//! `Ok(None)` (read more), a length above [`MAX_FRAME_BYTES`] is refused before anything is
//! buffered or allocated for it, and a payload that is not exactly one message is an error that
//! ends the connection.

use alloc::vec::Vec;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Bytes in a frame header.
pub const FRAME_HEADER_BYTES: usize = 4;
/// Largest payload accepted or produced, in bytes. Snapshot chunks are at most 64 KiB; a
/// `Submit` batch is bounded by this.
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// A frame that ends the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The header announces more than [`MAX_FRAME_BYTES`].
    #[error("frame of {len_bytes} bytes exceeds the {MAX_FRAME_BYTES} byte limit")]
    TooLarge {
        /// Announced payload length.
        len_bytes: u64,
    },
    /// The payload is not a valid encoding of the expected message type.
    #[error("frame payload is not a valid message")]
    Malformed,
    /// The payload decodes but leaves bytes unread.
    #[error("frame payload has {extra_bytes} trailing bytes")]
    TrailingBytes {
        /// Unread bytes.
        extra_bytes: usize,
    },
    /// A message to send encodes to more than [`MAX_FRAME_BYTES`] (split it).
    #[error("message encodes to more than the frame limit")]
    EncodeTooLarge,
}

/// Appends `msg` as one frame to `out`.
///
/// # Errors
/// [`FrameError::EncodeTooLarge`] if the message does not fit a frame (`out` is left as it was).
pub fn encode_frame<M: Serialize>(msg: &M, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    if postcard::to_extend(msg, Appender(out)).is_err() {
        // postcard into memory fails only on serde features our messages do not use.
        out.truncate(start);
        return Err(FrameError::EncodeTooLarge);
    }
    let len = out
        .len()
        .saturating_sub(start)
        .saturating_sub(FRAME_HEADER_BYTES);
    let len32 = match u32::try_from(len) {
        Ok(n) if len <= MAX_FRAME_BYTES => n,
        _ => {
            out.truncate(start);
            return Err(FrameError::EncodeTooLarge);
        }
    };
    if let Some(header) = out.get_mut(start..start.saturating_add(FRAME_HEADER_BYTES)) {
        header.copy_from_slice(&len32.to_le_bytes());
    }
    Ok(())
}

/// Lets postcard append to a borrowed buffer (no allocation per frame).
struct Appender<'a>(&'a mut Vec<u8>);

impl Extend<u8> for Appender<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

/// Encodes `msg` as one frame into a new buffer.
///
/// # Errors
/// As [`encode_frame`].
pub fn to_frame<M: Serialize>(msg: &M) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::new();
    encode_frame(msg, &mut out)?;
    Ok(out)
}

/// Reads a frame header: `Ok(None)` if fewer than [`FRAME_HEADER_BYTES`] are available.
///
/// # Errors
/// [`FrameError::TooLarge`] when the announced length is over the limit.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(header) = buf.first_chunk::<FRAME_HEADER_BYTES>() else {
        return Ok(None);
    };
    let len = u32::from_le_bytes(*header);
    match usize::try_from(len) {
        Ok(len) if len <= MAX_FRAME_BYTES => Ok(Some(len)),
        _ => Err(FrameError::TooLarge {
            len_bytes: u64::from(len),
        }),
    }
}

/// Decodes one message payload (no header): exactly one value, no trailing bytes.
///
/// # Errors
/// [`FrameError::Malformed`] or [`FrameError::TrailingBytes`].
pub fn decode_payload<M: DeserializeOwned>(payload: &[u8]) -> Result<M, FrameError> {
    match postcard::take_from_bytes::<M>(payload) {
        Ok((msg, [])) => Ok(msg),
        Ok((_, rest)) => Err(FrameError::TrailingBytes {
            extra_bytes: rest.len(),
        }),
        Err(_) => Err(FrameError::Malformed),
    }
}

/// Decodes the first frame in `buf`. `Ok(None)`: incomplete, read more. `Ok(Some((msg, n)))`:
/// one message and the `n` bytes it used.
///
/// # Errors
/// [`FrameError`] for a frame that ends the connection.
pub fn decode_frame<M: DeserializeOwned>(buf: &[u8]) -> Result<Option<(M, usize)>, FrameError> {
    let Some(len) = frame_len(buf)? else {
        return Ok(None);
    };
    let end = FRAME_HEADER_BYTES.saturating_add(len);
    let Some(payload) = buf.get(FRAME_HEADER_BYTES..end) else {
        return Ok(None);
    };
    decode_payload(payload).map(|m| Some((m, end)))
}

/// Accumulates bytes from a stream and yields whole messages.
///
/// Never buffers more than one maximum frame plus one read: a header over the limit is refused
/// as soon as its four bytes arrive.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
}

impl FrameReader {
    /// An empty reader.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes read from the stream.
    ///
    /// # Errors
    /// [`FrameError::TooLarge`] as soon as a pending header is over the limit (nothing of the
    /// announced payload is buffered).
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
        let pending = self.buf.get(self.start..).unwrap_or_default();
        frame_len(pending).map(|_| ())
    }

    /// The next complete message, if any.
    ///
    /// # Errors
    /// [`FrameError`] for a frame that ends the connection.
    pub fn next_msg<M: DeserializeOwned>(&mut self) -> Result<Option<M>, FrameError> {
        let pending = self.buf.get(self.start..).unwrap_or_default();
        match decode_frame(pending)? {
            None => {
                // Compact so a long-lived reader does not grow without bound.
                if self.start > 0 {
                    self.buf.drain(..self.start);
                    self.start = 0;
                }
                Ok(None)
            }
            Some((msg, used)) => {
                self.start = self.start.saturating_add(used);
                Ok(Some(msg))
            }
        }
    }

    /// The next complete frame's payload (header stripped), if any, without decoding it.
    ///
    /// # Errors
    /// [`FrameError::TooLarge`] for a header over the limit.
    pub fn next_payload(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let pending = self.buf.get(self.start..).unwrap_or_default();
        let Some(len) = frame_len(pending)? else {
            return Ok(None);
        };
        let end = FRAME_HEADER_BYTES.saturating_add(len);
        let Some(payload) = pending.get(FRAME_HEADER_BYTES..end) else {
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            return Ok(None);
        };
        let payload = payload.to_vec();
        self.start = self.start.saturating_add(end);
        Ok(Some(payload))
    }

    /// Bytes held that are not yet a whole message.
    #[must_use]
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len().saturating_sub(self.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ClientMsg, Ping};

    #[test]
    fn partial_frames_are_not_errors() {
        let frame = to_frame(&ClientMsg::Ping(Ping { nonce: 300 })).unwrap();
        for cut in 0..frame.len() {
            assert_eq!(
                decode_frame::<ClientMsg>(&frame[..cut]),
                Ok(None),
                "cut at {cut}"
            );
        }
        let (msg, used) = decode_frame::<ClientMsg>(&frame).unwrap().unwrap();
        assert_eq!(msg, ClientMsg::Ping(Ping { nonce: 300 }));
        assert_eq!(used, frame.len());
    }

    #[test]
    fn oversized_header_is_refused_from_four_bytes() {
        let header = u32::try_from(MAX_FRAME_BYTES + 1).unwrap().to_le_bytes();
        assert_eq!(
            decode_frame::<ClientMsg>(&header),
            Err(FrameError::TooLarge {
                len_bytes: MAX_FRAME_BYTES as u64 + 1
            })
        );
        let mut r = FrameReader::new();
        assert!(matches!(r.push(&header), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut payload = postcard::to_allocvec(&ClientMsg::Ping(Ping { nonce: 1 })).unwrap();
        payload.push(0);
        let mut frame = u32::try_from(payload.len()).unwrap().to_le_bytes().to_vec();
        frame.extend_from_slice(&payload);
        assert_eq!(
            decode_frame::<ClientMsg>(&frame),
            Err(FrameError::TrailingBytes { extra_bytes: 1 })
        );
    }

    #[test]
    fn reader_reassembles_byte_by_byte() {
        let mut stream = Vec::new();
        for n in 0..5 {
            encode_frame(&ClientMsg::Ping(Ping { nonce: n }), &mut stream).unwrap();
        }
        let mut r = FrameReader::new();
        let mut got = Vec::new();
        for b in &stream {
            r.push(core::slice::from_ref(b)).unwrap();
            while let Some(m) = r.next_msg::<ClientMsg>().unwrap() {
                got.push(m);
            }
        }
        let want: Vec<ClientMsg> = (0..5).map(|n| ClientMsg::Ping(Ping { nonce: n })).collect();
        assert_eq!(got, want);
        assert_eq!(r.buffered_bytes(), 0);
    }

    #[test]
    fn too_large_messages_are_not_encoded() {
        let big = crate::wire::Close {
            reason: crate::wire::CloseReason::Leaving,
            message: "x".repeat(MAX_FRAME_BYTES + 1),
        };
        let mut out = vec![1, 2, 3];
        assert_eq!(
            encode_frame(&ClientMsg::Close(big), &mut out),
            Err(FrameError::EncodeTooLarge)
        );
        assert_eq!(out, vec![1, 2, 3], "output left as it was");
    }
}
