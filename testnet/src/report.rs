//! The report of a run: `report.md` with the scenario, the seed, the table of the Spotify
//! paper (share of bytes from the local cache, other listeners and servers; playback
//! latency percentiles; stutter), faults and nodes, and four SVG plots drawn with plotters:
//! the CDF of time to first audio, bytes by source over time, node load over time and
//! repair progress.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use medley_client::Delivery;
use plotters::prelude::*;

use crate::record::{PlayRecord, RunData, RunError};

/// The plots every report has, by file name.
pub const PLOTS: [&str; 4] = [
    "ttfa_cdf.svg",
    "bytes_by_source.svg",
    "node_load.svg",
    "repair.svg",
];

/// The plot of the layout's share on rogue nodes, in reports of runs they joined.
pub const ROGUE_PLOT: &str = "rogue_share.svg";

/// Whether rogue storage nodes joined during the run.
fn rogues_joined(d: &RunData) -> bool {
    d.events
        .iter()
        .any(|e| matches!(e.kind, crate::scenario::FaultKind::RogueNodes { .. }))
}

/// The headings every report has.
pub const SECTIONS: [&str; 6] = [
    "## Where the bytes came from",
    "## Playback",
    "## Faults",
    "## Nodes",
    "## Testnet overhead",
    "## Plots",
];

/// The head of a playback table.
const PLAYBACK_HEADER: &str = "| plays | n | failed | skipped | TTFA p50 ms | p75 | p90 | p99 | plays with a stall | stall s/min | seek p50 / p90 ms | caught a liar |\n|---|---|---|---|---|---|---|---|---|---|---|---|";

/// The `p` quantile (0 to 1) of sorted values; NaN when empty.
pub fn quantile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn mib(b: u64) -> f64 {
    b as f64 / 1_048_576.0
}

fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        "–".into()
    } else {
        format!("{:.1} %", 100.0 * part as f64 / whole as f64)
    }
}

fn ms(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else {
        format!("{v:.0}")
    }
}

/// Totals of a group of plays.
#[derive(Debug, Default)]
struct Group {
    plays: usize,
    failed: usize,
    skipped: usize,
    stalled: usize,
    stall_ms: f64,
    played_secs: f64,
    delivery: Delivery,
    ttfa: Vec<f64>,
    seeks: Vec<f64>,
    caught: usize,
}

impl Group {
    fn of<'a>(plays: impl Iterator<Item = &'a PlayRecord>, seg_secs: f64) -> Self {
        let mut g = Group::default();
        for p in plays {
            g.plays += 1;
            g.skipped += usize::from(p.skipped);
            match &p.result {
                Some(r) => {
                    g.ttfa.push(r.ttfa_ms);
                    g.stalled += usize::from(r.stalled());
                    g.stall_ms += r.stall_ms;
                    g.played_secs += r.segments_played as f64 * seg_secs;
                    g.delivery.add(&r.delivery);
                    g.caught += usize::from(r.liars_caught > 0);
                    if let Some(s) = r.seek_ms {
                        g.seeks.push(s);
                    }
                }
                None => g.failed += 1,
            }
        }
        g.ttfa.sort_by(f64::total_cmp);
        g.seeks.sort_by(f64::total_cmp);
        g
    }

    fn bytes_row(&self, name: &str) -> String {
        let d = &self.delivery;
        let total = d.total_bytes();
        format!(
            "| {name} | {} | {} | {} | {} | {} | {:.1} |\n",
            pct(d.cache_bytes, total),
            pct(d.peer_bytes, total),
            pct(d.hot_bytes, total),
            pct(d.rebuilt_bytes, total),
            pct(d.hot_bytes + d.rebuilt_bytes, total),
            mib(total)
        )
    }

    fn playback_row(&self, name: &str) -> String {
        let ok = self.plays - self.failed;
        format!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {} | {} |\n",
            self.plays,
            self.failed,
            self.skipped,
            ms(quantile(&self.ttfa, 0.5)),
            ms(quantile(&self.ttfa, 0.75)),
            ms(quantile(&self.ttfa, 0.9)),
            ms(quantile(&self.ttfa, 0.99)),
            pct(self.stalled as u64, ok as u64),
            if self.played_secs > 0.0 {
                self.stall_ms / 1000.0 / (self.played_secs / 60.0)
            } else {
                0.0
            },
            if self.seeks.is_empty() {
                "–".into()
            } else {
                format!(
                    "{} / {}",
                    ms(quantile(&self.seeks, 0.5)),
                    ms(quantile(&self.seeks, 0.9))
                )
            },
            self.caught
        )
    }
}

