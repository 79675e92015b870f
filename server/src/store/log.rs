//! Record formats of the durable log, the hash chain, signed checkpoints, loading a session
//! back (recovery) and offline verification (`verify-log`).
//!
//! Chain: `hash(n) = SHA-256("meshwork chain v1" ‖ hash(n-1) ‖ n ‖ len(body) ‖ body ‖
//! signature)` over each entry exactly as its author signed it, with `hash(0)` all zeros. Every
//! record stores the previous hash; a checkpoint is the server's signature over
//! `(session, n, hash(n), time)`. Changing, removing or reordering any stored entry breaks the
//! chain at that entry; rewriting the chain from there on needs the server's key to re-sign the
//! checkpoints after it.

use std::sync::Arc;

use meshwork_protocol::asset::ImportAsset;
use meshwork_protocol::command::AssetId;
use meshwork_protocol::sign::{verify_one, verifying_key};
use meshwork_protocol::{
    Domain, KeyRing, PublicKey, SessionId, SignedEntry, Signer, Verifier as _,
};
use meshwork_session::{AuthorRecord, Config, Session, SessionBase, SessionSnapshot};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{SessionRecord, Store, StoreError, Tree, decode, key, key_number};

/// One stored log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Chain hash of the previous entry (zeros for the first).
    pub prev_hash: [u8; 32],
    /// The entry exactly as signed and sent.
    pub entry: SignedEntry,
}

/// The chain hash after `entry` at `position`.
#[must_use]
pub fn chain_hash(prev: &[u8; 32], position: u64, entry: &SignedEntry) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"meshwork chain v1");
    h.update(prev);
    h.update(position.to_le_bytes());
    h.update((entry.body.len() as u64).to_le_bytes());
    h.update(&entry.body);
    h.update(entry.signature.0);
    h.finalize().into()
}

/// What a checkpoint signs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointBody {
    /// Always [`Domain::Checkpoint`].
    pub domain: Domain,
    /// The session.
    pub session: SessionId,
    /// Entries covered.
    pub position: u64,
    /// Chain hash at `position`.
    pub head_hash: [u8; 32],
    /// When, Unix milliseconds.
    pub at_ms: u64,
}

/// A stored checkpoint: the encoded body and the server's signature over it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    /// Encoded [`CheckpointBody`].
    #[serde(with = "serde_bytes_vec")]
    pub body: Vec<u8>,
    /// Server signature over `body`.
    pub signature: meshwork_protocol::sign::Signature,
}

mod serde_bytes_vec {
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
        }
        d.deserialize_bytes(V)
    }
}

impl CheckpointRecord {
    /// Signs a checkpoint.
    #[must_use]
    pub fn sign(body: &CheckpointBody, server: &dyn Signer) -> Self {
        let bytes = super::encode(body);
        Self {
            signature: server.sign(&bytes),
            body: bytes,
        }
    }

    /// Checks the server's signature and decodes.
    ///
    /// # Errors
    /// A sentence naming the fault.
    pub fn verify(&self, server_key: &PublicKey) -> Result<CheckpointBody, String> {
        let key = verifying_key(server_key).map_err(|e| format!("server key: {e}"))?;
        if !verify_one(&key, &self.body, &self.signature) {
            return Err("checkpoint signature does not verify under the server key".into());
        }
        let body: CheckpointBody =
            postcard::from_bytes(&self.body).map_err(|e| format!("checkpoint body: {e}"))?;
        if body.domain != Domain::Checkpoint {
            return Err("checkpoint signed for another purpose".into());
        }
        Ok(body)
    }
}

/// What a base record signs: where a session's history rotated out of the store ends, the
/// chain hash there, and the session's state then ([`SessionBase`], encoded).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseBody {
    /// Always [`Domain::Base`].
    pub domain: Domain,
    /// The session.
    pub session: SessionId,
    /// Entries covered (positions 1 to this are no longer in the store).
    pub position: u64,
    /// Chain hash at `position`: the next stored entry links to it.
    pub head_hash: [u8; 32],
    /// When, Unix milliseconds.
    pub at_ms: u64,
    /// [`SessionBase::encode`] of the state after `position` entries.
    #[serde(with = "serde_bytes_vec")]
    pub state: Vec<u8>,
}

