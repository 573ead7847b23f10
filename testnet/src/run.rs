//! `medley-testnet run`: a scenario on a real network of processes, with light listeners
//! in this process, faults on the scenario's timeline, every play and node sampled into
//! the output folder ([`crate::record`]), and a report with plots at the end.
//!
//! Stages, in order: the scenario's schedule is drawn and written; the network starts
//! (shaped when it can be); the catalogue is synthesized and published; the listeners are
//! made; then, from the workload's start, the listeners play their sessions, a sampler reads
//! every node's counters, and the faults are applied on the timeline; at the end the last
//! plays finish, everything stops, and the records and report are written.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use medley_client::{Client, FileOutcome};
use medley_core::SongId;
use parking_lot::Mutex;

use crate::Testnet;
use crate::faults::{Slot, apply_fault, node_of};
use crate::listener::{self, PlayPlan};
use crate::record::{
    FaultEvent, HotEvent, Integrity, LayoutSample, NodeCounters, NodeSample, Overhead, PlayRecord,
    RunData, RunError, copy_logs, write_outputs, write_setup,
};
use crate::scenario::{Scenario, Schedule, Session};
use crate::shaping::Shaping;

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

/// Runs `opts.scenario` and writes everything to `opts.out`; returns the data behind the
/// report.
pub async fn run(opts: RunOptions) -> Result<RunData, RunError> {
    let sc = opts.scenario.clone();
    let schedule = sc.schedule(opts.seed)?;
    write_setup(&opts.out, &sc, &schedule)?;
    let work = tempfile::Builder::new()
        .prefix("medley-run-")
        .tempdir()
        .map_err(|e| RunError::Write {
            path: std::env::temp_dir(),
            source: e,
        })?;
    let regions: Vec<String> = sc.regions.iter().map(|r| r.name.clone()).collect();
    let mut shaping = start_shaping(&opts, &sc, &regions);
    let mut net = start_network(&opts, &sc, &shaping, work.path()).await?;
    let rtts = shaping.measure_rtts().await;
    let (songs, catalogue_kbps) =
        publish_catalogue(&sc, opts.seed, &net, &regions[0], work.path()).await?;
    let slots = listeners(&sc, &net, &shaping, &regions)?;

    let workload = Workload {
        t0: Instant::now(),
        end: Instant::now() + Duration::from_secs_f64(sc.duration_secs),
        plays: Arc::default(),
        bar: crate::progress_bar(
            sc.duration_secs.ceil() as u64,
            &format!("{} · plays 0", sc.name),
        ),
        over: medley_net::CancellationToken::new(),
    };
    let tasks = spawn_plays(&sc, &schedule, &slots, &songs, &regions, &workload);
    let mut adversaries = crate::faults::Adversaries::default();
    let sampler = Sampler::spawn(&sc, &net, &slots, &workload, &adversaries);
    let hot_watch = tokio::spawn(watch_hot(
        net.tracker().ok(),
        songs.clone(),
        workload.t0,
        workload.over.clone(),
    ));
    let events = follow_timeline(
        &sc,
        &schedule,
        &mut net,
        &mut shaping,
        &slots,
        &songs,
        &sampler,
        &workload,
        &mut adversaries,
    )
    .await;
    tokio::time::sleep_until(workload.end.into()).await;
    finish_plays(&sc, tasks).await;
    let wall_secs = workload.t0.elapsed().as_secs_f64();
    workload.over.cancel();
    let (nodes, overhead, layout) = sampler.stop().await;
    let hot = hot_watch.await.unwrap_or_default();
    workload.bar.finish_and_clear();

    // Everything stops: listeners, adversaries, frozen nodes thawed; the network settles
    // and every shard of every song is checked on its holder; then the network stops.
    let clients: Vec<Arc<Client>> = slots.iter().filter_map(|s| s.client()).collect();
    futures::future::join_all(clients.iter().map(|c| c.shutdown())).await;
    adversaries.stop().await;
    for i in 0..net.nodes().len() {
        let _ = net.freeze_node(i, false);
    }
    let integrity = check_integrity(&net, &songs).await;
    tokio::task::block_in_place(|| net.shutdown());
    let (shaped, shaping_mechanism) = (shaping.on(), shaping.mechanism().to_string());
    shaping.stop();
    copy_logs(&work.path().join("net/logs"), &opts.out.join("logs"));

    let mut plays = std::mem::take(&mut *workload.plays.lock());
    plays.sort_by(|a, b| a.t_secs.total_cmp(&b.t_secs));
    let data = RunData {
        scenario: sc,
        schedule,
        plays,
        nodes,
        events,
        overhead,
        layout,
        hot,
        integrity,
        shaped,
        shaping_mechanism,
        shaping_note: if shaped {
            // The network put the tracker on the first region's address (see
            // `TestnetBuilder::placement`).
            format!(
                "{}; the tracker is in {}, and every process calls it from its own region's address{}",
                shaping.note(),
                regions[0],
                if crate::userns::inside() {
                    "; run without root, in a user and network namespace of its own"
                } else {
                    ""
                }
            )
        } else {
            shaping.note()
        },
        rtts,
        catalogue_kbps,
        wall_secs,
    };
    write_outputs(&opts.out, &data)?;
    crate::report::write(&opts.out, &data, opts.seed)?;
    Ok(data)
}