/// Percentiles of time to first audio, ms (null when no play started).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Ttfa {
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
}

/// Shares (0 to 1) of the bytes played, by where they came from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BytesShare {
    /// The listener's own cache.
    pub cache: f64,
    /// Other listeners.
    pub peers: f64,
    /// Hot nodes' whole copies.
    pub hot: f64,
    /// Rebuilt from the durable tier's shards.
    pub rebuilt: f64,
}

/// Stalled plays.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stalled {
    /// Plays with at least one stall.
    pub count: usize,
    /// Their share (0 to 1) of the plays that did not fail.
    pub share: f64,
}

/// When the hot tier answered the first flash crowd: seconds from the crowd's first play
/// to the tracker ordering hot copies of its song, and to a node holding one (null: not
/// during the run). From `hot.jsonl`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CrowdHot {
    /// To the first order.
    pub ordered_after_secs: Option<f64>,
    /// To the first node holding it whole.
    pub held_after_secs: Option<f64>,
}

/// [`CrowdHot`] of a run.
fn crowd_hot(d: &RunData) -> Option<CrowdHot> {
    let first = d
        .plays
        .iter()
        .filter(|p| p.flash)
        .min_by(|a, b| a.t_secs.total_cmp(&b.t_secs))?;
    let after = |what: &str| {
        d.hot
            .iter()
            .filter(|e| e.song == first.song && e.what == what)
            .map(|e| e.t_secs - first.t_secs)
            .min_by(f64::total_cmp)
    };
    Some(CrowdHot {
        ordered_after_secs: after("ordered"),
        held_after_secs: after("held"),
    })
}

/// The figures of a group of plays.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PlayFigures {
    /// Plays asked for.
    pub plays: usize,
    /// Plays that failed.
    pub failed: usize,
    /// Plays stopped early on purpose (skips).
    pub skipped: usize,
    /// Plays that stalled.
    pub stalled: Stalled,
    /// Time to first audio.
    pub ttfa_ms: Ttfa,
    /// Where the bytes came from.
    pub bytes_share: BytesShare,
    /// Bytes played.
    pub bytes: u64,
}

/// What one storage node did.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeFigures {
    /// Its index.
    pub node: usize,
    /// Its region.
    pub region: String,
    /// Bytes it served.
    pub served_bytes: u64,
    /// Shards it repaired.
    pub repaired: u64,
}

/// A run's figures for scripts: `summary.json` beside `report.md`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// The scenario's name.
    pub scenario: String,
    /// The seed the run drew its schedule from.
    pub seed: u64,
    /// Which link emulation ran: `netem`, `userspace` or `off`.
    pub shaping: String,
    /// Every play.
    #[serde(flatten)]
    pub all: PlayFigures,
    /// The flash crowds' plays alone (null without a flash crowd).
    pub crowd: Option<PlayFigures>,
    /// When the first flash crowd's song got hot copies (null without a flash crowd).
    #[serde(default)]
    pub crowd_hot: Option<CrowdHot>,
    /// Each storage node.
    pub nodes: Vec<NodeFigures>,
    /// Shards repaired, all nodes.
    pub repairs: u64,
    /// Songs lost at the end (null: not checked).
    pub songs_lost: Option<usize>,
}

