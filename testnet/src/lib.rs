//! A whole Medley network on one machine, for tests, demos and research: a tracker and
//! storage nodes started as real processes (`medley-tracker`, `medley-node`), each with its
//! own data directory and loopback ports, and a client identity the tracker accepts as a
//! publisher.
//!
//! ```no_run
//! # async fn f() -> Result<(), medley_testnet::TestnetError> {
//! let net = medley_testnet::Testnet::builder().nodes(6).regions(3).spawn().await?;
//! println!("tracker at {}", net.tracker_url());
//! # Ok(()) }
//! ```
//!
//! Every process is killed when the [`Testnet`] is dropped; a temporary folder is removed.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod demo;
mod faults;
pub mod liar;
pub mod library;
pub mod linkemu;
pub mod listener;
pub mod record;
pub mod report;
pub mod rogue;
pub mod run;
pub mod scenario;
pub mod shaping;
pub mod sweep;
pub mod userns;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use medley_client::{ClientConfig, TrackerClient};
use serde::Deserialize;

/// Region names given to a testnet's regions, in order.
pub const REGION_NAMES: &[&str] = &[
    "eu-west", "us-east", "ap-south", "sa-east", "af-south", "ap-east", "eu-north", "us-west",
];

/// Why a testnet could not be started or driven.
#[derive(Debug, thiserror::Error)]
pub enum TestnetError {
    /// A Medley binary is missing.
    #[error(
        "cannot find {name} in {dir}: build the binaries first (cargo build --workspace --bins) \
         or set MEDLEY_BIN_DIR"
    )]
    MissingBinary {
        /// The binary.
        name: String,
        /// Where it was looked for.
        dir: PathBuf,
    },
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// A process did not come up in time.
    #[error("{what} did not start within {secs} s; see its log at {log}")]
    Timeout {
        /// Which process.
        what: String,
        /// Seconds waited.
        secs: u64,
        /// Its log file.
        log: PathBuf,
    },
    /// The settings are invalid.
    #[error("invalid testnet settings: {0}")]
    Invalid(String),
    /// A client operation failed.
    #[error(transparent)]
    Client(#[from] medley_client::ClientError),
}

impl From<medley_api::TrackerError> for TestnetError {
    fn from(e: medley_api::TrackerError) -> Self {
        Self::Client(e.into())
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TestnetError {
    let what = what.into();
    move |source| TestnetError::Io { what, source }
}

/// Makes a CA and a certificate it signs for `127.0.0.1`, `localhost` and `ip`, in `dir`:
/// returns the CA's, the certificate's and its key's files (PEM).
fn make_certificates(dir: &Path, ip: &str) -> Result<(PathBuf, PathBuf, PathBuf), TestnetError> {
    let bad = |e: rcgen::Error| TestnetError::Invalid(format!("cannot make a certificate: {e}"));
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(bad)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Medley testnet CA");
    let ca_key = rcgen::KeyPair::generate().map_err(bad)?;
    let ca = ca_params.self_signed(&ca_key).map_err(bad)?;
    let leaf_params = rcgen::CertificateParams::new(vec![
        "127.0.0.1".to_string(),
        "localhost".to_string(),
        ip.to_string(),
    ])
    .map_err(bad)?;
    let leaf_key = rcgen::KeyPair::generate().map_err(bad)?;
    let leaf = leaf_params
        .signed_by(&leaf_key, &ca, &ca_key)
        .map_err(bad)?;
    let files = (
        dir.join("ca.pem"),
        dir.join("tracker.crt"),
        dir.join("tracker-tls.key"),
    );
    for (path, text) in [
        (&files.0, ca.pem()),
        (&files.1, leaf.pem()),
        (&files.2, leaf_key.serialize_pem()),
    ] {
        std::fs::write(path, text).map_err(io(format!("cannot write {}", path.display())))?;
    }
    Ok(files)
}

/// Where the Medley binaries are: `MEDLEY_BIN_DIR`, else beside the running executable (or
/// its parent, for test executables in `target/*/deps`).
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MEDLEY_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().map(Path::to_path_buf).unwrap_or(dir)
    } else {
        dir
    }
}

fn binary(dir: &Path, name: &str) -> Result<PathBuf, TestnetError> {
    let p = dir.join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(TestnetError::MissingBinary {
            name: name.into(),
            dir: dir.to_path_buf(),
        })
    }
}

/// Where testnet listeners serve their caches: loopback only.
pub(crate) const LOOPBACK_QUIC: &str = "/ip4/127.0.0.1/udp/0/quic-v1";

