//! What a run records, and how it is written to the output folder:
//! - `scenario.toml`, `schedule.json`: what ran, and everything the seed decided;
//! - `plays.jsonl`, `plays.csv`: one row per play (time to first audio, stalls, bytes by
//!   source class, skip, seek, error);
//! - `nodes.jsonl`, `nodes.csv`: every node every `sample_secs` (up, bytes served,
//!   requests, store size, hot segments, repair backlog and progress, corrupt shards found);
//! - `events.jsonl`: the faults, as they were applied;
//! - `layout.jsonl`: the layout every `sample_secs` (version, oldest kept, share of slots on
//!   rogue nodes); `integrity.json`: every shard of every song checked at the end;
//! - `hot.jsonl`: the hot tier's changes (copies ordered, held, released per song and
//!   region), read from the tracker twice a second;
//! - `overhead.csv`: this process's CPU time and memory over the run;
//! - `logs/`: every process's log. The report ([`crate::report`]) adds `report.md` and plots.

use std::io::Write;
use std::path::{Path, PathBuf};

use medley_client::{ClientError, Delivery};
use serde::{Deserialize, Serialize};

use crate::TestnetError;
use crate::listener;
use crate::scenario::{FaultKind, Scenario, ScenarioError, Schedule};
use crate::shaping::ShapingError;

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The scenario is invalid.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// The network could not be started or driven.
    #[error(transparent)]
    Testnet(#[from] TestnetError),
    /// A client operation failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Network shaping failed.
    #[error(transparent)]
    Shaping(#[from] ShapingError),
    /// The catalogue could not be made or published.
    #[error("catalogue: {0}")]
    Catalogue(String),
    /// An output file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The report could not be drawn.
    #[error("report: {0}")]
    Report(String),
    /// A sweep's grid is wrong.
    #[error("sweep: {0}")]
    Sweep(String),
}

pub(crate) fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// One play, as written to `plays.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlayRecord {
    /// Seconds from the start of the workload to the ask.
    pub t_secs: f64,
    /// Seconds from the start of the workload to the end.
    pub end_secs: f64,
    /// Listener index.
    pub listener: usize,
    /// Its region.
    pub region: String,
    /// Song index (popularity rank; flash-crowd songs come after the catalogue).
    pub song: usize,
    /// Part of a flash crowd.
    pub flash: bool,
    /// Skipped partway.
    pub skipped: bool,
    /// What the play did (absent if it failed).
    #[serde(flatten)]
    pub result: Option<listener::PlayResult>,
    /// Why it failed.
    pub error: Option<String>,
}

/// One node sample, as written to `nodes.jsonl`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeSample {
    /// Seconds from the start of the workload.
    pub t_secs: f64,
    /// Node index.
    pub node: usize,
    /// Region.
    pub region: String,
    /// Answered its status endpoint.
    pub up: bool,
    /// What its status endpoint said (zeros when it did not answer).
    #[serde(flatten)]
    pub counters: NodeCounters,
}

/// The counters of a node's `/status` that a sample keeps, under the same names.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeCounters {
    /// Bytes of shards and segments sent since it started.
    #[serde(default)]
    pub bytes_served: u64,
    /// Data-plane requests since it started.
    #[serde(default)]
    pub requests: u64,
    /// Bytes stored.
    #[serde(default)]
    pub used: u64,
    /// Durable shards held.
    #[serde(default)]
    pub shards: u64,
    /// Whole segments in the hot tier.
    #[serde(default)]
    pub hot_segments: u64,
    /// Shards its slots call for that it lacks.
    #[serde(default)]
    pub repair_backlog: u64,
    /// Shards rebuilt or copied by repair since it started.
    #[serde(default)]
    pub repaired: u64,
    /// Corrupt shards its scrubber found since it started.
    #[serde(default)]
    pub scrub_bad: u64,
}

