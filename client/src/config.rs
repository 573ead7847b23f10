//! The client's configuration: `medley.toml` in the data directory (or `--config`), then
//! environment variables, then flags.

use std::path::{Path, PathBuf};

use medley_core::PublisherKey;
use serde::{Deserialize, Serialize};

use crate::error::ClientError;

/// Name of the config file looked for in the data directory.
pub const CONFIG_FILE: &str = "medley.toml";
/// File in the data directory holding the publisher's secret key (32 bytes, mode 0600).
pub const PUBLISHER_KEY_FILE: &str = "publisher.key";

/// Settings of the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// Tracker base URL; replicas as URLs separated by commas, asked in turn.
    pub tracker: String,
    /// CA (PEM) of an `https://` tracker the system does not trust.
    pub tracker_ca: Option<PathBuf>,
    /// Local address connections to the tracker come from (on a host with several). None:
    /// the system chooses.
    pub tracker_source: Option<std::net::IpAddr>,
    /// Region this listener is in.
    pub region: String,
    /// Directory holding the identity, the publisher key and this file.
    pub data_dir: PathBuf,
    /// Shard uploads in flight at once while publishing.
    pub upload_parallelism: usize,
    /// Segments fetched ahead of the play head (also the download window).
    pub read_ahead: usize,
    /// Shard sources asked at once beyond the `k` needed.
    pub extra_sources: usize,
    /// Milliseconds after which a segment still short of `k` shards asks one more source.
    pub hedge_after_ms: u64,
    /// Seconds a single data-plane request may take.
    pub request_timeout_secs: u64,
    /// Address `medley serve` listens on.
    pub gateway_listen: std::net::SocketAddr,
    /// Bytes of verified segments `medley serve` keeps in memory.
    pub gateway_cache_bytes: bytesize::ByteSize,
    /// Names `medley serve` is reached by, besides IP addresses and localhost (requests
    /// with another `Host` are refused).
    pub gateway_hosts: Vec<String>,
    /// User name of the gateway's Subsonic API (off while `subsonic_password` is empty).
    pub subsonic_user: String,
    /// Password of the gateway's Subsonic API.
    pub subsonic_password: String,
    /// Bytes of played segments kept on disk in `<data_dir>/cache` (0: no cache).
    pub cache_bytes: bytesize::ByteSize,
    /// Serve the cache to other listeners while running, and tell the tracker what it holds.
    pub serve_cache: bool,
    /// Data-plane address the cache is served on.
    pub serve_listen: String,
    /// Most bytes per second sent to other listeners.
    pub serve_bytes_per_sec: bytesize::ByteSize,
    /// Most requests of other listeners served at once; more are told to try elsewhere.
    pub serve_max_peers: usize,
    /// Seconds between announcements of the songs held whole to the tracker.
    pub announce_secs: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            tracker: "http://127.0.0.1:4700".into(),
            tracker_ca: None,
            tracker_source: None,
            region: "default".into(),
            data_dir: default_data_dir(),
            upload_parallelism: 24,
            read_ahead: 6,
            extra_sources: 1,
            hedge_after_ms: 250,
            request_timeout_secs: 10,
            gateway_listen: std::net::SocketAddr::from(([127, 0, 0, 1], 4800)),
            gateway_cache_bytes: bytesize::ByteSize::mib(256),
            gateway_hosts: Vec::new(),
            subsonic_user: "medley".into(),
            subsonic_password: String::new(),
            cache_bytes: bytesize::ByteSize::gib(2),
            serve_cache: true,
            serve_listen: "/ip4/0.0.0.0/udp/0/quic-v1".into(),
            serve_bytes_per_sec: bytesize::ByteSize::mib(2),
            serve_max_peers: 8,
            announce_secs: 30,
        }
    }
}

/// `$XDG_DATA_HOME/medley`, else `~/.local/share/medley`, else `./.medley`.
pub fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("medley");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".local/share/medley");
    }
    PathBuf::from(".medley")
}

impl ClientConfig {
    /// Checks values.
    pub fn validate(&self) -> Result<(), ClientError> {
        let bad = |what: &str| Err(ClientError::Config(what.to_string()));
        if !medley_api::valid_tracker_urls(&self.tracker) {
            return bad(
                "tracker must be an http:// or https:// URL, or several separated by commas",
            );
        }
        if self.upload_parallelism == 0 || self.read_ahead == 0 {
            return bad("upload_parallelism and read_ahead must be at least 1");
        }
        if self.request_timeout_secs == 0 {
            return bad("request_timeout_secs must be at least 1");
        }
        if self.serve_cache {
            if self.serve_listen.parse::<medley_net::Multiaddr>().is_err() {
                return bad("serve_listen must be a multiaddr, e.g. /ip4/0.0.0.0/udp/0/quic-v1");
            }
            if self.serve_max_peers == 0 || self.announce_secs == 0 {
                return bad("serve_max_peers and announce_secs must be at least 1");
            }
        }
        Ok(())
    }
}

/// Loads the publisher key from the data dir, creating one if there is none.
pub fn load_or_create_publisher_key(dir: &Path) -> Result<PublisherKey, ClientError> {
    medley_daemon::keyfile::load_or_create_seed(&dir.join(PUBLISHER_KEY_FILE))
        .map(PublisherKey::from_seed)
        .map_err(|e| ClientError::Config(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publisher_key_persists_and_rejects_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_publisher_key(dir.path()).unwrap();
        let b = load_or_create_publisher_key(dir.path()).unwrap();
        assert_eq!(a.id(), b.id());
        std::fs::write(dir.path().join(PUBLISHER_KEY_FILE), b"short").unwrap();
        let e = load_or_create_publisher_key(dir.path()).unwrap_err();
        assert!(e.to_string().contains("32 bytes"), "{e}");
    }

    #[test]
    fn validate_rejects_nonsense() {
        let mut c = ClientConfig::default();
        c.validate().unwrap();
        c.tracker = "ftp://x".into();
        assert!(c.validate().is_err());
        c.tracker = "http://a:4700, https://b".into();
        c.validate().unwrap();
        for bad in ["http://a,ftp://b", "http://a,", ""] {
            c.tracker = bad.into();
            assert!(c.validate().is_err(), "{bad}");
        }
        let c = ClientConfig {
            read_ahead: 0,
            ..ClientConfig::default()
        };
        assert!(c.validate().is_err());
    }
}