/// A stored base: the encoded [`BaseBody`] and the server's signature over it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseRecord {
    /// Encoded [`BaseBody`].
    #[serde(with = "serde_bytes_vec")]
    pub body: Vec<u8>,
    /// Server signature over `body`.
    pub signature: meshwork_protocol::sign::Signature,
}

impl BaseRecord {
    /// Signs a base.
    #[must_use]
    pub fn sign(body: &BaseBody, server: &dyn Signer) -> Self {
        let bytes = super::encode(body);
        Self {
            signature: server.sign(&bytes),
            body: bytes,
        }
    }

    /// Decodes without checking the signature (a restart trusts its own store, as it trusts
    /// its log records; `verify-log` checks the signature).
    ///
    /// # Errors
    /// A sentence naming the fault.
    pub fn body(&self) -> Result<BaseBody, String> {
        let body: BaseBody =
            postcard::from_bytes(&self.body).map_err(|e| format!("base body: {e}"))?;
        if body.domain != Domain::Base {
            return Err("base signed for another purpose".into());
        }
        Ok(body)
    }

    /// Checks the server's signature and decodes.
    ///
    /// # Errors
    /// A sentence naming the fault.
    pub fn verify(&self, server_key: &PublicKey) -> Result<BaseBody, String> {
        let key = verifying_key(server_key).map_err(|e| format!("server key: {e}"))?;
        if !verify_one(&key, &self.body, &self.signature) {
            return Err("the base's signature does not verify under the server key".into());
        }
        self.body()
    }
}

/// A session's base as a restart uses it.
#[derive(Clone, Debug)]
pub struct StoredBase {
    /// Entries covered.
    pub position: u64,
    /// Chain hash at `position`.
    pub head_hash: [u8; 32],
    /// The session's state then.
    pub state: SessionBase,
}

/// The session's latest base, decoded (not signature-checked), if its history was rotated out.
///
/// # Errors
/// [`StoreError::Corrupt`] for a base that does not decode: the entries it covers are gone,
/// so the session cannot restart without it.
pub fn load_base(store: &dyn Store, session: SessionId) -> Result<Option<StoredBase>, StoreError> {
    let Some((_, v)) = store.last(Tree::Bases, &session.0)? else {
        return Ok(None);
    };
    let record = decode::<BaseRecord>("base record", &v)?;
    let body = record.body().map_err(StoreError::Corrupt)?;
    if body.session != session {
        return Err(StoreError::Corrupt(
            "the base is for another session".into(),
        ));
    }
    let state = SessionBase::decode(&body.state).map_err(StoreError::Corrupt)?;
    if state.position != body.position {
        return Err(StoreError::Corrupt(format!(
            "the base says entry {} but its state is at entry {}",
            body.position, state.position
        )));
    }
    Ok(Some(StoredBase {
        position: body.position,
        head_hash: body.head_hash,
        state,
    }))
}

/// Everything stored for one session, chain-checked.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Metadata, if written.
    pub record: Option<SessionRecord>,
    /// Authors in key order.
    pub authors: Vec<AuthorRecord>,
    /// The newest snapshot.
    pub snapshot: Option<SessionSnapshot>,
    /// Entries in acceptance order.
    pub entries: Vec<SignedEntry>,
    /// Chain hash after the last entry.
    pub head: [u8; 32],
    /// How many entries the log holds (also when they were streamed, not kept).
    pub count: u64,
    /// Each checkpoint's position and time (Unix ms), in position order: when the entries up to
    /// it were durable at the latest (the history's times after a restart). Bodies that do not
    /// decode are skipped (`verify-log` judges checkpoints).
    pub checkpoints: Vec<(u64, u64)>,
    /// The session's imported assets.
    pub assets: Vec<(AssetId, Arc<ImportAsset>)>,
    /// Invites' limits, revocations and uses.
    pub invites: Vec<meshwork_session::InviteRecord>,
    /// Where the history rotated out of the store ends, if it was ([`load_base`]).
    pub base: Option<StoredBase>,
    /// Where the stored log starts: the base's position and chain hash (what [`scan_entries`]
    /// starts from; kept when the base itself is taken).
    pub start: Option<(u64, [u8; 32])>,
}

