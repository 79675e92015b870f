//! Durable storage. A narrow [`Store`] trait (atomic, durable group commits of puts; ordered
//! prefix scans) with two embedded backends, [`redb`](self::redb_store) (the default) and
//! [`sled`](self::sled_store); everything above it — record formats, the hash chain, signed
//! checkpoints, snapshots, recovery, verification, backups — is written once here and in
//! [`log`] and [`writer`].
//!
//! Logical trees (see [`Tree`]); keys start with the 16-byte session id where per session:
//! - `meta`: `schema_version` → u32 LE.
//! - `sessions`: session → [`SessionRecord`] (name, chain head).
//! - `authors`: session ‖ author (u32 BE) → `AuthorRecord`.
//! - `log`: session ‖ position (u64 BE, 1-based acceptance order) → [`log::LogRecord`]
//!   (previous hash + the entry exactly as signed). Positions follow the order the authority
//!   committed, which is the order the hash chain must follow; the total order (`CommandId`)
//!   is rebuilt by replay.
//! - `checkpoints`: session ‖ position → [`log::CheckpointRecord`] signed by the server key.
//! - `snapshots`: session ‖ position → `SessionSnapshot`.
//! - `assets`: session ‖ asset id (the uploaded file's SHA-256) → the file as read
//!   (`meshwork_protocol::asset::ImportAsset`, postcard): what an `Import` applies, on replay too.

use std::path::Path;

use meshwork_protocol::SessionId;
use serde::{Deserialize, Serialize};

pub mod archive;
pub mod backup;
pub mod log;
pub mod redb_store;
pub mod sled_store;
pub mod writer;

/// The schema this build writes. Bump it with a migration in [`migrate`] and a fixture under
/// `tests/fixtures/db/`.
pub const SCHEMA_VERSION: u32 = 1;

/// A logical tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tree {
    /// Store-wide metadata.
    Meta,
    /// Per-session metadata.
    Sessions,
    /// Registered author keys.
    Authors,
    /// The hash-chained log.
    Log,
    /// Signed checkpoints of the chain.
    Checkpoints,
    /// Session snapshots.
    Snapshots,
    /// Imported assets.
    Assets,
    /// Invites' limits, revocations and uses (a tree added without a schema change: a store
    /// from before has none, which means no limits set and nothing revoked).
    Invites,
    /// Per session, the signed base where its history rotated into an archive ends (the
    /// session's state then): absent means the log starts at entry 1.
    Bases,
}

impl Tree {
    /// Every tree.
    pub const ALL: [Self; 9] = [
        Self::Meta,
        Self::Sessions,
        Self::Authors,
        Self::Log,
        Self::Checkpoints,
        Self::Snapshots,
        Self::Assets,
        Self::Invites,
        Self::Bases,
    ];

    /// Its name (redb table name; sled key prefix byte is the index).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Meta => "meta",
            Self::Sessions => "sessions",
            Self::Authors => "authors",
            Self::Log => "log",
            Self::Checkpoints => "checkpoints",
            Self::Snapshots => "snapshots",
            Self::Assets => "assets",
            Self::Invites => "invites",
            Self::Bases => "bases",
        }
    }
}

/// One write of a group commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Put {
    /// Where.
    pub tree: Tree,
    /// Key.
    pub key: Vec<u8>,
    /// Value.
    pub value: Vec<u8>,
}

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed.
    #[error("{backend}: {message}")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// What it said.
        message: String,
    },
    /// A stored value does not decode or the chain does not hold.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// The store was written by a newer build.
    #[error(
        "store schema version {found} is newer than this build's {SCHEMA_VERSION}; upgrade the server"
    )]
    TooNew {
        /// The stored version.
        found: u32,
    },
}

