//! The server's side of `meshwork_protocol::packed`: for every client that reads packs, what it
//! is owed on the unreliable lane until the tick ends, and the compression of it with the
//! client's dictionary. zstd is deterministic for one input, level and dictionary, so the
//! session's outputs stay a function of its inputs.

use std::collections::BTreeMap;

use meshwork_protocol::packed::{
    self, MAX_PACK_INPUT, PRESENCE_V1, PRESENCE_V1_DICTIONARY, Packed, RAW,
};
use zstd::bulk::Compressor;
use zstd::zstd_safe::CParameter;

use crate::session::ClientId;

/// zstd's level for packs: on a few hundred bytes with a dictionary, level 3 gets within a few
/// percent of level 9 at a fraction of the time.
const LEVEL: i32 = 3;

/// What each packing client is owed, and the compressor.
pub(crate) struct Packs {
    compressor: Option<Compressor<'static>>,
    /// Per client: its dictionary and the messages gathered (each behind its length).
    pending: BTreeMap<ClientId, (u32, Vec<u8>)>,
    due: Option<u64>,
}

impl std::fmt::Debug for Packs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packs")
            .field("compresses", &self.compressor.is_some())
            .field("pending", &self.pending.len())
            .field("due", &self.due)
            .finish()
    }
}

/// One pack to send.
pub(crate) struct Ready {
    pub client: ClientId,
    pub pack: Packed,
    /// Bytes of the messages before compression.
    pub raw: usize,
}

impl Packs {
    pub(crate) fn new() -> Self {
        let compressor = Compressor::with_dictionary(LEVEL, PRESENCE_V1_DICTIONARY)
            .and_then(|mut c| {
                // The dictionary's number says which it is, and a datagram is checked already.
                c.set_parameter(CParameter::DictIdFlag(false))?;
                c.set_parameter(CParameter::ChecksumFlag(false))?;
                Ok(c)
            })
            .ok();
        Self {
            compressor,
            pending: BTreeMap::new(),
            due: None,
        }
    }

    /// The first of the client's dictionaries (best first) this server writes, if any.
    pub(crate) fn choose(&self, offered: &[u32]) -> Option<u32> {
        offered
            .iter()
            .copied()
            .find(|d| *d == RAW || (*d == PRESENCE_V1 && self.compressor.is_some()))
    }

    /// When the gathered packs are due.
    pub(crate) const fn due(&self) -> Option<u64> {
        self.due
    }

    /// Gathers one message (`payload`, its encoding) for `client`, due `delay_ms` after the
    /// first message of the tick. A pack that would grow past [`MAX_PACK_INPUT`] is returned
    /// to go now, and this message starts the next.
    pub(crate) fn add(
        &mut self,
        client: ClientId,
        dictionary: u32,
        payload: &[u8],
        now_ms: u64,
        delay_ms: u64,
    ) -> Option<Ready> {
        let full = self
            .pending
            .get(&client)
            .is_some_and(|(_, raw)| raw.len().saturating_add(payload.len()) > MAX_PACK_INPUT);
        let out = if full { self.take(client) } else { None };
        let (_, raw) = self
            .pending
            .entry(client)
            .or_insert_with(|| (dictionary, Vec::new()));
        packed::push_message(raw, payload);
        self.due.get_or_insert(now_ms.saturating_add(delay_ms));
        out
    }

    /// The client's gathered messages as a pack, if it has any.
    fn take(&mut self, client: ClientId) -> Option<Ready> {
        let (dictionary, raw) = self.pending.remove(&client)?;
        Some(self.pack(client, dictionary, &raw))
    }

    /// Every gathered pack (the tick is over).
    pub(crate) fn take_all(&mut self) -> Vec<Ready> {
        self.due = None;
        let pending = std::mem::take(&mut self.pending);
        pending
            .into_iter()
            .map(|(client, (dictionary, raw))| self.pack(client, dictionary, &raw))
            .collect()
    }

    /// Drops what a client that left was owed.
    pub(crate) fn forget(&mut self, client: ClientId) {
        self.pending.remove(&client);
    }

    /// Compresses when the client reads the dictionary and it makes the pack smaller.
    fn pack(&mut self, client: ClientId, dictionary: u32, raw: &[u8]) -> Ready {
        let compressed = match (dictionary, self.compressor.as_mut()) {
            (PRESENCE_V1, Some(c)) => c.compress(raw).ok().filter(|z| z.len() < raw.len()),
            _ => None,
        };
        let pack = match compressed {
            Some(bytes) => Packed {
                dictionary: PRESENCE_V1,
                bytes,
            },
            None => Packed {
                dictionary: RAW,
                bytes: raw.to_vec(),
            },
        };
        Ready {
            client,
            pack,
            raw: raw.len(),
        }
    }
}