/// Every record of `session` in `tree`, in key order; the first that does not decode is an
/// error naming `what`.
fn scan_records<T: serde::de::DeserializeOwned>(
    store: &dyn Store,
    tree: Tree,
    session: SessionId,
    what: &str,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    let mut err = None;
    store.scan(tree, &session.0, &mut |_, v| match decode::<T>(what, v) {
        Ok(r) => {
            out.push(r);
            true
        }
        Err(e) => {
            err = Some(e);
            false
        }
    })?;
    err.map_or(Ok(out), Err)
}

/// Every session id with stored metadata.
///
/// # Errors
/// [`StoreError`] for unreadable records.
pub fn list_sessions(store: &dyn Store) -> Result<Vec<(SessionId, SessionRecord)>, StoreError> {
    let mut out = Vec::new();
    let mut err = None;
    store.scan(Tree::Sessions, &[], &mut |k, v| {
        let Ok(id) = <[u8; 16]>::try_from(k) else {
            err = Some(StoreError::Corrupt("session key is not 16 bytes".into()));
            return false;
        };
        match decode::<SessionRecord>("session record", v) {
            Ok(r) => {
                out.push((SessionId(id), r));
                true
            }
            Err(e) => {
                err = Some(e);
                false
            }
        }
    })?;
    err.map_or(Ok(out), Err)
}

/// Reads a session back, checking every link of the hash chain.
///
/// # Errors
/// [`StoreError::Corrupt`] naming the first entry whose link does not hold.
pub fn load_session(store: &dyn Store, session: SessionId) -> Result<Loaded, StoreError> {
    let mut loaded = load_meta(store, session)?;
    let mut entries = Vec::new();
    scan_entries(store, session, &mut loaded, &mut |_, e| {
        entries.push(e);
        Ok(())
    })?;
    loaded.entries = entries;
    Ok(loaded)
}

/// Everything [`load_session`] reads but the entries (`head` and `count` not set yet): what
/// a restore needs before the first entry ([`scan_entries`]).
///
/// # Errors
/// [`StoreError`] for unreadable records.
pub fn load_meta(store: &dyn Store, session: SessionId) -> Result<Loaded, StoreError> {
    let mut loaded = Loaded {
        record: store
            .get(Tree::Sessions, &session.0)?
            .map(|v| decode::<SessionRecord>("session record", &v))
            .transpose()?,
        ..Loaded::default()
    };
    loaded.authors = scan_records(store, Tree::Authors, session, "author")?;
    loaded.assets = load_assets(store, session)?;
    loaded.invites = scan_records(store, Tree::Invites, session, "invite")?;
    loaded.base = load_base(store, session)?;
    loaded.start = loaded.base.as_ref().map(|b| (b.position, b.head_hash));
    if let Some((_, v)) = store.last(Tree::Snapshots, &session.0)? {
        // A snapshot that does not decode is ignored: the log alone rebuilds the session.
        loaded.snapshot = postcard::from_bytes(&v).ok();
    }
    // Checkpoints first: a streaming caller needs their times as the entries go by.
    store.scan(Tree::Checkpoints, &session.0, &mut |_, v| {
        if let Ok(record) = postcard::from_bytes::<CheckpointRecord>(v)
            && let Ok(body) = postcard::from_bytes::<CheckpointBody>(&record.body)
        {
            loaded.checkpoints.push((body.position, body.at_ms));
        }
        true
    })?;
    Ok(loaded)
}

