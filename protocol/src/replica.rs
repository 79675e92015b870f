//! The client replica, sans-IO: a [`Scene`] kept in step with the server from a chunked
//! snapshot and then the live log entries, with a self-check against the server's state hash.
//!
//! Feed it the server messages that concern state ([`Replica::on_message`]); it says when it
//! needs a resync, and why ([`ResyncReason`]): a chunk that does not match its manifest, an
//! entry it cannot read, a state hash that differs at the same position, or a hash from a
//! position it has not reached after the entries that should have brought it there.
//!
//! Every replica is a verifier. It keeps the session's roster ([`ServerMsg::Roster`]: each
//! author's key) and checks the signature of every entry before applying it, in batches; an
//! entry whose signature does not verify, or whose author or key the roster does not hold, is
//! never applied. Scene deltas, which replace entries, must carry the server's seal
//! ([`crate::wire::SealedDelta`]) over their bytes and the state hash they lead to: the seal
//! is checked before the delta is applied and the hash after. An unsealed delta is refused.
//! The browser uses it through wasm.

use alloc::vec::Vec;

use ruzstd::decoding::FrameDecoder;
use sha2::{Digest, Sha256};

use crate::ids::SessionId;
use crate::scene::Scene;
use crate::sign::{KeyRing, PublicKey, SignatureError, SignedEntry, Verifier, verify_one};
use crate::wire::{
    DeltaSeal, MAX_SNAPSHOT_RATIO, MAX_SNAPSHOT_SCENE_BYTES, MAX_SNAPSHOT_WINDOW, Roster,
    SNAPSHOT_CHUNK_BYTES, SealedDelta, ServerMsg, SnapshotChunk, SnapshotEncoding,
    SnapshotManifest,
};

/// Splits a scene into a manifest and chunks of at most [`SNAPSHOT_CHUNK_BYTES`], the scene's
/// encoding as it is ([`SnapshotEncoding::Raw`]).
#[must_use]
pub fn snapshot(scene: &Scene) -> (SnapshotManifest, Vec<SnapshotChunk>) {
    let bytes = scene.encode();
    let state_hash = Sha256::digest(&bytes).into();
    chunked(scene, state_hash, bytes, SnapshotEncoding::Raw)
}

/// As [`snapshot`], compressed by `compress` (a zstd frame of the scene's encoding, without a
/// dictionary: the server passes the zstd library) when that is smaller and within what every
/// replica accepts ([`MAX_SNAPSHOT_SCENE_BYTES`], [`MAX_SNAPSHOT_RATIO`]); raw otherwise, so a
/// scene that compresses too well is never one that no client can join.
#[must_use]
pub fn snapshot_compressed(
    scene: &Scene,
    compress: &dyn Fn(&[u8]) -> Option<Vec<u8>>,
) -> (SnapshotManifest, Vec<SnapshotChunk>) {
    let bytes = scene.encode();
    let state_hash = Sha256::digest(&bytes).into();
    let acceptable = |packed: &[u8]| {
        packed.len() < bytes.len()
            && (bytes.len() as u64) <= MAX_SNAPSHOT_SCENE_BYTES
            && (bytes.len() as u64) <= (packed.len() as u64).saturating_mul(MAX_SNAPSHOT_RATIO)
    };
    match compress(&bytes) {
        Some(packed) if acceptable(&packed) => {
            let encoding = SnapshotEncoding::Zstd {
                scene_bytes: bytes.len() as u64,
            };
            chunked(scene, state_hash, packed, encoding)
        }
        _ => chunked(scene, state_hash, bytes, SnapshotEncoding::Raw),
    }
}

fn chunked(
    scene: &Scene,
    state_hash: [u8; 32],
    sent: Vec<u8>,
    encoding: SnapshotEncoding,
) -> (SnapshotManifest, Vec<SnapshotChunk>) {
    let mut chunks = Vec::new();
    let mut hashes = Vec::new();
    for (i, part) in sent.chunks(SNAPSHOT_CHUNK_BYTES).enumerate() {
        hashes.push(Sha256::digest(part).into());
        chunks.push(SnapshotChunk {
            index: u32::try_from(i).unwrap_or(u32::MAX),
            bytes: part.to_vec(),
        });
    }
    let manifest = SnapshotManifest {
        position: scene.position,
        lamport: scene.lamport,
        total_bytes: sent.len() as u64,
        state_hash,
        chunk_hashes: hashes,
        encoding,
    };
    (manifest, chunks)
}

