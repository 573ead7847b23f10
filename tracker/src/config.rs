//! The tracker's configuration: `medley-tracker.toml`, overridden by environment and flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use bytesize::ByteSize;
use medley_core::{DEFAULT_K, DEFAULT_M, DEFAULT_PARTITIONS, PublisherId};
use medley_daemon::settings::FieldDoc;
use serde::{Deserialize, Serialize};

/// Name of the config file looked for in the data directory.
pub const CONFIG_FILE: &str = "medley-tracker.toml";

/// Prefix of the environment variables that override settings (`MEDLEY_LISTEN`, ...).
pub const ENV_PREFIX: &str = "MEDLEY_";

/// Every setting, documented: the commented file `medley-tracker init` writes comes from
/// this table, and a test checks it against [`TrackerConfig`].
pub const FIELDS: [FieldDoc; 37] = [
    FieldDoc {
        name: "data_dir",
        doc: "Directory holding the database (db/), the search index and tracker.json.",
        example: None,
    },
    FieldDoc {
        name: "listen",
        doc: "HTTP listen address. Loopback by default: put a reverse proxy in front to\n\
              publish the API.",
        example: None,
    },
    FieldDoc {
        name: "partitions",
        doc: "Partitions of the layout. Fixed for the life of a network.",
        example: None,
    },
    FieldDoc {
        name: "k",
        doc: "Data shards per segment every manifest must use. Fixed for the life of a network.",
        example: None,
    },
    FieldDoc {
        name: "m",
        doc: "Parity shards per segment every manifest must use: losing any m nodes loses\n\
              nothing. Fixed for the life of a network.",
        example: None,
    },
    FieldDoc {
        name: "publishers",
        doc: "Publisher keys (hex ed25519 public keys, `medley id` prints one) allowed to\n\
              commit manifests. Added to those already stored; removing one here does not\n\
              revoke it.",
        example: None,
    },
    FieldDoc {
        name: "node_grace_secs",
        doc: "Seconds without a heartbeat after which a node is down: the next layout gives\n\
              its slots to live nodes, which rebuild its shards. A node back within it moves\n\
              nothing.",
        example: None,
    },
    FieldDoc {
        name: "max_body_bytes",
        doc: "Largest request body accepted, in bytes (a manifest is at most 4 MiB).",
        example: None,
    },
    FieldDoc {
        name: "hot_plays",
        doc: "Plays of a song in a region (decayed, see hot_half_life_secs) from which it is\n\
              hot there: hot_copies nodes of that region are ordered to hold it whole. It\n\
              cools, and the copies are released, below half of this.",
        example: None,
    },
    FieldDoc {
        name: "hot_half_life_secs",
        doc: "Half-life of the play counters, in seconds: a play counts half after this\n\
              long.",
        example: None,
    },
    FieldDoc {
        name: "hot_copies",
        doc: "Nodes per region ordered to hold a hot song whole (least loaded first, with\n\
              room for it). 0 turns the hot tier off.",
        example: None,
    },
    FieldDoc {
        name: "hot_surge_requests",
        doc: "Listeners of a region asking for a song's sources (decayed, see\n\
              hot_surge_secs) from which a sudden rise in its demand orders hot copies there\n\
              at once, before the plays that follow are counted: when their rate is at least\n\
              four times the song's long-run play rate there. 0: only plays make songs hot.",
        example: None,
    },
    FieldDoc {
        name: "hot_surge_secs",
        doc: "Half-life of the counters of source requests that detect a surge, in\n\
              seconds (short: a surge is a rise within seconds).",
        example: None,
    },
    FieldDoc {
        name: "peer_ttl_secs",
        doc: "How long a listener's announcement of the songs it serves holds; listeners\n\
              renew it well within this.",
        example: None,
    },
    FieldDoc {
        name: "grant_ttl_secs",
        doc: "Seconds a publish grant holds: nodes store a song's shards only under a grant\n\
              signed by this tracker's key (tracker.key in data_dir), issued to authorised\n\
              publishers for the shards the layout places on each node.",
        example: None,
    },
    FieldDoc {
        name: "ban_reporters",
        doc: "Distinct listeners (each signing its report) that must report a node or peer\n\
              for sending bytes that do not match their hash before it is banned: no longer\n\
              offered as a source, nor ordered hot copies. 0: never ban.",
        example: None,
    },
    FieldDoc {
        name: "ban_secs",
        doc: "How long a report of wrong bytes counts towards a ban, in seconds.",
        example: None,
    },
    FieldDoc {
        name: "report_trust_secs",
        doc: "Seconds an identity (a listener's or node's peer key) must have been heard from\n\
              before its reports of wrong bytes weigh fully towards a ban; before that they\n\
              weigh the share of it that has passed. Keys made for the occasion ban nobody.\n\
              0: every signed report weighs fully.",
        example: None,
    },
    FieldDoc {
        name: "require_signatures",
        doc: "Whether registrations, heartbeats, leave notices, peer announcements and\n\
              source reports must be signed with the sender's peer key. Turn off only for\n\
              tests against a closed tracker.",
        example: None,
    },
    FieldDoc {
        name: "request_timeout_secs",
        doc: "Seconds a request may take, reading its body included; past it the answer is\n\
              408 timeout, so a client that sends slowly cannot hold a connection.",
        example: None,
    },
    FieldDoc {
        name: "rate_limit_per_sec",
        doc: "Requests per second each client address may make, sustained; past it (and the\n\
              burst) requests get 429 rate_limited with Retry-After. 0: no limit (put a proxy\n\
              that limits in front; behind a proxy every client has the proxy's address).",
        example: None,
    },
    FieldDoc {
        name: "rate_limit_burst",
        doc: "Requests a client address may make at once above the sustained rate.",
        example: None,
    },
    FieldDoc {
        name: "admin_token",
        doc: "Token admin requests over HTTP (drain, publisher keys, layout previews) must\n\
              carry as `Authorization: Bearer <token>`. Unset: admin requests are refused over\n\
              HTTP, and the tracker refuses to listen beyond loopback. The `medley-tracker`\n\
              commands use the admin socket (admin.sock in data_dir) instead, which needs no\n\
              token: whoever may open that file is an admin.",
        example: Some("\"a long random string\""),
    },
    FieldDoc {
        name: "insecure_dev_admin",
        doc: "Accept admin requests over HTTP without a token, on a loopback listen address\n\
              only. For throwaway development networks: any local process, and any web page\n\
              a local browser opens that can reach the port, is an admin.",
        example: None,
    },
    FieldDoc {
        name: "hostnames",
        doc: "Names clients reach the tracker by (e.g. \"tracker.example.org\"). Admin requests\n\
              whose Host is neither one of them, an IP address nor localhost are refused: a\n\
              web page cannot reach the admin API through DNS rebinding.",
        example: None,
    },
    FieldDoc {
        name: "tls_cert",
        doc: "Serve HTTPS with this PEM certificate chain (with tls_key). Unset: plain HTTP,\n\
              for loopback or behind a TLS proxy.",
        example: Some("\"/etc/medley/tracker.crt\""),
    },
    FieldDoc {
        name: "tls_key",
        doc: "The PEM private key of tls_cert.",
        example: Some("\"/etc/medley/tracker.key\""),
    },
    FieldDoc {
        name: "signing_key",
        doc: "File of the key that signs grants and the answers nodes act on (32 bytes).\n\
              Replicas of one tracker share it: copy one's tracker.key to the others and\n\
              name it here. A file named here must exist. Unset: tracker.key in data_dir,\n\
              made at the first start.",
        example: Some("\"/etc/medley/tracker.key\""),
    },
    FieldDoc {
        name: "store",
        doc: "Where the catalogue, the node registry and the layouts live: unset (or\n\
              \"rocksdb\"), an embedded RocksDB in data_dir/db for one tracker; a PostgreSQL\n\
              URL, a database several tracker replicas share (each keeps its own search\n\
              index in data_dir, fed from the database). The schema is migrated at start.",
        example: Some("\"postgres://medley@db.example:5432/medley\""),
    },
    FieldDoc {
        name: "header_read_timeout_secs",
        doc: "Seconds a connection may take to send a request's headers, from its start or\n\
              its last answer; past it the connection is closed (slow or idle clients hold no\n\
              socket longer).",
        example: None,
    },
    FieldDoc {
        name: "max_connections",
        doc: "Connections open at once; past it new ones are closed at once. Keep it under\n\
              the process's open-file limit.",
        example: None,
    },
    FieldDoc {
        name: "max_connections_per_ip",
        doc: "Connections open at once from one client address (behind a proxy: the proxy's).",
        example: None,
    },
    FieldDoc {
        name: "admission",
        doc: "How storage nodes join. \"invite\": only with the operator's consent, a join\n\
              token (`medley-tracker nodes invite`, then `medley-node init --join TOKEN`) or\n\
              an approval (`medley-tracker nodes approve <peer-id>`); other nodes may\n\
              register but are listed pending and get no slots. \"open\": every node that\n\
              registers is admitted, allowed on a loopback listen address only (tests,\n\
              closed setups).",
        example: None,
    },
    FieldDoc {
        name: "regions",
        doc: "Regions nodes may register in; a registration naming another is refused, and a\n\
              join token may fix one of them. Empty: any region (closed setups only: on an\n\
              open network set it).",
        example: Some("[\"eu-west\", \"us-east\"]"),
    },
    FieldDoc {
        name: "max_node_capacity",
        doc: "Most capacity a node counts with, whatever it declares (a join token or an\n\
              approval may cap it lower). The layout weighs a node by the least of that and\n\
              what it proved it holds (audits) plus the median node's capacity, so a\n\
              newcomer, whatever it claims, starts like a median node.",
        example: None,
    },
    FieldDoc {
        name: "audit_interval_secs",
        doc: "Seconds between the tracker's audits of each node: a random range of a random\n\
              shard of a slot it has settled in, proved against the shard's id (about 1.5 KiB\n\
              each way). 0: no audits.",
        example: None,
    },
    FieldDoc {
        name: "audit_failures",
        doc: "Audits in a row a node may fail or leave unanswered before it is put out of the\n\
              layout (its slots go to other nodes, which rebuild them) until an operator\n\
              approves it again. An audit left unanswered by a node unheard since the audit\n\
              before counts as the node being down, not as a failure: the grace period\n\
              deals with it.",
        example: None,
    },
];