/// Starts rebuilding `session` from what its store holds, the entries to follow in position
/// order ([`scan_entries`], then [`meshwork_session::Restoring::push`]): from its signed base
/// when its older history was rotated into an archive (the scan starts after it, at
/// `loaded.start`), else from its newest snapshot where `snapshot_upto` allows one (a snapshot
/// at or before that position, and usable in `config.log_window`:
/// [`SessionSnapshot::usable`]),
/// else from the first entry. Every replay of a stored session starts here: the server's
/// restart, a rotation, `verify-log` and an export.
#[must_use]
pub fn start_replay(
    loaded: &mut Loaded,
    config: Config,
    seed: [u8; 32],
    now_ms: u64,
    snapshot_upto: Option<u64>,
) -> meshwork_session::Restoring {
    if let Some(base) = loaded.base.take() {
        return Session::restoring_from(
            config,
            seed,
            now_ms,
            &loaded.authors,
            &loaded.assets,
            base.state,
        );
    }
    let head = loaded.record.as_ref().map_or(0, |r| r.head_position);
    let snapshot = snapshot_upto.and_then(|upto| {
        loaded
            .snapshot
            .as_ref()
            .filter(|s| s.usable(config.log_window, head, upto))
    });
    Session::restoring(
        config,
        seed,
        now_ms,
        &loaded.authors,
        &loaded.assets,
        snapshot,
    )
}

/// Reads the session's entries in position order, checking every link of the hash chain, and
/// hands each to `each` (its 1-based position, the entry) instead of keeping them: a long log
/// restores without being held whole. Sets `loaded.head` and `loaded.count` (checked against
/// the session record). An error from `each` stops the scan, returned as
/// [`StoreError::Corrupt`].
///
/// # Errors
/// [`StoreError::Corrupt`] naming the first entry whose link does not hold, or what `each`
/// said.
pub fn scan_entries(
    store: &dyn Store,
    session: SessionId,
    loaded: &mut Loaded,
    each: &mut dyn FnMut(u64, SignedEntry) -> Result<(), String>,
) -> Result<(), StoreError> {
    scan_entries_to(store, session, loaded, u64::MAX, each)
}

/// [`scan_entries`] of the entries up to position `end` only (an export of an earlier state).
///
/// # Errors
/// As [`scan_entries`].
pub fn scan_entries_to(
    store: &dyn Store,
    session: SessionId,
    loaded: &mut Loaded,
    end: u64,
    each: &mut dyn FnMut(u64, SignedEntry) -> Result<(), String>,
) -> Result<(), StoreError> {
    let (mut head, mut expected) = loaded.start.map_or(([0u8; 32], 1), |(position, hash)| {
        (hash, position.saturating_add(1))
    });
    let has_base = loaded.start.is_some();
    let mut err = None;
    store.scan(Tree::Log, &session.0, &mut |k, v| {
        let position = key_number(k).unwrap_or(0);
        if position < expected && has_base {
            // Covered by the base: left behind by a rotation cut short (removed by the next).
            return true;
        }
        if position > end {
            return false;
        }
        let record = match decode::<LogRecord>("log record", v) {
            Ok(r) => r,
            Err(e) => {
                err = Some(StoreError::Corrupt(format!("entry {position}: {e}")));
                return false;
            }
        };
        if position != expected {
            err = Some(StoreError::Corrupt(format!(
                "entry {expected} is missing (found {position})"
            )));
            return false;
        }
        if record.prev_hash != head {
            err = Some(StoreError::Corrupt(format!(
                "hash chain broken between entry {} and entry {position}; `meshwork-server \
                 verify-log` names the altered one",
                position.saturating_sub(1)
            )));
            return false;
        }
        head = chain_hash(&head, position, &record.entry);
        if let Err(e) = each(position, record.entry) {
            err = Some(StoreError::Corrupt(format!("entry {position}: {e}")));
            return false;
        }
        expected = expected.saturating_add(1);
        true
    })?;
    if let Some(e) = err {
        return Err(e);
    }
    let count = expected.saturating_sub(1);
    if let Some(r) = &loaded.record
        && r.head_position == count
        && r.head_hash != head
    {
        return Err(StoreError::Corrupt(format!(
            "entry {}: the chain head does not match the session record",
            r.head_position
        )));
    }
    loaded.head = head;
    loaded.count = count;
    Ok(())
}

