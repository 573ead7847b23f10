//! `medley-testnet run`: a scenario on a real network of processes, with light listeners
//! in this process, faults on the scenario's timeline, every play and node sampled into
//! the output folder, and a report with plots at the end.
//!
//! Output folder:
//! - `scenario.toml`, `schedule.json`: what ran, and everything the seed decided;
//! - `plays.jsonl`, `plays.csv`: one row per play (time to first audio, stalls, bytes by
//!   source class, skip, seek, error);
//! - `nodes.jsonl`, `nodes.csv`: every node every `sample_secs` (up, bytes served,
//!   requests, store size, hot segments, repair backlog and progress, corrupt shards found);
//! - `events.jsonl`: the faults, as they were applied;
//! - `overhead.csv`: this process's CPU time and memory over the run;
//! - `report.md` and its plots (`*.svg`); `logs/`: every process's log.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use medley_client::{Client, ClientConfig, ClientError, Delivery, FileOutcome};
use medley_core::SongId;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::listener::{self, PlayPlan};
use crate::scenario::{FaultKind, NodeRef, Scenario, ScenarioError, Schedule};
use crate::shaping::{Shaping, ShapingError};
use crate::{Testnet, TestnetError};

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
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// How to run a scenario.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The scenario.
    pub scenario: Scenario,
    /// The seed (the scenario's unless overridden).
    pub seed: u64,
    /// The output folder (created).
    pub out: PathBuf,
    /// Where the binaries are (default: [`crate::bin_dir`]).
    pub bin_dir: Option<PathBuf>,
    /// Whether to shape the network (only possible as root with `ip` and `tc`).
    pub shaping: bool,
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
    /// Whether traffic was shaped (why not is in `shaping_note`).
    pub shaped: bool,
    /// What shaping did or why it was off.
    pub shaping_note: String,
    /// Round trips measured between regions (from, to, ms), when shaped.
    pub rtts: Vec<(String, String, f64)>,
    /// Mean bitrate of the catalogue, kbit/s.
    pub catalogue_kbps: f64,
    /// Seconds the workload ran.
    pub wall_secs: f64,
}

/// A listener's place in the run: every listener starts online, so one without a client
/// is one a fault took away.
struct Slot {
    config: ClientConfig,
    client: Mutex<Option<Arc<Client>>>,
}

impl Slot {
    fn client(&self) -> Option<Arc<Client>> {
        self.client.lock().clone()
    }
}

/// Up to `limit` online listeners among `slots` leave (their endpoints stop); returns how
/// many did.
fn listeners_leave(slots: &[Arc<Slot>], limit: usize) -> usize {
    let mut n = 0;
    for slot in slots {
        if n == limit {
            break;
        }
        let taken = slot.client.lock().take();
        if let Some(c) = taken {
            tokio::spawn(async move { c.shutdown().await });
            n += 1;
        }
    }
    n
}

/// Up to `limit` listeners among `slots` that left come back, with their identity and
/// cache; returns how many did.
fn listeners_return(slots: &[Arc<Slot>], limit: usize) -> Result<usize, RunError> {
    let mut n = 0;
    for slot in slots {
        if n == limit {
            break;
        }
        let mut client = slot.client.lock();
        if client.is_none() {
            *client = Some(Arc::new(Client::new(slot.config.clone())?));
            n += 1;
        }
    }
    Ok(n)
}