/// Settings of a testnet.
#[derive(Debug, Clone)]
pub struct TestnetBuilder {
    nodes: usize,
    regions: usize,
    k: u8,
    m: u8,
    dir: Option<PathBuf>,
    capacity: bytesize::ByteSize,
    bin_dir: Option<PathBuf>,
    log: String,
    grace_secs: u64,
    node_config: String,
    tracker_config: String,
    layout: Option<Vec<(String, bytesize::ByteSize)>>,
    placement: Placement,
    tls: bool,
    trackers: usize,
}

/// Where each region's processes bind their data-plane sockets: the region's address, or
/// 127.0.0.1 for a region not listed.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    /// Region name → IPv4 address (a loopback address).
    pub region_ips: std::collections::HashMap<String, String>,
}

impl Placement {
    /// The address processes of `region` bind to.
    pub fn ip(&self, region: &str) -> String {
        self.region_ips
            .get(region)
            .cloned()
            .unwrap_or_else(|| "127.0.0.1".into())
    }
}

/// A progress bar of `len` steps on standard error (drawn only on a terminal).
pub fn progress_bar(len: u64, message: &str) -> indicatif::ProgressBar {
    let bar =
        medley_daemon::progress_bar(Some(len), "{bar:30} {pos}/{len} {elapsed_precise} {msg}");
    bar.set_message(message.to_string());
    bar
}

