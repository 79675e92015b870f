//! Encrypted audit archives: one session's signed, hash-chained log with its authors,
//! checkpoints, assets and invites, encrypted to one or more [age](https://age-encryption.org)
//! recipients (`age1…` X25519 public keys, as `age-keygen` makes them).
//!
//! Plaintext (what the age stream holds): `MWARCHV\x01`, the session id (16 bytes), the public
//! key of the server that signed the checkpoints (32 bytes), then records laid out as in a
//! backup (`[tree: u8][key len: u32 LE][key][value len: u32 LE][value]`, the tree numbered as
//! in [`Tree::ALL`]), then `0xFF` and the number of records (u64 LE).
//!
//! The archive ends on a checkpoint at its last entry, signed by the server key (signed and
//! stored first when the store had none there), so an archive cut short does not verify. Its
//! integrity comes from the chain and the checkpoints, never from the encryption: anyone who
//! knows a recipient's public key can make an age file. `verify-log --archive` decrypts it into
//! a temporary store and runs the same checks as on a live store
//! ([`verify_session`](super::log::verify_session)).

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::str::FromStr as _;

use indicatif::ProgressBar;
use meshwork_protocol::{Domain, PublicKey, SessionId, Signer};

use super::log::{CheckpointBody, CheckpointRecord, LogRecord, chain_hash};
use super::{Put, Store, Tree, key, key_number};

const MAGIC: &[u8] = b"MWARCHV\x01";
const END: u8 = 0xff;
/// Puts per commit while loading an archive.
const LOAD_CHUNK: usize = 10_000;
/// Trees that hold a session's records under its id (metadata and snapshots stay out: the
/// archive is the record of what was signed, not a way to restart the session).
const TREES: [Tree; 6] = [
    Tree::Sessions,
    Tree::Authors,
    Tree::Log,
    Tree::Checkpoints,
    Tree::Assets,
    Tree::Invites,
];

/// What [`write`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// Log entries.
    pub entries: u64,
    /// Records of every kind.
    pub records: u64,
    /// Whether the closing checkpoint was signed now (the store had none at the head).
    pub sealed_now: bool,
}

/// What an archive says about itself, read by [`load`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The session.
    pub session: SessionId,
    /// The server key the archive names (to be checked against one the reader trusts).
    pub server_key: PublicKey,
    /// Records loaded.
    pub records: u64,
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
fn head(store: &dyn Store, session: SessionId) -> Result<(u64, [u8; 32]), String> {
    let mut head = [0u8; 32];
    let mut n = 0u64;
    let mut err = None;
    store
        .scan(Tree::Log, &session.0, &mut |k, v| {
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

/// Writes `session` from `store` to `out`, encrypted to `recipients`, through a temporary file
/// renamed when complete. Signs and stores a checkpoint at the head first when there is none
/// (`server` must be the key that signed the others, `now_ms` the time it records).
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
    let (entries, head_hash) = head(store, session)?;
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
        let mut w = encryptor
            .wrap_output(BufWriter::new(file))
            .map_err(|e| format!("encryption: {e}"))?;
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
                    let r = (|| -> std::io::Result<()> {
                        w.write_all(&[tag])?;
                        w.write_all(&u32::try_from(k.len()).unwrap_or(u32::MAX).to_le_bytes())?;
                        w.write_all(k)?;
                        w.write_all(&u32::try_from(v.len()).unwrap_or(u32::MAX).to_le_bytes())?;
                        w.write_all(v)
                    })();
                    match r {
                        Ok(()) => {
                            records = records.saturating_add(1);
                            if let Some(p) = progress {
                                p.inc(1);
                            }
                            true
                        }
                        Err(e) => {
                            failed = Some(e.to_string());
                            false
                        }
                    }
                })
                .map_err(io)?;
            if let Some(e) = failed {
                return Err(e);
            }
        }
        w.write_all(&[END]).map_err(io)?;
        w.write_all(&records.to_le_bytes()).map_err(io)?;
        let file = w
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
    let mut v = vec![0u8; n];
    r.read_exact(&mut v)
        .map_err(|e| format!("the archive ends early: {e}"))?;
    Ok(v)
}

fn read_len(r: &mut impl Read) -> Result<usize, String> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)
        .map_err(|e| format!("the archive ends early: {e}"))?;
    usize::try_from(u32::from_le_bytes(len)).map_err(io)
}

/// Decrypts `path` with `identities` and loads its records into `store` (an empty one, e.g. in
/// a temporary directory), for [`verify_session`](super::log::verify_session) to check.
///
/// # Errors
/// A sentence: no identity opens it, it is not an archive, it is cut short, or a record lies
/// outside its session. Values are not judged here: that is the verifier's work.
pub fn load(
    path: &Path,
    identities: &[Box<dyn age::Identity + Send + Sync>],
    store: &mut dyn Store,
    progress: Option<&ProgressBar>,
) -> Result<Header, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let decryptor = age::Decryptor::new_buffered(BufReader::new(file))
        .map_err(|e| format!("{}: not an age file: {e}", path.display()))?;
    let mut r = match decryptor.decrypt(identities.iter().map(|i| &**i as &dyn age::Identity)) {
        Ok(r) => BufReader::new(r),
        Err(age::DecryptError::NoMatchingKeys) => {
            return Err(format!(
                "{}: none of the given identities opens this archive",
                path.display()
            ));
        }
        Err(e) => return Err(format!("{}: {e}", path.display())),
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
        let mut tag = [0u8; 1];
        r.read_exact(&mut tag)
            .map_err(|e| format!("the archive ends early: {e}"))?;
        if tag[0] == END {
            let count = read_vec(&mut r, 8)?;
            let count = u64::from_le_bytes(count.try_into().map_err(|_| "count".to_owned())?);
            if count != records {
                return Err(format!(
                    "the archive says {count} records but holds {records}"
                ));
            }
            break;
        }
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
    Ok(Header {
        session,
        server_key: PublicKey(server_key),
        records,
    })
}

/// The position of the last checkpoint stored for `session` (0 when none).
///
/// # Errors
/// A sentence when the store cannot be read.
pub fn last_checkpoint(store: &dyn Store, session: SessionId) -> Result<u64, String> {
    Ok(store
        .last(Tree::Checkpoints, &session.0)
        .map_err(io)?
        .and_then(|(k, _)| key_number(&k))
        .unwrap_or(0))
}
