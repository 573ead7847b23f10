//! Research scenarios: a network (regions, nodes, listeners, links), a catalogue, a workload
//! and faults on a timeline, read from TOML and checked before anything starts; and the
//! schedule a seed draws from them (every session, play, skip, seek and fault, in time).
//!
//! The same scenario and seed always give the same [`Schedule`]: it is drawn from a PCG
//! generator seeded by the seed alone, before the run, and written beside the results.

mod plan;

use std::path::Path;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

pub use plan::Zipf;

/// Why a scenario was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Not valid TOML, or a field of the wrong type, or an unknown field.
    #[error("invalid scenario: {0}")]
    Syntax(String),
    /// A field holds a value the testnet cannot run.
    #[error("invalid scenario: `{field}`: {message}")]
    Field {
        /// Its path, e.g. `network.links[0].latency_ms`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

impl ScenarioError {
    /// The field the error is about, if it names one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Field { field, .. } => Some(field),
            _ => None,
        }
    }
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> ScenarioError {
    ScenarioError::Field {
        field: field.into(),
        message: message.into(),
    }
}

/// A whole scenario, as in `testnet/scenarios/*.toml`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, used in the report.
    pub name: String,
    /// What it studies.
    #[serde(default)]
    pub description: String,
    /// How long the workload runs, in seconds of wall time.
    pub duration_secs: f64,
    /// Seed of the schedule (`--seed` overrides it).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Playback speed-up: a song of 10 s plays in 10/speed s (and its deadlines with it).
    #[serde(default = "one")]
    pub speed: f64,
    /// Seconds between samples of node metrics.
    #[serde(default = "default_sample_secs")]
    pub sample_secs: f64,
    /// The regions, with their nodes and listeners.
    pub regions: Vec<Region>,
    /// Latency, jitter, loss and bandwidth within and between regions.
    #[serde(default)]
    pub network: Network,
    /// The songs published before the workload starts.
    pub catalogue: Catalogue,
    /// What the listeners do.
    pub workload: Workload,
    /// Faults at given times.
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// Random restarts of nodes and listeners, drawn from the seed.
    #[serde(default)]
    pub churn: Option<Churn>,
    /// Extra lines of every node's `medley-node.toml`.
    #[serde(default)]
    pub node_config: String,
    /// Extra lines of the tracker's `medley-tracker.toml`.
    #[serde(default)]
    pub tracker_config: String,
    /// Tracker replicas: more than 1 runs them on a private PostgreSQL of the run.
    #[serde(default = "one_tracker")]
    pub trackers: usize,
    /// Published figures the report sets Medley's beside.
    #[serde(default)]
    pub compare: Option<Paper>,
}

/// A published measurement a report can compare a run with.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Paper {
    /// Kreitz and Niemelä, "Spotify – Large Scale, Low Latency, P2P Music-on-Demand
    /// Streaming", IEEE P2P 2010.
    #[serde(rename = "spotify-2010")]
    Spotify2010,
}

fn one_tracker() -> usize {
    1
}

fn default_seed() -> u64 {
    1
}
fn one() -> f64 {
    1.0
}
fn default_sample_secs() -> f64 {
    2.0
}

/// A region.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// Its name, e.g. `eu-west`.
    pub name: String,
    /// Storage nodes in it.
    pub nodes: usize,
    /// Each node's capacity, e.g. `"2 GiB"`.
    #[serde(default = "default_capacity")]
    pub node_capacity: ByteSize,
    /// Listeners in it.
    pub listeners: usize,
}

fn default_capacity() -> ByteSize {
    ByteSize::gib(2)
}

/// The conditions of a link.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// One-way delay in ms (a round trip takes twice this).
    #[serde(default)]
    pub latency_ms: f64,
    /// Variation of the delay in ms.
    #[serde(default)]
    pub jitter_ms: f64,
    /// Packets lost, in percent.
    #[serde(default)]
    pub loss_pct: f64,
    /// Bandwidth in Mbit/s; 0 is unlimited.
    #[serde(default)]
    pub bandwidth_mbit: f64,
}