/// A spinner with `message` on standard error (drawn only on a terminal).
pub fn progress_spinner(message: &str) -> indicatif::ProgressBar {
    let bar = medley_daemon::progress_bar(None, "{spinner} {msg} {elapsed}");
    bar.set_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

impl Default for TestnetBuilder {
    fn default() -> Self {
        Self {
            nodes: 6,
            regions: 3,
            k: medley_core::DEFAULT_K,
            m: medley_core::DEFAULT_M,
            dir: None,
            capacity: bytesize::ByteSize::gib(2),
            bin_dir: None,
            log: "info".into(),
            grace_secs: 30,
            node_config: String::new(),
            tracker_config: String::new(),
            layout: None,
            placement: Placement::default(),
            tls: false,
            trackers: 1,
        }
    }
}

impl TestnetBuilder {
    /// Runs `n` tracker replicas on a private PostgreSQL cluster of the run (in its folder,
    /// on loopback, stopped with the run) instead of one tracker on RocksDB; clients and
    /// nodes are given every replica's URL.
    pub fn trackers(mut self, n: usize) -> Self {
        self.trackers = n.max(1);
        self
    }

    /// Serve the tracker's API over HTTPS, with a certificate of a CA made for this testnet
    /// (its `ca.pem` is given to every node and client).
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }

    /// Storage nodes (default 6).
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n;
        self
    }

    /// Regions the nodes are spread over, round-robin (default 3).
    pub fn regions(mut self, n: usize) -> Self {
        self.regions = n;
        self
    }

    /// Each node's region and capacity, in order; replaces [`nodes`](Self::nodes),
    /// [`regions`](Self::regions) and [`capacity`](Self::capacity).
    pub fn node_layout(mut self, nodes: Vec<(String, bytesize::ByteSize)>) -> Self {
        self.nodes = nodes.len();
        self.layout = Some(nodes);
        self
    }

    /// Where each region's nodes bind (default: all on 127.0.0.1). With regions on addresses
    /// of their own, the tracker listens on the first region's address and nodes and
    /// listeners call it from their own region's (`tracker_source`), so link emulation
    /// between the addresses shapes the control plane too.
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// Erasure coding (default 4+2).
    pub fn coding(mut self, k: u8, m: u8) -> Self {
        self.k = k;
        self.m = m;
        self
    }

    /// Keep all data under `dir` (created if missing, kept afterwards) instead of a
    /// temporary folder.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Capacity of each node.
    pub fn capacity(mut self, c: bytesize::ByteSize) -> Self {
        self.capacity = c;
        self
    }

    /// Where the binaries are (default: [`bin_dir`]).
    pub fn bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }

    /// Seconds without a heartbeat before the tracker takes a node out of the layout
    /// (default 30, as the tracker's; nodes heartbeat every second).
    pub fn grace_secs(mut self, secs: u64) -> Self {
        self.grace_secs = secs;
        self
    }

    /// Extra lines of `medley-node.toml` for every node, e.g. `"repair_interval_secs = 5"`.
    pub fn node_config(mut self, toml: &str) -> Self {
        self.node_config = toml.into();
        self
    }

    /// Extra lines of `medley-tracker.toml`, e.g. `"hot_plays = 2.0"`.
    pub fn tracker_config(mut self, toml: &str) -> Self {
        self.tracker_config = toml.into();
        self
    }

    /// Log filter for the processes (default `info`); logs go to `<dir>/logs/`.
    pub fn log(mut self, filter: &str) -> Self {
        self.log = filter.into();
        self
    }

    /// Starts the tracker and the nodes and waits until every node is registered and a
    /// layout covers them all.
    pub async fn spawn(self) -> Result<Testnet, TestnetError> {
        if self.nodes < usize::from(self.k) + usize::from(self.m) {
            return Err(TestnetError::Invalid(format!(
                "{} nodes cannot hold {}+{} distinct shards",
                self.nodes, self.k, self.m
            )));
        }
        if self.layout.is_none() && (self.regions == 0 || self.regions > REGION_NAMES.len()) {
            return Err(TestnetError::Invalid(format!(
                "regions must be 1 to {}",
                REGION_NAMES.len()
            )));
        }
        let bins = self.bin_dir.clone().unwrap_or_else(bin_dir);
        let node_bin = binary(&bins, "medley-node")?;
        let tracker_bin = binary(&bins, "medley-tracker")?;
        let client_bin = binary(&bins, "medley")?;
        let (root, temp) = match &self.dir {
            Some(d) => (d.clone(), None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("medley-testnet-")
                    .tempdir()
                    .map_err(io("cannot create a temporary folder"))?;
                if self.trackers > 1 {
                    // The replicas' PostgreSQL runs as its own user, which must reach its
                    // folder inside.
                    use std::os::unix::fs::PermissionsExt as _;
                    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o711))
                        .map_err(io("cannot open the temporary folder to PostgreSQL"))?;
                }
                (t.path().to_path_buf(), Some(t))
            }
        };
        let logs = root.join("logs");
        std::fs::create_dir_all(&logs).map_err(io(format!("cannot create {}", logs.display())))?;

        // The publishing client's identity, authorised on the tracker.
        let client_dir = root.join("client");
        let key = medley_client::load_or_create_publisher_key(&client_dir)?;

        let tracker_dir = root.join("tracker");
        std::fs::create_dir_all(&tracker_dir)
            .map_err(io(format!("cannot create {}", tracker_dir.display())))?;
        let mut token = [0u8; 24];
        getrandom::fill(&mut token)
            .map_err(|e| TestnetError::Invalid(format!("no randomness for a token: {e}")))?;
        let admin_token = hex::encode(token);
        // Replicas: one database and one signing key for all.
        let (cluster, store_lines) = if self.trackers > 1 {
            let (cluster, lines) = shared_store(&root)?;
            (Some(cluster), lines)
        } else {
            (None, String::new())
        };
        let layout = self.layout.clone().unwrap_or_else(|| {
            (0..self.nodes)
                .map(|i| (REGION_NAMES[i % self.regions].to_string(), self.capacity))
                .collect()
        });
        // With regions on addresses of their own, the tracker sits in the first region and
        // every process reaches it from its region's address: its traffic crosses the
        // links between regions like the data plane's.
        let tracker_ip = match layout.first() {
            Some((region, _)) if !self.placement.region_ips.is_empty() => self.placement.ip(region),
            _ => "127.0.0.1".to_string(),
        };
        let (tracker_ca, tls_lines) = if self.tls {
            let (ca, cert, key) = make_certificates(&tracker_dir, &tracker_ip)?;
            let lines = format!(
                "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
                cert.display(),
                key.display()
            );
            (Some(ca), lines)
        } else {
            (None, String::new())
        };
        // Audits every 2 s: layout changes wait for a new holder's audit to count its slots
        // settled, and a testnet's changes should not take minutes.
        let audit_line = if self.tracker_config.contains("audit_interval_secs") {
            ""
        } else {
            "audit_interval_secs = 2\n"
        };
        // The regions nodes may register in: the testnet's own.
        let regions_line = if self.tracker_config.contains("regions") {
            String::new()
        } else {
            let mut regions: Vec<&str> = layout.iter().map(|(r, _)| r.as_str()).collect();
            regions.sort_unstable();
            regions.dedup();
            format!("regions = {regions:?}\n")
        };
        let tracker_toml = format!(
            "k = {}\nm = {}\nnode_grace_secs = {}\npublishers = [\"{}\"]\nadmin_token = \"{}\"\n{}{}{}{}{}{}\n",
            self.k,
            self.m,
            self.grace_secs,
            key.id(),
            admin_token,
            audit_line,
            regions_line,
            tls_lines,
            store_lines,
            // Every process of a testnet shares 127.0.0.1: one client address.
            if self.tracker_config.contains("rate_limit_per_sec") {
                ""
            } else {
                "rate_limit_per_sec = 0\n"
            },
            self.tracker_config
        );
        let trackers: Vec<TrackerProcess> = (0..self.trackers)
            .map(|i| TrackerProcess {
                dir: if i == 0 {
                    tracker_dir.clone()
                } else {
                    root.join(format!("tracker-{i}"))
                },
                child: None,
                port: 0,
            })
            .collect();
        for t in &trackers {
            std::fs::create_dir_all(&t.dir)
                .map_err(io(format!("cannot create {}", t.dir.display())))?;
            std::fs::write(t.dir.join("medley-tracker.toml"), &tracker_toml)
                .map_err(io("cannot write the tracker's config"))?;
        }
        let mut net = Testnet {
            root,
            _temp: temp,
            trackers,
            _cluster: cluster,
            tracker_url: String::new(),
            admin_token,
            tracker_ca,
            nodes: Vec::new(),
            client_dir,
            client_bin,
            node_bin,
            tracker_bin,
            log: self.log.clone(),
            node_config: format!("heartbeat_secs = 1\n{}\n", self.node_config),
            placement: self.placement.clone(),
            tracker_ip,
        };
        for i in 0..net.trackers.len() {
            net.start_tracker(i)?;
        }

        for (region, capacity) in layout {
            let ip = self.placement.ip(&region);
            net.add_node(&region, &ip, capacity, true)?;
        }
        net.wait_for_layout(self.nodes, Duration::from_secs(60))
            .await?;
        Ok(net)
    }
}