/// A key and its value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// An embedded key-value store with atomic, durable group commits.
pub trait Store: Send + 'static {
    /// Backend name, for logs and metrics.
    fn backend(&self) -> &'static str;

    /// Writes every put atomically; returns once the backend reports them durable.
    ///
    /// # Errors
    /// [`StoreError::Backend`]; nothing was written then.
    fn commit(&mut self, puts: &[Put]) -> Result<(), StoreError>;

    /// One value.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    /// Removes every key of `tree` in `from..to`, atomically and durably (old history rotated
    /// out into an archive).
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the removal did not complete.
    fn remove_range(&mut self, tree: Tree, from: &[u8], to: &[u8]) -> Result<(), StoreError>;

    /// Another handle on the same database, for work beside the writer thread (a scheduled
    /// rotation reads and archives old history while commits go on). Reads see committed
    /// data; its commits are atomic like the writer's and serialize with them.
    fn share(&self) -> Box<dyn Store + Sync>;

    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Calls `f` for every key starting with `prefix`, in key order, until it returns `false`.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn scan(
        &self,
        tree: Tree,
        prefix: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError>;

    /// The last key (and value) starting with `prefix`.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn last(&self, tree: Tree, prefix: &[u8]) -> Result<Option<KeyValue>, StoreError>;

    /// Bytes the store occupies on disk.
    fn size_bytes(&self) -> u64;
}

/// Which backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// redb: copy-on-write B-trees, `fsync` on every commit (the default; see ADR 0003).
    #[default]
    Redb,
    /// sled 0.34: log-structured; its `flush` does not reach the disk cache (see ADR 0003).
    Sled,
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "redb" => Ok(Self::Redb),
            "sled" => Ok(Self::Sled),
            other => Err(format!("unknown store {other:?}: use redb or sled")),
        }
    }
}

/// Opens (creating if needed) the store of `backend` in the data dir, and migrates it.
///
/// # Errors
/// [`StoreError`] when it cannot be opened or is newer than this build.
pub fn open(backend: Backend, data_dir: &Path) -> Result<Box<dyn Store>, StoreError> {
    std::fs::create_dir_all(data_dir).map_err(|e| backend_err("store", e))?;
    let mut store: Box<dyn Store> = match backend {
        Backend::Redb => Box::new(redb_store::RedbStore::open(&data_dir.join("store.redb"))?),
        Backend::Sled => Box::new(sled_store::SledStore::open(&data_dir.join("store.sled"))?),
    };
    migrate(store.as_mut())?;
    Ok(store)
}

/// Brings the store to [`SCHEMA_VERSION`], one numbered migration at a time.
///
/// # Errors
/// [`StoreError::TooNew`] for a store from a newer build.
pub fn migrate(store: &mut dyn Store) -> Result<u32, StoreError> {
    let found = schema_version(store)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew { found });
    }
    let mut version = found;
    while version < SCHEMA_VERSION {
        // Each arm moves exactly one version forward, in the same commit as the new number.
        let mut puts = match version {
            // 0 → 1: an empty or new store; nothing to convert.
            0 => Vec::new(),
            _ => {
                return Err(StoreError::Corrupt(format!(
                    "no migration from schema {version}"
                )));
            }
        };
        version = version.saturating_add(1);
        puts.push(Put {
            tree: Tree::Meta,
            key: b"schema_version".to_vec(),
            value: version.to_le_bytes().to_vec(),
        });
        store.commit(&puts)?;
    }
    Ok(found)
}

/// The stored schema version (0 for an empty store).
///
/// # Errors
/// [`StoreError`] for unreadable metadata.
pub fn schema_version(store: &dyn Store) -> Result<u32, StoreError> {
    match store.get(Tree::Meta, b"schema_version")? {
        None => Ok(0),
        Some(v) => v
            .as_slice()
            .try_into()
            .map(u32::from_le_bytes)
            .map_err(|_| StoreError::Corrupt("schema_version is not a u32".into())),
    }
}

/// Per-session metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Display name.
    pub name: String,
    /// Entries in the log.
    pub head_position: u64,
    /// Chain hash after the last entry.
    pub head_hash: [u8; 32],
}

/// `session ‖ n` as a big-endian key (sorts by `n`).
#[must_use]
pub fn key(session: SessionId, n: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(24);
    k.extend_from_slice(&session.0);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

/// The number in a [`key`].
#[must_use]
pub fn key_number(key: &[u8]) -> Option<u64> {
    key.get(16..24)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
}

pub(crate) fn backend_err(backend: &'static str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend {
        backend,
        message: e.to_string(),
    }
}

/// Encodes a record.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value)
        .expect("postcard into a Vec fails only on serde features our records do not use")
}

/// Decodes a record, naming what it was on failure.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    what: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

#[cfg(test)]
mod conformance;