/// The conditions between two given regions (both ways).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegionLink {
    /// The two regions.
    pub between: [String; 2],
    /// One-way delay in ms.
    #[serde(default)]
    pub latency_ms: f64,
    /// Variation of the delay in ms.
    #[serde(default)]
    pub jitter_ms: f64,
    /// Packets lost, in percent.
    #[serde(default)]
    pub loss_pct: f64,
    /// Bandwidth in Mbit/s; 0 is unlimited.
    #[serde(default)]
    pub bandwidth_mbit: f64,
}

impl RegionLink {
    fn link(&self) -> Link {
        Link {
            latency_ms: self.latency_ms,
            jitter_ms: self.jitter_ms,
            loss_pct: self.loss_pct,
            bandwidth_mbit: self.bandwidth_mbit,
        }
    }
}

/// How the testnet emulates links between regions.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Emulation {
    /// netem where the kernel has it, else the user-space delay line.
    #[default]
    Auto,
    /// The kernel's netem only.
    Netem,
    /// The user-space delay line only (see `linkemu`).
    Userspace,
}

/// Network conditions.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// How links are emulated.
    #[serde(default)]
    pub emulation: Emulation,
    /// Within a region.
    #[serde(default)]
    pub within: Link,
    /// Between any two regions not listed in `links`.
    #[serde(default)]
    pub between: Link,
    /// Between given pairs of regions.
    #[serde(default)]
    pub links: Vec<RegionLink>,
}

impl Network {
    /// The conditions from region `a` to region `b` (`within` when equal).
    pub fn link(&self, a: &str, b: &str) -> Link {
        if a == b {
            return self.within;
        }
        self.links
            .iter()
            .find(|l| {
                (l.between[0] == a && l.between[1] == b) || (l.between[0] == b && l.between[1] == a)
            })
            .map_or(self.between, RegionLink::link)
    }

    /// Whether any link has any shaping at all.
    pub fn shaped(&self) -> bool {
        let any = |l: &Link| {
            l.latency_ms > 0.0 || l.jitter_ms > 0.0 || l.loss_pct > 0.0 || l.bandwidth_mbit > 0.0
        };
        any(&self.within) || any(&self.between) || self.links.iter().any(|l| any(&l.link()))
    }
}

/// The catalogue.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Catalogue {
    /// Songs (flash crowds each add one more, unplayed until their crowd).
    pub songs: usize,
    /// Shortest song, in seconds.
    pub min_secs: f64,
    /// Longest song, in seconds.
    pub max_secs: f64,
    /// Sample rates the songs are encoded at (FLAC), in turn: they set the bitrates.
    #[serde(default = "default_rates")]
    pub sample_rates: Vec<u32>,
    /// Data shards per segment.
    #[serde(default = "default_k")]
    pub k: u8,
    /// Parity shards per segment.
    #[serde(default = "default_m")]
    pub m: u8,
}

fn default_rates() -> Vec<u32> {
    vec![44_100]
}
fn default_k() -> u8 {
    medley_core::DEFAULT_K
}
fn default_m() -> u8 {
    medley_core::DEFAULT_M
}

/// What listeners do.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Zipf exponent of song popularity (0: uniform).
    #[serde(default = "one")]
    pub zipf: f64,
    /// Listening sessions starting per second, over all listeners (a Poisson process).
    pub arrivals_per_sec: f64,
    /// Songs per session: drawn uniformly from `[min, max]`.
    #[serde(default = "default_session")]
    pub session_songs: [usize; 2],
    /// Share of plays skipped partway, in percent.
    #[serde(default)]
    pub skip_pct: f64,
    /// Share of plays with one seek, in percent.
    #[serde(default)]
    pub seek_pct: f64,
    /// Each listener's disk cache (served to other listeners), e.g. `"64 MiB"`; 0 turns
    /// caching and peer serving off.
    #[serde(default = "default_cache")]
    pub cache: ByteSize,
    /// Each listener's upload for serving other listeners, in Mbit/s of playing time (a
    /// run at `speed` times gets `speed` times it); 0: the client's default (2 MiB/s).
    #[serde(default)]
    pub listener_upload_mbit: f64,
    /// Flash crowds: many listeners start the same new song at once.
    #[serde(default)]
    pub flash_crowds: Vec<FlashCrowd>,
}

