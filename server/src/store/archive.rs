//! Encrypted audit archives: one session's signed, hash-chained log with its authors,
//! checkpoints, assets and invites, encrypted to one or more [age](https://age-encryption.org)
//! recipients (`age1…` X25519 public keys, as `age-keygen` makes them).
//!
//! Plaintext (what the age stream holds): `MWARCHV\x01`, the session id (16 bytes), the public
//! key of the server that signed it (32 bytes), then records laid out as in a backup
//! (`[tree: u8][key len: u32 LE][key][value len: u32 LE][value]`, the tree numbered as in
//! [`Tree::ALL`]), then `0xFF`, the number of records (u64 LE), and the seal: its length (u32
//! LE), the postcard [`ArchiveSeal`] and the server's Ed25519 signature over it (64 bytes).
//!
//! The seal covers the session, the number of entries and the chain head they end on, the
//! number of records and the SHA-256 of everything before the `0xFF`: an archive cut short, cut
//! at an earlier checkpoint, with records added, dropped or edited (author roles, assets and
//! invites included, which no entry signs), does not verify. Its integrity comes from the
//! server's signatures and the authors', never from the encryption: anyone who knows a
//! recipient's public key can make an age file. `verify-log --archive` decrypts it into a
//! temporary store, checks the seal under a server key the auditor trusts, and runs the same
//! checks as on a live store ([`verify_session`](super::log::verify_session)).

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::str::FromStr as _;

use indicatif::ProgressBar;
use meshwork_protocol::sign::{Signature, verify_one, verifying_key};
use meshwork_protocol::{Domain, PublicKey, SessionId, Signer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::backup::{Hashing, read_exact_vec, write_record};
use super::log::{CheckpointBody, CheckpointRecord, LogRecord, chain_hash};
use super::{Put, Store, Tree, key, key_number};

const MAGIC: &[u8] = b"MWARCHV\x01";
const END: u8 = 0xff;
/// The largest record an archive may announce: an imported asset (at most 256 MiB by default)
/// with room to spare. Larger is refused before anything is read into memory.
const MAX_RECORD_BYTES: usize = 1 << 30;
/// The largest seal body.
const MAX_SEAL_BYTES: usize = 4096;
/// Puts per commit while loading an archive.
const LOAD_CHUNK: usize = 10_000;
/// Trees that hold a session's records under its id (metadata and snapshots stay out: the
/// archive is the record of what was signed, not a way to restart the session).
const TREES: [Tree; 7] = [
    Tree::Sessions,
    Tree::Authors,
    Tree::Bases,
    Tree::Log,
    Tree::Checkpoints,
    Tree::Assets,
    Tree::Invites,
];

/// What [`write`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// Position of the last log entry archived (the head it verified).
    pub entries: u64,
    /// Position of the first entry archived: 1, or the one after the store's signed base when
    /// older history was rotated out before.
    pub first: u64,
    /// Records of every kind.
    pub records: u64,
    /// Whether the closing checkpoint was signed now (the store had none at the head).
    pub sealed_now: bool,
}

/// What the server signs at the end of an archive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveSeal {
    /// Always [`Domain::Archive`].
    pub domain: Domain,
    /// The session.
    pub session: SessionId,
    /// Log entries archived (positions 1 to this).
    pub entries: u64,
    /// The chain hash after the last of them.
    pub head_hash: [u8; 32],
    /// Records of every kind.
    pub records: u64,
    /// SHA-256 of the plaintext from the magic through the last record.
    pub digest: [u8; 32],
    /// When it was sealed, Unix milliseconds.
    pub at_ms: u64,
}

/// What an archive says about itself, read by [`load`]; [`Loaded::check_seal`] judges it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    /// The session.
    pub session: SessionId,
    /// The server key the archive names (to be checked against one the reader trusts).
    pub server_key: PublicKey,
    /// Records loaded.
    pub records: u64,
    /// SHA-256 of the plaintext from the magic through the last record, as read.
    pub digest: [u8; 32],
    /// The seal's encoded body and signature.
    pub seal: (Vec<u8>, Signature),
}