/// A change of the hot tier as the tracker lists it (`GET /v1/popularity`, read twice a
/// second), as written to `hot.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HotEvent {
    /// Seconds from the start of the workload.
    pub t_secs: f64,
    /// The song (index in the catalogue, flash-crowd songs after the rest).
    pub song: usize,
    /// The region.
    pub region: String,
    /// `ordered` (hot copies ordered there), `held` (a node there holds it whole) or
    /// `released` (no longer hot there).
    pub what: String,
    /// The nodes ordered (for `ordered`) or holding it (for `held`).
    pub nodes: Vec<String>,
}

/// The layout at a sample, as written to `layout.jsonl`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LayoutSample {
    /// Seconds from the start of the workload.
    pub t_secs: f64,
    /// Its version.
    pub version: u64,
    /// The oldest version kept (a change under way when below `version`).
    pub oldest: u64,
    /// Share of its slots held by rogue nodes.
    pub rogue_share: f64,
}

/// What the network held at the end: every shard of every song checked on its holder once
/// the layout settled.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Integrity {
    /// Songs checked.
    pub songs: usize,
    /// Their segments.
    pub segments: usize,
    /// Segments short of a shard on its holder.
    pub short: usize,
    /// Segments with fewer than `k` shards: lost.
    pub lost: usize,
    /// Songs with a short segment.
    pub songs_short: usize,
    /// Songs with a lost segment.
    pub songs_lost: usize,
    /// Seconds after the workload the layout settled (`None`: not within two minutes).
    pub settled_secs: Option<f64>,
}

/// A fault as applied, as written to `events.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultEvent {
    /// Seconds from the start of the workload, when it was applied.
    pub t_secs: f64,
    /// When it was scheduled.
    pub planned_secs: f64,
    /// What.
    #[serde(flatten)]
    pub kind: FaultKind,
    /// What it did, or why it failed.
    pub detail: String,
    /// Whether it was applied.
    pub ok: bool,
}

/// This process's cost at a time.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Overhead {
    /// Seconds from the start of the workload.
    pub t_secs: f64,
    /// CPU seconds used since the process started (user + system).
    pub cpu_secs: f64,
    /// Resident memory in bytes.
    pub rss_bytes: u64,
    /// Listeners online.
    pub listeners_online: usize,
}

/// Writes what is about to run: the scenario and its schedule.
pub(crate) fn write_setup(out: &Path, sc: &Scenario, schedule: &Schedule) -> Result<(), RunError> {
    std::fs::create_dir_all(out).map_err(write_err(out))?;
    write_text(
        &out.join("scenario.toml"),
        &toml::to_string(sc).map_err(|e| RunError::Report(e.to_string()))?,
    )?;
    write_json(&out.join("schedule.json"), schedule)
}

/// Everything a run produced, for the report.
#[derive(Debug, Clone)]
pub struct RunData {
    /// The scenario.
    pub scenario: Scenario,
    /// The schedule.
    pub schedule: Schedule,
    /// Plays.
    pub plays: Vec<PlayRecord>,
    /// Node samples.
    pub nodes: Vec<NodeSample>,
    /// Faults applied.
    pub events: Vec<FaultEvent>,
    /// This process's cost over time.
    pub overhead: Vec<Overhead>,
    /// The layout over time.
    pub layout: Vec<LayoutSample>,
    /// The hot tier's changes.
    pub hot: Vec<HotEvent>,
    /// What the network held at the end (`None`: it could not be checked).
    pub integrity: Option<Integrity>,
    /// Whether traffic was shaped (why not is in `shaping_note`).
    pub shaped: bool,
    /// What shaping did or why it was off.
    pub shaping_note: String,
    /// Which link emulation ran: `netem`, `userspace` or `off`.
    pub shaping_mechanism: String,
    /// Round trips measured between regions (from, to, ms), when shaped.
    pub rtts: Vec<(String, String, f64)>,
    /// Mean bitrate of the catalogue, kbit/s.
    pub catalogue_kbps: f64,
    /// Seconds the workload ran.
    pub wall_secs: f64,
}

pub(crate) fn copy_logs(from: &Path, to: &Path) {
    let Ok(rd) = std::fs::read_dir(from) else {
        return;
    };
    if std::fs::create_dir_all(to).is_err() {
        return;
    }
    for e in rd.flatten() {
        let _ = std::fs::copy(e.path(), to.join(e.file_name()));
    }
}