fn default_session() -> [usize; 2] {
    [1, 4]
}
fn default_cache() -> ByteSize {
    ByteSize::mib(64)
}

/// A flash crowd.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FlashCrowd {
    /// When it starts.
    pub at_secs: f64,
    /// How many listeners join it.
    pub listeners: usize,
    /// Over how many seconds they arrive.
    #[serde(default = "default_within")]
    pub within_secs: f64,
}

fn default_within() -> f64 {
    5.0
}

/// A fault as written in the scenario.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// When, in seconds from the start of the workload.
    pub at_secs: f64,
    /// `kill_node`, `restart_node`, `corrupt_node`, `kill_listeners`, `restart_listeners`,
    /// `cut_region`, `heal_region`, `lying_peer`, `rogue_nodes`, `rogues_vanish`,
    /// `kill_tracker` or `restart_tracker`.
    pub action: String,
    /// The node, as `region/index` (e.g. `eu-west/0`), for node actions.
    #[serde(default)]
    pub node: Option<String>,
    /// The region, for listener, region and lying-peer actions.
    #[serde(default)]
    pub region: Option<String>,
    /// How many listeners (or lying peers).
    #[serde(default)]
    pub count: Option<usize>,
    /// Share of a node's stored records to damage (`corrupt_node`), 0 to 1.
    #[serde(default)]
    pub fraction: Option<f64>,
    /// The capacity rogue nodes claim (`rogue_nodes`), e.g. "1 EB".
    #[serde(default)]
    pub capacity: Option<bytesize::ByteSize>,
    /// Whether rogue nodes come with join tokens, as a careless operator's would
    /// (`rogue_nodes`; default true).
    #[serde(default)]
    pub admitted: Option<bool>,
    /// The tracker replica (`kill_tracker`, `restart_tracker`), from 0; default 0.
    #[serde(default)]
    pub tracker: Option<usize>,
}

/// Random restarts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Churn {
    /// Node crashes per minute over the whole network.
    #[serde(default)]
    pub node_kills_per_min: f64,
    /// How long a crashed node stays down.
    #[serde(default = "default_down")]
    pub node_down_secs: f64,
    /// Listeners leaving per minute over the whole network.
    #[serde(default)]
    pub listener_kills_per_min: f64,
    /// How long a listener that left stays away.
    #[serde(default = "default_down")]
    pub listener_down_secs: f64,
}

fn default_down() -> f64 {
    20.0
}

/// A node by position: region and index within it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct NodeRef {
    /// Region index in the scenario.
    pub region: usize,
    /// Node index within the region.
    pub index: usize,
}