/// The scene encoding a zstd snapshot of `sent` bytes inflates to, if it is exactly
/// `scene_bytes` long and within the bounds ([`MAX_SNAPSHOT_SCENE_BYTES`],
/// [`MAX_SNAPSHOT_RATIO`], [`MAX_SNAPSHOT_WINDOW`]). Holds at most what has inflated so far (never
/// past the claim) and the decoder's window: nothing is reserved on the claim's word.
fn inflate(sent: &[u8], scene_bytes: u64) -> Option<Vec<u8>> {
    let ratio_bound = (sent.len() as u64).saturating_mul(MAX_SNAPSHOT_RATIO);
    if scene_bytes > MAX_SNAPSHOT_SCENE_BYTES || scene_bytes > ratio_bound {
        return None;
    }
    let want = usize::try_from(scene_bytes).ok()?;
    let mut decoder = FrameDecoder::new();
    // The window never needs to be larger than the scene itself, nor than a level-1 frame's.
    decoder.set_max_window_size(scene_bytes.clamp(1 << 10, MAX_SNAPSHOT_WINDOW));
    let mut input = sent;
    decoder.reset(&mut input).ok()?;
    let declared = decoder.content_size();
    if declared != 0 && declared != scene_bytes {
        return None;
    }
    let out = crate::packed::inflate_frame(&mut decoder, input, want).ok()?;
    (out.len() == want).then_some(out)
}

/// Why a replica stopped trusting its state and asks for a resync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResyncReason {
    /// A snapshot chunk or the assembled snapshot does not match its manifest.
    BadSnapshot,
    /// An entry or a delta does not decode, or a delta does not apply where the replica is.
    Undecodable,
    /// An entry's signature does not verify against its author's key.
    ForgedEntry,
    /// An entry names an author the roster does not hold, or a key that is not theirs.
    UnknownAuthor,
    /// An entry of another session.
    WrongSession,
    /// A scene delta without the server's seal.
    UnsignedDelta,
    /// A sealed delta whose seal does not verify (or no trusted server key to check it).
    BadSeal,
    /// The state differs from the server's at the same position.
    HashMismatch,
    /// The server is at a position the replica has not reached, or behind it: updates were
    /// lost or applied twice (or a snapshot was lost).
    OutOfStep,
}

impl ResyncReason {
    /// snake_case, for metrics and logs.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadSnapshot => "bad_snapshot",
            Self::Undecodable => "undecodable",
            Self::ForgedEntry => "forged_entry",
            Self::UnknownAuthor => "unknown_author",
            Self::WrongSession => "wrong_session",
            Self::UnsignedDelta => "unsigned_delta",
            Self::BadSeal => "bad_seal",
            Self::HashMismatch => "hash_mismatch",
            Self::OutOfStep => "out_of_step",
        }
    }
}

/// What a message did to the replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicaEvent {
    /// Nothing to report.
    None,
    /// A snapshot finished loading; the replica is in step.
    Synced,
    /// The replica cannot be trusted any more: send `ClientMsg::Resync`.
    NeedsResync(ResyncReason),
    /// A state hash matched at the replica's position.
    Verified,
}

impl ReplicaEvent {
    /// Whether this asks for a resync.
    #[must_use]
    pub const fn needs_resync(self) -> bool {
        matches!(self, Self::NeedsResync(_))
    }
}

#[derive(Debug)]
enum Update {
    Entries(Vec<SignedEntry>),
    Delta(SealedDelta),
    Held(crate::wire::Held),
}

#[derive(Debug)]
struct Assembly {
    manifest: SnapshotManifest,
    chunks: Vec<Option<Vec<u8>>>,
    /// Live updates that arrived after the manifest, applied once the snapshot is in.
    buffered: Vec<Update>,
}

/// Who may write to the scene, as the roster says.
#[derive(Debug, Default)]
struct Trust {
    session: Option<SessionId>,
    server_key: Option<PublicKey>,
    ring: KeyRing,
    /// Members, in author order, as received (for the application's people list).
    members: alloc::collections::BTreeMap<crate::ids::AuthorId, crate::wire::Member>,
}