/// The stored entries of `session` at the positions in `ranges` (1-based, in order), in
/// position order; positions past the end, and those rotated into an archive, are left out.
/// Not chain-checked (a restart and `verify-log` check the chain): for `FetchLog` answers.
///
/// # Errors
/// A sentence naming the backend fault or the record that does not decode.
pub fn read_entries(
    store: &dyn Store,
    session: SessionId,
    ranges: &[std::ops::Range<u64>],
) -> Result<Vec<SignedEntry>, String> {
    let mut out = Vec::new();
    // Entries up to the base were rotated into an archive: a range starts after it.
    let from = store
        .last(Tree::Bases, &session.0)
        .map_err(|e| e.to_string())?
        .and_then(|(k, _)| key_number(&k))
        .unwrap_or(0);
    for range in ranges {
        for position in range.start.max(from.saturating_add(1))..range.end {
            let Some(v) = store
                .get(Tree::Log, &key(session, position))
                .map_err(|e| e.to_string())?
            else {
                break;
            };
            let record = decode::<LogRecord>("log record", &v)
                .map_err(|e| format!("entry {position}: {e}"))?;
            out.push(record.entry);
        }
    }
    Ok(out)
}

/// Result of verifying one session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionVerified {
    /// The session.
    pub session: SessionId,
    /// Entries checked.
    pub entries: u64,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// Where the stored log starts: the position of its signed base (0 without one).
    pub from: u64,
    /// The log's state hash after a fresh replay; `None` from a base (it covers every entry,
    /// and the entries before the base are in an archive).
    pub state_hash: Option<[u8; 32]>,
    /// The scene's state hash after the replay.
    pub scene_hash: [u8; 32],
}

/// The first fault `verify` found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("session {session}: entry {position}: {reason}")]
pub struct VerifyFailure {
    /// The session.
    pub session: SessionId,
    /// 1-based position of the first bad entry (or checkpoint position).
    pub position: u64,
    /// What is wrong.
    pub reason: String,
}

/// Checks a session offline: every link of the chain, every author signature, every
/// checkpoint's server signature and hash, and that the log replays, holding the whole log in
/// memory so that the log's state hash covers every entry.
///
/// # Errors
/// [`VerifyFailure`] naming the first bad entry.
pub fn verify_session(
    store: &dyn Store,
    session: SessionId,
    server_key: &PublicKey,
) -> Result<SessionVerified, VerifyFailure> {
    verify_session_to(store, session, server_key, u64::MAX, usize::MAX)
}