/// A checked fault.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum FaultKind {
    /// SIGKILL a node.
    KillNode {
        /// Which.
        node: NodeRef,
    },
    /// Start a killed node again, with its data.
    RestartNode {
        /// Which.
        node: NodeRef,
    },
    /// Stop a node, damage a share of its stored records on disk, start it again.
    CorruptNode {
        /// Which.
        node: NodeRef,
        /// Share of records damaged.
        fraction: f64,
    },
    /// Listeners of a region leave (their peers stop).
    KillListeners {
        /// Region index.
        region: usize,
        /// How many.
        count: usize,
    },
    /// Listeners of a region that left come back (same identity and cache).
    RestartListeners {
        /// Region index.
        region: usize,
        /// How many.
        count: usize,
    },
    /// A region is cut off from the others.
    CutRegion {
        /// Region index.
        region: usize,
    },
    /// A cut-off region is joined again.
    HealRegion {
        /// Region index.
        region: usize,
    },
    /// Peers in a region announce the most popular songs and serve wrong bytes.
    LyingPeer {
        /// Region index.
        region: usize,
        /// How many.
        count: usize,
    },
    /// Storage nodes of a region join claiming `capacity`, keep nothing they are sent, say
    /// they hold everything ([`crate::rogue`]).
    RogueNodes {
        /// Region index.
        region: usize,
        /// How many.
        count: usize,
        /// Bytes each claims.
        capacity: u64,
        /// With join tokens (else they register without one).
        admitted: bool,
    },
    /// Every rogue node vanishes at once, without a word to the tracker.
    RoguesVanish,
    /// SIGKILL a tracker replica.
    KillTracker {
        /// Which (0 is the first).
        tracker: usize,
    },
    /// Start a killed tracker replica again.
    RestartTracker {
        /// Which.
        tracker: usize,
    },
}

/// A fault at a time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TimedFault {
    /// Seconds from the start of the workload.
    pub at_secs: f64,
    /// What happens.
    #[serde(flatten)]
    pub kind: FaultKind,
}

/// One planned play.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct PlannedPlay {
    /// Index of the song in the catalogue (0 is the most popular).
    pub song: usize,
    /// Stop after this share of the song, if skipped.
    pub skip_at: Option<f64>,
    /// At half the song (or before the skip), jump to this share of it.
    pub seek_to: Option<f64>,
}

/// A listening session: one listener plays songs one after the other.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Session {
    /// When it starts, in seconds from the start of the workload.
    pub at_secs: f64,
    /// Listener index (listeners are numbered region by region).
    pub listener: usize,
    /// What it plays.
    pub plays: Vec<PlannedPlay>,
    /// Part of a flash crowd.
    #[serde(default)]
    pub flash: bool,
}