/// A storage node of a testnet.
#[derive(Debug)]
pub struct NodeProcess {
    /// Position in the testnet.
    pub index: usize,
    /// Region.
    pub region: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Capacity.
    pub capacity: bytesize::ByteSize,
    /// Peer id (known once started).
    pub peer_id: String,
    /// UDP port (kept across restarts).
    pub port: u16,
    /// The address it binds (its region's).
    pub ip: String,
    /// Its admin endpoint (`/status`, `/metrics`), once started.
    pub admin: Option<String>,
    /// The join token the testnet's tracker made for it (`None`: it joins without one, and
    /// waits pending).
    pub join: Option<String>,
    child: Option<Child>,
}

impl NodeProcess {
    /// Whether the process is running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

#[derive(Debug, Deserialize)]
struct NodeJson {
    peer_id: String,
    listen: Vec<String>,
    #[serde(default)]
    admin: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TrackerJson {
    url: String,
}

/// A tracker process (one replica of several, or the tracker).
#[derive(Debug)]
struct TrackerProcess {
    dir: PathBuf,
    child: Option<Child>,
    /// Its port, kept across restarts so every URL given out stays right.
    port: u16,
}

/// A private PostgreSQL cluster in `root/postgres` with the database `medley`, and a
/// signing key the replicas share; the lines of their configuration that name them.
fn shared_store(root: &Path) -> Result<(medley_daemon::pgcluster::Cluster, String), TestnetError> {
    let cluster = medley_daemon::pgcluster::Cluster::start(&root.join("postgres"))
        .map_err(|e| TestnetError::Invalid(format!("cannot start PostgreSQL: {e}")))?;
    cluster
        .create_database("medley")
        .map_err(|e| TestnetError::Invalid(format!("cannot create the database: {e}")))?;
    let key = root.join("tracker-signing.key");
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| TestnetError::Invalid(format!("no randomness for a key: {e}")))?;
    medley_daemon::keyfile::create_private_file(&key, &seed)
        .map_err(io("cannot write the replicas' signing key"))?;
    let lines = format!(
        "store = \"{}\"\nsigning_key = \"{}\"\n",
        cluster.url("medley"),
        key.display()
    );
    Ok((cluster, lines))
}

/// A running testnet.
#[derive(Debug)]
pub struct Testnet {
    root: PathBuf,
    /// The replicas' database: dropped (stopped) after the processes, before the folder.
    _cluster: Option<medley_daemon::pgcluster::Cluster>,
    _temp: Option<tempfile::TempDir>,
    /// The tracker, or its replicas.
    trackers: Vec<TrackerProcess>,
    /// Every replica's URL, comma-separated, as clients and nodes take them.
    tracker_url: String,
    /// The tracker's admin token (random per testnet).
    admin_token: String,
    /// The CA of the tracker's certificate, when it serves HTTPS.
    tracker_ca: Option<PathBuf>,
    nodes: Vec<NodeProcess>,
    client_dir: PathBuf,
    client_bin: PathBuf,
    node_bin: PathBuf,
    tracker_bin: PathBuf,
    log: String,
    node_config: String,
    /// Where each region's processes bind.
    placement: Placement,
    /// The address the tracker listens on (its region's, when regions have their own).
    tracker_ip: String,
}

/// What [`Testnet::audit`] found: for every segment of the songs asked about, which of its
/// shards could be fetched (and matched their ids) from the current layout's holders.
#[derive(Debug, Default, Clone)]
pub struct Audit {
    /// Segments checked.
    pub segments: usize,
    /// Shards fetched intact.
    pub shards_ok: usize,
    /// Segments with fewer than `k + m` intact shards.
    pub short: usize,
    /// Segments with fewer than `k` intact shards: unplayable.
    pub lost: usize,
    /// The songs with such a segment.
    pub lost_songs: Vec<medley_core::SongId>,
    /// Shards fetched from an extra node rather than their layout holder.
    pub from_extra: usize,
    /// What is wrong, one line per shard or segment.
    pub problems: Vec<String>,
}

impl Audit {
    /// Every segment has all its `k + m` shards intact on distinct nodes.
    pub fn complete(&self) -> bool {
        self.short == 0 && self.lost == 0 && self.problems.is_empty()
    }
}

impl Testnet {
    /// Settings for a new testnet.
    pub fn builder() -> TestnetBuilder {
        TestnetBuilder::default()
    }