/// The workload's clock, its records and its end.
struct Workload {
    /// Its start.
    t0: Instant,
    /// When no play starts any more.
    end: Instant,
    /// Every play so far.
    plays: Arc<Mutex<Vec<PlayRecord>>>,
    bar: indicatif::ProgressBar,
    /// Fires when the workload is over (stops the sampler and the liars).
    over: medley_net::CancellationToken,
}

/// Link emulation between regions, when asked for, wanted by the scenario and possible.
fn start_shaping(opts: &RunOptions, sc: &Scenario, regions: &[String]) -> Shaping {
    if !opts.shaping {
        Ok(Shaping::off("turned off (--no-shaping)"))
    } else if !sc.network.shaped() {
        Ok(Shaping::off(
            "the scenario sets no latency, jitter, loss or bandwidth",
        ))
    } else {
        Shaping::start(regions, &sc.network, opts.seed)
    }
    .unwrap_or_else(|e| Shaping::off(&format!("not available: {e}")))
}

/// The tracker and the scenario's nodes, region by region.
async fn start_network(
    opts: &RunOptions,
    sc: &Scenario,
    shaping: &Shaping,
    work: &Path,
) -> Result<Testnet, RunError> {
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
        .dir(work.join("net"))
        .node_config(&sc.node_config)
        .tracker_config(&sc.tracker_config)
        .trackers(sc.trackers)
        .placement(shaping.placement());
    if let Some(d) = &opts.bin_dir {
        b = b.bin_dir(d);
    }
    let spawned = b.spawn().await;
    spinner.finish_and_clear();
    Ok(spawned?)
}

/// Synthesizes the catalogue (song i is popularity rank i; flash-crowd songs come last) and
/// publishes it from `region`. Returns the song ids in rank order and the catalogue's mean
/// bitrate (kbit/s).
async fn publish_catalogue(
    sc: &Scenario,
    seed: u64,
    net: &Testnet,
    region: &str,
    work: &Path,
) -> Result<(Vec<SongId>, f64), RunError> {
    let lib = work.join("library");
    let n_songs = sc.songs_to_publish();
    let bar = crate::progress_bar(n_songs as u64, "synthesizing songs");
    let (lib2, bar2) = (lib.clone(), bar.clone());
    let (secs, rates) = (
        (sc.catalogue.min_secs, sc.catalogue.max_secs),
        sc.catalogue.sample_rates.clone(),
    );
    let generated = tokio::task::spawn_blocking(move || {
        crate::library::generate_at(&lib2, n_songs, seed, secs, &rates, |i| {
            bar2.set_position(i as u64)
        })
    })
    .await
    .map_err(|e| RunError::Catalogue(e.to_string()))?
    .map_err(|e| RunError::Catalogue(e.to_string()))?;
    let (mut bytes, mut seconds) = (0u64, 0.0);
    for s in &generated {
        bytes += std::fs::metadata(&s.path).map_or(0, |m| m.len());
        seconds += s.seconds;
    }
    let kbps = bytes as f64 * 8.0 / 1000.0 / f64::max(seconds, 0.001);
    bar.finish_and_clear();

    let spinner = crate::progress_spinner("publishing the catalogue");
    let publisher = Client::new(net.client_config(region, true))?;
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
    let songs = generated
        .iter()
        .map(|s| {
            by_path.get(&s.path).copied().ok_or_else(|| {
                RunError::Catalogue(format!("{} was not published", s.path.display()))
            })
        })
        .collect::<Result<_, _>>()?;
    Ok((songs, kbps))
}

