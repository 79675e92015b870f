//! The sled 0.34 backend: one keyspace, the tree as a one-byte key prefix, so a group commit is
//! one atomic `apply_batch` followed by `flush`.
//!
//! Caveat (ADR 0003): on Linux sled 0.34's `flush` ends in `sync_file_range`, which neither
//! flushes the drive's write cache nor file metadata; only sled's background flusher calls
//! `sync_all`. An acknowledgement from this backend survives a process crash, not necessarily a
//! power loss. It is selectable (`--store sled`), not the default.

use std::path::{Path, PathBuf};

use super::{Put, Store, StoreError, Tree, backend_err};

const NAME: &str = "sled";

fn prefix_byte(tree: Tree) -> u8 {
    match tree {
        Tree::Meta => 0,
        Tree::Sessions => 1,
        Tree::Authors => 2,
        Tree::Log => 3,
        Tree::Checkpoints => 4,
        Tree::Snapshots => 5,
        Tree::Assets => 6,
        Tree::Invites => 7,
        Tree::Bases => 8,
    }
}

fn full_key(tree: Tree, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len().saturating_add(1));
    k.push(prefix_byte(tree));
    k.extend_from_slice(key);
    k
}

/// A sled database directory.
#[derive(Debug)]
pub struct SledStore {
    db: sled::Db,
    path: PathBuf,
}

impl SledStore {
    /// Opens or creates the directory.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .open()
            .map_err(|e| backend_err(NAME, e))?;
        Ok(Self {
            db,
            path: path.to_path_buf(),
        })
    }
}

impl Store for SledStore {
    fn backend(&self) -> &'static str {
        NAME
    }

    fn commit(&mut self, puts: &[Put]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for p in puts {
            batch.insert(full_key(p.tree, &p.key), p.value.as_slice());
        }
        self.db
            .apply_batch(batch)
            .map_err(|e| backend_err(NAME, e))?;
        self.db.flush().map_err(|e| backend_err(NAME, e))?;
        Ok(())
    }

    fn share(&self) -> Box<dyn Store + Sync> {
        Box::new(Self {
            db: self.db.clone(),
            path: self.path.clone(),
        })
    }

    fn remove_range(&mut self, tree: Tree, from: &[u8], to: &[u8]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for item in self.db.range(full_key(tree, from)..full_key(tree, to)) {
            let (k, _) = item.map_err(|e| backend_err(NAME, e))?;
            batch.remove(k);
        }
        self.db
            .apply_batch(batch)
            .map_err(|e| backend_err(NAME, e))?;
        self.db.flush().map_err(|e| backend_err(NAME, e))?;
        Ok(())
    }

    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .db
            .get(full_key(tree, key))
            .map_err(|e| backend_err(NAME, e))?
            .map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        tree: Tree,
        prefix: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        for item in self.db.scan_prefix(full_key(tree, prefix)) {
            let (k, v) = item.map_err(|e| backend_err(NAME, e))?;
            if !f(k.get(1..).unwrap_or_default(), &v) {
                break;
            }
        }
        Ok(())
    }

    fn last(&self, tree: Tree, prefix: &[u8]) -> Result<Option<super::KeyValue>, StoreError> {
        match self.db.scan_prefix(full_key(tree, prefix)).next_back() {
            Some(item) => {
                let (k, v) = item.map_err(|e| backend_err(NAME, e))?;
                Ok(Some((k.get(1..).unwrap_or_default().to_vec(), v.to_vec())))
            }
            None => Ok(None),
        }
    }

    fn size_bytes(&self) -> u64 {
        self.db
            .size_on_disk()
            .unwrap_or_else(|_| dir_size(&self.path))
    }
}

fn dir_size(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
