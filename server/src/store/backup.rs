//! Backups: a portable dump of every tree (any backend can restore any backend's dump).
//!
//! Format: `MWBACKUP\x01`, then records `[tree: u8][key len: u32 LE][key][value len: u32 LE]
//! [value]`, then `0xFF` and the SHA-256 of everything before it. A dump is written to a
//! temporary file, synced and renamed, so a half-written backup never looks complete.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

use super::{Put, Store, Tree};

const MAGIC: &[u8] = b"MWBACKUP\x01";
const END: u8 = 0xff;
/// Puts per commit while restoring.
const RESTORE_CHUNK: usize = 10_000;

/// A writer that hashes what passes through it (backups, archives).
pub(crate) struct Hashing<W> {
    pub(crate) inner: W,
    pub(crate) hash: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(buf.get(..n).unwrap_or_default());
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a consistent dump of `store` to `path` (the caller guarantees no concurrent writes:
/// the writer thread runs it between commits). Returns the number of records.
///
/// # Errors
/// A sentence naming the failure.
pub fn write(
    store: &dyn Store,
    path: &Path,
    progress: Option<&ProgressBar>,
) -> Result<u64, String> {
    let tmp = path.with_extension("partial");
    let file = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let mut out = Hashing {
        inner: BufWriter::new(file),
        hash: Sha256::new(),
    };
    out.write_all(MAGIC).map_err(|e| e.to_string())?;
    let mut records = 0u64;
    let mut io_err = None;
    for (index, tree) in Tree::ALL.iter().enumerate() {
        let tag = u8::try_from(index).map_err(|e| e.to_string())?;
        store
            .scan(
                *tree,
                &[],
                &mut |k, v| match write_record(&mut out, tag, k, v) {
                    Ok(()) => {
                        records = records.saturating_add(1);
                        if let Some(p) = progress {
                            p.inc(1);
                        }
                        true
                    }
                    Err(e) => {
                        io_err = Some(e);
                        false
                    }
                },
            )
            .map_err(|e| e.to_string())?;
        if let Some(e) = io_err.take() {
            return Err(e);
        }
    }
    out.write_all(&[END]).map_err(|e| e.to_string())?;
    let digest: [u8; 32] = out.hash.clone().finalize().into();
    let mut inner = out.inner.into_inner().map_err(|e| e.to_string())?;
    inner.write_all(&digest).map_err(|e| e.to_string())?;
    inner.sync_all().map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(records)
}

/// One record as backups and archives lay it out: `[tree][key len: u32 LE][key][value len:
/// u32 LE][value]`. A key or value too long for its length field is an error, never a
/// truncated length.
///
/// # Errors
/// A sentence: the record is too long, or the write failed.
pub(crate) fn write_record(w: &mut impl Write, tag: u8, k: &[u8], v: &[u8]) -> Result<(), String> {
    let too_long = || "a record too long for its length field".to_owned();
    let k_len = u32::try_from(k.len()).map_err(|_| too_long())?;
    let v_len = u32::try_from(v.len()).map_err(|_| too_long())?;
    (|| -> std::io::Result<()> {
        w.write_all(&[tag])?;
        w.write_all(&k_len.to_le_bytes())?;
        w.write_all(k)?;
        w.write_all(&v_len.to_le_bytes())?;
        w.write_all(v)
    })()
    .map_err(|e| e.to_string())
}

/// Reads exactly `n` bytes, growing the buffer only as bytes arrive: a length read from a file
/// is never trusted for an allocation.
///
/// # Errors
/// When the reader fails or ends first.
pub(crate) fn read_exact_vec(r: &mut impl Read, n: usize) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::new();
    let want = u64::try_from(n).map_err(std::io::Error::other)?;
    let got = r.by_ref().take(want).read_to_end(&mut v)?;
    if got == n {
        Ok(v)
    } else {
        Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof))
    }
}

/// Checks a dump's hash, then loads it into `store`. Returns the number of records.
///
/// # Errors
/// A sentence naming the failure; on a bad hash nothing is written.
pub fn restore(
    path: &Path,
    store: &mut dyn Store,
    progress: Option<&ProgressBar>,
) -> Result<u64, String> {
    // Pass 1: the whole file hashes to its trailer.
    let bytes_total = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if bytes_total < (MAGIC.len() as u64).saturating_add(33) {
        return Err("not a Meshwork backup (too short)".into());
    }
    let body_len = bytes_total.saturating_sub(32);
    let mut file = BufReader::new(std::fs::File::open(path).map_err(|e| e.to_string())?);
    let mut hash = Sha256::new();
    let mut left = body_len;
    let mut buf = vec![0u8; 1 << 16];
    while left > 0 {
        let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        let chunk = buf.get_mut(..want).unwrap_or_default();
        file.read_exact(chunk).map_err(|e| e.to_string())?;
        hash.update(&*chunk);
        left = left.saturating_sub(want as u64);
    }
    let mut trailer = [0u8; 32];
    file.read_exact(&mut trailer).map_err(|e| e.to_string())?;
    if <[u8; 32]>::from(hash.finalize()) != trailer {
        return Err("backup is damaged (checksum mismatch); nothing was restored".into());
    }
    // Pass 2: load.
    let mut file = BufReader::new(std::fs::File::open(path).map_err(|e| e.to_string())?);
    let magic = read_exact_vec(&mut file, MAGIC.len()).map_err(|e| e.to_string())?;
    if magic != MAGIC {
        return Err("not a Meshwork backup (bad magic)".into());
    }
    let mut puts = Vec::with_capacity(RESTORE_CHUNK);
    let mut records = 0u64;
    loop {
        let mut tag = [0u8; 1];
        file.read_exact(&mut tag).map_err(|e| e.to_string())?;
        if tag[0] == END {
            break;
        }
        let tree = *Tree::ALL
            .get(usize::from(tag[0]))
            .ok_or("unknown tree in backup")?;
        let mut len = [0u8; 4];
        file.read_exact(&mut len).map_err(|e| e.to_string())?;
        let key = read_exact_vec(&mut file, u32::from_le_bytes(len) as usize)
            .map_err(|e| e.to_string())?;
        file.read_exact(&mut len).map_err(|e| e.to_string())?;
        let value = read_exact_vec(&mut file, u32::from_le_bytes(len) as usize)
            .map_err(|e| e.to_string())?;
        puts.push(Put { tree, key, value });
        records = records.saturating_add(1);
        if puts.len() >= RESTORE_CHUNK {
            store.commit(&puts).map_err(|e| e.to_string())?;
            if let Some(p) = progress {
                p.inc(puts.len() as u64);
            }
            puts.clear();
        }
    }
    if !puts.is_empty() {
        store.commit(&puts).map_err(|e| e.to_string())?;
        if let Some(p) = progress {
            p.inc(puts.len() as u64);
        }
    }
    Ok(records)
}