/// Settings of a tracker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrackerConfig {
    /// Directory holding the database (`db/`) and `tracker.json`.
    pub data_dir: PathBuf,
    /// HTTP listen address. Loopback by default: put a reverse proxy in front to publish it.
    pub listen: SocketAddr,
    /// Partitions of the layout. Fixed for the life of a network.
    pub partitions: u16,
    /// Data shards per segment every manifest must use.
    pub k: u8,
    /// Parity shards per segment every manifest must use.
    pub m: u8,
    /// Publisher keys (hex ed25519 public keys) allowed to commit manifests. Added to the
    /// ones already stored; removing one here does not revoke it.
    pub publishers: Vec<String>,
    /// Seconds without a heartbeat after which a node is down: the next layout gives its
    /// slots to live nodes, which rebuild its shards. A node back within it moves nothing.
    pub node_grace_secs: u64,
    /// Largest request body accepted, in bytes (a manifest is at most 4 MiB).
    pub max_body_bytes: usize,
    /// Decayed plays of a song in a region from which it is hot there.
    pub hot_plays: f64,
    /// Half-life of the play counters, in seconds.
    pub hot_half_life_secs: u64,
    /// Nodes per region ordered to hold a hot song whole.
    pub hot_copies: usize,
    /// Decayed source requests of a song in a region from which a surge orders hot copies
    /// at once; 0: off.
    pub hot_surge_requests: f64,
    /// Half-life of the source-request counters, in seconds.
    pub hot_surge_secs: u64,
    /// How long a listener's announcement holds, in seconds.
    pub peer_ttl_secs: u64,
    /// How long a publish grant holds, in seconds.
    pub grant_ttl_secs: u64,
    /// Distinct signed reporters of wrong bytes that ban a source; 0: never.
    pub ban_reporters: usize,
    /// How long a report of wrong bytes counts towards a ban, in seconds.
    pub ban_secs: u64,
    /// Seconds an identity must have been heard from before its reports weigh fully.
    pub report_trust_secs: u64,
    /// Whether node and listener reports must be signed with the sender's peer key.
    pub require_signatures: bool,
    /// Seconds a request may take, reading its body included.
    pub request_timeout_secs: u64,
    /// Requests per second per client address; 0: no limit.
    pub rate_limit_per_sec: u32,
    /// Requests a client address may make at once above the sustained rate.
    pub rate_limit_burst: u32,
    /// Token admin requests over HTTP must carry as `Authorization: Bearer <token>`. Unset:
    /// admin requests are refused over HTTP (the admin socket needs none).
    pub admin_token: Option<String>,
    /// Accept admin requests over HTTP without a token, on a loopback listen address only.
    pub insecure_dev_admin: bool,
    /// Names clients reach the tracker by; admin requests with another Host (not an IP
    /// address nor localhost) are refused.
    pub hostnames: Vec<String>,
    /// PEM certificate chain to serve HTTPS with.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// The signing key's file, shared by replicas; unset: `tracker.key` in `data_dir`.
    pub signing_key: Option<PathBuf>,
    /// The store: unset or `rocksdb` for the embedded one, a `postgres://` URL for one
    /// replicas share.
    pub store: Option<String>,
    /// Seconds a connection may take to send a request's headers.
    pub header_read_timeout_secs: u64,
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections open at once from one address.
    pub max_connections_per_ip: usize,
    /// How storage nodes join.
    pub admission: AdmissionMode,
    /// Regions nodes may register in; empty: any.
    pub regions: Vec<String>,
    /// Most capacity a node counts with, whatever it declares.
    pub max_node_capacity: ByteSize,
    /// Seconds between audits of each node; 0: none.
    pub audit_interval_secs: u64,
    /// Audits in a row a node may fail before it is put out of the layout.
    pub audit_failures: u32,
}