/// A client's copy of the scene.
#[derive(Debug, Default)]
pub struct Replica {
    scene: Scene,
    assembling: Option<Assembly>,
    synced: bool,
    trust: Trust,
    /// Entries whose signature verified (for benchmarks and diagnostics).
    verified_entries: u64,
    /// Why the last resync was asked for.
    last_resync: Option<ResyncReason>,
}

impl Replica {
    /// An empty replica, waiting for its roster and first snapshot.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A replica in step with `scene` (kept by the application across a restart): the roster
    /// comes with the catch-up, before anything applies.
    #[must_use]
    pub fn restored(scene: Scene) -> Self {
        Self {
            scene,
            synced: true,
            ..Self::default()
        }
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

    /// The session's members as the roster says, in author order.
    pub fn members(&self) -> impl Iterator<Item = &crate::wire::Member> {
        self.trust.members.values()
    }

    /// The key that seals deltas, once a roster came.
    #[must_use]
    pub const fn server_key(&self) -> Option<&PublicKey> {
        self.trust.server_key.as_ref()
    }

    /// Entries whose signatures this replica verified.
    #[must_use]
    pub const fn verified_entries(&self) -> u64 {
        self.verified_entries
    }

    /// Why the last resync was asked for, if one was.
    #[must_use]
    pub const fn last_resync(&self) -> Option<ResyncReason> {
        self.last_resync
    }

    /// Handles one server message; messages that do not concern state are ignored.
    pub fn on_message(&mut self, msg: &ServerMsg) -> ReplicaEvent {
        match msg {
            ServerMsg::Roster(r) => {
                self.on_roster(r);
                ReplicaEvent::None
            }
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
            ServerMsg::SealedDelta(d) => self.on_update(Update::Delta(d.clone())),
            ServerMsg::Held(h) => self.on_update(Update::Held(h.clone())),
            // Anyone on the path could have written it: a replica applies only sealed deltas.
            ServerMsg::Delta(_) => self.fail(ResyncReason::UnsignedDelta),
            ServerMsg::StateHash(h) => {
                if let Some(a) = &self.assembling {
                    // The server sends every chunk right after the manifest, before any later
                    // hash: a hash at or past the snapshot while it is incomplete means chunks
                    // were lost (at worst a hash already on its way causes one extra resync).
                    return if h.position >= a.manifest.position {
                        self.fail(ResyncReason::OutOfStep)
                    } else {
                        ReplicaEvent::None
                    };
                }
                if !self.synced {
                    // Waiting for a snapshot that a later hash overtook: it was lost. Ask again.
                    self.last_resync = Some(ResyncReason::OutOfStep);
                    return ReplicaEvent::NeedsResync(ResyncReason::OutOfStep);
                }
                // The hash follows, on the same ordered lane, exactly the entries that reach its
                // position: being behind means entries were lost, being ahead that some were
                // applied twice, a different hash at the same position that one was damaged.
                if h.position != self.scene.position {
                    self.fail(ResyncReason::OutOfStep)
                } else if h.state_hash == self.scene.state_hash() {
                    ReplicaEvent::Verified
                } else {
                    self.fail(ResyncReason::HashMismatch)
                }
            }
            _ => ReplicaEvent::None,
        }
    }

    fn on_roster(&mut self, r: &Roster) {
        let t = &mut self.trust;
        if r.replace {
            *t = Trust::default();
        }
        t.session = Some(r.session);
        t.server_key = Some(r.server_key);
        for m in &r.members {
            // A weak or malformed key is left out: its entries are refused as unknown.
            if t.ring.register(m.author, m.public_key, m.role).is_ok() {
                t.members.insert(m.author, *m);
            }
        }
    }

    fn fail(&mut self, reason: ResyncReason) -> ReplicaEvent {
        self.synced = false;
        self.assembling = None;
        self.last_resync = Some(reason);
        ReplicaEvent::NeedsResync(reason)
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
            return self.fail(ResyncReason::BadSnapshot);
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
        // The manifest's size is the server's claim: checked against what arrived, never
        // allocated on its word (a hostile one announced hundreds of GB; the fuzzer found it).
        let total: usize = a.chunks.iter().flatten().map(|c| c.len()).sum();
        if u64::try_from(total).ok() != Some(a.manifest.total_bytes) {
            return self.fail(ResyncReason::BadSnapshot);
        }
        let mut sent = Vec::with_capacity(total);
        for c in a.chunks.into_iter().flatten() {
            sent.extend_from_slice(&c);
        }
        let bytes = match a.manifest.encoding {
            SnapshotEncoding::Raw => sent,
            SnapshotEncoding::Zstd { scene_bytes } => match inflate(&sent, scene_bytes) {
                Some(bytes) => bytes,
                None => return self.fail(ResyncReason::BadSnapshot),
            },
        };
        if <[u8; 32]>::from(Sha256::digest(&bytes)) != a.manifest.state_hash {
            return self.fail(ResyncReason::BadSnapshot);
        }
        let Ok(scene) = Scene::decode(&bytes) else {
            return self.fail(ResyncReason::BadSnapshot);
        };
        if scene.position != a.manifest.position {
            return self.fail(ResyncReason::BadSnapshot);
        }
        self.scene = scene;
        self.synced = true;
        for update in a.buffered {
            let event = self.apply(update);
            if event.needs_resync() {
                return event;
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

    /// Checks every entry's session and signature, in one batch; the first failure's reason.
    fn verify(&self, entries: &[SignedEntry]) -> Result<Vec<crate::sign::EntryBody>, ResyncReason> {
        let mut bodies = Vec::with_capacity(entries.len());
        for e in entries {
            // The server checked every entry it sends; one that does not decode means the
            // stream was damaged, so the replica cannot continue from it.
            let body = e.decode_body().map_err(|_| ResyncReason::Undecodable)?;
            if !body.version_accepted() {
                return Err(ResyncReason::Undecodable);
            }
            // A self-describing entry carries its session; a bound one's signature binds it.
            if body.session.is_some_and(|s| Some(s) != self.trust.session) {
                return Err(ResyncReason::WrongSession);
            }
            bodies.push(body);
        }
        let session = self.trust.session.ok_or(ResyncReason::WrongSession)?;
        let items: Vec<_> = entries
            .iter()
            .zip(&bodies)
            .map(|(e, b)| e.signed_item(b, session))
            .collect();
        for result in self.trust.ring.verify_batch(&items) {
            match result {
                Ok(()) => {}
                Err(SignatureError::Invalid(_)) => return Err(ResyncReason::ForgedEntry),
                Err(_) => return Err(ResyncReason::UnknownAuthor),
            }
        }
        Ok(bodies)
    }

    /// Checks a delta's seal; the decoded delta.
    fn unseal(&self, d: &SealedDelta) -> Result<crate::scene::SceneDelta, ResyncReason> {
        let (Some(session), Some(key)) = (self.trust.session, self.trust.server_key) else {
            return Err(ResyncReason::BadSeal);
        };
        let delta = d.decode().ok_or(ResyncReason::Undecodable)?;
        let seal = DeltaSeal {
            domain: crate::sign::Domain::Delta,
            session,
            position: delta.to_position,
            state_hash: d.state_hash,
            delta_sha256: Sha256::digest(&d.bytes).into(),
        };
        let ok = crate::sign::verifying_key(&key)
            .is_ok_and(|k| verify_one(&k, &seal.encode(), &d.signature));
        if ok {
            Ok(delta)
        } else {
            Err(ResyncReason::BadSeal)
        }
    }

    fn apply(&mut self, update: Update) -> ReplicaEvent {
        match update {
            Update::Entries(entries) => {
                let bodies = match self.verify(&entries) {
                    Ok(b) => b,
                    Err(reason) => return self.fail(reason),
                };
                self.verified_entries = self.verified_entries.saturating_add(bodies.len() as u64);
                for body in &bodies {
                    self.scene.apply(body.id(), body.author, &body.command);
                }
                ReplicaEvent::None
            }
            Update::Delta(sealed) => {
                let delta = match self.unseal(&sealed) {
                    Ok(d) => d,
                    Err(reason) => return self.fail(reason),
                };
                if self.scene.apply_delta(&delta).is_err() {
                    return self.fail(ResyncReason::Undecodable);
                }
                if self.scene.state_hash() != sealed.state_hash {
                    return self.fail(ResyncReason::HashMismatch);
                }
                ReplicaEvent::None
            }
            Update::Held(held) => self.apply_held(&held),
        }
    }

    /// A partial replica's update ([`crate::wire::Held`]): the entries (each verified), then
    /// the sealed states; it then stands where the server said, however many entries it was
    /// sent.
    fn apply_held(&mut self, held: &crate::wire::Held) -> ReplicaEvent {
        if held.from_position != self.scene.position || held.to_position < held.from_position {
            return self.fail(ResyncReason::OutOfStep);
        }
        let delta = match &held.delta {
            None => None,
            Some(sealed) => match self.unseal(sealed) {
                Ok(d)
                    if d.from_position == held.from_position
                        && d.to_position == held.to_position
                        && d.lamport == held.lamport =>
                {
                    Some((d, sealed.state_hash))
                }
                Ok(_) => return self.fail(ResyncReason::OutOfStep),
                Err(reason) => return self.fail(reason),
            },
        };
        let bodies = match self.verify(&held.entries) {
            Ok(b) => b,
            Err(reason) => return self.fail(reason),
        };
        self.verified_entries = self.verified_entries.saturating_add(bodies.len() as u64);
        for body in &bodies {
            self.scene.apply(body.id(), body.author, &body.command);
        }
        // The entries counted one position each; the server's position counts every entry.
        self.scene.position = held.from_position;
        match delta {
            Some((delta, state_hash)) => {
                if self.scene.apply_delta(&delta).is_err() {
                    return self.fail(ResyncReason::Undecodable);
                }
                if self.scene.state_hash() != state_hash {
                    return self.fail(ResyncReason::HashMismatch);
                }
            }
            None => {
                self.scene.position = held.to_position;
                self.scene.lamport = held.lamport;
            }
        }
        ReplicaEvent::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Primitive, Transform};
    use crate::ids::{AuthorId, CommandId, EntityId, SessionId};
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

    fn zstd(raw: &[u8]) -> Option<Vec<u8>> {
        zstd::bulk::compress(raw, 1).ok()
    }

    fn feed_parts(
        r: &mut Replica,
        m: SnapshotManifest,
        chunks: Vec<SnapshotChunk>,
    ) -> Vec<ReplicaEvent> {
        let mut events = alloc::vec![r.on_message(&ServerMsg::Snapshot(m))];
        events.extend(
            chunks
                .into_iter()
                .map(|c| r.on_message(&ServerMsg::SnapshotChunk(c))),
        );
        events
    }

    #[test]
    fn a_compressed_snapshot_inflates_to_the_same_scene_in_fewer_bytes() {
        let scene = big_scene(2000);
        let (raw, _) = snapshot(&scene);
        let (m, chunks) = snapshot_compressed(&scene, &zstd);
        assert_eq!(
            m.encoding,
            SnapshotEncoding::Zstd {
                scene_bytes: raw.total_bytes
            }
        );
        assert!(
            m.total_bytes * 2 < raw.total_bytes,
            "{} of {}",
            m.total_bytes,
            raw.total_bytes
        );
        assert_eq!(
            m.state_hash, raw.state_hash,
            "the hash is the scene's, not the bytes sent"
        );
        let mut r = Replica::new();
        assert_eq!(
            feed_parts(&mut r, m, chunks).last(),
            Some(&ReplicaEvent::Synced)
        );
        assert_eq!(r.scene(), &scene);
        // What does not compress goes raw, and so does what compresses past what replicas
        // accept (they would refuse it, and every join and resync with it).
        let (m, _) = snapshot_compressed(&scene, &|raw| Some(raw.to_vec()));
        assert_eq!(m.encoding, SnapshotEncoding::Raw);
        let (m, _) = snapshot_compressed(&scene, &|raw| {
            Some(alloc::vec![0; raw.len() / usize::try_from(MAX_SNAPSHOT_RATIO).unwrap() - 1])
        });
        assert_eq!(m.encoding, SnapshotEncoding::Raw);
        let (m, _) = snapshot_compressed(&scene, &|_| None);
        assert_eq!(m.encoding, SnapshotEncoding::Raw);
    }

    /// A hostile server's compressed snapshot: a claim past the bounds is refused before
    /// anything is inflated, a claim that differs from what inflates is refused, and a bomb
    /// (far more inflated than sent) never gets past its claim.
    #[test]
    fn a_compressed_snapshot_that_lies_or_bombs_is_refused() {
        let scene = big_scene(50);
        let (raw, _) = snapshot(&scene);
        let SnapshotEncoding::Raw = raw.encoding else {
            unreachable!("snapshot() is raw")
        };
        let real = raw.total_bytes;
        for claim in [
            real - 1,
            real + 1,
            0,
            MAX_SNAPSHOT_SCENE_BYTES + 1,
            u64::MAX,
        ] {
            let (mut m, chunks) = snapshot_compressed(&scene, &zstd);
            m.encoding = SnapshotEncoding::Zstd { scene_bytes: claim };
            let mut r = Replica::new();
            let events = feed_parts(&mut r, m, chunks);
            assert_eq!(
                events.last(),
                Some(&ReplicaEvent::NeedsResync(ResyncReason::BadSnapshot)),
                "claim {claim} of {real}"
            );
            assert!(!r.is_synced());
        }
        // 64 MiB of zeros compress to a few KiB: past the ratio bound whatever it claims.
        let bomb = zstd(&alloc::vec![0u8; 64 << 20]).unwrap();
        assert!(
            (bomb.len() as u64) * MAX_SNAPSHOT_RATIO < 64 << 20,
            "{} B",
            bomb.len()
        );
        let hashes = bomb
            .chunks(SNAPSHOT_CHUNK_BYTES)
            .map(|c| Sha256::digest(c).into())
            .collect();
        let m = SnapshotManifest {
            position: 1,
            lamport: 1,
            total_bytes: bomb.len() as u64,
            state_hash: [0; 32],
            chunk_hashes: hashes,
            encoding: SnapshotEncoding::Zstd {
                scene_bytes: 64 << 20,
            },
        };
        let chunks = bomb
            .chunks(SNAPSHOT_CHUNK_BYTES)
            .enumerate()
            .map(|(i, c)| SnapshotChunk {
                index: u32::try_from(i).unwrap(),
                bytes: c.to_vec(),
            })
            .collect();
        let mut r = Replica::new();
        assert_eq!(
            feed_parts(&mut r, m, chunks).last(),
            Some(&ReplicaEvent::NeedsResync(ResyncReason::BadSnapshot))
        );
        // A frame asking for a window larger than the scene (or than a level-1 frame's) is
        // refused before the decoder reserves it. Magic, no content size, the window byte,
        // then one raw block of one byte ('A').
        let frame = |window: u8| [0x28, 0xb5, 0x2f, 0xfd, 0x00, window, 0x09, 0x00, 0x00, 0x41];
        assert_eq!(
            inflate(&frame(0x00), 1),
            Some(alloc::vec![0x41]),
            "a 1 KiB window"
        );
        assert_eq!(inflate(&frame(0x70), 1), None, "a 16 MiB window");
        // Within the ratio but claiming less than it inflates to: stopped at the claim.
        assert_eq!(inflate(&zstd(&[7u8; 4096]).unwrap(), 4000), None);
        assert_eq!(
            inflate(&zstd(&[7u8; 4096]).unwrap(), 4096).map(|v| v.len()),
            Some(4096)
        );
    }

    /// Found by the `replica` fuzz target: a manifest announcing more bytes than its chunks
    /// hold made the replica reserve that much memory (hundreds of GB: an abort).
    #[test]
    fn a_manifest_that_lies_about_its_size_is_refused_not_allocated() {
        let scene = big_scene(20);
        for claim in [u64::MAX, 557_629_216_042, 1] {
            let (mut m, chunks) = snapshot(&scene);
            m.total_bytes = claim;
            let mut r = Replica::new();
            r.on_message(&ServerMsg::Snapshot(m));
            let events: Vec<_> = chunks
                .into_iter()
                .map(|c| r.on_message(&ServerMsg::SnapshotChunk(c)))
                .collect();
            assert!(
                events.contains(&ReplicaEvent::NeedsResync(ResyncReason::BadSnapshot)),
                "{claim}: {events:?}"
            );
            assert!(!r.is_synced());
        }
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
        assert!(events.contains(&ReplicaEvent::NeedsResync(ResyncReason::BadSnapshot)));
        assert!(!r.is_synced());
        // In step, then the server is ahead: entries were lost.
        let mut r = Replica::new();
        feed(&mut r, &scene);
        let ahead = ServerMsg::StateHash(StateHash {
            position: scene.position + 1,
            state_hash: [0; 32],
        });
        assert_eq!(
            r.on_message(&ahead),
            ReplicaEvent::NeedsResync(ResyncReason::OutOfStep)
        );
        // Same position, different state.
        let mut r = Replica::new();
        feed(&mut r, &scene);
        let wrong = ServerMsg::StateHash(StateHash {
            position: scene.position,
            state_hash: [1; 32],
        });
        assert_eq!(
            r.on_message(&wrong),
            ReplicaEvent::NeedsResync(ResyncReason::HashMismatch)
        );
    }

    const SESSION: SessionId = SessionId([7; 16]);

    fn signer(seed: u8) -> crate::sign::Ed25519Signer {
        crate::sign::Ed25519Signer::from_seed([seed; 32])
    }

    fn roster(server: &crate::sign::Ed25519Signer, members: &[(u32, u8)]) -> ServerMsg {
        use crate::sign::Signer as _;
        ServerMsg::Roster(Roster {
            session: SESSION,
            server_key: server.public_key(),
            replace: true,
            members: members
                .iter()
                .map(|(a, seed)| crate::wire::Member {
                    author: AuthorId(*a),
                    public_key: signer(*seed).public_key(),
                    role: crate::registry::Role::Editor,
                })
                .collect(),
        })
    }

    fn entry(author: u32, seed: u8, seq: u64, session: SessionId) -> SignedEntry {
        entry_of_version(crate::PROTOCOL_VERSION, author, seed, seq, session)
    }

    fn entry_of_version(
        version: u16,
        author: u32,
        seed: u8,
        seq: u64,
        session: SessionId,
    ) -> SignedEntry {
        use crate::sign::Signer as _;
        let key = signer(seed);
        let mut body = crate::sign::EntryBody::new(
            session,
            AuthorId(author),
            key.public_key().key_id(),
            seq,
            seq,
            0,
            Command::Spawn {
                entity: EntityId::new(AuthorId(author), u32::try_from(seq).unwrap_or(0)),
                primitive: Primitive::Cube,
                transform: Transform::IDENTITY,
            },
        );
        body.version = version;
        SignedEntry::sign(&body, &key).expect("an Entry-domain body signs")
    }

    fn entries(e: Vec<SignedEntry>) -> ServerMsg {
        ServerMsg::Entries(crate::wire::Entries { entries: e })
    }

    /// A synced replica of an empty scene that knows author 1 (key seed 1).
    fn synced(server: &crate::sign::Ed25519Signer) -> Replica {
        let mut r = Replica::new();
        r.on_message(&roster(server, &[(1, 1)]));
        assert_eq!(feed(&mut r, &Scene::new()), ReplicaEvent::Synced);
        r
    }

    #[test]
    fn entries_are_applied_only_when_their_signatures_verify_against_the_roster() {
        let server = signer(9);
        let mut r = synced(&server);
        assert_eq!(
            r.on_message(&entries(vec![
                entry(1, 1, 1, SESSION),
                entry(1, 1, 2, SESSION)
            ])),
            ReplicaEvent::None
        );
        assert_eq!(r.scene().entities.len(), 2);
        assert_eq!(r.verified_entries(), 2);

        // Forged: author 1's entry signed with another key that names author 1's key id.
        let mut forged = entry(1, 1, 3, SESSION);
        forged.signature = entry(1, 2, 3, SESSION).signature;
        let before = r.scene().clone();
        assert_eq!(
            r.on_message(&entries(vec![entry(1, 1, 3, SESSION), forged])),
            ReplicaEvent::NeedsResync(ResyncReason::ForgedEntry)
        );
        assert_eq!(r.scene(), &before, "no entry of a refused batch is applied");
        assert_eq!(r.last_resync(), Some(ResyncReason::ForgedEntry));

        // An author the roster does not hold, and a key that is not the author's.
        let mut r = synced(&server);
        assert_eq!(
            r.on_message(&entries(vec![entry(2, 2, 1, SESSION)])),
            ReplicaEvent::NeedsResync(ResyncReason::UnknownAuthor)
        );
        // A version-2 entry binds its key and session into the signature: under another key,
        // or made for another session, it does not verify (forged, as far as anyone can tell).
        let mut r = synced(&server);
        assert_eq!(
            r.on_message(&entries(vec![entry(1, 3, 1, SESSION)])),
            ReplicaEvent::NeedsResync(ResyncReason::ForgedEntry)
        );
        let mut r = synced(&server);
        assert_eq!(
            r.on_message(&entries(vec![entry(1, 1, 1, SessionId([8; 16]))])),
            ReplicaEvent::NeedsResync(ResyncReason::ForgedEntry)
        );
        // A version-1 entry (history from before version 2) carries both, checked as such.
        let mut r = synced(&server);
        assert_eq!(
            r.on_message(&entries(vec![entry_of_version(1, 1, 3, 1, SESSION)])),
            ReplicaEvent::NeedsResync(ResyncReason::UnknownAuthor)
        );
        let mut r = synced(&server);
        assert_eq!(
            r.on_message(&entries(vec![entry_of_version(
                1,
                1,
                1,
                1,
                SessionId([8; 16])
            )])),
            ReplicaEvent::NeedsResync(ResyncReason::WrongSession)
        );
        let mut r = synced(&server);
        assert_eq!(
            r.on_message(&entries(vec![
                entry_of_version(1, 1, 1, 1, SESSION),
                entry(1, 1, 2, SESSION)
            ])),
            ReplicaEvent::None,
            "both versions in one batch"
        );
        assert_eq!(r.scene().entities.len(), 2);
        // A member added later is trusted from then on.
        let mut r = synced(&server);
        let ServerMsg::Roster(mut update) = roster(&server, &[(2, 2)]) else {
            unreachable!("roster() builds a roster")
        };
        update.replace = false;
        r.on_message(&ServerMsg::Roster(update));
        assert_eq!(
            r.on_message(&entries(vec![
                entry(2, 2, 1, SESSION),
                entry(1, 1, 1, SESSION)
            ])),
            ReplicaEvent::None
        );
    }

    #[test]
    fn only_deltas_sealed_by_the_server_apply() {
        let server = signer(9);
        let mut source = Scene::new();
        let mut r = synced(&server);
        let e = entry(1, 1, 1, SESSION);
        let body = e.decode_body().expect("signed above");
        source.apply(body.id(), body.author, &body.command);
        let touched = [crate::scene::Touched::Entity(EntityId::new(AuthorId(1), 1))]
            .into_iter()
            .collect();
        let delta = source.delta(0, &touched);

        // Unsealed: refused, whatever it holds.
        let unsigned = ServerMsg::Delta(crate::wire::EncodedDelta {
            bytes: postcard::to_allocvec(&delta).expect("encodes"),
        });
        assert_eq!(
            r.on_message(&unsigned),
            ReplicaEvent::NeedsResync(ResyncReason::UnsignedDelta)
        );

        // Sealed by someone else.
        let mut r = synced(&server);
        let forged = SealedDelta::seal(SESSION, &delta, source.state_hash(), &signer(10));
        assert_eq!(
            r.on_message(&ServerMsg::SealedDelta(forged)),
            ReplicaEvent::NeedsResync(ResyncReason::BadSeal)
        );
        // Sealed by the server, then its bytes changed.
        let mut r = synced(&server);
        let mut altered = SealedDelta::seal(SESSION, &delta, source.state_hash(), &server);
        let mut other = delta.clone();
        other.entities.clear();
        altered.bytes = postcard::to_allocvec(&other).expect("encodes");
        assert_eq!(
            r.on_message(&ServerMsg::SealedDelta(altered)),
            ReplicaEvent::NeedsResync(ResyncReason::BadSeal)
        );
        // Sealed by the server with a state hash the delta does not lead to.
        let mut r = synced(&server);
        let lying = SealedDelta::seal(SESSION, &delta, [0; 32], &server);
        assert_eq!(
            r.on_message(&ServerMsg::SealedDelta(lying)),
            ReplicaEvent::NeedsResync(ResyncReason::HashMismatch)
        );
        // The genuine one.
        let mut r = synced(&server);
        let sealed = SealedDelta::seal(SESSION, &delta, source.state_hash(), &server);
        assert_eq!(
            r.on_message(&ServerMsg::SealedDelta(sealed)),
            ReplicaEvent::None
        );
        assert_eq!(r.scene(), &source);
    }
}
