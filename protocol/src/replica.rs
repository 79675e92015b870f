//! The client replica, sans-IO: a [`Scene`] kept in step with the server from a chunked
//! snapshot and then the live log entries, with a self-check against the server's state hash.
//!
//! Feed it the server messages that concern state ([`Replica::on_message`]); it says when it
//! needs a resync (a chunk that does not match its manifest, an entry it cannot read, a state
//! hash that differs at the same position, or a hash from a position it has not reached after
//! the entries that should have brought it there). The browser uses it through wasm.

use alloc::vec::Vec;

use sha2::{Digest, Sha256};

use crate::scene::Scene;
use crate::sign::SignedEntry;
use crate::wire::{SNAPSHOT_CHUNK_BYTES, ServerMsg, SnapshotChunk, SnapshotManifest};

/// Splits a scene into a manifest and chunks of at most [`SNAPSHOT_CHUNK_BYTES`].
#[must_use]
pub fn snapshot(scene: &Scene) -> (SnapshotManifest, Vec<SnapshotChunk>) {
    let bytes = scene.encode();
    let mut chunks = Vec::new();
    let mut hashes = Vec::new();
    for (i, part) in bytes.chunks(SNAPSHOT_CHUNK_BYTES).enumerate() {
        hashes.push(Sha256::digest(part).into());
        chunks.push(SnapshotChunk {
            index: u32::try_from(i).unwrap_or(u32::MAX),
            bytes: part.to_vec(),
        });
    }
    let manifest = SnapshotManifest {
        position: scene.position,
        lamport: scene.lamport,
        total_bytes: bytes.len() as u64,
        state_hash: Sha256::digest(&bytes).into(),
        chunk_hashes: hashes,
    };
    (manifest, chunks)
}

/// What a message did to the replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicaEvent {
    /// Nothing to report.
    None,
    /// A snapshot finished loading; the replica is in step.
    Synced,
    /// The replica cannot be trusted any more: send `ClientMsg::Resync`.
    NeedsResync,
    /// A state hash matched at the replica's position.
    Verified,
}

#[derive(Debug)]
enum Update {
    Entries(Vec<SignedEntry>),
    Delta(crate::scene::SceneDelta),
}

#[derive(Debug)]
struct Assembly {
    manifest: SnapshotManifest,
    chunks: Vec<Option<Vec<u8>>>,
    /// Live updates that arrived after the manifest, applied once the snapshot is in.
    buffered: Vec<Update>,
}

/// A client's copy of the scene.
#[derive(Debug, Default)]
pub struct Replica {
    scene: Scene,
    assembling: Option<Assembly>,
    synced: bool,
}

impl Replica {
    /// An empty replica, waiting for its first snapshot.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The scene as replicated so far.
    #[must_use]
    pub const fn scene(&self) -> &Scene {
        &self.scene
    }

    /// Whether a snapshot has been loaded and no resync is pending.
    #[must_use]
    pub const fn is_synced(&self) -> bool {
        self.synced
    }

    /// Handles one server message; messages that do not concern state are ignored.
    pub fn on_message(&mut self, msg: &ServerMsg) -> ReplicaEvent {
        match msg {
            ServerMsg::Snapshot(m) => {
                self.synced = false;
                self.assembling = Some(Assembly {
                    manifest: m.clone(),
                    chunks: alloc::vec![None; m.chunk_hashes.len()],
                    buffered: Vec::new(),
                });
                if m.chunk_hashes.is_empty() {
                    self.finish()
                } else {
                    ReplicaEvent::None
                }
            }
            ServerMsg::SnapshotChunk(c) => self.on_chunk(c),
            ServerMsg::Entries(e) => self.on_update(Update::Entries(e.entries.clone())),
            ServerMsg::Delta(d) => match postcard::from_bytes::<crate::scene::SceneDelta>(&d.bytes)
            {
                Ok(delta) => self.on_update(Update::Delta(delta)),
                Err(_) => self.fail(),
            },
            ServerMsg::StateHash(h) => {
                if let Some(a) = &self.assembling {
                    // The server sends every chunk right after the manifest, before any later
                    // hash: a hash at or past the snapshot while it is incomplete means chunks
                    // were lost (at worst a hash already on its way causes one extra resync).
                    return if h.position >= a.manifest.position {
                        self.fail()
                    } else {
                        ReplicaEvent::None
                    };
                }
                if !self.synced {
                    // Waiting for a snapshot that a later hash overtook: it was lost. Ask again.
                    return ReplicaEvent::NeedsResync;
                }
                // The hash follows, on the same ordered lane, exactly the entries that reach its
                // position: being behind means entries were lost, being ahead that some were
                // applied twice, a different hash at the same position that one was damaged.
                if h.position == self.scene.position && h.state_hash == self.scene.state_hash() {
                    ReplicaEvent::Verified
                } else {
                    self.fail()
                }
            }
            _ => ReplicaEvent::None,
        }
    }

    fn fail(&mut self) -> ReplicaEvent {
        self.synced = false;
        self.assembling = None;
        ReplicaEvent::NeedsResync
    }

