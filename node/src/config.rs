//! The node's configuration: a TOML file (`medley-node.toml`), overridden by environment
//! variables and flags.

use std::path::PathBuf;

use std::time::Duration;

use bytesize::ByteSize;
use libp2p::Multiaddr;
use medley_net::PeerConfig;
use serde::{Deserialize, Serialize};

use medley_daemon::settings::FieldDoc;

use crate::store::StoreConfig;

/// Name of the config file looked for in the data directory.
pub const CONFIG_FILE: &str = "medley-node.toml";

/// Prefix of the environment variables that override settings (`MEDLEY_REGION`, ...).
pub const ENV_PREFIX: &str = "MEDLEY_";

/// Every setting, documented: the commented file `medley-node init` writes and the
/// operator guide's reference come from this table, and a test checks it against
/// [`NodeConfig`].
pub const FIELDS: [FieldDoc; 27] = [
    FieldDoc {
        name: "data_dir",
        doc: "Directory holding the store (db/), the identity key and node.json.",
        example: None,
    },
    FieldDoc {
        name: "listen",
        doc: "Data-plane listen addresses (QUIC multiaddrs). Other nodes and listeners must\n\
              reach one of them; the tracker hands them out.",
        example: None,
    },
    FieldDoc {
        name: "region",
        doc: "Region this node is in, e.g. eu-west. Placement spreads a segment's shards\n\
              over as many regions as it can.",
        example: None,
    },
    FieldDoc {
        name: "capacity",
        doc: "Bytes of audio this node may keep, e.g. \"50 GiB\". Writes past it are refused;\n\
              placement gives nodes slots in proportion to it.",
        example: None,
    },
    FieldDoc {
        name: "max_concurrent_requests",
        doc: "Inbound data-plane requests handled at once; more are answered busy.",
        example: None,
    },
    FieldDoc {
        name: "max_connections",
        doc: "Incoming data-plane connections kept at once (one per peer); more are refused.",
        example: None,
    },
    FieldDoc {
        name: "max_requests_per_peer",
        doc: "Inbound data-plane requests of any one peer handled at once; more from it are\n\
              answered busy, so a peer that floods cannot take the slots of the others.",
        example: None,
    },
    FieldDoc {
        name: "peer_bytes_per_sec",
        doc: "Bytes per second the node sends any one peer while another peer has asked\n\
              within the last second, after a burst of an eighth of a second's worth (at least\n\
              one segment); more waits. Keeps a peer that asks without pause from taking the\n\
              bandwidth and CPU of the others; a peer alone on the node (a download from an\n\
              idle node) is sent what it asks at once. 0: no limit.",
        example: None,
    },
    FieldDoc {
        name: "heavy_peers_bytes_per_sec",
        doc: "Bytes per second that all heavy peers share: many keys flooding at once get no\n\
              more than this together. A peer is heavy while it asks for more than a\n\
              sixteenth of peer_bytes_per_sec (after a burst of an eighth of a second of\n\
              it); a listener asking for its shards and segments is not, and is never\n\
              slowed by them. 0: no limit.",
        example: None,
    },
    FieldDoc {
        name: "request_timeout_secs",
        doc: "Seconds a data-plane request may take before it fails.",
        example: None,
    },
    FieldDoc {
        name: "tracker",
        doc: "Tracker to register with; replicas of one tracker as URLs separated by commas,\n\
              asked in turn (the next on a connection error or a 5xx answer). Unset: the\n\
              node runs unregistered (serves what it holds, gets no slots).",
        example: Some("\"http://127.0.0.1:4700\""),
    },
    FieldDoc {
        name: "trackers",
        doc: "More replicas of the tracker, asked after those `tracker` names (the same as\n\
              listing them there separated by commas). A --tracker flag replaces both.",
        example: Some("[\"https://t1.example.org\", \"https://t2.example.org\"]"),
    },
    FieldDoc {
        name: "tracker_ca",
        doc: "PEM file of the certificate authority (or the self-signed certificate) of an\n\
              https:// tracker whose certificate the system does not trust.",
        example: Some("\"/etc/medley/tracker-ca.pem\""),
    },
    FieldDoc {
        name: "tracker_source",
        doc: "Local address the node's connections to the tracker come from, on a host with\n\
              several (the one the tracker's firewall allows, or the testnet's region\n\
              address). Unset: the system chooses.",
        example: Some("\"10.0.0.5\""),
    },
    FieldDoc {
        name: "tracker_key",
        doc: "The tracker's public key (64 hex digits, `medley-tracker status` shows it). Shards\n\
              are stored only under a publish grant signed by it. Unset: the key the tracker\n\
              gives at registration is used; without either, every upload is refused.",
        example: None,
    },
    FieldDoc {
        name: "join_token",
        doc: "The join token the tracker's operator gave this node (`medley-tracker nodes\n\
              invite`; `medley-node init --join` writes it here). Shown at registration until\n\
              the tracker admits the node; without one a node that registers waits, listed\n\
              pending, for `medley-tracker nodes approve <its peer id>`.",
        example: Some("\"medley-join-...\""),
    },
    FieldDoc {
        name: "heartbeat_secs",
        doc: "Seconds between heartbeats to the tracker (and checks for a new layout).",
        example: None,
    },
    FieldDoc {
        name: "repair_concurrency",
        doc: "Shards repaired at once (each rebuild reads k shards from other nodes).",
        example: None,
    },
    FieldDoc {
        name: "repair_bytes_per_sec",
        doc: "Bytes per second repair and handover may read from other nodes; 0: no limit.",
        example: None,
    },
    FieldDoc {
        name: "repair_interval_secs",
        doc: "Seconds between full repair passes when nothing changed (a layout change, a\n\
              failed repair or a corrupt shard starts one sooner).",
        example: None,
    },
    FieldDoc {
        name: "gc_grace_secs",
        doc: "Seconds a stored shard that no slot of this node calls for (an upload whose\n\
              publish never committed, a slot the node no longer holds) is kept before it is\n\
              deleted, counted from the repair pass that first found it so. Keep it above\n\
              the tracker's grant_ttl_secs, so a publish in progress keeps its shards.",
        example: None,
    },
    FieldDoc {
        name: "scrub_bytes_per_sec",
        doc: "Bytes per second the scrubber re-hashes stored shards; 0 turns scrubbing off.",
        example: None,
    },
    FieldDoc {
        name: "scrub_interval_secs",
        doc: "Seconds between the end of one scrub of every shard and the start of the next.",
        example: None,
    },
    FieldDoc {
        name: "hot_capacity",
        doc: "Most bytes of whole hot songs the node keeps for its region (part of capacity);\n\
              the tracker orders no more onto it. 0: the node takes no hot copies.",
        example: None,
    },
    FieldDoc {
        name: "hot_poll_secs",
        doc: "Seconds between asking the tracker which songs to hold whole: a surge of\n\
              demand orders copies at once, and the node takes them up within this.",
        example: None,
    },
    FieldDoc {
        name: "hot_cache",
        doc: "Memory for the hot segments served most recently, kept as they were when read\n\
              from disk and checked against their hash, so a popular song is served without\n\
              reading the disk or hashing it again. Durable shards are read from disk and\n\
              checked every time, so the scrubber sees what is on it. 0: none.",
        example: None,
    },
    FieldDoc {
        name: "admin_listen",
        doc: "Address of the admin endpoint: GET /status (what `medley-node status` shows) and\n\
              GET /metrics (Prometheus). Port 0 picks a free port, written to node.json; set a\n\
              fixed one for Prometheus to scrape. Keep it on loopback or a private network.",
        example: None,
    },
];