/// Everything a seed decides: sessions and faults, in time order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Schedule {
    /// The seed.
    pub seed: u64,
    /// Sessions, by start time.
    pub sessions: Vec<Session>,
    /// Faults, by time (the scenario's and churn's).
    pub faults: Vec<TimedFault>,
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses and checks a scenario.
    pub fn parse(text: &str) -> Result<Self, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Syntax(e.to_string()))?;
        s.validate()?;
        Ok(s)
    }

    /// Storage nodes over all regions.
    pub fn total_nodes(&self) -> usize {
        self.regions.iter().map(|r| r.nodes).sum()
    }

    /// Listeners over all regions.
    pub fn total_listeners(&self) -> usize {
        self.regions.iter().map(|r| r.listeners).sum()
    }

    /// The region of listener `l` (listeners are numbered region by region).
    pub fn listener_region(&self, l: usize) -> usize {
        let mut at = 0;
        for (i, r) in self.regions.iter().enumerate() {
            at += r.listeners;
            if l < at {
                return i;
            }
        }
        self.regions.len().saturating_sub(1)
    }

    /// The listeners of region `r`, as a range of listener indices.
    pub fn listeners_of(&self, r: usize) -> std::ops::Range<usize> {
        let start: usize = self.regions[..r].iter().map(|r| r.listeners).sum();
        start..start + self.regions.get(r).map_or(0, |r| r.listeners)
    }

    /// Songs to publish: the catalogue and one per flash crowd.
    pub fn songs_to_publish(&self) -> usize {
        self.catalogue.songs + self.workload.flash_crowds.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const SMALL: &str = r#"
name = "small"
duration_secs = 60
[[regions]]
name = "eu-west"
nodes = 3
listeners = 10
[[regions]]
name = "us-east"
nodes = 3
listeners = 10
[network.between]
latency_ms = 40
[[network.links]]
between = ["eu-west", "us-east"]
latency_ms = 50
jitter_ms = 5
[catalogue]
songs = 20
min_secs = 8
max_secs = 12
[workload]
arrivals_per_sec = 1.5
skip_pct = 20
seek_pct = 10
[[workload.flash_crowds]]
at_secs = 30
listeners = 12
[[faults]]
at_secs = 10
action = "kill_node"
node = "us-east/2"
[[faults]]
at_secs = 40
action = "restart_node"
node = "us-east/2"
[churn]
listener_kills_per_min = 6
"#;

    fn with(line_from: &str, line_to: &str) -> String {
        assert!(SMALL.contains(line_from), "{line_from}");
        SMALL.replacen(line_from, line_to, 1)
    }

    fn refused_field(text: &str) -> String {
        match Scenario::parse(text) {
            Err(e) => e
                .field()
                .map(str::to_string)
                .unwrap_or_else(|| e.to_string()),
            Ok(_) => panic!("accepted:\n{text}"),
        }
    }

    #[test]
    fn a_valid_scenario_parses_and_its_links_resolve() {
        let s = Scenario::parse(SMALL).unwrap();
        assert_eq!(s.total_nodes(), 6);
        assert_eq!(s.total_listeners(), 20);
        assert_eq!(s.listener_region(9), 0);
        assert_eq!(s.listener_region(10), 1);
        assert_eq!(s.listeners_of(1), 10..20);
        assert_eq!(s.network.link("us-east", "eu-west").latency_ms, 50.0);
        assert_eq!(s.network.link("eu-west", "eu-west").latency_ms, 0.0);
        assert_eq!(s.songs_to_publish(), 21);
        assert!(s.network.shaped());
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
        let s = Scenario::parse(SMALL).unwrap();
        let a = s.schedule(7).unwrap();
        let b = s.schedule(7).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap()
        );
        let c = s.schedule(8).unwrap();
        assert_ne!(a.sessions, c.sessions);
        // About arrivals_per_sec × duration sessions, plus the crowd.
        let normal = a.sessions.iter().filter(|x| !x.flash).count();
        assert!((50..=140).contains(&normal), "{normal} sessions");
        let crowd: Vec<_> = a.sessions.iter().filter(|x| x.flash).collect();
        assert_eq!(crowd.len(), 12);
        let distinct: HashSet<usize> = crowd.iter().map(|x| x.listener).collect();
        assert_eq!(distinct.len(), 12, "a crowd has distinct listeners");
        assert!(
            crowd
                .iter()
                .all(|x| x.plays[0].song == 20 && (30.0..=35.0).contains(&x.at_secs))
        );
        // No normal session plays the crowd's song.
        assert!(
            a.sessions
                .iter()
                .filter(|x| !x.flash)
                .all(|x| x.plays.iter().all(|p| p.song < 20))
        );
        assert!(a.sessions.windows(2).all(|w| w[0].at_secs <= w[1].at_secs));
        // Skips and seeks happen at about their rates.
        let plays: Vec<_> = a.sessions.iter().flat_map(|x| &x.plays).collect();
        let skips = plays.iter().filter(|p| p.skip_at.is_some()).count();
        assert!(
            skips > 0 && skips < plays.len() / 2,
            "{skips} of {}",
            plays.len()
        );
        // Faults: the two written, then churn's, in order.
        assert!(a.faults.iter().any(|f| f.kind
            == FaultKind::KillNode {
                node: NodeRef {
                    region: 1,
                    index: 2
                }
            }));
        assert!(
            a.faults
                .iter()
                .any(|f| matches!(f.kind, FaultKind::KillListeners { .. }))
        );
        assert!(a.faults.windows(2).all(|w| w[0].at_secs <= w[1].at_secs));
    }

    #[test]
    fn every_bundled_scenario_is_valid_and_schedules() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut names = Vec::new();
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_none_or(|x| x != "toml") {
                continue;
            }
            let s = Scenario::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert_eq!(
                Some(s.name.as_str()),
                p.file_stem().and_then(|n| n.to_str())
            );
            let sched = s.schedule(s.seed).unwrap();
            assert!(!sched.sessions.is_empty(), "{}", s.name);
            names.push(s.name);
        }
        names.sort();
        assert_eq!(
            names,
            [
                "churn",
                "demo",
                "flash-crowd",
                "hostile-join",
                "lying-peer",
                "region-outage",
                "spotify-2010",
                "tracker-failover",
                "zipf-steady"
            ]
        );
    }

    #[test]
    fn zipf_puts_the_most_plays_on_the_first_songs() {
        let s = Scenario::parse(SMALL).unwrap();
        let a = s.schedule(1).unwrap();
        let mut counts = [0usize; 20];
        for p in a
            .sessions
            .iter()
            .filter(|x| !x.flash)
            .flat_map(|x| &x.plays)
        {
            counts[p.song] += 1;
        }
        assert!(counts[0] > counts[10], "{counts:?}");
    }

    #[test]
    fn impossible_scenarios_are_refused_naming_the_field() {
        let cases = [
            (
                with("node = \"us-east/2\"", "node = \"mars/0\""),
                "faults[0].node",
            ),
            (
                with("node = \"us-east/2\"", "node = \"us-east/3\""),
                "faults[0].node",
            ),
            (
                with("node = \"us-east/2\"", "node = \"us-east\""),
                "faults[0].node",
            ),
            (
                with("latency_ms = 50", "latency_ms = -5"),
                "network.links[0].latency_ms",
            ),
            (
                with("latency_ms = 40", "latency_ms = -1"),
                "network.between.latency_ms",
            ),
            (
                with("jitter_ms = 5", "jitter_ms = 80"),
                "network.links[0].jitter_ms",
            ),
            (
                with(
                    "between = [\"eu-west\", \"us-east\"]",
                    "between = [\"eu-west\", \"mars\"]",
                ),
                "network.links[0].between",
            ),
            (
                with("songs = 20", "songs = 20\nk = 5\nm = 2"),
                "catalogue.k",
            ),
            (with("songs = 20", "songs = 0"), "catalogue.songs"),
            (with("min_secs = 8", "min_secs = 30"), "catalogue.min_secs"),
            (
                with("duration_secs = 60", "duration_secs = 0"),
                "duration_secs",
            ),
            (
                with("arrivals_per_sec = 1.5", "arrivals_per_sec = -1"),
                "workload.arrivals_per_sec",
            ),
            (with("skip_pct = 20", "skip_pct = 120"), "workload.skip_pct"),
            (
                with("skip_pct = 20", "skip_pct = 20\nlistener_upload_mbit = -1"),
                "workload.listener_upload_mbit",
            ),
            (
                with("at_secs = 30", "at_secs = 300"),
                "workload.flash_crowds[0].at_secs",
            ),
            (
                with("listeners = 12", "listeners = 21"),
                "workload.flash_crowds[0].listeners",
            ),
            (
                with("action = \"kill_node\"", "action = \"explode\""),
                "faults[0].action",
            ),
            (with("at_secs = 10", "at_secs = -10"), "faults[0].at_secs"),
            (
                with("name = \"us-east\"", "name = \"eu-west\""),
                "regions[1].name",
            ),
            (
                with("name = \"us-east\"", "name = \"US East\""),
                "regions[1].name",
            ),
        ];
        for (text, field) in cases {
            assert_eq!(refused_field(&text), field, "{text}");
        }
        // A field of the wrong type, an unknown field and broken TOML are refused, with
        // the key named.
        for (text, needle) in [
            (with("nodes = 3", "nodes = \"three\""), "nodes"),
            (with("seek_pct = 10", "seek_pct = 10\nseeks = 3"), "seeks"),
            (with("[catalogue]", "[catalogue"), "catalogue"),
        ] {
            let e = Scenario::parse(&text).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }
}
