//! A peer's persistent ed25519 identity, kept in its data directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use libp2p::identity::Keypair;

/// File name of the identity key inside a data directory.
pub const IDENTITY_FILE: &str = "identity.key";

/// Why the identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or writing the key file failed.
    #[error("identity file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file does not hold a valid key.
    #[error("identity file {path} is not a valid ed25519 key: {reason}")]
    Invalid {
        /// The key file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Loads the identity in `dir`, creating a new one (file mode 0600) if there is none.
pub fn load_or_create_identity(dir: &Path) -> Result<Keypair, IdentityError> {
    let path = dir.join(IDENTITY_FILE);
    let io = |source| IdentityError::Io {
        path: path.clone(),
        source,
    };
    match std::fs::read(&path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|e| IdentityError::Invalid {
            path: path.clone(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(io)?;
            let key = Keypair::generate_ed25519();
            let bytes = key
                .to_protobuf_encoding()
                .map_err(|e| IdentityError::Invalid {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            if create_private_file(&path, &bytes).map_err(io)? {
                return Ok(key);
            }
            // Another process starting in the same directory made one first: use it.
            load_or_create_identity(dir)
        }
        Err(e) => Err(io(e)),
    }
}

/// Creates `path` (mode 0600 on Unix) holding `bytes`, complete and synced, unless it
/// exists: returns whether this call created it. Processes racing to create the same file
/// all end up reading the one that won.
pub fn create_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<bool> {
    let tmp = unique_tmp(path);
    write_synced(&tmp, bytes)?;
    // A hard link never replaces an existing file, unlike a rename.
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// A temporary name beside `path` that no other process or thread uses.
fn unique_tmp(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    PathBuf::from(tmp)
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn racing_starts_in_one_directory_share_one_identity() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| load_or_create_identity(dir.path()).unwrap()))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap().public().to_peer_id())
                .collect()
        });
        assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
        let on_disk = load_or_create_identity(dir.path()).unwrap();
        assert_eq!(on_disk.public().to_peer_id(), ids[0]);
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary files left");
    }

    #[test]
    fn identity_persists_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_identity(dir.path()).unwrap();
        let b = load_or_create_identity(dir.path()).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(IDENTITY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.path().join(IDENTITY_FILE), b"garbage").unwrap();
        assert!(matches!(
            load_or_create_identity(dir.path()),
            Err(IdentityError::Invalid { .. })
        ));
    }
}