/// Settings of a storage node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Directory holding the store (`db/`), the identity key and `node.json`.
    pub data_dir: PathBuf,
    /// Data-plane listen addresses, as multiaddrs, e.g. `/ip4/0.0.0.0/udp/4710/quic-v1`.
    pub listen: Vec<String>,
    /// Region this node is in, e.g. `eu-west`. Placement spreads shards across regions.
    pub region: String,
    /// Bytes of audio this node may keep (shards and hot copies), e.g. `"50 GiB"`.
    pub capacity: ByteSize,
    /// Inbound data-plane requests handled at once; more are answered `BUSY`.
    pub max_concurrent_requests: usize,
    /// Incoming data-plane connections kept at once; more are refused.
    pub max_connections: u32,
    /// Inbound data-plane requests of one peer handled at once; more are answered `BUSY`.
    pub max_requests_per_peer: usize,
    /// Bytes per second sent to any one peer; 0: no limit.
    pub peer_bytes_per_sec: ByteSize,
    /// Bytes per second all peers past their burst share; 0: no limit.
    pub heavy_peers_bytes_per_sec: ByteSize,
    /// Seconds a data-plane request may take before it fails.
    pub request_timeout_secs: u64,
    /// Tracker to register with, e.g. `http://127.0.0.1:4700`. None: run unregistered.
    pub tracker: Option<String>,
    /// More tracker replicas, asked after those of `tracker`.
    pub trackers: Vec<String>,
    /// CA (PEM) of an `https://` tracker the system does not trust.
    pub tracker_ca: Option<PathBuf>,
    /// Local address connections to the tracker come from. None: the system chooses.
    pub tracker_source: Option<std::net::IpAddr>,
    /// The tracker's public key, which signs publish grants. None: learnt at registration.
    pub tracker_key: Option<medley_core::TrackerId>,
    /// The join token from the tracker's operator, shown at registration until admitted.
    pub join_token: Option<String>,
    /// Seconds between heartbeats to the tracker (and checks for a new layout).
    pub heartbeat_secs: u64,
    /// Shards repaired at once (each reads `k` shards from other nodes).
    pub repair_concurrency: usize,
    /// Bytes per second repair and handover may read from other nodes; 0: no limit.
    pub repair_bytes_per_sec: ByteSize,
    /// Seconds between full repair passes when nothing changed (a layout change, a failed
    /// repair or a corrupt shard starts one sooner).
    pub repair_interval_secs: u64,
    /// Seconds an unreferenced shard is kept before it is deleted.
    pub gc_grace_secs: u64,
    /// Bytes per second the scrubber re-hashes; 0 turns scrubbing off.
    pub scrub_bytes_per_sec: ByteSize,
    /// Seconds between the end of one scrub of every shard and the start of the next.
    pub scrub_interval_secs: u64,
    /// Most bytes of whole hot songs kept (part of `capacity`).
    pub hot_capacity: ByteSize,
    /// Seconds between asking the tracker for hot orders.
    pub hot_poll_secs: u64,
    /// Memory for the hot segments served most recently.
    pub hot_cache: ByteSize,
    /// Address of the admin endpoint (`/status`, `/metrics`); port 0 picks a free one,
    /// written to `node.json`.
    pub admin_listen: std::net::SocketAddr,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("medley-node-data"),
            listen: vec!["/ip4/0.0.0.0/udp/4710/quic-v1".into()],
            region: "default".into(),
            capacity: ByteSize::gib(10),
            max_concurrent_requests: PeerConfig::default().max_concurrent_inbound,
            max_connections: PeerConfig::default().max_connections,
            max_requests_per_peer: PeerConfig::default().max_inbound_per_peer,
            peer_bytes_per_sec: ByteSize::mib(16),
            heavy_peers_bytes_per_sec: ByteSize::mib(32),
            request_timeout_secs: PeerConfig::default().request_timeout.as_secs(),
            tracker: None,
            trackers: Vec::new(),
            tracker_ca: None,
            tracker_source: None,
            tracker_key: None,
            join_token: None,
            heartbeat_secs: 5,
            repair_concurrency: 8,
            repair_bytes_per_sec: ByteSize::mib(64),
            repair_interval_secs: 600,
            gc_grace_secs: 3600,
            scrub_bytes_per_sec: ByteSize::mib(8),
            scrub_interval_secs: 86_400,
            hot_capacity: ByteSize::gib(1),
            hot_poll_secs: 1,
            hot_cache: ByteSize::b(StoreConfig::default().hot_cache as u64),
            admin_listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A listen address is not a multiaddr.
    #[error("listen address {addr:?} is not a valid multiaddr: {reason}")]
    Listen {
        /// The address given.
        addr: String,
        /// Why.
        reason: String,
    },
    /// A value is out of range.
    #[error("{field} {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

