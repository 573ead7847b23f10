//! Secret key files in a data directory: created once (mode 0600, complete and synced), never
//! replaced, shared by processes that start at the same time.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Why a key file could not be read or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Reading or writing the file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a 32-byte seed.
    #[error("key file {path} must hold exactly 32 bytes, found {found}")]
    Invalid {
        /// The key file.
        path: PathBuf,
        /// Its length.
        found: usize,
    },
    /// The system has no randomness to make a key with.
    #[error("no system randomness for a new key: {0}")]
    Random(String),
}

/// Reads the 32-byte secret seed at `path`, or creates one from the system's randomness if
/// there is none. Processes racing to create it all get the one that won.
pub fn load_or_create_seed(path: &Path) -> Result<[u8; 32], KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    match load_seed(path) {
        Err(KeyFileError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| KeyFileError::Random(e.to_string()))?;
            if create_private_file(path, &seed).map_err(io)? {
                Ok(seed)
            } else {
                load_or_create_seed(path)
            }
        }
        other => other,
    }
}

/// Reads the 32-byte secret seed at `path`, which must exist.
pub fn load_seed(path: &Path) -> Result<[u8; 32], KeyFileError> {
    let bytes = std::fs::read(path).map_err(|source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| KeyFileError::Invalid {
            path: path.to_path_buf(),
            found: bytes.len(),
        })
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
    fn racing_creators_share_one_seed_and_bad_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/k.key");
        let seeds: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| load_or_create_seed(&path).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(seeds.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(load_or_create_seed(&path).unwrap(), seeds[0]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(
            load_or_create_seed(&path),
            Err(KeyFileError::Invalid { found: 5, .. })
        ));
    }
}