/// Runs `opts.scenario` and writes everything to `opts.out`; returns the data behind the
/// report.
pub async fn run(opts: RunOptions) -> Result<RunData, RunError> {
    let sc = opts.scenario.clone();
    let schedule = sc.schedule(opts.seed)?;
    let out = opts.out.clone();
    std::fs::create_dir_all(&out).map_err(write_err(&out))?;
    write_text(
        &out.join("scenario.toml"),
        &toml::to_string(&sc).map_err(|e| RunError::Report(e.to_string()))?,
    )?;
    write_json(&out.join("schedule.json"), &schedule)?;

    let work = tempfile::Builder::new()
        .prefix("medley-run-")
        .tempdir()
        .map_err(|e| RunError::Write {
            path: std::env::temp_dir(),
            source: e,
        })?;
    let regions: Vec<String> = sc.regions.iter().map(|r| r.name.clone()).collect();
    let mut shaping = if !opts.shaping {
        Ok(Shaping::off("turned off (--no-shaping)"))
    } else if !sc.network.shaped() {
        Ok(Shaping::off(
            "the scenario sets no latency, jitter, loss or bandwidth",
        ))
    } else {
        Shaping::start(&regions, &sc.network)
    }
    .unwrap_or_else(|e| Shaping::off(&format!("not available: {e}")));

    let spinner = crate::progress_spinner("starting the tracker and nodes");
    let layout: Vec<(String, bytesize::ByteSize)> = sc
        .regions
        .iter()
        .flat_map(|r| (0..r.nodes).map(|_| (r.name.clone(), r.node_capacity)))
        .collect();
    let mut b = Testnet::builder()
        .node_layout(layout)
        .coding(sc.catalogue.k, sc.catalogue.m)
        .log("warn")
        .grace_secs(10)
        .dir(work.path().join("net"))
        .node_config(&sc.node_config)
        .tracker_config(&sc.tracker_config)
        .placement(shaping.placement());
    if let Some(d) = &opts.bin_dir {
        b = b.bin_dir(d);
    }
    let spawned = b.spawn().await;
    spinner.finish_and_clear();
    let mut net = spawned?;
    let rtts = shaping.measure_rtts().await;

    // The catalogue: song i is popularity rank i; flash-crowd songs come last.
    let lib = work.path().join("library");
    let n_songs = sc.songs_to_publish();
    let bar = crate::progress_bar(n_songs as u64, "synthesizing songs");
    let (files, kbps) = {
        let (lib, bar2) = (lib.clone(), bar.clone());
        let (seed, secs, rates) = (
            opts.seed,
            (sc.catalogue.min_secs, sc.catalogue.max_secs),
            sc.catalogue.sample_rates.clone(),
        );
        let songs = tokio::task::spawn_blocking(move || {
            crate::library::generate_at(&lib, n_songs, seed, secs, &rates, |i| {
                bar2.set_position(i as u64)
            })
        })
        .await
        .map_err(|e| RunError::Catalogue(e.to_string()))?
        .map_err(|e| RunError::Catalogue(e.to_string()))?;
        let (mut bytes, mut secs) = (0u64, 0.0);
        for s in &songs {
            bytes += std::fs::metadata(&s.path).map_or(0, |m| m.len());
            secs += s.seconds;
        }
        (
            songs.into_iter().map(|s| s.path).collect::<Vec<_>>(),
            bytes as f64 * 8.0 / 1000.0 / secs.max(0.001),
        )
    };
    bar.finish_and_clear();
    let spinner = crate::progress_spinner("publishing the catalogue");
    let publisher = Client::new(net.client_config(&regions[0], true))?;
    let summary = publisher.publish_path(&lib).await;
    publisher.shutdown().await;
    spinner.finish_and_clear();
    let mut by_path = HashMap::new();
    for f in summary?.files {
        match f {
            FileOutcome::Published(p) => {
                let id: SongId =
                    p.id.parse()
                        .map_err(|e| RunError::Catalogue(format!("song id {}: {e}", p.id)))?;
                by_path.insert(p.path, id);
            }
            other => return Err(RunError::Catalogue(format!("publish failed: {other:?}"))),
        }
    }
    let songs: Vec<SongId> = files
        .iter()
        .map(|p| {
            by_path
                .get(p)
                .copied()
                .ok_or_else(|| RunError::Catalogue(format!("{} was not published", p.display())))
        })
        .collect::<Result<_, _>>()?;

    // The listeners, all in this process.
    let slots: Vec<Arc<Slot>> = (0..sc.total_listeners())
        .map(|l| {
            let region = &regions[sc.listener_region(l)];
            let mut c = net.listener_config(region, &format!("l{l}"), sc.workload.cache);
            // Playback `speed` times faster needs `speed` times the upload.
            c.serve_bytes_per_sec =
                bytesize::ByteSize::b((c.serve_bytes_per_sec.as_u64() as f64 * sc.speed) as u64);
            if let Some(listen) = shaping.listen_addr(region) {
                c.serve_listen = listen;
            }
            let client = Client::new(c.clone())?;
            Ok(Arc::new(Slot {
                config: c,
                client: Mutex::new(Some(Arc::new(client))),
            }))
        })
        .collect::<Result<_, RunError>>()?;

    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(sc.duration_secs);
    let plays: Arc<Mutex<Vec<PlayRecord>>> = Arc::default();
    let bar = crate::progress_bar(
        sc.duration_secs.ceil() as u64,
        &format!("{} · plays 0", sc.name),
    );
    let mut tasks = Vec::new();
    let mut per_listener: BTreeMap<usize, Vec<crate::scenario::Session>> = BTreeMap::new();
    for s in &schedule.sessions {
        per_listener.entry(s.listener).or_default().push(s.clone());
    }
    for (l, sessions) in per_listener {
        let slot = slots[l].clone();
        let (plays, songs, region) = (
            plays.clone(),
            songs.clone(),
            regions[sc.listener_region(l)].clone(),
        );
        let speed = sc.speed;
        tasks.push(tokio::spawn(async move {
            for (k, s) in sessions.iter().enumerate() {
                let at = t0 + Duration::from_secs_f64(s.at_secs);
                tokio::time::sleep_until(at.into()).await;
                // A flash crowd that is due takes the listener away from its session.
                let crowd_due = || {
                    sessions[k + 1..].iter().any(|n| {
                        n.flash && t0 + Duration::from_secs_f64(n.at_secs) <= Instant::now()
                    })
                };
                let mut prefetched = None;
                for (j, p) in s.plays.iter().enumerate() {
                    if Instant::now() >= end {
                        return;
                    }
                    if j > 0 && crowd_due() {
                        break;
                    }
                    let Some(client) = slot.client() else {
                        break;
                    };
                    let plan = PlayPlan {
                        song: songs[p.song],
                        next: s.plays.get(j + 1).map(|n| songs[n.song]),
                        speed,
                        skip_at: p.skip_at,
                        seek_to: p.seek_to,
                        report: true,
                    };
                    let t = t0.elapsed().as_secs_f64();
                    let r = listener::play(&client, plan, prefetched.take()).await;
                    let (result, error) = match r {
                        Ok((res, next)) => {
                            prefetched = next;
                            (Some(res), None)
                        }
                        Err(e) => (None, Some(e.to_string())),
                    };
                    // A play cut short by its listener being taken away is not a failure
                    // of the network.
                    if error.is_some() && slot.client().is_none() {
                        break;
                    }
                    plays.lock().push(PlayRecord {
                        t_secs: t,
                        end_secs: t0.elapsed().as_secs_f64(),
                        listener: l,
                        region: region.clone(),
                        song: p.song,
                        flash: s.flash,
                        skipped: p.skip_at.is_some(),
                        result,
                        error,
                    });
                }
            }
        }));
    }

    // Node metrics and this process's cost, every sample_secs.
    let admins: Arc<Mutex<Vec<Option<String>>>> = Arc::new(Mutex::new(
        net.nodes().iter().map(|n| n.admin.clone()).collect(),
    ));
    let node_regions: Vec<String> = net.nodes().iter().map(|n| n.region.clone()).collect();
    let samples: Arc<Mutex<Vec<NodeSample>>> = Arc::default();
    let overhead: Arc<Mutex<Vec<Overhead>>> = Arc::default();
    let run_over = medley_net::CancellationToken::new();
    let sampler = {
        let (admins, samples, overhead, stop) = (
            admins.clone(),
            samples.clone(),
            overhead.clone(),
            run_over.clone(),
        );
        let (slots, plays, bar) = (slots.clone(), plays.clone(), bar.clone());
        let every = Duration::from_secs_f64(sc.sample_secs);
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(1))
                .build()
                .unwrap_or_default();
            loop {
                let t = t0.elapsed().as_secs_f64();
                let urls = admins.lock().clone();
                let got = futures::future::join_all(urls.iter().enumerate().map(|(i, u)| {
                    let http = http.clone();
                    let region = node_regions[i].clone();
                    async move { sample_node(&http, i, region, u.as_deref(), t).await }
                }))
                .await;
                samples.lock().extend(got);
                let (cpu_secs, rss_bytes) = self_usage();
                overhead.lock().push(Overhead {
                    t_secs: t,
                    cpu_secs,
                    rss_bytes,
                    listeners_online: slots.iter().filter(|s| s.client().is_some()).count(),
                });
                bar.set_position((t as u64).min(bar.length().unwrap_or(0)));
                bar.set_message(format!("plays {}", plays.lock().len()));
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(every) => {}
                }
            }
        })
    };

    // Faults on the timeline, applied here.
    let mut events = Vec::new();
    let mut liars = Vec::new();
    for f in &schedule.faults {
        tokio::time::sleep_until((t0 + Duration::from_secs_f64(f.at_secs)).into()).await;
        let t = t0.elapsed().as_secs_f64();
        let r = apply_fault(
            &f.kind,
            &sc,
            &mut net,
            &mut shaping,
            &slots,
            &songs,
            &mut liars,
            &run_over,
        )
        .await;
        if let Some(i) = node_of(&f.kind, &sc) {
            admins.lock()[i] = net.nodes()[i].admin.clone();
        }
        let (ok, detail) = match r {
            Ok(d) => (true, d),
            Err(e) => (false, e.to_string()),
        };
        events.push(FaultEvent {
            t_secs: t,
            planned_secs: f.at_secs,
            kind: f.kind.clone(),
            detail,
            ok,
        });
    }
    tokio::time::sleep_until(end.into()).await;
    // Plays under way finish (a song lasts at most max_secs / speed).
    let grace = Duration::from_secs_f64(sc.catalogue.max_secs / sc.speed + 30.0);
    let finishing = crate::progress_spinner("letting the last plays finish");
    let aborts: Vec<_> = tasks
        .iter()
        .map(tokio::task::JoinHandle::abort_handle)
        .collect();
    if tokio::time::timeout(grace, futures::future::join_all(tasks))
        .await
        .is_err()
    {
        tracing::warn!(
            "plays still under way {} s after the end are dropped",
            grace.as_secs()
        );
        aborts.iter().for_each(tokio::task::AbortHandle::abort);
    }
    finishing.finish_and_clear();
    let wall_secs = t0.elapsed().as_secs_f64();
    run_over.cancel();
    let _ = sampler.await;
    bar.finish_and_clear();

    // Everything stops: listeners, liars, frozen nodes thawed, then the network.
    let clients: Vec<Arc<Client>> = slots.iter().filter_map(|s| s.client()).collect();
    futures::future::join_all(clients.iter().map(|c| c.shutdown())).await;
    for l in &liars {
        let l: &crate::liar::LyingPeer = l;
        l.peer.shutdown(Duration::from_secs(1)).await;
    }
    for i in 0..net.nodes().len() {
        let _ = net.freeze_node(i, false);
    }
    tokio::task::block_in_place(|| net.shutdown());
    shaping.stop();
    copy_logs(&work.path().join("net/logs"), &out.join("logs"));

    let mut plays = std::mem::take(&mut *plays.lock());
    plays.sort_by(|a, b| a.t_secs.total_cmp(&b.t_secs));
    let data = RunData {
        scenario: sc,
        schedule,
        plays,
        nodes: std::mem::take(&mut *samples.lock()),
        events,
        overhead: std::mem::take(&mut *overhead.lock()),
        shaped: shaping.on(),
        shaping_note: shaping.note(),
        rtts,
        catalogue_kbps: kbps,
        wall_secs,
    };
    write_outputs(&out, &data)?;
    crate::report::write(&out, &data, opts.seed)?;
    Ok(data)
}