impl Loaded {
    /// Checks the seal: signed by `server_key` for archives, for this session, over exactly
    /// the records read, ending on `entries` entries whose chain head is `head`.
    ///
    /// # Errors
    /// A sentence naming what does not hold.
    pub fn check_seal(
        &self,
        server_key: &PublicKey,
        entries: u64,
        head: &[u8; 32],
    ) -> Result<ArchiveSeal, String> {
        let key = verifying_key(server_key).map_err(|e| format!("server key: {e}"))?;
        if !verify_one(&key, &self.seal.0, &self.seal.1) {
            return Err("the archive's seal is not signed by the server key".into());
        }
        let seal: ArchiveSeal =
            postcard::from_bytes(&self.seal.0).map_err(|e| format!("the seal: {e}"))?;
        if seal.domain != Domain::Archive {
            return Err("the seal is signed for another purpose".into());
        }
        if seal.session != self.session {
            return Err("the seal is for another session".into());
        }
        if seal.records != self.records || seal.digest != self.digest {
            return Err(format!(
                "the records differ from the sealed ones ({} sealed, {} read): records were \
                 added, dropped or changed",
                seal.records, self.records
            ));
        }
        if seal.entries != entries || &seal.head_hash != head {
            return Err(format!(
                "the seal ends on entry {} but the log read ends on entry {entries}",
                seal.entries
            ));
        }
        Ok(seal)
    }
}

/// A reader that hashes what passes through it.
struct HashingReader<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(buf.get(..n).unwrap_or_default());
        Ok(n)
    }
}

/// Parses age recipients (`age1…` X25519 public keys).
///
/// # Errors
/// A sentence naming the recipient that does not parse.
pub fn parse_recipients(keys: &[String]) -> Result<Vec<Box<dyn age::Recipient + Send>>, String> {
    if keys.is_empty() {
        return Err("give at least one --recipient (an age public key, age1…)".into());
    }
    keys.iter()
        .map(|k| -> Result<Box<dyn age::Recipient + Send>, String> {
            let k = k.trim();
            age::x25519::Recipient::from_str(k)
                .map(|r| Box::new(r) as Box<dyn age::Recipient + Send>)
                .map_err(|e| format!("recipient {k}: {e} (expected an age public key, age1…)"))
        })
        .collect()
}

/// Reads an age identity file (`AGE-SECRET-KEY-1…` lines, as `age-keygen` writes them).
///
/// # Errors
/// A sentence naming the file and the fault.
pub fn read_identities(path: &Path) -> Result<Vec<Box<dyn age::Identity + Send + Sync>>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    age::IdentityFile::from_buffer(BufReader::new(file))
        .map_err(|e| format!("{}: not an age identity file: {e}", path.display()))?
        .into_identities()
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn io(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Checks the session's chain in `store` and returns the number of entries and the head hash.
///
/// # Errors
/// A sentence naming the first entry whose link does not hold.
pub fn head(store: &dyn Store, session: SessionId) -> Result<(u64, [u8; 32]), String> {
    // From the base where the history rotated out of the store ends, if it did.
    let (mut n, mut head) = start(store, session)?;
    let from = n;
    let mut err = None;
    store
        .scan(Tree::Log, &session.0, &mut |k, v| {
            if key_number(k).is_some_and(|p| p <= from) {
                return true;
            }
            let position = n.saturating_add(1);
            let record = postcard::from_bytes::<LogRecord>(v).ok();
            match record {
                Some(r) if key_number(k) == Some(position) && r.prev_hash == head => {
                    head = chain_hash(&head, position, &r.entry);
                    n = position;
                    true
                }
                _ => {
                    err = Some(position);
                    false
                }
            }
        })
        .map_err(io)?;
    match err {
        Some(at) => Err(format!(
            "the stored log does not hold together at entry {at}; run `verify-log` (nothing was \
             archived)"
        )),
        None => Ok((n, head)),
    }
}

/// Where the session's stored log starts: its base's position and chain hash, or (0, zeros).
fn start(store: &dyn Store, session: SessionId) -> Result<(u64, [u8; 32]), String> {
    Ok(super::log::load_base(store, session)
        .map_err(io)?
        .map_or((0, [0u8; 32]), |b| (b.position, b.head_hash)))
}

/// Entries read at a time while a base is computed.
const ROTATE_PAGE: u64 = 4096;
/// Log entries removed per write transaction by a rotation.
const REMOVE_STEP: u64 = 4096;

/// What [`rotate`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotated {
    /// The new base's position: entries up to it left the store.
    pub base: u64,
    /// Entries removed from the store.
    pub removed: u64,
}