    /// The folder holding every process's data and logs.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// The tracker's base URL.
    pub fn tracker_url(&self) -> &str {
        &self.tracker_url
    }

    /// The tracker's admin token (drains, publisher keys over HTTP).
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The CA of the tracker's certificate, when it serves HTTPS.
    pub fn tracker_ca(&self) -> Option<&Path> {
        self.tracker_ca.as_deref()
    }

    /// The data directory of the publishing client (its key is authorised).
    pub fn client_dir(&self) -> &Path {
        &self.client_dir
    }

    /// The nodes.
    pub fn nodes(&self) -> &[NodeProcess] {
        &self.nodes
    }

    /// The regions in use, in order.
    pub fn regions(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for n in &self.nodes {
            if !v.contains(&n.region) {
                v.push(n.region.clone());
            }
        }
        v
    }

    /// Client settings for a listener in `region`, with its own data directory; `publisher`
    /// gives it the authorised publisher's directory instead.
    pub fn client_config(&self, region: &str, publisher: bool) -> ClientConfig {
        ClientConfig {
            tracker: self.tracker_url.clone(),
            tracker_ca: self.tracker_ca.clone(),
            tracker_source: self
                .placement
                .region_ips
                .get(region)
                .and_then(|ip| ip.parse().ok()),
            region: region.into(),
            data_dir: if publisher {
                self.client_dir.clone()
            } else {
                self.root.join(format!("listener-{region}"))
            },
            // One-off commands measure the network: no cache unless a listener asks.
            cache_bytes: bytesize::ByteSize::b(0),
            serve_listen: LOOPBACK_QUIC.into(),
            ..ClientConfig::default()
        }
    }

    /// The settings of listener `name` in `region`: its own data dir, a disk cache of
    /// `cache` bytes served to other listeners on loopback.
    pub fn listener_config(
        &self,
        region: &str,
        name: &str,
        cache: bytesize::ByteSize,
    ) -> ClientConfig {
        ClientConfig {
            data_dir: self.root.join("listeners").join(name),
            cache_bytes: cache,
            serve_cache: true,
            serve_listen: LOOPBACK_QUIC.into(),
            ..self.client_config(region, false)
        }
    }

    /// A `medley` command as listener `name` in `region`, with a disk cache of `cache` bytes
    /// served to other listeners (see [`Testnet::listener_config`]).
    pub fn listener(&self, region: &str, name: &str, cache: bytesize::ByteSize) -> Command {
        let c = self.listener_config(region, name, cache);
        let mut cmd = self.medley(region, false);
        cmd.env("MEDLEY_CLIENT_DIR", &c.data_dir)
            .env("MEDLEY_CACHE_BYTES", c.cache_bytes.to_string());
        cmd
    }

    /// A `medley` command set up for this testnet, as a listener in `region` (or as the
    /// publisher when `publisher`).
    pub fn medley(&self, region: &str, publisher: bool) -> Command {
        let c = self.client_config(region, publisher);
        let mut cmd = Command::new(&self.client_bin);
        cmd.env("MEDLEY_TRACKER", &c.tracker)
            .env("MEDLEY_REGION", &c.region)
            .env("MEDLEY_CLIENT_DIR", &c.data_dir)
            .env("MEDLEY_CACHE_BYTES", c.cache_bytes.to_string())
            .env("MEDLEY_SERVE_LISTEN", &c.serve_listen)
            .env_remove("MEDLEY_CLIENT_CONFIG")
            .env("MEDLEY_LOG", "warn,lofty=error,symphonia_core::probe=off")
            .stdin(Stdio::null());
        match &c.tracker_ca {
            Some(ca) => cmd.env("MEDLEY_TRACKER_CA", ca),
            None => cmd.env_remove("MEDLEY_TRACKER_CA"),
        };
        cmd
    }

    /// A tracker API client.
    pub fn tracker(&self) -> Result<TrackerClient, TestnetError> {
        Ok(TrackerClient::builder(&self.tracker_url)
            .ca_file(self.tracker_ca.clone())
            .build()?)
    }

