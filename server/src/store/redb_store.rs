//! The redb backend: one table per tree; every commit is a write transaction with redb's
//! default `Durability::Immediate` (data and metadata `fsync`ed before `commit` returns).

use std::path::{Path, PathBuf};

use redb::{ReadableDatabase as _, TableDefinition};

use super::{Put, Store, StoreError, Tree, backend_err};

const NAME: &str = "redb";

fn table(tree: Tree) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(tree.name())
}

/// The page cache redb may keep, in bytes. redb's own default is 1 GiB, and a restart's one
/// sequential read of a long log would leave all of it resident; the interior pages every
/// lookup re-reads fit many times over in this.
pub const CACHE_BYTES: usize = 16 << 20;

/// A redb database file.
#[derive(Debug)]
pub struct RedbStore {
    db: std::sync::Arc<redb::Database>,
    path: PathBuf,
}

impl RedbStore {
    /// Opens or creates the file, with every table present.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| backend_err(NAME, e))?;
        let txn = db.begin_write().map_err(|e| backend_err(NAME, e))?;
        for tree in Tree::ALL {
            txn.open_table(table(tree))
                .map_err(|e| backend_err(NAME, e))?;
        }
        txn.commit().map_err(|e| backend_err(NAME, e))?;
        Ok(Self {
            db: std::sync::Arc::new(db),
            path: path.to_path_buf(),
        })
    }
}

impl Store for RedbStore {
    fn backend(&self) -> &'static str {
        NAME
    }

    fn commit(&mut self, puts: &[Put]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| backend_err(NAME, e))?;
        for tree in Tree::ALL {
            if !puts.iter().any(|p| p.tree == tree) {
                continue;
            }
            let mut t = txn
                .open_table(table(tree))
                .map_err(|e| backend_err(NAME, e))?;
            for p in puts.iter().filter(|p| p.tree == tree) {
                t.insert(p.key.as_slice(), p.value.as_slice())
                    .map_err(|e| backend_err(NAME, e))?;
            }
        }
        txn.commit().map_err(|e| backend_err(NAME, e))
    }

    fn share(&self) -> Box<dyn Store + Sync> {
        Box::new(Self {
            db: self.db.clone(),
            path: self.path.clone(),
        })
    }

    fn remove_range(&mut self, tree: Tree, from: &[u8], to: &[u8]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| backend_err(NAME, e))?;
        {
            let mut t = txn
                .open_table(table(tree))
                .map_err(|e| backend_err(NAME, e))?;
            t.retain_in(from..to, |_, _| false)
                .map_err(|e| backend_err(NAME, e))?;
        }
        txn.commit().map_err(|e| backend_err(NAME, e))
    }

    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| backend_err(NAME, e))?;
        let t = txn
            .open_table(table(tree))
            .map_err(|e| backend_err(NAME, e))?;
        Ok(t.get(key)
            .map_err(|e| backend_err(NAME, e))?
            .map(|v| v.value().to_vec()))
    }

    fn scan(
        &self,
        tree: Tree,
        prefix: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_read().map_err(|e| backend_err(NAME, e))?;
        let t = txn
            .open_table(table(tree))
            .map_err(|e| backend_err(NAME, e))?;
        for item in t.range(prefix..).map_err(|e| backend_err(NAME, e))? {
            let (k, v) = item.map_err(|e| backend_err(NAME, e))?;
            if !k.value().starts_with(prefix) || !f(k.value(), v.value()) {
                break;
            }
        }
        Ok(())
    }

    fn last(&self, tree: Tree, prefix: &[u8]) -> Result<Option<super::KeyValue>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| backend_err(NAME, e))?;
        let t = txn
            .open_table(table(tree))
            .map_err(|e| backend_err(NAME, e))?;
        let mut end = prefix.to_vec();
        end.push(0xff);
        let mut range = t
            .range(prefix..end.as_slice())
            .map_err(|e| backend_err(NAME, e))?;
        // Keys under one prefix are fixed-length here, so prefix‖0xff bounds them all.
        match range.next_back() {
            Some(item) => {
                let (k, v) = item.map_err(|e| backend_err(NAME, e))?;
                Ok(k.value()
                    .starts_with(prefix)
                    .then(|| (k.value().to_vec(), v.value().to_vec())))
            }
            None => Ok(None),
        }
    }

    fn size_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }
}
