//! A peer's persistent ed25519 identity, kept in its data directory.

use std::path::{Path, PathBuf};

use libp2p_identity::Keypair;

use crate::keyfile::create_private_file;

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