impl Group {
    fn figures(&self) -> PlayFigures {
        let q = |p| Some(quantile(&self.ttfa, p)).filter(|v: &f64| !v.is_nan());
        let d = &self.delivery;
        let total = d.total_bytes();
        let share = |b: u64| {
            if total == 0 {
                0.0
            } else {
                b as f64 / total as f64
            }
        };
        let ok = self.plays - self.failed;
        PlayFigures {
            plays: self.plays,
            failed: self.failed,
            skipped: self.skipped,
            stalled: Stalled {
                count: self.stalled,
                share: if ok == 0 {
                    0.0
                } else {
                    self.stalled as f64 / ok as f64
                },
            },
            ttfa_ms: Ttfa {
                p50: q(0.5),
                p90: q(0.9),
                p99: q(0.99),
            },
            bytes_share: BytesShare {
                cache: share(d.cache_bytes),
                peers: share(d.peer_bytes),
                hot: share(d.hot_bytes),
                rebuilt: share(d.rebuilt_bytes),
            },
            bytes: total,
        }
    }
}

/// The run's summary (see [`Summary`]).
pub fn summary(d: &RunData, seed: u64) -> Summary {
    let seg_secs = segment_secs(d);
    let all = Group::of(d.plays.iter(), seg_secs);
    let crowd = d
        .plays
        .iter()
        .any(|p| p.flash)
        .then(|| Group::of(d.plays.iter().filter(|p| p.flash), seg_secs).figures());
    let nodes: Vec<NodeFigures> = node_series(d)
        .into_iter()
        .map(|(node, series)| NodeFigures {
            node,
            region: series.first().map(|s| s.region.clone()).unwrap_or_default(),
            served_bytes: served_total(&series),
            repaired: series
                .iter()
                .map(|s| s.counters.repaired)
                .max()
                .unwrap_or(0),
        })
        .collect();
    Summary {
        scenario: d.scenario.name.clone(),
        seed,
        shaping: d.shaping_mechanism.clone(),
        all: all.figures(),
        crowd,
        crowd_hot: crowd_hot(d),
        repairs: nodes.iter().map(|n| n.repaired).sum(),
        nodes,
        songs_lost: d.integrity.as_ref().map(|i| i.songs_lost),
    }
}

/// How long a segment plays: 256 KiB of the encoded file at the catalogue's bitrate.
fn segment_secs(d: &RunData) -> f64 {
    if d.catalogue_kbps > 0.0 {
        (f64::from(medley_core::DEFAULT_SEGMENT_SIZE) * 8.0 / 1000.0) / d.catalogue_kbps
    } else {
        1.0
    }
}

/// Medley's run beside the figures Spotify published for its peer-assisted network.
fn spotify_2010(all: &Group) -> String {
    let f = all.figures();
    let b = &f.bytes_share;
    let pct = |v: f64| format!("{:.1} %", 100.0 * v);
    let mut r = String::from(
        "\n### Beside Spotify's peer-assisted network (2010)\n\nG. Kreitz and F. Niemelä, \"Spotify – Large Scale, Low Latency, P2P Music-on-Demand Streaming\", IEEE P2P 2010: measured on Spotify's production network (Europe, 2010). Spotify's figures are what the paper published, not measured here; Medley's are this run's.\n\n| figure | Medley (this run) | Spotify (2010) |\n|---|---|---|\n",
    );
    let _ = writeln!(
        r,
        "| bytes from servers | {} | 8.8 % |",
        pct(b.hot + b.rebuilt)
    );
    let _ = writeln!(
        r,
        "| bytes from the local cache | {} | 55.4 % |",
        pct(b.cache)
    );
    let _ = writeln!(
        r,
        "| bytes from other listeners | {} | 35.8 % |",
        pct(b.peers)
    );
    let _ = writeln!(
        r,
        "| median time to first audio | {} ms | 265 ms |",
        f.ttfa_ms.p50.map_or("–".into(), |v| format!("{v:.0}"))
    );
    let _ = writeln!(
        r,
        "| plays with a stutter | {} | < 1 % |",
        pct(f.stalled.share)
    );
    r
}

