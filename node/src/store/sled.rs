//! The store on disk: sled 0.34 under `DATA_DIR/store`, opened only under the data dir's
//! lock ([`crate::identity::DataDir`]).
//!
//! sled because it is a pure-Rust embedded ordered map with named trees, prefix scans
//! and crash recovery (what the design card names). Its weak points are known and planned
//! for: writes not flushed are lost on a `kill -9` (so [`super::StoreOp::Flush`] comes
//! before anything that must survive is acknowledged), and some stores will not open after
//! a crash (so such a store is moved aside and rebuilt: it is only a cache).

use super::{codec, Store, StoreError, Stored, Tree, FORMAT};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// sled's page cache. Its default is 1 GiB, which sled fills as records churn: a node
/// would grow by hundreds of MiB to cache a table that its core already holds in memory
/// and that is read from disk once, at start. Writes do not need the cache; 4 MiB keeps
/// the hot index pages of a table of a few hundred thousand records.
pub const CACHE_BYTES: u64 = 4 << 20;

pub struct SledStore {
    path: PathBuf,
    db: ::sled::Db,
    trees: Vec<::sled::Tree>,
}

/// A store opened by [`SledStore::open_or_rebuild`].
pub struct Opened {
    pub store: SledStore,
    pub stored: Stored,
    /// Where the store that did not open was moved.
    pub moved_aside: Option<PathBuf>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore").field("path", &self.path).finish_non_exhaustive()
    }
}

impl SledStore {
    /// Opens the store at `path`, creating it if needed. A store that sled cannot open,
    /// that panics sled, or of another format is an error; see
    /// [`SledStore::open_or_rebuild`].
    pub fn open(path: &Path) -> Result<SledStore, StoreError> {
        let err = |source: ::sled::Error| match &source {
            // sled's own lock on its files: another process has this store. Not corruption.
            ::sled::Error::Io(e) if e.to_string().contains("could not acquire lock") => {
                StoreError::Locked { path: path.to_owned() }
            }
            // Not ours to open: moving it aside would not make the next one ours either.
            ::sled::Error::Io(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                StoreError::Denied { path: path.to_owned(), reason: e.to_string() }
            }
            _ => StoreError::Open { path: path.to_owned(), source },
        };
        // sled opens a store whose log is garbage as an empty one: a store that existed
        // and lacks even the format written when it was made lost its contents.
        let existed = path.join("db").metadata().is_ok_and(|m| m.len() > 0);
        let opened = catch_unwind(|| {
            let db = ::sled::Config::new().path(path).cache_capacity(CACHE_BYTES).open()?;
            let trees = Tree::ALL.iter().map(|t| db.open_tree(t.name())).collect::<Result<Vec<_>, _>>()?;
            Ok((db, trees))
        });
        let (db, trees) = match opened {
            Ok(Ok(opened)) => opened,
            Ok(Err(e)) => return Err(err(e)),
            Err(_) => return Err(StoreError::Panicked { path: path.to_owned() }),
        };
        let mut store = SledStore { path: path.to_owned(), db, trees };
        let format = FORMAT.to_be_bytes();
        match store.get(Tree::Meta, codec::FORMAT)? {
            Some(found) if found == format => {}
            Some(found) => {
                let found = <[u8; 4]>::try_from(&found[..])
                    .map_or_else(|_| format!("{found:02x?}"), |b| u32::from_be_bytes(b).to_string());
                return Err(StoreError::Format { path: path.to_owned(), found });
            }
            None if existed => return Err(StoreError::Lost { path: path.to_owned() }),
            None => {
                store.insert(Tree::Meta, codec::FORMAT, format.to_vec())?;
                store.flush()?;
            }
        }
        Ok(store)
    }

    /// Opens and loads the store at `path`. One that does not open or load (corrupt, of
    /// another format, sled gave up on it) is moved aside to `PATH.corrupt-UNIXTIME` with
    /// a warning, and an empty one is made in its place. An error only when the store is
    /// locked by another process, not ours to open, or no store can be made at all (no
    /// space): the node then runs without one.
    pub fn open_or_rebuild(path: &Path) -> Result<Opened, StoreError> {
        let failed = match Self::open(path).and_then(|mut store| Ok((store.guarded_load()?, store))) {
            Ok((stored, store)) => return Ok(Opened { store, stored, moved_aside: None }),
            Err(e @ (StoreError::Locked { .. } | StoreError::Denied { .. })) => return Err(e),
            Err(e) => e,
        };
        let aside = aside_path(path);
        std::fs::rename(path, &aside).map_err(|source| StoreError::MoveAside {
            from: path.to_owned(),
            to: aside.clone(),
            source,
        })?;
        tracing::warn!("{failed}: moved it aside to {} and starting with an empty store", aside.display());
        let mut store = Self::open(path)?;
        let stored = store.guarded_load()?;
        Ok(Opened { store, stored, moved_aside: Some(aside) })
    }

    /// [`Store::load`], with sled's panics on a damaged store turned into an error.
    fn guarded_load(&mut self) -> Result<Stored, StoreError> {
        let path = self.path.clone();
        let stored = catch_unwind(AssertUnwindSafe(|| self.load())).map_err(|_| StoreError::Panicked { path })??;
        if stored.skipped > 0 {
            tracing::warn!(
                skipped = stored.skipped,
                "store {}: records that did not decode were dropped",
                self.path.display()
            );
        }
        Ok(stored)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn tree(&self, tree: Tree) -> &::sled::Tree {
        &self.trees[tree as usize]
    }
}

/// `PATH.corrupt-UNIXTIME`, or with `-N` if that is taken (two in one second).
fn aside_path(path: &Path) -> PathBuf {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let name = path.file_name().map_or_else(|| "store".into(), |n| n.to_string_lossy().into_owned());
    let base = path.with_file_name(format!("{name}.corrupt-{secs}"));
    (1..)
        .map(|n| if n == 1 { base.clone() } else { PathBuf::from(format!("{}-{n}", base.display())) })
        .find(|p| !p.exists())
        .expect("an unused name")
}

impl Store for SledStore {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree(tree).get(key)?.map(|v| v.to_vec()))
    }

    fn insert(&mut self, tree: Tree, key: &[u8], value: Vec<u8>) -> Result<(), StoreError> {
        self.tree(tree).insert(key, value)?;
        Ok(())
    }

    fn remove(&mut self, tree: Tree, key: &[u8]) -> Result<(), StoreError> {
        self.tree(tree).remove(key)?;
        Ok(())
    }

    fn scan(&self, tree: Tree, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        let entries = self.tree(tree).scan_prefix(prefix);
        Ok(entries.map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec()))).collect::<Result<_, _>>()?)
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}
