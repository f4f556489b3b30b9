//! The node's key, kept in the data dir (mode 0600) and created on first use; and the lock
//! that keeps the data dir one node's.

use introducer_actors::identity::Identity;
use libp2p_identity::{ed25519, Keypair};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const KEY_FILE: &str = "identity.key";
const LOCK_FILE: &str = "lock";
/// The node's store (sled) inside the data dir.
const STORE_DIR: &str = "store";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot create data dir {0}: {1}")]
    DataDir(PathBuf, std::io::Error),
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
    #[error("{0} is not an ed25519 libp2p key (protobuf encoding expected)")]
    BadKey(PathBuf),
    #[error("{0} is readable by others (mode {1:o}); run: chmod 600 {0}")]
    Exposed(PathBuf, u32),
    #[error("data dir {0} is in use by another introducer node (stop it, or pass another --data-dir)")]
    InUse(PathBuf),
    /// Neither `INTRODUCER_DATA_DIR`, `XDG_DATA_HOME` nor `HOME` says where: a key is
    /// not left in whatever directory the process happened to start in.
    #[error("no data dir: pass --data-dir DIR, or set INTRODUCER_DATA_DIR, XDG_DATA_HOME or HOME")]
    NoDataDir,
}

/// The data dir, held by this process: a second node on it would run under the same
/// identity (and, with the mesh's store, write the same files). Released when dropped, or
/// when the process dies, however it dies (an advisory lock on `lock`, not a pid file).
#[derive(Debug)]
pub struct DataDirLock {
    _file: fs::File,
}

/// Takes the data dir for this process, creating it if needed.
pub fn lock(data_dir: &Path) -> Result<DataDirLock, IdentityError> {
    fs::create_dir_all(data_dir).map_err(|e| IdentityError::DataDir(data_dir.to_owned(), e))?;
    let path = data_dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| IdentityError::Write(path.clone(), e))?;
    match file.try_lock() {
        Ok(()) => Ok(DataDirLock { _file: file }),
        Err(fs::TryLockError::WouldBlock) => Err(IdentityError::InUse(data_dir.to_owned())),
        Err(fs::TryLockError::Error(e)) => Err(IdentityError::Write(path, e)),
    }
}

/// A data dir held by this process ([`lock`]): what a node needs to open the store in it,
/// so no two processes ever write one store. Clones share the hold, which ends when the
/// last is dropped.
#[derive(Debug, Clone)]
pub struct DataDir {
    path: PathBuf,
    _lock: Arc<DataDirLock>,
}

impl DataDir {
    /// Takes `path` for this process, creating it if needed.
    pub fn lock(path: &Path) -> Result<DataDir, IdentityError> {
        Ok(DataDir { _lock: Arc::new(lock(path)?), path: path.to_owned() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the node's store lives.
    pub fn store(&self) -> PathBuf {
        self.path.join(STORE_DIR)
    }

    /// The identity kept here ([`load_or_create`]).
    pub fn identity(&self) -> Result<Identity, IdentityError> {
        load_or_create(&self.path)
    }
}

/// Loads the identity kept in `data_dir`, creating the dir and a fresh key if needed.
pub fn load_or_create(data_dir: &Path) -> Result<Identity, IdentityError> {
    let path = data_dir.join(KEY_FILE);
    match fs::read(&path) {
        // What a process killed while creating the key left before keys were written
        // whole (below): nobody ever ran under it.
        Ok(bytes) if bytes.is_empty() => {
            fs::remove_file(&path).map_err(|e| IdentityError::Write(path.clone(), e))?;
            load_or_create(data_dir)
        }
        Ok(bytes) => {
            let mode = fs::metadata(&path).map_err(|e| IdentityError::Read(path.clone(), e))?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(IdentityError::Exposed(path, mode & 0o777));
            }
            let keypair = Keypair::from_protobuf_encoding(&bytes).map_err(|_| IdentityError::BadKey(path.clone()))?;
            let ed = keypair.try_into_ed25519().map_err(|_| IdentityError::BadKey(path))?;
            Ok(Identity::from_keypair(ed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(data_dir).map_err(|e| IdentityError::DataDir(data_dir.to_owned(), e))?;
            let ed = ed25519::Keypair::generate();
            let bytes = Keypair::from(ed.clone()).to_protobuf_encoding().expect("ed25519 keys always encode");
            // Written whole to a file of our own, then linked into place: a kill -9 at any
            // moment leaves no key or a whole one, and linking never clobbers a key another
            // process put there meanwhile (that one is used instead).
            let tmp = data_dir.join(format!("{KEY_FILE}.{}.tmp", std::process::id()));
            let written = (|| {
                let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
                file.write_all(&bytes)?;
                file.sync_all()?;
                fs::hard_link(&tmp, &path)
            })();
            let _ = fs::remove_file(&tmp);
            match written {
                Ok(()) => Ok(Identity::from_keypair(ed)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_or_create(data_dir),
                Err(e) => Err(IdentityError::Write(path, e)),
            }
        }
        Err(e) => Err(IdentityError::Read(path, e)),
    }
}

/// `$INTRODUCER_DATA_DIR`, else `$XDG_DATA_HOME/introducer`, else `~/.local/share/introducer`.
pub fn default_data_dir() -> Result<PathBuf, IdentityError> {
    let set = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = set("INTRODUCER_DATA_DIR") {
        return Ok(dir);
    }
    let base = set("XDG_DATA_HOME").or_else(|| Some(set("HOME")?.join(".local/share")));
    Ok(base.ok_or(IdentityError::NoDataDir)?.join("introducer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_private_and_reloaded() {
        let dir = std::env::temp_dir().join(format!("introducer-id-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let first = load_or_create(&dir).unwrap();
        let mode = fs::metadata(dir.join(KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create(&dir).unwrap().peer_id(), first.peer_id());

        fs::set_permissions(dir.join(KEY_FILE), fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(load_or_create(&dir), Err(IdentityError::Exposed(..))));
        // An empty key is what a kill -9 during its creation left: a new one is made.
        fs::write(dir.join(KEY_FILE), b"").unwrap();
        let fresh = load_or_create(&dir).unwrap();
        assert_ne!(fresh.peer_id(), first.peer_id());
        assert_eq!(load_or_create(&dir).unwrap().peer_id(), fresh.peer_id());
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no temporary file left");
        fs::write(dir.join(KEY_FILE), b"garbage").unwrap();
        fs::set_permissions(dir.join(KEY_FILE), fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(load_or_create(&dir), Err(IdentityError::BadKey(_))));
        fs::remove_dir_all(&dir).unwrap();
    }
}