/// The global index of node `r`.
fn node_index(sc: &Scenario, r: NodeRef) -> usize {
    sc.regions[..r.region]
        .iter()
        .map(|x| x.nodes)
        .sum::<usize>()
        + r.index
}

/// The node a fault restarts (its admin address changes), if any.
fn node_of(kind: &FaultKind, sc: &Scenario) -> Option<usize> {
    match kind {
        FaultKind::RestartNode { node } | FaultKind::CorruptNode { node, .. } => {
            Some(node_index(sc, *node))
        }
        _ => None,
    }
}

/// The nodes of region `r`, as global indices.
fn region_nodes(sc: &Scenario, r: usize) -> std::ops::Range<usize> {
    let start = node_index(
        sc,
        NodeRef {
            region: r,
            index: 0,
        },
    );
    start..start + sc.regions[r].nodes
}

async fn apply_fault(
    kind: &FaultKind,
    sc: &Scenario,
    net: &mut Testnet,
    shaping: &mut Shaping,
    slots: &[Arc<Slot>],
    songs: &[SongId],
    liars: &mut Vec<crate::liar::LyingPeer>,
    stop: &medley_net::CancellationToken,
) -> Result<String, RunError> {
    Ok(match kind {
        FaultKind::KillNode { node } => {
            let i = node_index(sc, *node);
            net.kill_node(i)?;
            format!("node {i} killed")
        }
        FaultKind::RestartNode { node } => {
            let i = node_index(sc, *node);
            tokio::task::block_in_place(|| net.start_node(i))?;
            format!("node {i} started again")
        }
        FaultKind::CorruptNode { node, fraction } => {
            let i = node_index(sc, *node);
            tokio::task::block_in_place(|| -> Result<String, RunError> {
                net.stop_node(i)?;
                let dir = net.nodes()[i].data_dir.clone();
                let damaged = corrupt_blobs(&dir, *fraction);
                net.start_node(i)?;
                Ok(format!(
                    "node {i}: {damaged} stored records damaged on disk"
                ))
            })?
        }
        FaultKind::KillListeners { region, count } => {
            let n = listeners_leave(&slots[sc.listeners_of(*region)], *count);
            format!("{n} listeners of {} left", sc.regions[*region].name)
        }
        FaultKind::RestartListeners { region, count } => {
            let n = listeners_return(&slots[sc.listeners_of(*region)], *count)?;
            format!("{n} listeners of {} came back", sc.regions[*region].name)
        }
        FaultKind::CutRegion { region } => {
            let name = &sc.regions[*region].name;
            if shaping.on() {
                shaping.cut(name, true)?;
                format!("{name} cut off from the other regions (the tracker stays reachable)")
            } else {
                for i in region_nodes(sc, *region) {
                    net.freeze_node(i, true)?;
                }
                let n = listeners_leave(&slots[sc.listeners_of(*region)], usize::MAX);
                format!(
                    "{name}: without shaping, its {} nodes frozen and its {n} listeners taken off",
                    sc.regions[*region].nodes
                )
            }
        }
        FaultKind::HealRegion { region } => {
            let name = &sc.regions[*region].name;
            if shaping.on() {
                shaping.cut(name, false)?;
            } else {
                for i in region_nodes(sc, *region) {
                    net.freeze_node(i, false)?;
                }
                listeners_return(&slots[sc.listeners_of(*region)], usize::MAX)?;
            }
            format!("{name} joined again")
        }
        FaultKind::LyingPeer { region, count } => {
            let name = &sc.regions[*region].name;
            let listen = shaping
                .listen_addr(name)
                .unwrap_or_else(|| crate::LOOPBACK_QUIC.to_string());
            // They claim the most popular songs, where listeners look first.
            let claimed: Vec<SongId> = songs.iter().take(10).copied().collect();
            for _ in 0..*count {
                let l = crate::liar::spawn(&listen).await?;
                let tracker = net.tracker()?.with_signer(l.key.clone());
                let (me, addrs, region) = (l.peer.peer_id(), l.addrs.clone(), name.clone());
                tracker.announce(&me, &addrs, &region, &claimed).await?;
                // As a real client does, it announces again before its entry expires,
                // until the run ends.
                let (stop, claimed) = (stop.clone(), claimed.clone());
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(Duration::from_secs(30)) => {}
                        }
                        let _ = tracker.announce(&me, &addrs, &region, &claimed).await;
                    }
                });
                liars.push(l);
            }
            format!(
                "{count} lying peers in {name} announce the {} most popular songs",
                claimed.len()
            )
        }
    })
}