/// Bytes per second a listener serves other listeners at: the scenario's upload if it sets
/// one, else the client's `default`; playback `speed` times faster needs `speed` times it.
fn listener_upload(sc: &Scenario, default: u64) -> u64 {
    let upload = if sc.workload.listener_upload_mbit > 0.0 {
        sc.workload.listener_upload_mbit * 1e6 / 8.0
    } else {
        default as f64
    };
    (upload * sc.speed) as u64
}

/// The listeners, all in this process, each online.
fn listeners(
    sc: &Scenario,
    net: &Testnet,
    shaping: &Shaping,
    regions: &[String],
) -> Result<Vec<Arc<Slot>>, RunError> {
    (0..sc.total_listeners())
        .map(|l| {
            let region = &regions[sc.listener_region(l)];
            let mut c = net.listener_config(region, &format!("l{l}"), sc.workload.cache);
            c.serve_bytes_per_sec =
                bytesize::ByteSize::b(listener_upload(sc, c.serve_bytes_per_sec.as_u64()));
            if let Some(listen) = shaping.listen_addr(region) {
                c.serve_listen = listen;
            }
            let client = Client::new(c.clone())?;
            Ok(Arc::new(Slot {
                config: c,
                client: Mutex::new(Some(Arc::new(client))),
            }))
        })
        .collect()
}

/// One task per listener that plays its sessions at their times, recording every play.
fn spawn_plays(
    sc: &Scenario,
    schedule: &Schedule,
    slots: &[Arc<Slot>],
    songs: &[SongId],
    regions: &[String],
    w: &Workload,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut per_listener: BTreeMap<usize, Vec<Session>> = BTreeMap::new();
    for s in &schedule.sessions {
        per_listener.entry(s.listener).or_default().push(s.clone());
    }
    per_listener
        .into_iter()
        .map(|(l, sessions)| {
            let listener = Listener {
                index: l,
                slot: slots[l].clone(),
                songs: songs.to_vec(),
                region: regions[sc.listener_region(l)].clone(),
                speed: sc.speed,
                t0: w.t0,
                end: w.end,
                plays: w.plays.clone(),
            };
            tokio::spawn(listener.play_sessions(sessions))
        })
        .collect()
}

/// One listener of the workload.
struct Listener {
    index: usize,
    slot: Arc<Slot>,
    songs: Vec<SongId>,
    region: String,
    speed: f64,
    t0: Instant,
    end: Instant,
    plays: Arc<Mutex<Vec<PlayRecord>>>,
}

impl Listener {
    /// Plays `sessions` at their times until the workload ends or the listener is taken
    /// away.
    async fn play_sessions(self, sessions: Vec<Session>) {
        let t0 = self.t0;
        for (k, s) in sessions.iter().enumerate() {
            tokio::time::sleep_until((t0 + Duration::from_secs_f64(s.at_secs)).into()).await;
            // A flash crowd that is due takes the listener away from its session.
            let crowd_due = || {
                sessions[k + 1..]
                    .iter()
                    .any(|n| n.flash && t0 + Duration::from_secs_f64(n.at_secs) <= Instant::now())
            };
            let mut prefetched = None;
            for (j, p) in s.plays.iter().enumerate() {
                if Instant::now() >= self.end {
                    return;
                }
                if j > 0 && crowd_due() {
                    break;
                }
                let Some(client) = self.slot.client() else {
                    break;
                };
                let plan = PlayPlan {
                    song: self.songs[p.song],
                    next: s.plays.get(j + 1).map(|n| self.songs[n.song]),
                    speed: self.speed,
                    skip_at: p.skip_at,
                    seek_to: p.seek_to,
                    report: true,
                };
                let t = t0.elapsed().as_secs_f64();
                let (result, error) = match listener::play(&client, plan, prefetched.take()).await {
                    Ok((res, next)) => {
                        prefetched = next;
                        (Some(res), None)
                    }
                    Err(e) => (None, Some(e.to_string())),
                };
                // A play cut short by its listener being taken away is not a failure of the
                // network.
                if error.is_some() && self.slot.client().is_none() {
                    break;
                }
                self.plays.lock().push(PlayRecord {
                    t_secs: t,
                    end_secs: t0.elapsed().as_secs_f64(),
                    listener: self.index,
                    region: self.region.clone(),
                    song: p.song,
                    flash: s.flash,
                    skipped: p.skip_at.is_some(),
                    result,
                    error,
                });
            }
        }
    }
}

