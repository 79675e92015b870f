//! The server's side of `meshwork_protocol::packed`: for every client that reads packs, what it
//! is owed on the unreliable lane until the tick ends, and the compression of it with the
//! client's dictionary. zstd is deterministic for one input, level and dictionary, so the
//! session's outputs stay a function of its inputs.

use std::collections::BTreeMap;
use std::sync::Arc;

use meshwork_protocol::packed::{
    self, MAX_PACK_INPUT, PRESENCE_V1, PRESENCE_V1_DICTIONARY, Packed, RAW,
};
use zstd::bulk::Compressor;
use zstd::zstd_safe::CParameter;

use crate::session::ClientId;

/// zstd's level for packs: on a few hundred bytes with a dictionary, level 3 gets within a few
/// percent of level 9 at a fraction of the time.
const LEVEL: i32 = 3;

/// What an update on the unreliable lane carries, for replacing an earlier one of the same
/// author still waiting in a pack (its receiver would apply only the later: latest wins). Two
/// updates supersede one another when they carry the same parts: the same message kind, the
/// author's figure or not, the same dragged entities, and no drag ending (an end always goes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Supersedes {
    pub author: meshwork_protocol::AuthorId,
    pub parts: Parts,
}

/// The parts an update carries (see [`Supersedes`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Parts {
    pub kind: Kind,
    /// Whether it carries the author's figure.
    pub figure: bool,
    /// The entities it drags.
    pub moving: Vec<meshwork_protocol::EntityId>,
}

/// The message an update came as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Presence,
    Preview,
    Motion,
}

/// One gathered message: the relayed frame (header included) and what it supersedes.
struct Item {
    key: Option<Supersedes>,
    frame: Arc<[u8]>,
}

impl Item {
    fn payload(&self) -> &[u8] {
        self.frame
            .get(meshwork_protocol::codec::FRAME_HEADER_BYTES..)
            .unwrap_or_default()
    }

    /// Bytes it takes in a pack: the payload behind its varint length (at most 3 bytes for
    /// anything a pack takes).
    fn packed_len(&self) -> usize {
        self.payload().len().saturating_add(3)
    }
}

/// Per client: its dictionary and the messages gathered, in order.
struct Pending {
    dictionary: u32,
    items: Vec<Item>,
}

impl Pending {
    /// A bound on the pack's uncompressed size.
    fn bytes(&self) -> usize {
        self.items.iter().map(Item::packed_len).sum()
    }
}

/// What each packing client is owed, and the compressor.
pub(crate) struct Packs {
    compressor: Option<Compressor<'static>>,
    pending: BTreeMap<ClientId, Pending>,
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

    /// Gathers one relayed `frame` for `client`, due `delay_ms` after the first message of the
    /// tick. An earlier message of the tick that this one supersedes (`key`) is dropped, and
    /// this one goes at the end, after everything its author sent meanwhile (a receiver takes
    /// an author's updates in order). A pack that would grow past [`MAX_PACK_INPUT`] is
    /// returned to go now, and this message starts the next.
    pub(crate) fn add(
        &mut self,
        client: ClientId,
        dictionary: u32,
        frame: &Arc<[u8]>,
        key: Option<Supersedes>,
        now_ms: u64,
        delay_ms: u64,
    ) -> Option<Ready> {
        let item = Item {
            key,
            frame: frame.clone(),
        };
        if let (Some(key), Some(pending)) = (&item.key, self.pending.get_mut(&client))
            && let Some(at) = pending
                .items
                .iter()
                .position(|i| i.key.as_ref() == Some(key))
        {
            pending.items.remove(at);
        }
        let full = self.pending.get(&client).is_some_and(|p| {
            !p.items.is_empty() && p.bytes().saturating_add(item.packed_len()) > MAX_PACK_INPUT
        });
        let out = if full { self.take(client) } else { None };
        let pending = self.pending.entry(client).or_insert_with(|| Pending {
            dictionary,
            items: Vec::new(),
        });
        pending.items.push(item);
        self.due.get_or_insert(now_ms.saturating_add(delay_ms));
        out
    }

    /// The client's gathered messages as a pack, if it has any.
    fn take(&mut self, client: ClientId) -> Option<Ready> {
        let pending = self.pending.remove(&client)?;
        Some(self.pack(client, &pending))
    }

    /// Every gathered pack (the tick is over).
    pub(crate) fn take_all(&mut self) -> Vec<Ready> {
        self.due = None;
        let pending = std::mem::take(&mut self.pending);
        pending
            .into_iter()
            .map(|(client, p)| self.pack(client, &p))
            .collect()
    }

    /// Drops what a client that left was owed.
    pub(crate) fn forget(&mut self, client: ClientId) {
        self.pending.remove(&client);
    }

    /// Compresses when the client reads the dictionary and it makes the pack smaller.
    fn pack(&mut self, client: ClientId, pending: &Pending) -> Ready {
        let mut raw = Vec::with_capacity(pending.bytes());
        for item in &pending.items {
            packed::push_message(&mut raw, item.payload());
        }
        let raw = raw.as_slice();
        let compressed = match (pending.dictionary, self.compressor.as_mut()) {
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