/// [`verify_session`] of the entries up to position `end` only (and the checkpoints up to it:
/// a live store that goes on growing while it is verified, as a scheduled archive does), the
/// replay holding `window` entries at most. The entries stream from the store: the chain,
/// the checkpoints and the signatures (in batches of 256) are checked as they go by, and each
/// batch is replayed once its signatures hold, so the memory is that of the window, not of
/// the log. A replay that let go of entries has no log state hash (`state_hash` is `None`):
/// the scene hash is the proof then.
///
/// # Errors
/// [`VerifyFailure`] naming the first bad entry.
pub fn verify_session_to(
    store: &dyn Store,
    session: SessionId,
    server_key: &PublicKey,
    end: u64,
    window: usize,
) -> Result<SessionVerified, VerifyFailure> {
    let fail = |position, reason: String| VerifyFailure {
        session,
        position,
        reason,
    };
    let mut loaded = load_meta(store, session).map_err(|e| fail(0, e.to_string()))?;
    // A base (the history before it rotated into an archive) is checked under the server
    // key; the chain goes on from its hash.
    if let Some((k, v)) = store
        .last(Tree::Bases, &session.0)
        .map_err(|e| fail(0, e.to_string()))?
    {
        let at = key_number(&k).unwrap_or(0);
        let body = postcard::from_bytes::<BaseRecord>(&v)
            .map_err(|e| e.to_string())
            .and_then(|r| r.verify(server_key))
            .map_err(|e| fail(at, format!("base: {e}")))?;
        if body.session != session || body.position != at {
            return Err(fail(at, "base: for another session or position".into()));
        }
    }
    let from = loaded.base.as_ref().map_or(0, |b| b.position);
    let mut head = loaded.base.as_ref().map_or([0u8; 32], |b| b.head_hash);

    // Checkpoints first (one per many entries), each checked against the chain as it passes.
    let mut checkpoints: std::collections::BTreeMap<u64, Result<[u8; 32], String>> =
        std::collections::BTreeMap::new();
    store
        .scan(Tree::Checkpoints, &session.0, &mut |k, v| {
            let at = key_number(k).unwrap_or(0);
            if at < from {
                // Before the base: its entries are in an archive (a rotation cut short).
                return true;
            }
            if at > end {
                return false;
            }
            let checked = postcard::from_bytes::<CheckpointRecord>(v)
                .map_err(|e| e.to_string())
                .and_then(|r| r.verify(server_key))
                .and_then(|body| {
                    if body.session == session && body.position == at {
                        Ok(body.head_hash)
                    } else {
                        Err("checkpoint for another session or position".into())
                    }
                });
            checkpoints.insert(at, checked);
            true
        })
        .map_err(|e| fail(0, e.to_string()))?;
    let mut checkpoints_ok = 0u64;
    let mut checkpoint_fail: Option<VerifyFailure> = None;
    let mut check_checkpoint =
        |at: u64, head: &[u8; 32], bad: &mut Option<VerifyFailure>| match checkpoints.remove(&at) {
            None => {}
            Some(Ok(h)) if h == *head => checkpoints_ok = checkpoints_ok.saturating_add(1),
            Some(result) => {
                let reason = result
                    .err()
                    .unwrap_or_else(|| "checkpoint hash differs from the chain".into());
                if bad.is_none() {
                    *bad = Some(fail(at, format!("checkpoint: {reason}")));
                }
            }
        };
    check_checkpoint(from, &head, &mut checkpoint_fail);

    let mut keys = KeyRing::new();
    for a in &loaded.authors {
        keys.register(a.author, a.public_key, a.role)
            .map_err(|e| fail(0, format!("author key: {e}")))?;
    }
    let mut config = Config::new(session, *server_key);
    config.log_window = window;
    let mut restoring = start_replay(&mut loaded, config, [0; 32], 0, None);

    // Note the first fault but keep reading, because a changed entry shows up as a broken
    // link at the *next* record and as a bad signature at its own.
    let mut first_bad: Option<VerifyFailure> = None;
    let note = |f: VerifyFailure, first_bad: &mut Option<VerifyFailure>| {
        if first_bad.as_ref().is_none_or(|b| f.position < b.position) {
            *first_bad = Some(f);
        }
    };
    let mut signatures_hold = true;
    let mut replay_fail: Option<VerifyFailure> = None;
    let mut batch: Vec<(u64, SignedEntry)> = Vec::with_capacity(VERIFY_BATCH);
    // Checks the batch's signatures, then replays it (only entries whose signatures hold).
    let mut flush = |batch: &mut Vec<(u64, SignedEntry)>,
                     first_bad: &mut Option<VerifyFailure>,
                     signatures_hold: &mut bool| {
        if *signatures_hold {
            let mut bodies = Vec::with_capacity(batch.len());
            for (position, e) in batch.iter() {
                match e.decode_body() {
                    Ok(b) => bodies.push(b),
                    Err(err) => {
                        note(fail(*position, format!("body: {err}")), first_bad);
                        *signatures_hold = false;
                        break;
                    }
                }
            }
            if *signatures_hold {
                let items: Vec<_> = bodies
                    .iter()
                    .zip(batch.iter())
                    .map(|(b, (_, e))| e.signed_item(b, session))
                    .collect();
                for ((position, _), r) in batch.iter().zip(keys.verify_batch(&items)) {
                    if let Err(e) = r {
                        note(fail(*position, format!("author signature: {e}")), first_bad);
                        *signatures_hold = false;
                        break;
                    }
                }
            }
        }
        for (_, e) in batch.drain(..) {
            if !*signatures_hold || replay_fail.is_some() {
                continue;
            }
            if let Err(e) = restoring.push(e) {
                replay_fail = Some(fail(e.position, format!("does not replay: {}", e.refusal)));
            }
        }
    };
    let mut position = from;
    let mut stop: Option<VerifyFailure> = None;
    store
        .scan(Tree::Log, &session.0, &mut |k, v| {
            let at = key_number(k);
            if at.is_some_and(|p| p <= from) {
                // Covered by the base (a rotation cut short leaves them).
                return true;
            }
            if at.is_some_and(|p| p > end) {
                return false;
            }
            let next = position.saturating_add(1);
            if at != Some(next) {
                stop = Some(fail(next, "missing entry (gap in positions)".into()));
                return false;
            }
            let Ok(record) = postcard::from_bytes::<LogRecord>(v) else {
                stop = Some(fail(next, "record does not decode".into()));
                return false;
            };
            if record.prev_hash != head {
                note(
                    fail(next, "hash chain broken (previous hash differs)".into()),
                    &mut first_bad,
                );
            }
            position = next;
            head = chain_hash(&head, position, &record.entry);
            check_checkpoint(position, &head, &mut checkpoint_fail);
            batch.push((position, record.entry));
            if batch.len() == VERIFY_BATCH {
                flush(&mut batch, &mut first_bad, &mut signatures_hold);
            }
            true
        })
        .map_err(|e| fail(0, e.to_string()))?;
    flush(&mut batch, &mut first_bad, &mut signatures_hold);
    if let Some(s) = stop {
        note(s, &mut first_bad);
    }
    if let Some(record) = &loaded.record
        && record.head_position == position
        && record.head_hash != head
    {
        note(
            fail(
                record.head_position,
                "hash chain broken (head differs)".into(),
            ),
            &mut first_bad,
        );
    }
    if let Some(f) = first_bad {
        return Err(f);
    }
    if let Some(f) = checkpoint_fail {
        return Err(f);
    }
    if let Some((at, _)) = checkpoints.first_key_value() {
        return Err(fail(
            *at,
            "checkpoint: checkpoint is beyond the end of the log".into(),
        ));
    }
    if let Some(f) = replay_fail {
        return Err(f);
    }
    let replayed = restoring
        .finish()
        .map_err(|e| fail(e.position, format!("does not replay: {}", e.refusal)))?
        .0;
    Ok(SessionVerified {
        session,
        entries: position.saturating_sub(from),
        checkpoints: checkpoints_ok,
        from,
        state_hash: replayed.log().state_hash(),
        scene_hash: replayed.scene().state_hash(),
    })
}