impl NodeConfig {
    /// Folds `trackers` into `tracker`: one comma-separated list, `tracker`'s URLs first,
    /// each once.
    pub fn merge_trackers(&mut self) {
        if self.trackers.is_empty() {
            return;
        }
        let mut all: Vec<String> = Vec::new();
        let named = self.tracker.iter().flat_map(|t| t.split(','));
        for url in named.chain(self.trackers.iter().map(String::as_str)) {
            let url = url.trim();
            if !url.is_empty() && !all.iter().any(|u| u == url) {
                all.push(url.to_string());
            }
        }
        self.tracker = Some(all.join(","));
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Checks values and converts the listen addresses.
    pub fn listen_addrs(&self) -> Result<Vec<Multiaddr>, ConfigError> {
        self.listen
            .iter()
            .map(|a| {
                a.parse()
                    .map_err(|e: libp2p::multiaddr::Error| ConfigError::Listen {
                        addr: a.clone(),
                        reason: e.to_string(),
                    })
            })
            .collect()
    }

    /// The data-plane settings this config implies.
    pub fn peer_config(&self) -> Result<PeerConfig, ConfigError> {
        if self.max_concurrent_requests == 0 {
            return Err(ConfigError::Invalid {
                field: "max_concurrent_requests",
                reason: "must be at least 1",
            });
        }
        if self.hot_poll_secs == 0 {
            return Err(ConfigError::Invalid {
                field: "hot_poll_secs",
                reason: "must be at least 1",
            });
        }
        if self.heartbeat_secs == 0 {
            return Err(ConfigError::Invalid {
                field: "heartbeat_secs",
                reason: "must be at least 1",
            });
        }
        if let Some(t) = &self.tracker
            && !medley_api::valid_tracker_urls(t)
        {
            return Err(ConfigError::Invalid {
                field: "tracker",
                reason: "must be an http:// or https:// URL, or several separated by commas",
            });
        }
        if self.repair_concurrency == 0 {
            return Err(ConfigError::Invalid {
                field: "repair_concurrency",
                reason: "must be at least 1",
            });
        }
        if self.repair_interval_secs == 0 {
            return Err(ConfigError::Invalid {
                field: "repair_interval_secs",
                reason: "must be at least 1",
            });
        }
        if self.max_connections == 0 {
            return Err(ConfigError::Invalid {
                field: "max_connections",
                reason: "must be at least 1",
            });
        }
        if self.max_requests_per_peer == 0 {
            return Err(ConfigError::Invalid {
                field: "max_requests_per_peer",
                reason: "must be at least 1",
            });
        }
        if self.request_timeout_secs == 0 {
            return Err(ConfigError::Invalid {
                field: "request_timeout_secs",
                reason: "must be at least 1",
            });
        }
        Ok(PeerConfig {
            listen: self.listen_addrs()?,
            max_concurrent_inbound: self.max_concurrent_requests,
            max_inbound_per_peer: self.max_requests_per_peer,
            max_connections: self.max_connections,
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            agent: format!("medley-node/{}", env!("CARGO_PKG_VERSION")),
            ..PeerConfig::default()
        })
    }

    /// The store settings this config implies.
    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            capacity: self.capacity.as_u64(),
            hot_cache: usize::try_from(self.hot_cache.as_u64()).unwrap_or(usize::MAX),
            ..StoreConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operator_guide_lists_every_setting_with_its_default() {
        let guide = include_str!("../../OPERATING.md");
        let expected =
            medley_daemon::settings::reference_table(&NodeConfig::default(), ENV_PREFIX, &FIELDS)
                .unwrap();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../OPERATING.md");
        if medley_daemon::settings::bless_doc_section(&path, "node-settings", &expected) {
            return;
        }
        let found = medley_daemon::settings::doc_section(guide, "node-settings");
        assert_eq!(
            found,
            Some(expected.as_str()),
            "OPERATING.md's node settings must read, between its markers:\n{expected}"
        );
    }

    #[test]
    fn the_field_table_documents_exactly_the_config() {
        let full = NodeConfig {
            tracker: Some("http://127.0.0.1:4700".into()),
            tracker_ca: Some("ca.pem".into()),
            tracker_source: Some(std::net::Ipv4Addr::LOCALHOST.into()),
            tracker_key: Some(medley_core::TrackerKey::from_seed([1; 32]).id()),
            join_token: Some("medley-join-00".into()),
            ..NodeConfig::default()
        };
        let (missing, unknown) = medley_daemon::settings::check_docs(&full, &FIELDS);
        assert!(missing.is_empty(), "undocumented settings: {missing:?}");
        assert!(
            unknown.is_empty(),
            "documented settings that do not exist: {unknown:?}"
        );
    }

    #[test]
    fn trackers_join_tracker_as_one_list_of_replicas() {
        let mut c = NodeConfig::from_toml(
            r#"
            tracker = "http://a:4700, http://b:4700"
            trackers = ["http://b:4700", "http://c:4700"]
            "#,
        )
        .unwrap();
        c.merge_trackers();
        assert_eq!(
            c.tracker.as_deref(),
            Some("http://a:4700,http://b:4700,http://c:4700")
        );
        c.peer_config().unwrap();
        let mut c = NodeConfig::from_toml(r#"trackers = ["http://c:4700"]"#).unwrap();
        c.merge_trackers();
        assert_eq!(c.tracker.as_deref(), Some("http://c:4700"));
        let mut c = NodeConfig::from_toml(r#"trackers = ["ftp://c"]"#).unwrap();
        c.merge_trackers();
        assert!(c.peer_config().is_err());
    }

    #[test]
    fn parses_file_with_defaults_for_missing_fields() {
        let c = NodeConfig::from_toml(
            r#"
            data_dir = "/var/lib/medley"
            region = "eu-west"
            capacity = "2 GiB"
            "#,
        )
        .unwrap();
        assert_eq!(c.region, "eu-west");
        assert_eq!(c.capacity.as_u64(), 2 * 1024 * 1024 * 1024);
        assert_eq!(c.listen, NodeConfig::default().listen);
    }

    #[test]
    fn rejects_unknown_fields_and_bad_values() {
        assert!(NodeConfig::from_toml("regoin = \"x\"").is_err());
        assert!(NodeConfig::from_toml("capacity = \"lots\"").is_err());
        let c = NodeConfig {
            listen: vec!["not an addr".into()],
            ..NodeConfig::default()
        };
        assert!(matches!(c.peer_config(), Err(ConfigError::Listen { .. })));
        let c = NodeConfig {
            max_concurrent_requests: 0,
            ..NodeConfig::default()
        };
        assert!(matches!(c.peer_config(), Err(ConfigError::Invalid { .. })));
    }

    #[test]
    fn default_round_trips_through_toml() {
        let text = toml::to_string(&NodeConfig::default()).unwrap();
        assert_eq!(NodeConfig::from_toml(&text).unwrap(), NodeConfig::default());
    }
}