pub(crate) fn write_text(path: &Path, text: &str) -> Result<(), RunError> {
    std::fs::write(path, text).map_err(write_err(path))
}

pub(crate) fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<(), RunError> {
    let text = serde_json::to_string_pretty(v).map_err(|e| RunError::Report(e.to_string()))?;
    write_text(path, &text)
}

fn write_jsonl<T: Serialize>(path: &Path, rows: &[T]) -> Result<(), RunError> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(write_err(path))?);
    for r in rows {
        let line = serde_json::to_string(r).map_err(|e| RunError::Report(e.to_string()))?;
        writeln!(f, "{line}").map_err(write_err(path))?;
    }
    f.flush().map_err(write_err(path))
}

fn write_csv(
    path: &Path,
    header: &str,
    rows: impl Iterator<Item = String>,
) -> Result<(), RunError> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(write_err(path))?);
    writeln!(f, "{header}").map_err(write_err(path))?;
    for r in rows {
        writeln!(f, "{r}").map_err(write_err(path))?;
    }
    f.flush().map_err(write_err(path))
}

pub(crate) fn write_outputs(out: &Path, d: &RunData) -> Result<(), RunError> {
    write_jsonl(&out.join("plays.jsonl"), &d.plays)?;
    write_csv(
        &out.join("plays.csv"),
        "t_secs,end_secs,listener,region,song,flash,skipped,ok,ttfa_ms,stalls,stall_ms,seek_ms,segments_played,cache_bytes,peer_bytes,hot_bytes,rebuilt_bytes,liars_caught,error",
        d.plays.iter().map(|p| {
            let r = p.result.unwrap_or_default();
            let dl: Delivery = r.delivery;
            format!(
                "{:.3},{:.3},{},{},{},{},{},{},{:.1},{},{:.1},{},{},{},{},{},{},{},{}",
                p.t_secs,
                p.end_secs,
                p.listener,
                p.region,
                p.song,
                p.flash,
                p.skipped,
                p.result.is_some(),
                r.ttfa_ms,
                r.stalls,
                r.stall_ms,
                r.seek_ms.map_or(String::new(), |v| format!("{v:.1}")),
                r.segments_played,
                dl.cache_bytes,
                dl.peer_bytes,
                dl.hot_bytes,
                dl.rebuilt_bytes,
                r.liars_caught,
                csv_text(p.error.as_deref().unwrap_or(""))
            )
        }),
    )?;
    write_jsonl(&out.join("layout.jsonl"), &d.layout)?;
    write_jsonl(&out.join("hot.jsonl"), &d.hot)?;
    if let Some(i) = &d.integrity {
        write_text(
            &out.join("integrity.json"),
            &serde_json::to_string_pretty(i).unwrap_or_default(),
        )?;
    }
    write_jsonl(&out.join("nodes.jsonl"), &d.nodes)?;
    write_csv(
        &out.join("nodes.csv"),
        "t_secs,node,region,up,bytes_served,requests,used,shards,hot_segments,repair_backlog,repaired,scrub_bad",
        d.nodes.iter().map(|n| {
            let c = &n.counters;
            format!(
                "{:.3},{},{},{},{},{},{},{},{},{},{},{}",
                n.t_secs,
                n.node,
                n.region,
                n.up,
                c.bytes_served,
                c.requests,
                c.used,
                c.shards,
                c.hot_segments,
                c.repair_backlog,
                c.repaired,
                c.scrub_bad
            )
        }),
    )?;
    write_jsonl(&out.join("events.jsonl"), &d.events)?;
    write_csv(
        &out.join("overhead.csv"),
        "t_secs,cpu_secs,rss_bytes,listeners_online",
        d.overhead.iter().map(|o| {
            format!(
                "{:.3},{:.2},{},{}",
                o.t_secs, o.cpu_secs, o.rss_bytes, o.listeners_online
            )
        }),
    )
}

/// A CSV field: quoted, with quotes doubled.
fn csv_text(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}