/// How storage nodes join a tracker's network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdmissionMode {
    /// Only with the operator's consent: a join token or an approval.
    #[default]
    Invite,
    /// Every node that registers (loopback trackers only).
    Open,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("medley-tracker-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 4700)),
            partitions: DEFAULT_PARTITIONS,
            k: DEFAULT_K,
            m: DEFAULT_M,
            publishers: Vec::new(),
            node_grace_secs: 30,
            max_body_bytes: medley_core::MAX_MANIFEST_SIZE + 1024,
            hot_plays: 4.0,
            hot_half_life_secs: 900,
            hot_copies: 2,
            hot_surge_requests: 8.0,
            hot_surge_secs: 10,
            peer_ttl_secs: 120,
            grant_ttl_secs: 1800,
            ban_reporters: 2,
            ban_secs: 3600,
            report_trust_secs: 600,
            require_signatures: true,
            request_timeout_secs: 30,
            rate_limit_per_sec: 100,
            rate_limit_burst: 400,
            admin_token: None,
            insecure_dev_admin: false,
            hostnames: Vec::new(),
            tls_cert: None,
            tls_key: None,
            signing_key: None,
            store: None,
            header_read_timeout_secs: 10,
            max_connections: 4096,
            max_connections_per_ip: 256,
            admission: AdmissionMode::Invite,
            regions: Vec::new(),
            max_node_capacity: ByteSize::tb(100),
            audit_interval_secs: 60,
            audit_failures: 3,
        }
    }
}

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A publisher key is not 64 hex digits.
    #[error("publisher key {key:?} is invalid: {reason}")]
    Publisher {
        /// The key as given.
        key: String,
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

impl TrackerConfig {
    /// The PostgreSQL URL of a shared store, if the store is one.
    pub fn postgres_url(&self) -> Option<&str> {
        self.store
            .as_deref()
            .filter(|s| s.starts_with("postgres://") || s.starts_with("postgresql://"))
    }

    /// Checks values; returns the parsed publisher keys.
    pub fn validate(&self) -> Result<Vec<PublisherId>, ConfigError> {
        if let Some(store) = &self.store
            && store != "rocksdb"
            && self.postgres_url().is_none()
        {
            return Err(ConfigError::Invalid {
                field: "store",
                reason: "must be \"rocksdb\" or a postgres:// URL",
            });
        }
        if self.partitions == 0 {
            return Err(ConfigError::Invalid {
                field: "partitions",
                reason: "must be at least 1",
            });
        }
        if !(self.hot_plays.is_finite() && self.hot_plays >= 1.0) {
            return Err(ConfigError::Invalid {
                field: "hot_plays",
                reason: "must be a number of at least 1",
            });
        }
        if !(self.hot_surge_requests == 0.0
            || self.hot_surge_requests.is_finite() && self.hot_surge_requests >= 2.0)
        {
            return Err(ConfigError::Invalid {
                field: "hot_surge_requests",
                reason: "must be 0 (off) or a number of at least 2",
            });
        }
        if self.hot_half_life_secs == 0 || self.peer_ttl_secs == 0 || self.hot_surge_secs == 0 {
            return Err(ConfigError::Invalid {
                field: "hot_half_life_secs/peer_ttl_secs/hot_surge_secs",
                reason: "must be at least 1",
            });
        }
        if self.request_timeout_secs == 0 {
            return Err(ConfigError::Invalid {
                field: "request_timeout_secs",
                reason: "must be at least 1",
            });
        }
        if self.ban_secs == 0 {
            return Err(ConfigError::Invalid {
                field: "ban_secs",
                reason: "must be at least 1",
            });
        }
        if self.grant_ttl_secs == 0 {
            return Err(ConfigError::Invalid {
                field: "grant_ttl_secs",
                reason: "must be at least 1",
            });
        }
        if !self.listen.ip().is_loopback() && self.admin_token.is_none() {
            return Err(ConfigError::Invalid {
                field: "admin_token",
                reason: "must be set when listen is not a loopback address: without it, \
                         anyone who reaches the tracker could call its admin API (or set \
                         listen to 127.0.0.1 behind a TLS proxy)",
            });
        }
        if self.insecure_dev_admin && !self.listen.ip().is_loopback() {
            return Err(ConfigError::Invalid {
                field: "insecure_dev_admin",
                reason: "is allowed on a loopback listen address only",
            });
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::Invalid {
                field: "tls_cert/tls_key",
                reason: "must be set together",
            });
        }
        if self.header_read_timeout_secs == 0
            || self.max_connections == 0
            || self.max_connections_per_ip == 0
        {
            return Err(ConfigError::Invalid {
                field: "header_read_timeout_secs/max_connections/max_connections_per_ip",
                reason: "must be at least 1",
            });
        }
        if self.admission == AdmissionMode::Open && !self.listen.ip().is_loopback() {
            return Err(ConfigError::Invalid {
                field: "admission",
                reason: "may be \"open\" on a loopback listen address only: on a reachable \
                         tracker anyone could add nodes and take slots",
            });
        }
        if self
            .regions
            .iter()
            .any(|r| r.is_empty() || r.len() > 64 || r == crate::state::OTHER_REGION)
        {
            return Err(ConfigError::Invalid {
                field: "regions",
                reason: "must be names of 1 to 64 characters, not \"other\"",
            });
        }
        if self.audit_failures == 0 {
            return Err(ConfigError::Invalid {
                field: "audit_failures",
                reason: "must be at least 1",
            });
        }
        if self.admin_token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(ConfigError::Invalid {
                field: "admin_token",
                reason: "must be at least 16 characters",
            });
        }
        medley_core::Codec::new(self.k, self.m).map_err(|_| ConfigError::Invalid {
            field: "k/m",
            reason: "are not a supported code",
        })?;
        self.publishers
            .iter()
            .map(|k| {
                k.parse::<PublisherId>()
                    .map_err(|e| ConfigError::Publisher {
                        key: k.clone(),
                        reason: e.to_string(),
                    })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operator_guide_lists_every_setting_with_its_default() {
        let guide = include_str!("../../OPERATING.md");
        let expected = medley_daemon::settings::reference_table(
            &TrackerConfig::default(),
            ENV_PREFIX,
            &FIELDS,
        )
        .unwrap();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../OPERATING.md");
        if medley_daemon::settings::bless_doc_section(&path, "tracker-settings", &expected) {
            return;
        }
        let found = medley_daemon::settings::doc_section(guide, "tracker-settings");
        assert_eq!(
            found,
            Some(expected.as_str()),
            "OPERATING.md's tracker settings must read, between its markers:\n{expected}"
        );
    }

    #[test]
    fn the_field_table_documents_exactly_the_config() {
        let full = TrackerConfig {
            admin_token: Some("t".into()),
            tls_cert: Some("c".into()),
            tls_key: Some("k".into()),
            signing_key: Some("s".into()),
            store: Some("postgres://db/medley".into()),
            ..TrackerConfig::default()
        };
        let (missing, unknown) = medley_daemon::settings::check_docs(&full, &FIELDS);
        assert!(missing.is_empty(), "undocumented settings: {missing:?}");
        assert!(
            unknown.is_empty(),
            "documented settings that do not exist: {unknown:?}"
        );
    }
}