/// Rotates `session`'s history out of `store`, keeping its last `keep` entries and none past
/// `archived` (where the archive written before ends): computes the
/// session's state after the others (replaying them from the current base, if any, with
/// `window` entries in memory at most), stores it as a base signed by `server` with a
/// checkpoint at its position, then removes the log entries, checkpoints, snapshots and
/// bases it covers. Call it only after an archive covering those entries was written
/// ([`write`]): the store no longer holds them. `None` when there is nothing to rotate.
///
/// A rotation cut short leaves the new base and some of the entries it covers; restarts and
/// `verify-log` skip those, and the next rotation removes them.
///
/// # Errors
/// A sentence naming the failure; the store is unchanged unless the base was committed.
pub fn rotate(
    store: &mut dyn Store,
    session: SessionId,
    server: &dyn Signer,
    now_ms: u64,
    keep: u64,
    archived: u64,
    window: usize,
) -> Result<Option<Rotated>, String> {
    let (count, _) = head(store, session)?;
    let (from, mut hash) = start(store, session)?;
    // Never past what the archive holds (a live store went on growing since).
    let cut = count.saturating_sub(keep).min(archived);
    if cut <= from {
        return Ok(None);
    }
    let mut loaded = super::log::load_meta(store, session).map_err(io)?;
    let mut config = meshwork_session::Config::new(session, server.public_key());
    config.log_window = window;
    let mut restoring = super::log::start_replay(&mut loaded, config, [0; 32], now_ms, None);
    let mut position = from;
    while position < cut {
        let end = position.saturating_add(ROTATE_PAGE).min(cut);
        let range = position.saturating_add(1)..end.saturating_add(1);
        let page = super::log::read_entries(store, session, std::slice::from_ref(&range))?;
        if page.len() as u64 != end.saturating_sub(position) {
            return Err(format!(
                "entries {} to {end} are not all stored",
                position.saturating_add(1)
            ));
        }
        for e in page {
            position = position.saturating_add(1);
            hash = chain_hash(&hash, position, &e);
            restoring
                .push(e)
                .map_err(|e| format!("entry {} does not replay: {}", e.position, e.refusal))?;
        }
    }
    let state = restoring
        .base()
        .map_err(|e| format!("entry {} does not replay: {}", e.position, e.refusal))?;
    let body = super::log::BaseBody {
        domain: Domain::Base,
        session,
        position: cut,
        head_hash: hash,
        at_ms: now_ms,
        state: state.encode(),
    };
    let checkpoint = CheckpointRecord::sign(
        &CheckpointBody {
            domain: Domain::Checkpoint,
            session,
            position: cut,
            head_hash: hash,
            at_ms: now_ms,
        },
        server,
    );
    store
        .commit(&[
            Put {
                tree: Tree::Bases,
                key: key(session, cut),
                value: super::encode(&super::log::BaseRecord::sign(&body, server)),
            },
            Put {
                tree: Tree::Checkpoints,
                key: key(session, cut),
                value: super::encode(&checkpoint),
            },
        ])
        .map_err(io)?;
    let below = key(session, 0);
    // The log in steps, oldest first: each removal is one write transaction, and the writer's
    // commits wait for it (redb has one writer at a time), so a step stays short.
    let mut removed_to = 0u64;
    while removed_to < cut {
        let to = removed_to.saturating_add(REMOVE_STEP).min(cut);
        store
            .remove_range(
                Tree::Log,
                &key(session, removed_to.saturating_add(1)),
                &key(session, to.saturating_add(1)),
            )
            .map_err(io)?;
        removed_to = to;
    }
    store
        .remove_range(Tree::Checkpoints, &below, &key(session, cut))
        .map_err(io)?;
    store
        .remove_range(
            Tree::Snapshots,
            &below,
            &key(session, cut.saturating_add(1)),
        )
        .map_err(io)?;
    store
        .remove_range(Tree::Bases, &below, &key(session, cut))
        .map_err(io)?;
    Ok(Some(Rotated {
        base: cut,
        removed: cut.saturating_sub(from),
    }))
}