    fn log_file(&self, name: &str) -> Result<std::fs::File, TestnetError> {
        let p = self.root.join("logs").join(format!("{name}.log"));
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .map_err(io(format!("cannot open {}", p.display())))
    }

    /// Starts tracker replica `i` (again, on its port if it ran before).
    pub fn start_tracker(&mut self, i: usize) -> Result<(), TestnetError> {
        let name = if i == 0 {
            "tracker".to_string()
        } else {
            format!("tracker-{i}")
        };
        let log = self.log_file(&name)?;
        let t = self
            .trackers
            .get_mut(i)
            .ok_or_else(|| TestnetError::Invalid(format!("no tracker {i}")))?;
        if t.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
        {
            return Ok(());
        }
        let info = t.dir.join("tracker.json");
        let _ = std::fs::remove_file(&info);
        let child = Command::new(&self.tracker_bin)
            .arg("run")
            .arg("--data-dir")
            .arg(&t.dir)
            .arg("--listen")
            .arg(format!("{}:{}", self.tracker_ip, t.port))
            .env("MEDLEY_LOG", &self.log)
            .env_remove("MEDLEY_TRACKER_CONFIG")
            .env_remove("MEDLEY_PUBLISHERS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(io("cannot start medley-tracker"))?;
        t.child = Some(child);
        let j: TrackerJson = medley_daemon::wait_for_json_file(&info, Duration::from_secs(120))
            .ok_or_else(|| TestnetError::Timeout {
                what: format!("tracker {i}"),
                secs: 120,
                log: self.root.join("logs"),
            })?;
        t.port = j
            .url
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .unwrap_or(0);
        // Every replica started so far, on the port it keeps.
        let urls: Vec<String> = self
            .trackers
            .iter()
            .filter(|t| t.port != 0)
            .map(|t| tracker_url_of(&j.url, t.port))
            .collect();
        self.tracker_url = urls.join(",");
        Ok(())
    }

    /// Kills tracker replica `i` (SIGKILL).
    pub fn kill_replica(&mut self, i: usize) -> Result<(), TestnetError> {
        let t = self
            .trackers
            .get_mut(i)
            .ok_or_else(|| TestnetError::Invalid(format!("no tracker {i}")))?;
        kill(t.child.take());
        Ok(())
    }

    /// Tracker replicas (1: one tracker on RocksDB).
    pub fn tracker_count(&self) -> usize {
        self.trackers.len()
    }

    /// Starts node `i` (again), on the UDP port it had before if it ran already.
    pub fn start_node(&mut self, i: usize) -> Result<(), TestnetError> {
        let log = self.log_file(&format!("node-{i}"))?;
        let (url, bin, level, ca) = (
            self.tracker_url.clone(),
            self.node_bin.clone(),
            self.log.clone(),
            self.tracker_ca.clone(),
        );
        let n = node_mut(&mut self.nodes, i)?;
        if n.running() {
            return Ok(());
        }
        std::fs::create_dir_all(&n.data_dir)
            .map_err(io(format!("cannot create {}", n.data_dir.display())))?;
        let mut config = match &n.join {
            Some(token) => format!("{}join_token = \"{token}\"\n", self.node_config),
            None => self.node_config.clone(),
        };
        if n.ip != "127.0.0.1" {
            // Its calls to the tracker come from its region's address too.
            config.push_str(&format!("tracker_source = \"{}\"\n", n.ip));
        }
        std::fs::write(n.data_dir.join("medley-node.toml"), config)
            .map_err(io("cannot write a node config"))?;
        let info = n.data_dir.join("node.json");
        let _ = std::fs::remove_file(&info);
        let mut command = Command::new(bin);
        if let Some(ca) = &ca {
            command.arg("run").arg("--tracker-ca").arg(ca);
        } else {
            command.arg("run");
        }
        let child = command
            .arg("--data-dir")
            .arg(&n.data_dir)
            .arg("--listen")
            .arg(format!("/ip4/{}/udp/{}/quic-v1", n.ip, n.port))
            .arg("--region")
            .arg(&n.region)
            .arg("--capacity")
            .arg(n.capacity.to_string())
            .arg("--tracker")
            .arg(url)
            .env("MEDLEY_LOG", level)
            .env_remove("MEDLEY_NODE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(io("cannot start medley-node"))?;
        n.child = Some(child);
        let j: NodeJson = medley_daemon::wait_for_json_file(&info, Duration::from_secs(60))
            .ok_or_else(|| TestnetError::Timeout {
                what: format!("node {i}"),
                secs: 60,
                log: self.root.join(format!("logs/node-{i}.log")),
            })?;
        n.peer_id = j.peer_id;
        n.admin = j.admin;
        n.port = j
            .listen
            .iter()
            .find_map(|a| a.split("/udp/").nth(1)?.split('/').next()?.parse().ok())
            .unwrap_or(0);
        Ok(())
    }

    /// A join token for one node of `region` (`None`: any), `capacity` capping it, made by
    /// the tracker's own command (`medley-tracker nodes invite`, through its admin socket).
    pub fn invite(
        &self,
        region: Option<&str>,
        capacity: Option<bytesize::ByteSize>,
    ) -> Result<String, TestnetError> {
        // Through the admin socket of a replica that runs (invites live in the shared
        // database).
        let dir = self
            .trackers
            .iter()
            .find(|t| t.child.is_some())
            .map_or_else(|| self.root.join("tracker"), |t| t.dir.clone());
        let mut cmd = Command::new(&self.tracker_bin);
        cmd.args(["nodes", "invite", "--data-dir"])
            .arg(dir)
            .env_remove("MEDLEY_TRACKER_CONFIG");
        if let Some(r) = region {
            cmd.args(["--region", r]);
        }
        if let Some(c) = capacity {
            cmd.arg("--capacity").arg(c.to_string());
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(io("cannot run medley-tracker nodes invite"))?;
        if !out.status.success() {
            return Err(TestnetError::Invalid(format!(
                "medley-tracker nodes invite failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Adds a node of `region` binding `ip`, with `capacity`, and starts it; `admitted`:
    /// with a join token of its region (else it registers without one and waits, pending).
    /// Returns its index.
    pub fn add_node(
        &mut self,
        region: &str,
        ip: &str,
        capacity: bytesize::ByteSize,
        admitted: bool,
    ) -> Result<usize, TestnetError> {
        let i = self.nodes.len();
        let join = if admitted {
            Some(self.invite(Some(region), None)?)
        } else {
            None
        };
        self.nodes.push(NodeProcess {
            index: i,
            ip: ip.to_string(),
            region: region.to_string(),
            data_dir: self.root.join(format!("node-{i}")),
            capacity,
            child: None,
            peer_id: String::new(),
            port: 0,
            admin: None,
            join,
        });
        self.start_node(i)?;
        Ok(i)
    }

    /// Kills node `i` at once (SIGKILL), as a crash would.
    pub fn kill_node(&mut self, i: usize) -> Result<(), TestnetError> {
        let n = node_mut(&mut self.nodes, i)?;
        kill(n.child.take());
        Ok(())
    }

    /// Freezes (`pause`) or thaws node `i` with SIGSTOP / SIGCONT: a frozen node keeps
    /// its sockets but answers nothing, as behind a cut link.
    pub fn freeze_node(&mut self, i: usize, pause: bool) -> Result<(), TestnetError> {
        let n = node_mut(&mut self.nodes, i)?;
        if let Some(c) = &n.child {
            let _ = Command::new("kill")
                .arg(if pause { "-STOP" } else { "-CONT" })
                .arg(c.id().to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        Ok(())
    }

    /// Stops node `i` gracefully (SIGTERM) and waits up to 15 s for it to exit.
    pub fn stop_node(&mut self, i: usize) -> Result<(), TestnetError> {
        let n = node_mut(&mut self.nodes, i)?;
        if let Some(c) = n.child.take() {
            terminate(c, Duration::from_secs(15));
        }
        Ok(())
    }

    /// A `medley-node drain` command for node `i` (run it; it waits until the node is empty).
    pub fn drain_node(&self, i: usize) -> Result<Command, TestnetError> {
        let n = self
            .nodes
            .get(i)
            .ok_or_else(|| TestnetError::Invalid(format!("no node {i}")))?;
        let mut cmd = Command::new(&self.node_bin);
        cmd.arg("drain")
            .arg("--data-dir")
            .arg(&n.data_dir)
            .arg("--tracker")
            .arg(&self.tracker_url)
            .arg("--admin-token")
            .arg(&self.admin_token)
            .args(
                self.tracker_ca
                    .iter()
                    .flat_map(|ca| [std::ffi::OsStr::new("--tracker-ca"), ca.as_os_str()]),
            )
            .env("MEDLEY_LOG", "warn")
            .env_remove("MEDLEY_NODE_CONFIG")
            .stdin(Stdio::null());
        Ok(cmd)
    }

    /// Fetches every shard of every segment of `songs` from its holder in the current layout
    /// over the data plane, checking each against its id, and checks that each segment's
    /// holders are distinct. A shard its holder lacks is also looked for on the nodes
    /// `extra` (by index), e.g. a node being drained.
    pub async fn audit(
        &self,
        songs: &[medley_core::SongId],
        extra: &[usize],
    ) -> Result<Audit, TestnetError> {
        let tracker = self.tracker()?;
        let peer = medley_net::Peer::dial_only()
            .await
            .map_err(|e| TestnetError::Invalid(format!("cannot start a data-plane peer: {e}")))?;
        let mut extras = Vec::new();
        for &i in extra {
            let n = self
                .nodes
                .get(i)
                .ok_or_else(|| TestnetError::Invalid(format!("no node {i}")))?;
            let (Ok(p), Ok(a)) = (
                n.peer_id.parse::<medley_net::PeerId>(),
                format!("/ip4/{}/udp/{}/quic-v1", n.ip, n.port).parse::<medley_net::Multiaddr>(),
            ) else {
                return Err(TestnetError::Invalid(format!("node {i} has no address")));
            };
            extras.push((p, vec![a]));
        }
        let mut audit = Audit::default();
        for &song in songs {
            let manifest = tracker.manifest(song).await?;
            let body = manifest.body();
            let slots = usize::from(body.k) + usize::from(body.m);
            let sources =
                medley_client::song_sources(&tracker, song, body.segments.len(), slots, None)
                    .await?
                    .holders;
            for (s, (seg, holders)) in body.segments.iter().zip(&sources).enumerate() {
                audit.segments += 1;
                let mut distinct = std::collections::HashSet::new();
                let mut ok = 0;
                for (slot, (id, holder)) in seg.shards.iter().zip(holders).enumerate() {
                    let mut found = false;
                    let mut why = "no holder".to_string();
                    if let Some(h) = holder {
                        if !distinct.insert(h.peer) {
                            audit
                                .problems
                                .push(format!("{song} segment {s}: {} holds two slots", h.peer));
                        }
                        match peer.get_shard(h.peer, h.addrs.clone(), *id).await {
                            Ok(_) => found = true,
                            Err(e) => why = e.to_string(),
                        }
                    }
                    if !found {
                        for (p, a) in &extras {
                            if peer.get_shard(*p, a.clone(), *id).await.is_ok() {
                                found = true;
                                audit.from_extra += 1;
                                break;
                            }
                        }
                    }
                    if found {
                        ok += 1;
                    } else {
                        audit
                            .problems
                            .push(format!("{song} segment {s} slot {slot}: {why}"));
                    }
                }
                audit.shards_ok += ok;
                if ok < slots {
                    audit.short += 1;
                }
                if ok < usize::from(body.k) {
                    audit.lost += 1;
                    if audit.lost_songs.last() != Some(&song) {
                        audit.lost_songs.push(song);
                    }
                }
            }
        }
        peer.shutdown(Duration::from_secs(2)).await;
        Ok(audit)
    }

    /// Kills the tracker, every replica of it (SIGKILL).
    pub fn kill_tracker(&mut self) {
        for t in &mut self.trackers {
            kill(t.child.take());
        }
    }

    /// Waits until `n` nodes are registered and a layout exists.
    pub async fn wait_for_layout(&self, n: usize, timeout: Duration) -> Result<(), TestnetError> {
        let tracker = self.tracker()?;
        let start = Instant::now();
        loop {
            if let Ok(s) = tracker.stats().await
                && s.nodes >= n
                && s.nodes_alive >= n
                && s.layout_version.is_some()
            {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(TestnetError::Timeout {
                    what: format!("registration of {n} nodes"),
                    secs: timeout.as_secs(),
                    log: self.root.join("logs"),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops every process: nodes and tracker get SIGTERM, then SIGKILL after a grace time.
    pub fn shutdown(&mut self) {
        for n in &mut self.nodes {
            if let Some(c) = n.child.take() {
                terminate(c, Duration::from_secs(10));
            }
        }
        for t in &mut self.trackers {
            if let Some(c) = t.child.take() {
                terminate(c, Duration::from_secs(10));
            }
        }
    }
}

/// `url` (a replica's, `http://127.0.0.1:PORT`) with its port replaced by `port`.
fn tracker_url_of(url: &str, port: u16) -> String {
    match url.trim_end_matches('/').rsplit_once(':') {
        Some((base, _)) => format!("{base}:{port}"),
        None => url.to_string(),
    }
}

/// Node `i`, or an error naming it. (A free function: callers also borrow other fields.)
fn node_mut(nodes: &mut [NodeProcess], i: usize) -> Result<&mut NodeProcess, TestnetError> {
    nodes
        .get_mut(i)
        .ok_or_else(|| TestnetError::Invalid(format!("no node {i}")))
}

/// SIGKILL and reap, if there is a process.
fn kill(child: Option<Child>) {
    if let Some(mut c) = child {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL.
fn terminate(mut child: Child, grace: Duration) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let start = Instant::now();
    while start.elapsed() < grace {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Testnet {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            kill(n.child.take());
        }
        self.kill_tracker();
    }
}