/// Entries whose signatures `verify-log` checks in one batch.
const VERIFY_BATCH: usize = 256;

/// The key of an invite record: the session, then the invite id.
#[must_use]
pub fn invite_key(session: SessionId, invite: [u8; 16]) -> Vec<u8> {
    let mut k = session.0.to_vec();
    k.extend_from_slice(&invite);
    k
}

/// The key of an author record: the session, then the author id.
#[must_use]
pub fn author_key(session: SessionId, author: meshwork_protocol::AuthorId) -> Vec<u8> {
    let mut k = session.0.to_vec();
    k.extend_from_slice(&author.0.to_be_bytes());
    k
}

/// A session's stored assets.
///
/// # Errors
/// [`StoreError`] for an unreadable asset or key.
pub fn load_assets(
    store: &dyn Store,
    session: SessionId,
) -> Result<Vec<(AssetId, Arc<ImportAsset>)>, StoreError> {
    let mut out = Vec::new();
    let mut err = None;
    store.scan(Tree::Assets, &session.0, &mut |k, v| {
        let id = k
            .get(16..48)
            .and_then(|h| <[u8; 32]>::try_from(h).ok())
            .map(AssetId);
        match (id, ImportAsset::decode(v)) {
            (Some(id), Ok(asset)) => {
                out.push((id, Arc::new(asset)));
                true
            }
            (_, Err(e)) => {
                err = Some(StoreError::Corrupt(format!(
                    "an asset does not decode: {e}"
                )));
                false
            }
            (None, _) => {
                err = Some(StoreError::Corrupt(
                    "an asset key is not session ‖ SHA-256".into(),
                ));
                false
            }
        }
    })?;
    err.map_or(Ok(out), Err)
}

/// Key of an asset.
#[must_use]
pub fn asset_key(session: SessionId, asset: AssetId) -> Vec<u8> {
    let mut k = session.0.to_vec();
    k.extend_from_slice(&asset.0);
    k
}

/// Key of a log entry, checkpoint or snapshot at `position`.
#[must_use]
pub fn position_key(session: SessionId, position: u64) -> Vec<u8> {
    key(session, position)
}