/// Appends to `target` (an archive loaded into a scratch store) what `source` (the next
/// archive, or the live store) holds of `session` after `target`'s last entry: its log
/// entries, checkpoints, authors, assets, invites and session record. The first entry taken
/// must link to `target`'s chain head: a gap or a fork between the two is an error. Returns
/// the entries appended.
///
/// # Errors
/// A sentence naming the gap or fork, or a backend fault.
pub fn extend(
    target: &mut dyn Store,
    source: &dyn Store,
    session: SessionId,
) -> Result<u64, String> {
    let (count, head_hash) = head(target, session)?;
    let (source_from, _) = start(source, session)?;
    if source_from > count {
        return Err(format!(
            "a gap: the history before ends at entry {count}, the next starts after entry \
             {source_from}"
        ));
    }
    let mut puts = Vec::new();
    let mut appended = 0u64;
    let mut fault = None;
    let flush = |puts: &mut Vec<Put>, target: &mut dyn Store| -> Result<(), String> {
        target.commit(puts).map_err(io)?;
        puts.clear();
        Ok(())
    };
    let mut first = true;
    let mut pending: Vec<Put> = Vec::new();
    source
        .scan(Tree::Log, &session.0, &mut |k, v| {
            let Some(position) = key_number(k).filter(|p| *p > count) else {
                return true;
            };
            if first {
                first = false;
                let linked =
                    postcard::from_bytes::<LogRecord>(v).is_ok_and(|r| r.prev_hash == head_hash);
                if position != count.saturating_add(1) || !linked {
                    fault = Some(format!(
                        "the history before ends at entry {count} and the next does not go on \
                         from it (its entry {position} does not link to that chain head)"
                    ));
                    return false;
                }
            }
            pending.push(Put {
                tree: Tree::Log,
                key: k.to_vec(),
                value: v.to_vec(),
            });
            appended = appended.saturating_add(1);
            true
        })
        .map_err(io)?;
    if let Some(f) = fault {
        return Err(f);
    }
    for chunk in pending.chunks(LOAD_CHUNK) {
        puts.extend_from_slice(chunk);
        flush(&mut puts, target)?;
    }
    for tree in [
        Tree::Checkpoints,
        Tree::Authors,
        Tree::Assets,
        Tree::Invites,
    ] {
        source
            .scan(tree, &session.0, &mut |k, v| {
                if tree != Tree::Checkpoints || key_number(k).is_some_and(|p| p > count) {
                    puts.push(Put {
                        tree,
                        key: k.to_vec(),
                        value: v.to_vec(),
                    });
                }
                true
            })
            .map_err(io)?;
        flush(&mut puts, target)?;
    }
    if let Some(record) = source.get(Tree::Sessions, &session.0).map_err(io)? {
        target
            .commit(&[Put {
                tree: Tree::Sessions,
                key: session.0.to_vec(),
                value: record,
            }])
            .map_err(io)?;
    }
    Ok(appended)
}