/// Reads every node's counters and this process's cost every `sample_secs`.
struct Sampler {
    /// Each node's admin endpoint (a restarted node gets a new one).
    admins: Arc<Mutex<Vec<Option<String>>>>,
    samples: Arc<Mutex<Vec<NodeSample>>>,
    overhead: Arc<Mutex<Vec<Overhead>>>,
    layout: Arc<Mutex<Vec<LayoutSample>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn spawn(
        sc: &Scenario,
        net: &Testnet,
        slots: &[Arc<Slot>],
        w: &Workload,
        adversaries: &crate::faults::Adversaries,
    ) -> Self {
        let admins: Arc<Mutex<Vec<Option<String>>>> = Arc::new(Mutex::new(
            net.nodes().iter().map(|n| n.admin.clone()).collect(),
        ));
        let node_regions: Vec<String> = net.nodes().iter().map(|n| n.region.clone()).collect();
        let samples: Arc<Mutex<Vec<NodeSample>>> = Arc::default();
        let overhead: Arc<Mutex<Vec<Overhead>>> = Arc::default();
        let layout: Arc<Mutex<Vec<LayoutSample>>> = Arc::default();
        let (admins2, samples2, overhead2) = (admins.clone(), samples.clone(), overhead.clone());
        let (layout2, rogue_ids, tracker) = (
            layout.clone(),
            adversaries.rogue_ids.clone(),
            net.tracker().ok(),
        );
        let (slots, plays, bar, stop, t0) = (
            slots.to_vec(),
            w.plays.clone(),
            w.bar.clone(),
            w.over.clone(),
            w.t0,
        );
        let every = Duration::from_secs_f64(sc.sample_secs);
        let task = tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(1))
                .build()
                .unwrap_or_default();
            loop {
                let t = t0.elapsed().as_secs_f64();
                let urls = admins2.lock().clone();
                let got = futures::future::join_all(urls.iter().enumerate().map(|(i, u)| {
                    let http = http.clone();
                    let region = node_regions[i].clone();
                    async move { sample_node(&http, i, region, u.as_deref(), t).await }
                }))
                .await;
                samples2.lock().extend(got);
                if let Some(tracker) = &tracker {
                    let rogues = rogue_ids.lock().clone();
                    if let Some(l) = sample_layout(tracker, &rogues, t).await {
                        layout2.lock().push(l);
                    }
                }
                let (cpu_secs, rss_bytes) = self_usage();
                overhead2.lock().push(Overhead {
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
        });
        Self {
            admins,
            samples,
            overhead,
            layout,
            task,
        }
    }

    /// Waits for the sampler to end (the workload's token fired); returns what it read.
    async fn stop(self) -> (Vec<NodeSample>, Vec<Overhead>, Vec<LayoutSample>) {
        let _ = self.task.await;
        (
            std::mem::take(&mut *self.samples.lock()),
            std::mem::take(&mut *self.overhead.lock()),
            std::mem::take(&mut *self.layout.lock()),
        )
    }
}