    fn on_chunk(&mut self, c: &SnapshotChunk) -> ReplicaEvent {
        let Some(a) = &mut self.assembling else {
            return ReplicaEvent::None;
        };
        let i = c.index as usize;
        let ok = a
            .manifest
            .chunk_hashes
            .get(i)
            .is_some_and(|h| *h == <[u8; 32]>::from(Sha256::digest(&c.bytes)))
            && c.bytes.len() <= SNAPSHOT_CHUNK_BYTES;
        if !ok {
            return self.fail();
        }
        if let Some(slot) = a.chunks.get_mut(i) {
            *slot = Some(c.bytes.clone());
        }
        if a.chunks.iter().all(Option::is_some) {
            self.finish()
        } else {
            ReplicaEvent::None
        }
    }

    fn finish(&mut self) -> ReplicaEvent {
        let Some(a) = self.assembling.take() else {
            return ReplicaEvent::None;
        };
        let mut bytes = Vec::with_capacity(usize::try_from(a.manifest.total_bytes).unwrap_or(0));
        for c in a.chunks.into_iter().flatten() {
            bytes.extend_from_slice(&c);
        }
        if <[u8; 32]>::from(Sha256::digest(&bytes)) != a.manifest.state_hash {
            return self.fail();
        }
        let Ok(scene) = Scene::decode(&bytes) else {
            return self.fail();
        };
        if scene.position != a.manifest.position {
            return self.fail();
        }
        self.scene = scene;
        self.synced = true;
        for update in a.buffered {
            if self.apply(update) == ReplicaEvent::NeedsResync {
                return ReplicaEvent::NeedsResync;
            }
        }
        ReplicaEvent::Synced
    }

    fn on_update(&mut self, update: Update) -> ReplicaEvent {
        if let Some(a) = &mut self.assembling {
            a.buffered.push(update);
            return ReplicaEvent::None;
        }
        if !self.synced {
            return ReplicaEvent::None;
        }
        self.apply(update)
    }

    fn apply(&mut self, update: Update) -> ReplicaEvent {
        match update {
            Update::Entries(entries) => {
                for e in &entries {
                    // The server checked every entry it sends; one that does not decode means
                    // the stream was damaged, so the replica cannot continue from it.
                    let Ok(body) = e.decode_body() else {
                        return self.fail();
                    };
                    self.scene.apply(body.id(), body.author, &body.command);
                }
                ReplicaEvent::None
            }
            Update::Delta(d) => {
                if self.scene.apply_delta(&d).is_err() {
                    return self.fail();
                }
                ReplicaEvent::None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Primitive, Transform};
    use crate::ids::{AuthorId, CommandId, EntityId};
    use crate::wire::StateHash;

    fn big_scene(n: u32) -> Scene {
        let mut s = Scene::new();
        for i in 0..n {
            let entity = EntityId::new(AuthorId(1), i);
            let cmd = Command::Spawn {
                entity,
                primitive: Primitive::Sphere,
                transform: Transform::IDENTITY,
            };
            s.apply(
                CommandId {
                    lamport: u64::from(i) + 1,
                    author: AuthorId(1),
                },
                AuthorId(1),
                &cmd,
            );
        }
        s
    }

    fn feed(r: &mut Replica, scene: &Scene) -> ReplicaEvent {
        let (m, chunks) = snapshot(scene);
        let mut last = r.on_message(&ServerMsg::Snapshot(m));
        for c in chunks {
            last = r.on_message(&ServerMsg::SnapshotChunk(c));
        }
        last
    }

    #[test]
    fn a_chunked_snapshot_rebuilds_the_scene() {
        let scene = big_scene(2000);
        let (m, chunks) = snapshot(&scene);
        assert!(chunks.len() > 1, "big enough to need several chunks");
        assert!(chunks.iter().all(|c| c.bytes.len() <= SNAPSHOT_CHUNK_BYTES));
        assert_eq!(m.state_hash, scene.state_hash());
        let mut r = Replica::new();
        assert_eq!(feed(&mut r, &scene), ReplicaEvent::Synced);
        assert_eq!(r.scene(), &scene);
        let hash = ServerMsg::StateHash(StateHash {
            position: scene.position,
            state_hash: scene.state_hash(),
        });
        assert_eq!(r.on_message(&hash), ReplicaEvent::Verified);
    }

    #[test]
    fn a_damaged_chunk_or_a_gap_asks_for_a_resync() {
        let scene = big_scene(2000);
        let (m, mut chunks) = snapshot(&scene);
        chunks[1].bytes[10] ^= 1;
        let mut r = Replica::new();
        r.on_message(&ServerMsg::Snapshot(m));
        let events: Vec<_> = chunks
            .iter()
            .map(|c| r.on_message(&ServerMsg::SnapshotChunk(c.clone())))
            .collect();
        assert!(events.contains(&ReplicaEvent::NeedsResync));
        assert!(!r.is_synced());
        // In step, then the server is ahead: entries were lost.
        let mut r = Replica::new();
        feed(&mut r, &scene);
        let ahead = ServerMsg::StateHash(StateHash {
            position: scene.position + 1,
            state_hash: [0; 32],
        });
        assert_eq!(r.on_message(&ahead), ReplicaEvent::NeedsResync);
        // Same position, different state.
        let mut r = Replica::new();
        feed(&mut r, &scene);
        let wrong = ServerMsg::StateHash(StateHash {
            position: scene.position,
            state_hash: [1; 32],
        });
        assert_eq!(r.on_message(&wrong), ReplicaEvent::NeedsResync);
    }
}