/// Writes `session` from `store` to `out`, encrypted to `recipients`, through a temporary file
/// renamed when complete. The store must verify first ([`verify_session`] under `server`'s key:
/// the server key seals only a history it can prove); a checkpoint at the head is signed and
/// stored when there is none (`now_ms` is the time it and the seal record).
///
/// [`verify_session`]: super::log::verify_session
///
/// # Errors
/// A sentence naming the failure; nothing is left at `out` then.
pub fn write(
    store: &mut dyn Store,
    session: SessionId,
    server: &dyn Signer,
    now_ms: u64,
    recipients: &[Box<dyn age::Recipient + Send>],
    out: &Path,
    progress: Option<&ProgressBar>,
) -> Result<Written, String> {
    if store.get(Tree::Sessions, &session.0).map_err(io)?.is_none() {
        return Err(format!("no session {session} in the store"));
    }
    // The head first: a live store goes on growing, and the archive ends here.
    let (entries, head_hash) = head(store, session)?;
    let first = start(store, session)?.0.saturating_add(1);
    // Verified as it streams by, in the memory of the default log window.
    super::log::verify_session_to(
        store,
        session,
        &server.public_key(),
        entries,
        meshwork_session::session::DEFAULT_LOG_WINDOW,
    )
    .map_err(|f| {
        format!(
            "the stored log does not verify (first bad entry {}: {}); nothing was archived",
            f.position, f.reason
        )
    })?;
    let mut sealed_now = false;
    if entries > 0
        && store
            .get(Tree::Checkpoints, &key(session, entries))
            .map_err(io)?
            .is_none()
    {
        let body = CheckpointBody {
            domain: Domain::Checkpoint,
            session,
            position: entries,
            head_hash,
            at_ms: now_ms,
        };
        let record = CheckpointRecord::sign(&body, server);
        store
            .commit(&[Put {
                tree: Tree::Checkpoints,
                key: key(session, entries),
                value: super::encode(&record),
            }])
            .map_err(io)?;
        sealed_now = true;
    }
    if let Some(p) = progress {
        let mut total = 0u64;
        for tree in TREES {
            store
                .scan(tree, &session.0, &mut |_, _| {
                    total = total.saturating_add(1);
                    true
                })
                .map_err(io)?;
        }
        p.set_length(total);
    }

    let tmp = out.with_extension("partial");
    let result = (|| -> Result<u64, String> {
        let file = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        let encryptor =
            age::Encryptor::with_recipients(recipients.iter().map(|r| &**r as &dyn age::Recipient))
                .map_err(|e| format!("encryption: {e}"))?;
        let stream = encryptor
            .wrap_output(BufWriter::new(file))
            .map_err(|e| format!("encryption: {e}"))?;
        let mut w = Hashing {
            inner: stream,
            hash: Sha256::new(),
        };
        w.write_all(MAGIC).map_err(io)?;
        w.write_all(&session.0).map_err(io)?;
        w.write_all(&server.public_key().0).map_err(io)?;
        let mut records = 0u64;
        for tree in TREES {
            let tag = Tree::ALL
                .iter()
                .position(|t| *t == tree)
                .and_then(|i| u8::try_from(i).ok())
                .ok_or("tree numbering")?;
            let mut failed = None;
            store
                .scan(tree, &session.0, &mut |k, v| {
                    // A live store goes on growing while it is archived: the archive ends at
                    // the head it verified.
                    if matches!(tree, Tree::Log | Tree::Checkpoints)
                        && key_number(k).is_some_and(|p| p > entries)
                    {
                        return true;
                    }
                    let r = if v.len() > MAX_RECORD_BYTES {
                        Err("a record too long for an archive".to_owned())
                    } else {
                        write_record(&mut w, tag, k, v)
                    };
                    match r {
                        Ok(()) => {
                            records = records.saturating_add(1);
                            if let Some(p) = progress {
                                p.inc(1);
                            }
                            true
                        }
                        Err(e) => {
                            failed = Some(e);
                            false
                        }
                    }
                })
                .map_err(io)?;
            if let Some(e) = failed {
                return Err(e);
            }
        }
        let digest: [u8; 32] = w.hash.clone().finalize().into();
        let seal = ArchiveSeal {
            domain: Domain::Archive,
            session,
            entries,
            head_hash,
            records,
            digest,
            at_ms: now_ms,
        };
        let body = super::encode(&seal);
        let signature = server.sign(&body);
        let mut stream = w.inner;
        stream.write_all(&[END]).map_err(io)?;
        stream.write_all(&records.to_le_bytes()).map_err(io)?;
        let body_len = u32::try_from(body.len()).map_err(io)?;
        stream.write_all(&body_len.to_le_bytes()).map_err(io)?;
        stream.write_all(&body).map_err(io)?;
        stream.write_all(&signature.0).map_err(io)?;
        let file = stream
            .finish()
            .map_err(io)?
            .into_inner()
            .map_err(|e| e.to_string())?;
        file.sync_all().map_err(io)?;
        Ok(records)
    })();
    match result {
        Ok(records) => {
            std::fs::rename(&tmp, out).map_err(|e| format!("{}: {e}", out.display()))?;
            Ok(Written {
                entries,
                first,
                records,
                sealed_now,
            })
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn read_vec(r: &mut impl Read, n: usize) -> Result<Vec<u8>, String> {
    read_exact_vec(r, n).map_err(|e| format!("the archive ends early: {e}"))
}

fn read_len(r: &mut impl Read) -> Result<usize, String> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)
        .map_err(|e| format!("the archive ends early: {e}"))?;
    usize::try_from(u32::from_le_bytes(len)).map_err(io)
}

/// Decrypts `path` with `identities` and loads its records into `store` (an empty one, e.g. in
/// a temporary directory), for [`Loaded::check_seal`] and
/// [`verify_session`](super::log::verify_session) to judge.
///
/// # Errors
/// A sentence: no identity opens it, it is not an archive, it is cut short, a record is too
/// large or lies outside its session. Values are not judged here: that is the verifier's work.
pub fn load(
    path: &Path,
    identities: &[Box<dyn age::Identity + Send + Sync>],
    store: &mut dyn Store,
    progress: Option<&ProgressBar>,
) -> Result<Loaded, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let decryptor = age::Decryptor::new_buffered(BufReader::new(file))
        .map_err(|e| format!("{}: not an age file: {e}", path.display()))?;
    let plain = match decryptor.decrypt(identities.iter().map(|i| &**i as &dyn age::Identity)) {
        Ok(r) => BufReader::new(r),
        Err(age::DecryptError::NoMatchingKeys) => {
            return Err(format!(
                "{}: none of the given identities opens this archive",
                path.display()
            ));
        }
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut r = HashingReader {
        inner: plain,
        hash: Sha256::new(),
    };
    if read_vec(&mut r, MAGIC.len())? != MAGIC {
        return Err(format!("{}: not a Meshwork archive", path.display()));
    }
    let session_bytes: [u8; 16] = read_vec(&mut r, 16)?
        .try_into()
        .map_err(|_| "session id".to_owned())?;
    let server_key: [u8; 32] = read_vec(&mut r, 32)?
        .try_into()
        .map_err(|_| "server key".to_owned())?;
    let session = SessionId(session_bytes);
    let mut puts = Vec::with_capacity(LOAD_CHUNK);
    let mut records = 0u64;
    loop {
        // The end marker is outside the digest: look at it before it is hashed.
        let mut tag = [0u8; 1];
        r.inner
            .read_exact(&mut tag)
            .map_err(|e| format!("the archive ends early: {e}"))?;
        if tag[0] == END {
            break;
        }
        r.hash.update(tag);
        let tree = *Tree::ALL
            .get(usize::from(tag[0]))
            .filter(|t| TREES.contains(t))
            .ok_or_else(|| format!("record {records}: unknown tree {}", tag[0]))?;
        let key_len = read_len(&mut r)?;
        if key_len > 1024 {
            return Err(format!("record {records}: a key of {key_len} bytes"));
        }
        let key = read_vec(&mut r, key_len)?;
        if !key.starts_with(&session.0) {
            return Err(format!(
                "record {records}: a key outside the archived session"
            ));
        }
        let value_len = read_len(&mut r)?;
        if value_len > MAX_RECORD_BYTES {
            return Err(format!("record {records}: a value of {value_len} bytes"));
        }
        let value = read_vec(&mut r, value_len)?;
        puts.push(Put { tree, key, value });
        records = records.saturating_add(1);
        if puts.len() >= LOAD_CHUNK {
            store.commit(&puts).map_err(io)?;
            if let Some(p) = progress {
                p.inc(puts.len() as u64);
            }
            puts.clear();
        }
    }
    if !puts.is_empty() {
        store.commit(&puts).map_err(io)?;
        if let Some(p) = progress {
            p.inc(puts.len() as u64);
        }
    }
    let digest: [u8; 32] = r.hash.finalize().into();
    let mut plain = r.inner;
    let count = read_vec(&mut plain, 8)?;
    let count = u64::from_le_bytes(count.try_into().map_err(|_| "count".to_owned())?);
    if count != records {
        return Err(format!(
            "the archive says {count} records but holds {records}"
        ));
    }
    let seal_len = read_len(&mut plain)?;
    if seal_len > MAX_SEAL_BYTES {
        return Err("the archive's seal is too large".into());
    }
    let seal_body = read_vec(&mut plain, seal_len)?;
    let signature: [u8; 64] = read_vec(&mut plain, 64)?
        .try_into()
        .map_err(|_| "seal signature".to_owned())?;
    let mut rest = [0u8; 1];
    if plain.read(&mut rest).map_err(io)? != 0 {
        return Err("the archive goes on after its seal".into());
    }
    Ok(Loaded {
        session,
        server_key: PublicKey(server_key),
        records,
        digest,
        seal: (seal_body, Signature(signature)),
    })
}