/// Writes `report.md`, `summary.json` and the plots into `out`.
pub fn write(out: &Path, d: &RunData, seed: u64) -> Result<(), RunError> {
    let sc = &d.scenario;
    // Segments are 256 KiB of the encoded file: their playing time follows the bitrate.
    let seg_secs = segment_secs(d);
    let path = out.join("summary.json");
    let json = serde_json::to_vec_pretty(&summary(d, seed)).map_err(|e| RunError::Write {
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    std::fs::write(&path, json).map_err(|source| RunError::Write { path, source })?;
    let mut r = String::new();
    let _ = writeln!(r, "# Medley testnet report: `{}`, seed {seed}\n", sc.name);
    if !sc.description.is_empty() {
        let _ = writeln!(r, "{}\n", sc.description.trim());
    }
    let _ = writeln!(
        r,
        "- Run: {:.0} s of workload ({:.0} s wall), playback at {}× speed, {} sessions and {} faults drawn from seed {seed}.",
        sc.duration_secs,
        d.wall_secs,
        sc.speed,
        d.schedule.sessions.len(),
        d.schedule.faults.len()
    );
    let _ = writeln!(
        r,
        "- Network: {} regions, {} storage nodes, {} listeners (light listeners: each its own identity, cache and QUIC endpoint, all in the testnet process).",
        sc.regions.len(),
        sc.total_nodes(),
        sc.total_listeners()
    );
    for reg in &sc.regions {
        let _ = writeln!(
            r,
            "  - `{}`: {} nodes of {}, {} listeners",
            reg.name, reg.nodes, reg.node_capacity, reg.listeners
        );
    }
    let _ = writeln!(
        r,
        "- Catalogue: {} songs (+{} for flash crowds) of {}–{} s, FLAC at {} Hz, {:.0} kbit/s on average, erasure coding {}+{}.",
        sc.catalogue.songs,
        sc.workload.flash_crowds.len(),
        sc.catalogue.min_secs,
        sc.catalogue.max_secs,
        sc.catalogue
            .sample_rates
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("/"),
        d.catalogue_kbps,
        sc.catalogue.k,
        sc.catalogue.m
    );
    let w = &sc.workload;
    let _ = writeln!(
        r,
        "- Workload: Zipf({}) popularity, {} sessions/s, {}–{} songs per session, {} % skipped, {} % with a seek, {} cache per listener.",
        w.zipf,
        w.arrivals_per_sec,
        w.session_songs[0],
        w.session_songs[1],
        w.skip_pct,
        w.seek_pct,
        w.cache
    );
    let _ = writeln!(r, "- Shaping: {}", d.shaping_note);
    match &d.integrity {
        Some(i) => {
            let settled = i.settled_secs.map_or_else(
                || "the layout had not settled two minutes after the workload".to_string(),
                |s| format!("the layout settled {s:.0} s after the workload"),
            );
            let _ = writeln!(
                r,
                "- Integrity at the end ({settled}): **{} of {} songs lost** ({} of {} segments with fewer than k shards on their holders; {} segments short of a shard, in {} songs).",
                i.songs_lost, i.songs, i.lost, i.segments, i.short, i.songs_short
            );
        }
        None => {
            let _ = writeln!(
                r,
                "- Integrity at the end: not checked (the tracker did not answer)."
            );
        }
    }
    if !d.rtts.is_empty() {
        let _ = writeln!(
            r,
            "\n| round trip (measured) | ms | scenario ms |\n|---|---|---|"
        );
        for (a, b, v) in &d.rtts {
            let l = sc.network.link(a, b);
            let _ = writeln!(r, "| {a} → {b} | {v:.1} | {:.1} |", 2.0 * l.latency_ms);
        }
    }

    let all = Group::of(d.plays.iter(), seg_secs);
    let _ = writeln!(r, "\n{}\n", SECTIONS[0]);
    let _ = writeln!(
        r,
        "Share of the bytes played, by where they came from. Servers are the storage nodes: whole segments from their hot tier, or segments rebuilt from k erasure-coded shards of the durable tier.\n"
    );
    let _ = writeln!(
        r,
        "| plays | local cache | other listeners (P2P) | hot nodes | rebuilt from shards | servers in all | MiB |\n|---|---|---|---|---|---|---|"
    );
    r.push_str(&all.bytes_row("all"));
    let by_region =
        |f: &dyn Fn(&PlayRecord) -> bool| Group::of(d.plays.iter().filter(|p| f(p)), seg_secs);
    if d.plays.iter().any(|p| p.flash) {
        r.push_str(&by_region(&|p| p.flash).bytes_row("flash crowd"));
    }
    for reg in &sc.regions {
        r.push_str(&by_region(&|p| p.region == reg.name).bytes_row(&reg.name));
    }
    if let Some(h) = crowd_hot(d) {
        let secs =
            |v: Option<f64>| v.map_or("not during the run".into(), |v| format!("{v:.1} s after"));
        let _ = writeln!(
            r,
            "\nHot copies of the flash crowd's song: ordered {}, held by a node {} its first listener started (`hot.jsonl`).",
            secs(h.ordered_after_secs),
            secs(h.held_after_secs)
        );
    }

    if sc.compare == Some(crate::scenario::Paper::Spotify2010) {
        r.push_str(&spotify_2010(&all));
    }

    let _ = writeln!(r, "\n{}\n", SECTIONS[1]);
    let _ = writeln!(
        r,
        "Time to first audio: from asking to the first verified segment in hand. A stall: a segment in hand after it was due (the clock then waits). Stall time is per minute played. Caught a liar: plays that got bytes not matching their hash from a source, dropped it and played on.\n"
    );
    let _ = writeln!(r, "{PLAYBACK_HEADER}");
    r.push_str(&all.playback_row("all"));
    if d.plays.iter().any(|p| p.flash) {
        r.push_str(&by_region(&|p| p.flash).playback_row("flash crowd"));
    }
    for reg in &sc.regions {
        r.push_str(&by_region(&|p| p.region == reg.name).playback_row(&reg.name));
    }
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for p in &d.plays {
        if let Some(e) = &p.error {
            let short: String = e.chars().take(120).collect();
            *errors.entry(short).or_default() += 1;
        }
    }
    if !errors.is_empty() {
        let _ = writeln!(r, "\nWhy plays failed:\n");
        for (e, n) in errors {
            let _ = writeln!(r, "- {n}× {e}");
        }
    }

    let _ = writeln!(r, "\n{}\n", SECTIONS[2]);
    if d.events.is_empty() {
        let _ = writeln!(r, "None.");
    } else {
        let _ = writeln!(
            r,
            "| at s (planned) | fault | applied | what happened |\n|---|---|---|---|"
        );
        for e in &d.events {
            let kind = serde_json::to_value(&e.kind)
                .ok()
                .and_then(|v| v.get("action").and_then(|a| a.as_str().map(str::to_string)))
                .unwrap_or_default();
            let _ = writeln!(
                r,
                "| {:.1} ({:.1}) | {kind} | {} | {} |",
                e.t_secs,
                e.planned_secs,
                if e.ok { "yes" } else { "no" },
                e.detail.replace('|', "/")
            );
        }
        if d.events.len() <= 12 {
            // Plays by when they were asked for, between one fault and the next.
            let _ = writeln!(
                r,
                "\nPlays by when they started, between faults:\n\n{PLAYBACK_HEADER}"
            );
            let mut from = (0.0, "start".to_string());
            let bounds = d
                .events
                .iter()
                .map(|e| (e.t_secs, e.detail.replace('|', "/")));
            for to in bounds.map(Some).chain([None]) {
                let end = to.as_ref().map_or(f64::INFINITY, |t| t.0);
                let g = Group::of(
                    d.plays
                        .iter()
                        .filter(|p| p.t_secs >= from.0 && p.t_secs < end),
                    seg_secs,
                );
                let label = match &to {
                    Some(t) => format!("{:.0}–{:.0} s, after {}", from.0, t.0, from.1),
                    None => format!("from {:.0} s, after {}", from.0, from.1),
                };
                r.push_str(&g.playback_row(&label));
                if let Some(t) = to {
                    from = t;
                }
            }
        }
    }

    let _ = writeln!(r, "\n{}\n", SECTIONS[3]);
    let _ = writeln!(
        r,
        "| node | region | up in samples | MiB served | peak MiB/s | stored MiB at end | shards | hot segments | repaired | corrupt found |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for (node, series) in node_series(d) {
        let last = series.iter().rev().find(|s| s.up);
        let up = series.iter().filter(|s| s.up).count();
        let peak = rates(&series)
            .into_iter()
            .map(|(_, v)| v)
            .fold(0.0, f64::max);
        let served = served_total(&series);
        let region = series.first().map(|s| s.region.clone()).unwrap_or_default();
        let _ = writeln!(
            r,
            "| {node} | {region} | {up}/{} | {:.1} | {:.2} | {} | {} | {} | {} | {} |",
            series.len(),
            mib(served),
            peak,
            last.map_or("–".into(), |s| format!("{:.1}", mib(s.counters.used))),
            last.map_or(0, |s| s.counters.shards),
            last.map_or(0, |s| s.counters.hot_segments),
            series
                .iter()
                .map(|s| s.counters.repaired)
                .max()
                .unwrap_or(0),
            series
                .iter()
                .map(|s| s.counters.scrub_bad)
                .max()
                .unwrap_or(0),
        );
    }

    let _ = writeln!(r, "\n{}\n", SECTIONS[4]);
    if let (Some(a), Some(b)) = (d.overhead.first(), d.overhead.last()) {
        let secs = (b.t_secs - a.t_secs).max(0.001);
        let cpu = (b.cpu_secs - a.cpu_secs) / secs;
        let rss = d.overhead.iter().map(|o| o.rss_bytes).max().unwrap_or(0);
        let listeners = sc.total_listeners().max(1);
        let _ = writeln!(
            r,
            "The testnet process (all {listeners} light listeners, the driver and the sampler) used {:.2} cores on average over the workload and at most {:.0} MiB of memory: {:.2} % of a core and {:.2} MiB per listener. Nodes and the tracker are separate processes, not counted here.",
            cpu,
            mib(rss),
            100.0 * cpu / listeners as f64,
            mib(rss) / listeners as f64
        );
    } else {
        let _ = writeln!(r, "No samples.");
    }

    let _ = writeln!(r, "\n{}\n", SECTIONS[5]);
    for (file, title) in PLOTS.iter().zip([
        "Time to first audio, CDF",
        "Bytes by source over time",
        "Node load over time",
        "Repair progress",
    ]) {
        let _ = writeln!(r, "### {title}\n\n![{title}]({file})\n");
    }
    if rogues_joined(d) {
        let peak = d.layout.iter().map(|l| l.rogue_share).fold(0.0, f64::max);
        let _ = writeln!(
            r,
            "### Layout held by rogue nodes\n\nAt most {:.1} % of the slots were on rogue nodes.\n\n![Layout held by rogue nodes]({ROGUE_PLOT})\n",
            100.0 * peak
        );
    }
    let _ = writeln!(
        r,
        "## Files\n\n`summary.json` (these figures for scripts), `scenario.toml`, `schedule.json` (everything the seed decided), `plays.jsonl`/`plays.csv`, `nodes.jsonl`/`nodes.csv`, `events.jsonl`, `overhead.csv`, `logs/`."
    );
    let path = out.join("report.md");
    std::fs::write(&path, r).map_err(|source| RunError::Write { path, source })?;
    plots(out, d)
}

/// Each node's samples, in time order.
fn node_series(d: &RunData) -> BTreeMap<usize, Vec<crate::record::NodeSample>> {
    let mut m: BTreeMap<usize, Vec<crate::record::NodeSample>> = BTreeMap::new();
    for s in &d.nodes {
        m.entry(s.node).or_default().push(s.clone());
    }
    m
}

/// What a node's counter grew by between two samples: a restarted node counts from 0.
fn grew(now: u64, before: u64) -> u64 {
    if now >= before { now - before } else { now }
}

/// MiB/s served between consecutive samples.
fn rates(series: &[crate::record::NodeSample]) -> Vec<(f64, f64)> {
    series
        .windows(2)
        .map(|w| {
            let dt = (w[1].t_secs - w[0].t_secs).max(0.001);
            let delta = grew(w[1].counters.bytes_served, w[0].counters.bytes_served);
            (w[1].t_secs, mib(delta) / dt)
        })
        .collect()
}

fn served_total(series: &[crate::record::NodeSample]) -> u64 {
    let first = series.first().map_or(0, |s| s.counters.bytes_served);
    first
        + series
            .windows(2)
            .map(|w| grew(w[1].counters.bytes_served, w[0].counters.bytes_served))
            .sum::<u64>()
}

pub(crate) type Series = Vec<(String, Vec<(f64, f64)>)>;

fn plots(out: &Path, d: &RunData) -> Result<(), RunError> {
    // CDF of time to first audio: overall, and per region.
    let cdf = |mut v: Vec<f64>| -> Vec<(f64, f64)> {
        v.sort_by(f64::total_cmp);
        let n = v.len() as f64;
        v.iter()
            .enumerate()
            .map(|(i, &x)| (x, (i + 1) as f64 / n))
            .collect()
    };
    let ttfa = |f: &dyn Fn(&PlayRecord) -> bool| -> Vec<f64> {
        d.plays
            .iter()
            .filter(|p| f(p))
            .filter_map(|p| p.result.map(|r| r.ttfa_ms))
            .collect()
    };
    let mut series: Series = vec![("all".into(), cdf(ttfa(&|_| true)))];
    for reg in &d.scenario.regions {
        series.push((reg.name.clone(), cdf(ttfa(&|p| p.region == reg.name))));
    }
    if d.plays.iter().any(|p| p.flash) {
        series.push(("flash crowd".into(), cdf(ttfa(&|p| p.flash))));
    }
    line_chart(
        &out.join(PLOTS[0]),
        "Time to first audio (CDF)",
        "ms",
        "share of plays",
        &series,
    )?;

    // Bytes by source, per sample interval: each play's bytes spread over its duration.
    let step = d.scenario.sample_secs;
    let buckets = ((d.wall_secs / step).ceil() as usize).max(1);
    let mut by: [Vec<f64>; 4] = std::array::from_fn(|_| vec![0.0; buckets]);
    for p in &d.plays {
        if let Some(r) = &p.result {
            let dl = &r.delivery;
            let (a, b) = (p.t_secs, p.end_secs.max(p.t_secs + 0.001));
            let first = ((a / step) as usize).min(buckets - 1);
            let last = ((b / step) as usize).min(buckets - 1);
            for i in first..=last {
                let (lo, hi) = (i as f64 * step, (i + 1) as f64 * step);
                let share = (b.min(hi) - a.max(lo)).max(0.0) / (b - a);
                for (k, v) in [
                    dl.cache_bytes,
                    dl.peer_bytes,
                    dl.hot_bytes,
                    dl.rebuilt_bytes,
                ]
                .into_iter()
                .enumerate()
                {
                    by[k][i] += mib(v) * share / step;
                }
            }
        }
    }
    let names = [
        "local cache",
        "other listeners",
        "hot nodes",
        "rebuilt from shards",
    ];
    let series: Series = names
        .iter()
        .zip(by)
        .map(|(n, v)| {
            (
                (*n).to_string(),
                v.into_iter()
                    .enumerate()
                    .map(|(i, y)| ((i as f64 + 1.0) * step, y))
                    .collect(),
            )
        })
        .collect();
    line_chart(
        &out.join(PLOTS[1]),
        "Bytes played by source",
        "s",
        "MiB/s",
        &series,
    )?;

    let nodes = node_series(d);
    let series: Series = nodes
        .iter()
        .map(|(n, s)| (format!("node {n} ({})", s[0].region), rates(s)))
        .collect();
    line_chart(
        &out.join(PLOTS[2]),
        "Node load",
        "s",
        "MiB/s served",
        &series,
    )?;

    // Repair: backlog over all nodes, shards repaired and corrupt shards found (cumulative).
    let mut times: BTreeMap<u64, (f64, f64, f64, f64)> = BTreeMap::new();
    let mut last_repaired: BTreeMap<usize, (u64, u64)> = BTreeMap::new();
    let mut done = (0u64, 0u64);
    for s in &d.nodes {
        let e = times
            .entry((s.t_secs * 1000.0) as u64)
            .or_insert((s.t_secs, 0.0, 0.0, 0.0));
        e.1 += s.counters.repair_backlog as f64;
        if s.up {
            let prev = last_repaired.entry(s.node).or_insert((0, 0));
            // Counters restart with a node: count what is new since its last sample.
            done.0 += grew(s.counters.repaired, prev.0);
            done.1 += grew(s.counters.scrub_bad, prev.1);
            *prev = (s.counters.repaired, s.counters.scrub_bad);
        }
        e.2 = done.0 as f64;
        e.3 = done.1 as f64;
    }
    let pick = |k: usize| -> Vec<(f64, f64)> {
        times.values().map(|v| (v.0, [v.1, v.2, v.3][k])).collect()
    };
    line_chart(
        &out.join(PLOTS[3]),
        "Repair progress",
        "s",
        "shards",
        &vec![
            ("repair backlog (all nodes)".into(), pick(0)),
            ("repaired (cumulative)".into(), pick(1)),
            ("corrupt found by scrub (cumulative)".into(), pick(2)),
        ],
    )?;

    if rogues_joined(d) {
        let share: Vec<(f64, f64)> = d
            .layout
            .iter()
            .map(|l| (l.t_secs, 100.0 * l.rogue_share))
            .collect();
        let behind: Vec<(f64, f64)> = d
            .layout
            .iter()
            .map(|l| (l.t_secs, l.version.saturating_sub(l.oldest) as f64))
            .collect();
        line_chart(
            &out.join(ROGUE_PLOT),
            "Layout held by rogue nodes",
            "s",
            "% of slots / versions",
            &vec![
                ("% of slots on rogue nodes".into(), share),
                ("layout versions not yet settled".into(), behind),
            ],
        )?;
    }
    Ok(())
}

/// Draws `series` as lines into an SVG at `path`.
pub(crate) fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &Series,
) -> Result<(), RunError> {
    let err = |e: &dyn std::fmt::Display| RunError::Report(format!("{}: {e}", path.display()));
    let points = series.iter().flat_map(|(_, v)| v.iter());
    let (mut x1, mut y1) = (0.0f64, 0.0f64);
    for &(x, y) in points {
        if x.is_finite() {
            x1 = x1.max(x);
        }
        if y.is_finite() {
            y1 = y1.max(y);
        }
    }
    let (x1, y1) = (
        if x1 > 0.0 { x1 * 1.02 } else { 1.0 },
        if y1 > 0.0 { y1 * 1.1 } else { 1.0 },
    );
    let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x1, 0.0..y1)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}