/// Reads the tracker's hot songs twice a second until `over`, and returns every change:
/// copies ordered, held, released, per song of `songs` and region.
async fn watch_hot(
    tracker: Option<medley_api::TrackerClient>,
    songs: Vec<SongId>,
    t0: Instant,
    over: medley_net::CancellationToken,
) -> Vec<HotEvent> {
    let Some(tracker) = tracker else {
        return Vec::new();
    };
    let index: HashMap<SongId, usize> = songs.iter().enumerate().map(|(i, s)| (*s, i)).collect();
    // (song, region) → (ordered, held) as last seen.
    let mut last: HashMap<(usize, String), (Vec<String>, Vec<String>)> = HashMap::new();
    let mut events = Vec::new();
    loop {
        if let Ok(hot) = tracker.popularity().await {
            let t_secs = t0.elapsed().as_secs_f64();
            let mut now: HashMap<(usize, String), (Vec<String>, Vec<String>)> = HashMap::new();
            for h in hot {
                if let Some(&song) = index.get(&h.song) {
                    now.insert((song, h.region), (h.ordered, h.held_by));
                }
            }
            let mut event = |key: &(usize, String), what: &str, nodes: &[String]| {
                events.push(HotEvent {
                    t_secs,
                    song: key.0,
                    region: key.1.clone(),
                    what: what.into(),
                    nodes: nodes.to_vec(),
                });
            };
            for (key, (ordered, held)) in &now {
                let before = last.get(key);
                if !ordered.is_empty() && before.is_none_or(|b| b.0.is_empty()) {
                    event(key, "ordered", ordered);
                }
                if !held.is_empty() && before.is_none_or(|b| b.1.is_empty()) {
                    event(key, "held", held);
                }
            }
            for key in last.keys().filter(|k| !now.contains_key(*k)) {
                event(key, "released", &[]);
            }
            last = now;
        }
        tokio::select! {
            () = over.cancelled() => return events,
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// The layout now: its version, the oldest kept, and the share of its slots on `rogues`.
async fn sample_layout(
    tracker: &medley_api::TrackerClient,
    rogues: &[String],
    t_secs: f64,
) -> Option<LayoutSample> {
    let stats = tracker.stats().await.ok()?;
    let layout = tracker.layout().await.ok()?;
    let slots = layout.partitions.iter().map(Vec::len).sum::<usize>().max(1);
    let on_rogues = layout
        .partitions
        .iter()
        .flatten()
        .filter(|n| rogues.contains(n))
        .count();
    Some(LayoutSample {
        t_secs,
        version: layout.version,
        oldest: stats.layout_oldest.unwrap_or(layout.version),
        rogue_share: on_rogues as f64 / slots as f64,
    })
}

/// Waits (up to two minutes) for the layout to settle and repair to end, then checks every
/// shard of every song on its holder: what the run lost.
async fn check_integrity(net: &Testnet, songs: &[SongId]) -> Option<Integrity> {
    let tracker = net.tracker().ok()?;
    let spinner = crate::progress_spinner("settling, then checking every shard of every song");
    let start = Instant::now();
    let mut settled = None;
    while start.elapsed() < Duration::from_secs(120) {
        if let Ok(s) = tracker.stats().await
            && s.layout_version.is_some()
            && s.layout_oldest == s.layout_version
            && s.repair.backlog == 0
        {
            settled = Some(start.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let audit = net.audit(songs, &[]).await.ok();
    spinner.finish_and_clear();
    let audit = audit?;
    let short_songs = songs.len().min(
        audit
            .problems
            .iter()
            .filter_map(|p| p.split_whitespace().next())
            .collect::<std::collections::HashSet<_>>()
            .len(),
    );
    Some(Integrity {
        songs: songs.len(),
        segments: audit.segments,
        short: audit.short,
        lost: audit.lost,
        songs_short: short_songs,
        songs_lost: audit.lost_songs.len(),
        settled_secs: settled,
    })
}

/// Applies the schedule's faults at their times, keeping the adversaries they start in
/// `adversaries`; returns what each did.
#[allow(clippy::too_many_arguments)]
async fn follow_timeline(
    sc: &Scenario,
    schedule: &Schedule,
    net: &mut Testnet,
    shaping: &mut Shaping,
    slots: &[Arc<Slot>],
    songs: &[SongId],
    sampler: &Sampler,
    w: &Workload,
    adversaries: &mut crate::faults::Adversaries,
) -> Vec<FaultEvent> {
    let mut events = Vec::new();
    for f in &schedule.faults {
        tokio::time::sleep_until((w.t0 + Duration::from_secs_f64(f.at_secs)).into()).await;
        let t = w.t0.elapsed().as_secs_f64();
        let r = apply_fault(
            &f.kind,
            sc,
            net,
            shaping,
            slots,
            songs,
            adversaries,
            &w.over,
        )
        .await;
        if let Some(i) = node_of(&f.kind, sc) {
            sampler.admins.lock()[i] = net.nodes()[i].admin.clone();
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
    events
}

/// Lets the plays under way finish (a song lasts at most `max_secs / speed`); drops those
/// still running after that.
async fn finish_plays(sc: &Scenario, tasks: Vec<tokio::task::JoinHandle<()>>) {
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
    let rss = medley_daemon::resident_bytes(None).unwrap_or(0);
    (cpu, rss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listeners_upload_follows_the_scenario_and_the_speed() {
        let mut sc = Scenario::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/spotify-2010.toml"),
        )
        .unwrap();
        // 1 Mbit/s at 2× speed: 250,000 bytes a second.
        assert_eq!(sc.workload.listener_upload_mbit, 1.0);
        assert_eq!(listener_upload(&sc, 2 << 20), 250_000);
        sc.workload.listener_upload_mbit = 0.0;
        sc.speed = 1.0;
        assert_eq!(listener_upload(&sc, 2 << 20), 2 << 20);
    }
}