/// Flips one byte in about `fraction` of the records of every blob file under `dir`
/// (values of 1 KiB or more, i.e. every shard); returns the bytes flipped.
fn corrupt_blobs(dir: &Path, fraction: f64) -> usize {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "blob") {
                files.push(p);
            }
        }
    }
    files.sort();
    // Shards are 64 KiB and more: a flip every 64 KiB / fraction bytes hits about that share.
    let stride = ((64.0 * 1024.0) / fraction).max(4096.0) as usize;
    let mut flipped = 0;
    for f in files {
        let Ok(mut bytes) = std::fs::read(&f) else {
            continue;
        };
        let mut at = stride / 2;
        while at < bytes.len() {
            bytes[at] ^= 0xff;
            flipped += 1;
            at += stride;
        }
        let _ = std::fs::write(&f, &bytes);
    }
    flipped
}

async fn sample_node(
    http: &reqwest::Client,
    node: usize,
    region: String,
    admin: Option<&str>,
    t_secs: f64,
) -> NodeSample {
    let mut s = NodeSample {
        t_secs,
        node,
        region,
        ..NodeSample::default()
    };
    let Some(url) = admin else {
        return s;
    };
    let got = async {
        http.get(format!("{url}/status"))
            .send()
            .await?
            .error_for_status()?
            .json::<NodeCounters>()
            .await
    }
    .await;
    if let Ok(counters) = got {
        s.up = true;
        s.counters = counters;
    }
    s
}

/// This process's CPU seconds (user + system) and resident bytes, from `/proc/self`.
pub fn self_usage() -> (f64, u64) {
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces) in parentheses.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0);
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb * 1024)
        })
        .unwrap_or(0);
    (cpu, rss)
}

fn copy_logs(from: &Path, to: &Path) {
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

fn write_text(path: &Path, text: &str) -> Result<(), RunError> {
    std::fs::write(path, text).map_err(write_err(path))
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<(), RunError> {
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

fn write_outputs(out: &Path, d: &RunData) -> Result<(), RunError> {
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
