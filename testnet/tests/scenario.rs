//! `medley-testnet run`: a short scenario with every kind of fault runs end to end on real
//! processes; its folder holds every metric file, and its report every table and plot; the
//! schedule it ran is the one its seed draws. Impossible scenarios are refused before
//! anything starts. With shaping (root and netem), round trips between regions match the
//! scenario.

use std::path::{Path, PathBuf};
use std::process::Command;

use medley_testnet::record::{FaultEvent, Integrity, LayoutSample, NodeSample, PlayRecord};
use medley_testnet::report::{PLOTS, ROGUE_PLOT, SECTIONS, Summary};
use medley_testnet::scenario::{FaultKind, Scenario};
use medley_testnet::shaping;

const SHORT: &str = r#"
name = "short"
description = "Every fault once, on a small network."
duration_secs = 30
sample_secs = 1
node_config = "repair_interval_secs = 3\nscrub_interval_secs = 3"

[[regions]]
name = "eu-west"
nodes = 3
node_capacity = "256 MiB"
listeners = 6

[[regions]]
name = "us-east"
nodes = 3
node_capacity = "256 MiB"
listeners = 6

[network.between]
latency_ms = 20

[catalogue]
songs = 6
min_secs = 10
max_secs = 16
sample_rates = [22050, 44100]

[workload]
zipf = 1.0
arrivals_per_sec = 1.0
session_songs = [1, 3]
skip_pct = 20
seek_pct = 50
cache = "32 MiB"

[[workload.flash_crowds]]
at_secs = 12
listeners = 6
within_secs = 2

[[faults]]
at_secs = 4
action = "lying_peer"
region = "eu-west"
count = 2

[[faults]]
at_secs = 5
action = "kill_node"
node = "us-east/2"

[[faults]]
at_secs = 6
action = "rogue_nodes"
region = "eu-west"
count = 1
capacity = "1 EiB"

[[faults]]
at_secs = 8
action = "kill_listeners"
region = "us-east"
count = 2

[[faults]]
at_secs = 14
action = "restart_node"
node = "us-east/2"

[[faults]]
at_secs = 15
action = "restart_listeners"
region = "us-east"
count = 2

[[faults]]
at_secs = 16
action = "corrupt_node"
node = "eu-west/1"
fraction = 0.5

[[faults]]
at_secs = 18
action = "rogues_vanish"

[[faults]]
at_secs = 20
action = "cut_region"
region = "us-east"

[[faults]]
at_secs = 24
action = "heal_region"
region = "us-east"
"#;

fn jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Vec<T> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// Whole runs of `medley-testnet`, one at a time (see [`run_unshaped`]).
static ONE_RUN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `medley-testnet <verb>` on `scenario` (written to a file in a new folder) with
/// `args`, then `--out <folder>/out --no-shaping` (shaping changes how the host's loopback
/// carries traffic: only the shaping tests do it, so that tests running side by side never
/// fight over it). Fails the test unless it succeeds; returns the folder, the output folder
/// and what it printed. One such run at a time: on two cores, runs side by side slow each
/// other down enough to change what they measure (which source answers first).
fn run_unshaped(verb: &str, scenario: &str, args: &[&str]) -> (tempfile::TempDir, PathBuf, String) {
    let _one = ONE_RUN.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scenario.toml");
    std::fs::write(&file, scenario).unwrap();
    let out = dir.path().join("out");
    let run = Command::new(medley_testnet::bin_dir().join("medley-testnet"))
        .arg(verb)
        .arg(&file)
        .args(args)
        .arg("--out")
        .arg(&out)
        .arg("--no-shaping")
        .output()
        .expect("run medley-testnet");
    let stdout = String::from_utf8_lossy(&run.stdout).to_string();
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    (dir, out, stdout)
}

#[test]
fn a_short_scenario_runs_end_to_end_with_every_fault_and_reports_every_table_and_plot() {
    let (_dir, out, stdout) = run_unshaped("run", SHORT, &["--seed", "42"]);
    assert!(stdout.contains("report:"), "{stdout}");

    // The schedule it ran is the one seed 42 draws, and not another seed's.
    let sc = Scenario::parse(SHORT).unwrap();
    // Byte for byte: the file is the schedule's own serialization.
    let ran = std::fs::read_to_string(out.join("schedule.json")).unwrap();
    assert_eq!(
        ran,
        serde_json::to_string_pretty(&sc.schedule(42).unwrap()).unwrap()
    );
    assert_ne!(
        ran,
        serde_json::to_string_pretty(&sc.schedule(43).unwrap()).unwrap()
    );
    // The scenario it ran is written beside it and reads back the same.
    let written = Scenario::load(&out.join("scenario.toml")).unwrap();
    assert_eq!(written, sc);

    // Plays: one JSON line and one CSV row each; most succeed, each fault kind's play
    // kinds are there.
    let plays: Vec<PlayRecord> = jsonl(&out.join("plays.jsonl"));
    let csv = std::fs::read_to_string(out.join("plays.csv")).unwrap();
    assert_eq!(csv.lines().count(), plays.len() + 1);
    let ok: Vec<_> = plays.iter().filter(|p| p.result.is_some()).collect();
    assert!(
        ok.len() >= 15,
        "{} plays succeeded of {}",
        ok.len(),
        plays.len()
    );
    assert!(
        ok.len() * 10 >= plays.len() * 8,
        "too many failures: {:?}",
        plays
            .iter()
            .filter_map(|p| p.error.as_ref())
            .collect::<Vec<_>>()
    );
    for p in &ok {
        let r = p.result.unwrap();
        assert!(r.ttfa_ms > 0.0 && r.segments_played >= 1, "{p:?}");
        assert!(r.delivery.total_bytes() > 0, "{p:?}");
    }
    let flash: Vec<_> = ok.iter().filter(|p| p.flash).collect();
    assert!(flash.len() >= 4, "{} flash plays", flash.len());
    assert!(flash.iter().all(|p| p.song == sc.catalogue.songs));
    assert!(ok.iter().any(|p| p.skipped));
    assert!(ok.iter().any(|p| p.result.unwrap().seek_ms.is_some()));
    // Every byte that reached a listener was checked; the lying peers were caught.
    assert!(
        ok.iter().any(|p| p.result.unwrap().liars_caught > 0),
        "no play met a lying peer"
    );

    // Faults: all applied, in order, at about their times.
    let events: Vec<FaultEvent> = jsonl(&out.join("events.jsonl"));
    assert_eq!(events.len(), 10);
    for e in &events {
        assert!(e.ok, "{e:?}");
        assert!(e.t_secs >= e.planned_secs - 0.01, "{e:?}");
        assert!(e.t_secs <= e.planned_secs + 10.0, "{e:?}");
    }
    assert!(
        events
            .iter()
            .any(|e| matches!(e.kind, FaultKind::CorruptNode { .. })
                && e.detail.contains("damaged")
                && !e.detail.starts_with("node 1: 0 "))
    );

    // Nodes: sampled throughout; node 5 (us-east/2) down between its kill and restart.
    let samples: Vec<NodeSample> = jsonl(&out.join("nodes.jsonl"));
    for n in 0..6 {
        assert!(
            samples.iter().filter(|s| s.node == n).count() >= 10,
            "node {n}"
        );
    }
    assert!(
        samples
            .iter()
            .any(|s| s.node == 5 && !s.up && (6.0..13.0).contains(&s.t_secs))
    );
    assert!(
        samples
            .iter()
            .any(|s| s.node == 5 && s.up && s.t_secs > 16.0)
    );
    assert!(samples.iter().any(|s| s.counters.bytes_served > 0));
    // The damaged node's scrubber found corrupt shards.
    assert!(
        samples
            .iter()
            .any(|s| s.node == 1 && s.counters.scrub_bad > 0),
        "no corrupt shard found on node 1"
    );
    let nodes_csv = std::fs::read_to_string(out.join("nodes.csv")).unwrap();
    assert_eq!(nodes_csv.lines().count(), samples.len() + 1);
    assert!(
        std::fs::read_to_string(out.join("overhead.csv"))
            .unwrap()
            .lines()
            .count()
            >= 10
    );
    assert!(out.join("logs/tracker.log").exists());

    // The layout: sampled throughout; the rogue node held slots after it joined, none once
    // it was gone and the layout settled; at the end every song was whole.
    let layout: Vec<LayoutSample> = jsonl(&out.join("layout.jsonl"));
    assert!(layout.len() >= 10);
    assert!(layout.iter().any(|l| l.t_secs > 6.0 && l.rogue_share > 0.0));
    assert!(
        layout
            .iter()
            .all(|l| l.t_secs > 6.0 || l.rogue_share == 0.0)
    );
    let integrity: Integrity =
        serde_json::from_str(&std::fs::read_to_string(out.join("integrity.json")).unwrap())
            .unwrap();
    assert_eq!(integrity.songs, sc.catalogue.songs + 1, "{integrity:?}");
    assert_eq!(
        (integrity.lost, integrity.songs_lost),
        (0, 0),
        "{integrity:?}"
    );
    assert!(integrity.settled_secs.is_some(), "{integrity:?}");

    // The report: scenario, seed, every table, every plot (drawn, with lines).
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("`short`, seed 42"), "{report}");
    for s in SECTIONS {
        assert!(report.contains(s), "no {s:?} in the report");
    }
    assert!(
        report
            .contains("| local cache | other listeners (P2P) | hot nodes | rebuilt from shards |")
    );
    assert!(report.contains("| TTFA p50 ms | p75 | p90 | p99 | plays with a stall |"));
    assert!(report.contains("| flash crowd |"));
    assert!(
        report.contains("Shaping: "),
        "the report says whether it shaped"
    );
    assert!(report.contains("**0 of 7 songs lost**"), "{report}");
    for p in PLOTS.iter().chain([&ROGUE_PLOT]) {
        assert!(report.contains(&format!("]({p})")), "{p} not linked");
        let svg = std::fs::read_to_string(out.join(p)).unwrap();
        assert!(svg.starts_with("<svg"), "{p}");
        assert!(svg.contains("<polyline"), "{p} has no line");
    }

    // summary.json: the same figures as the report, for scripts.
    let summary: Summary =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!((summary.scenario.as_str(), summary.seed), ("short", 42));
    assert_eq!(summary.shaping, "off");
    assert_eq!(summary.all.plays, plays.len());
    assert_eq!(summary.all.failed, plays.len() - ok.len());
    assert_eq!(summary.songs_lost, Some(0));
    assert_eq!(summary.nodes.len(), 6);
    assert!(summary.nodes.iter().any(|n| n.served_bytes > 0));
    let crowd = summary
        .crowd
        .as_ref()
        .expect("the flash crowd's own figures");
    assert_eq!(crowd.plays, plays.iter().filter(|p| p.flash).count());
    // The report's rows of all plays and of the crowd, cell by cell.
    let rows = |label: &str| -> Vec<Vec<String>> {
        report
            .lines()
            .filter(|l| l.starts_with(&format!("| {label} | ")))
            .map(|l| l.split('|').map(|c| c.trim().to_string()).collect())
            .collect()
    };
    let pct = |v: f64| format!("{:.1} %", 100.0 * v);
    let ms = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.0}"));
    for (label, f) in [("all", &summary.all), ("flash crowd", crowd)] {
        let rows = rows(label);
        let (bytes, playback) = (&rows[0], &rows[1]);
        let b = &f.bytes_share;
        assert_eq!(
            bytes[2..6],
            [pct(b.cache), pct(b.peers), pct(b.hot), pct(b.rebuilt)],
            "{label}: {bytes:?}"
        );
        assert_eq!(
            playback[2..5],
            [
                f.plays.to_string(),
                f.failed.to_string(),
                f.skipped.to_string()
            ]
        );
        assert_eq!(playback[5], ms(f.ttfa_ms.p50), "{label}: {playback:?}");
        assert_eq!(playback[7], ms(f.ttfa_ms.p90));
        assert_eq!(playback[8], ms(f.ttfa_ms.p99));
        assert_eq!(playback[9], pct(f.stalled.share));
    }
}

#[test]
fn an_impossible_scenario_is_refused_naming_the_field_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for (from, to, field) in [
        (
            "region = \"eu-west\"\ncount = 2",
            "region = \"mars\"\ncount = 2",
            "faults[0].region",
        ),
        (
            "latency_ms = 20",
            "latency_ms = -20",
            "network.between.latency_ms",
        ),
        ("songs = 6", "songs = 6\nk = 5\nm = 2", "catalogue.k"),
    ] {
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, SHORT.replacen(from, to, 1)).unwrap();
        let out = dir.path().join("out");
        let run = Command::new(medley_testnet::bin_dir().join("medley-testnet"))
            .arg("run")
            .arg(&file)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success());
        assert!(stderr.contains(field), "{field}: {stderr}");
        assert!(!out.exists(), "nothing is written for a refused scenario");
    }
}

/// Shaping changes how the host's loopback carries region traffic: one test at a time.
static SHAPING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Starts shaping for `sc`, or says why it cannot run (a failure where
/// `MEDLEY_REQUIRE_SHAPING` is set).
fn shaping_for(sc: &Scenario) -> Option<shaping::Shaping> {
    let regions: Vec<String> = sc.regions.iter().map(|r| r.name.clone()).collect();
    match shaping::Shaping::start(&regions, &sc.network, 7) {
        Ok(s) => Some(s),
        Err(e) => {
            assert!(
                std::env::var_os("MEDLEY_REQUIRE_SHAPING").is_none(),
                "shaping is required here but unavailable: {e}"
            );
            eprintln!("shaping unavailable, nothing to measure: {e}");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_shaping_round_trips_between_regions_match_the_scenario() {
    let _one = SHAPING.lock().await;
    let sc = Scenario::parse(SHORT).unwrap();
    let Some(mut s) = shaping_for(&sc) else {
        return;
    };
    assert!(s.note().contains("20 ms"), "{}", s.note());
    let (a, b) = (shaping::region_ip(0), shaping::region_ip(1));
    let between = shaping::udp_rtt(&a, &b, 20).await.unwrap();
    let within = shaping::udp_rtt(&a, &a, 20).await.unwrap();
    // 20 ms each way.
    assert!(
        (36.0..=50.0).contains(&between),
        "{between} ms between regions ({})",
        s.mechanism()
    );
    assert!(within < 5.0, "{within} ms within a region");
    // A cut region hears nothing from the other; healed, it does again.
    s.cut("us-east", true).unwrap();
    assert!(shaping::udp_rtt(&a, &b, 3).await.is_err());
    assert!(
        shaping::udp_rtt(&b, &b, 3).await.is_ok(),
        "inside the cut region"
    );
    s.cut("us-east", false).unwrap();
    assert!(shaping::udp_rtt(&a, &b, 3).await.is_ok());
    s.stop();
    // Unshaped again: nothing is held any more.
    assert!(shaping::udp_rtt(&a, &b, 5).await.unwrap() < 5.0);
}

/// Bytes of IP packets a region-`b` socket receives per second while a region-`a` socket
/// sends 1,200-byte datagrams at `offered` bytes per second for `secs` seconds, measured
/// from the first datagram to arrive to the last.
async fn received_rate(a: &str, b: &str, offered: f64, secs: f64) -> f64 {
    const PAYLOAD: usize = 1200;
    // The IPv4 and UDP headers a link carries too.
    const PACKET: usize = PAYLOAD + 28;
    let rx = tokio::net::UdpSocket::bind((b, 0)).await.unwrap();
    let to = rx.local_addr().unwrap();
    let counter = tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        let (mut first, mut last, mut n) = (None, None, 0usize);
        while let Ok(Ok(_)) =
            tokio::time::timeout(std::time::Duration::from_secs(2), rx.recv_from(&mut buf)).await
        {
            let now = std::time::Instant::now();
            first.get_or_insert(now);
            last = Some(now);
            n += 1;
        }
        // The first datagram's bytes arrived before the clock started.
        let span = last.unwrap().duration_since(first.unwrap()).as_secs_f64();
        (n.saturating_sub(1) * PACKET) as f64 / span
    });
    let tx = tokio::net::UdpSocket::bind((a, 0)).await.unwrap();
    let data = vec![7u8; PAYLOAD];
    let gap = std::time::Duration::from_secs_f64(PACKET as f64 * 10.0 / offered);
    let started = std::time::Instant::now();
    let mut tick = tokio::time::interval(gap);
    while started.elapsed().as_secs_f64() < secs {
        tick.tick().await;
        // Ten datagrams per tick: the offered rate without a timer per datagram.
        for _ in 0..10 {
            tx.send_to(&data, to).await.unwrap();
        }
    }
    counter.await.unwrap()
}

/// The user-space delay line (what runs where the kernel has no netem): round trips between
/// two regions within 10 % of the scenario's, measured from each side, and a link's
/// bandwidth within 10 %.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_space_delay_line_keeps_the_scenarios_round_trips_and_bandwidth() {
    let _one = SHAPING.lock().await;
    let sc = Scenario::parse(&format!(
        "{}\n[network]\nemulation = \"userspace\"\n[network.within]\nbandwidth_mbit = 16\n",
        SHORT.replace(
            "[network.between]\nlatency_ms = 20",
            "[network.between]\nlatency_ms = 30"
        )
    ))
    .unwrap();
    let Some(mut s) = shaping_for(&sc) else {
        return;
    };
    assert_eq!(s.mechanism(), "userspace", "{}", s.note());
    assert!(s.note().contains("user-space delay line"), "{}", s.note());
    let (a, b) = (shaping::region_ip(0), shaping::region_ip(1));
    for (from, to) in [(&a, &b), (&b, &a)] {
        let rtt = shaping::udp_rtt(from, to, 20).await.unwrap();
        eprintln!("round trip {from} → {to}: {rtt:.2} ms");
        assert!(
            (54.0..=66.0).contains(&rtt),
            "{rtt} ms from {from} to {to}, 60 ms expected"
        );
    }
    // Inside a region: 16 Mbit/s (2,000,000 bytes a second) with twice that offered.
    let rate = received_rate(&a, &a, 4_000_000.0, 3.0).await;
    eprintln!("through a 16 Mbit/s link: {rate:.0} B/s");
    assert!(
        (1_800_000.0..=2_200_000.0).contains(&rate),
        "{rate:.0} B/s through a 16 Mbit/s link"
    );
    s.stop();
}

const TINY: &str = r#"
name = "tiny"
duration_secs = 8
sample_secs = 1

[[regions]]
name = "eu-west"
nodes = 3
node_capacity = "128 MiB"
listeners = 4

[catalogue]
songs = 3
min_secs = 6
max_secs = 8
sample_rates = [22050]
k = 2
m = 1

[workload]
zipf = 1.0
arrivals_per_sec = 1.0
session_songs = [1, 2]
skip_pct = 0
seek_pct = 0
cache = "16 MiB"
"#;

#[test]
fn a_two_seed_sweep_writes_both_runs_and_an_interval() {
    let (_dir, out, _) = run_unshaped(
        "sweep",
        TINY,
        &[
            "--seeds",
            "2",
            "--seed",
            "5",
            "--set",
            "workload.arrivals_per_sec=2",
        ],
    );
    // sweep.csv: a header and one row per run, with its seed and figures.
    let csv = std::fs::read_to_string(out.join("sweep.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    let head: Vec<&str> = lines[0].split(',').collect();
    assert_eq!(head[..3], ["workload.arrivals_per_sec", "seed", "plays"]);
    let rows: Vec<Vec<&str>> = lines[1..].iter().map(|l| l.split(',').collect()).collect();
    assert_eq!((rows[0][1], rows[1][1]), ("5", "6"));
    let col = |name: &str| head.iter().position(|h| *h == name).unwrap();
    // Each run's figures are its own summary.json's.
    for (row, seed) in rows.iter().zip([5, 6]) {
        assert_eq!(row[0], "2");
        let s: Summary = serde_json::from_str(
            &std::fs::read_to_string(out.join(format!(
                "runs/workload.arrivals_per_sec=2_seed{seed}/summary.json"
            )))
            .unwrap(),
        )
        .unwrap();
        assert_eq!(s.seed, seed);
        assert_eq!(row[col("plays")], s.all.plays.to_string());
        assert!(s.all.plays > 0);
        let p50: f64 = row[col("ttfa_p50_ms")].parse().unwrap();
        let want = s.all.ttfa_ms.p50.unwrap();
        assert!((p50 - want).abs() <= 1e-9 * want, "{p50} against {want}");
    }
    // sweep.md: the mean and its interval over the two seeds.
    let plays: Vec<f64> = rows
        .iter()
        .map(|r| r[col("plays")].parse().unwrap())
        .collect();
    let (mean, half) = medley_testnet::sweep::mean_ci(&plays).unwrap();
    let md = std::fs::read_to_string(out.join("sweep.md")).unwrap();
    let cell = |v: f64| {
        if v == v.trunc() || v >= 100.0 {
            format!("{v:.0}")
        } else if v >= 1.0 {
            format!("{v:.1}")
        } else {
            format!("{v:.4}")
        }
    };
    let expected = format!("| 2 | {} ± {} |", cell(mean), cell(half.unwrap()));
    assert!(md.contains(&expected), "{expected} not in\n{md}");
    assert!(md.contains("95 % confidence interval"), "{md}");
    let svg = std::fs::read_to_string(out.join("sweep_ttfa_p50_ms.svg")).unwrap();
    assert!(svg.starts_with("<svg"));
}

/// With regions on addresses of their own, the tracker is in the first region and every
/// process calls it from its region's address: a call from another region takes the link's
/// round trip, one from the tracker's region does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracker_calls_cross_the_links_between_regions_too() {
    let _one = SHAPING.lock().await;
    let sc = Scenario::parse(&format!(
        "{}\n[network]\nemulation = \"userspace\"\n",
        SHORT.replace(
            "[network.between]\nlatency_ms = 20",
            "[network.between]\nlatency_ms = 30"
        )
    ))
    .unwrap();
    let Some(mut s) = shaping_for(&sc) else {
        return;
    };
    let gib = bytesize::ByteSize::gib(1);
    let layout = [
        "eu-west", "eu-west", "eu-west", "us-east", "us-east", "us-east",
    ]
    .map(|r| (r.to_string(), gib))
    .to_vec();
    let net = medley_testnet::Testnet::builder()
        .node_layout(layout)
        .placement(s.placement())
        .spawn()
        .await
        .unwrap();
    assert!(
        net.tracker_url().contains(&shaping::region_ip(0)),
        "the tracker is on the first region's address: {}",
        net.tracker_url()
    );
    // Every node registered, from its own region's address.
    assert_eq!(net.tracker().unwrap().nodes().await.unwrap().len(), 6);
    let mut median = Vec::new();
    for region in ["eu-west", "us-east"] {
        let c = net.client_config(region, false);
        assert_eq!(
            c.tracker_source.map(|ip| ip.to_string()),
            Some(shaping::region_ip(usize::from(region == "us-east")))
        );
        let t = medley_api::TrackerClient::builder(&c.tracker)
            .local_address(c.tracker_source)
            .build()
            .unwrap();
        t.stats().await.unwrap();
        let mut times = Vec::new();
        for _ in 0..9 {
            let started = std::time::Instant::now();
            t.stats().await.unwrap();
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        eprintln!("a tracker call from {region}: {:.1} ms", times[4]);
        median.push(times[4]);
    }
    assert!(
        median[0] < 15.0,
        "{} ms within the tracker's region",
        median[0]
    );
    assert!(
        (54.0..=90.0).contains(&median[1]),
        "{} ms from the other region, 60 ms round trip",
        median[1]
    );
    drop(net);
    s.stop();
}

/// [`TINY`] in two regions 25 ms apart.
fn tiny_shaped() -> String {
    TINY.replace("name = \"tiny\"", "name = \"tiny-shaped\"").replace(
        "[catalogue]",
        "[[regions]]\nname = \"us-east\"\nnodes = 3\nnode_capacity = \"128 MiB\"\nlisteners = 4\n\n[network.between]\nlatency_ms = 25\n\n[catalogue]",
    )
}

/// A user who is not root gets a shaped run too: the testnet runs itself again in a user
/// and network namespace of its own. (Run as `nobody` from a root test suite.)
#[test]
fn a_run_by_a_user_who_is_not_root_is_shaped_in_a_namespace_of_its_own() {
    let as_root = std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:\t0\t")));
    if !as_root {
        eprintln!("not root: cannot run as another user here");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let file = dir.path().join("tiny.toml");
    std::fs::write(&file, tiny_shaped()).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = dir.path().join("out");
    let bin = medley_testnet::bin_dir().join("medley-testnet");
    let _one = ONE_RUN.lock().unwrap_or_else(|e| e.into_inner());
    let run = Command::new("su")
        .args(["nobody", "-s", "/bin/sh", "-c"])
        .arg(format!(
            "cd '{d}' && HOME='{d}' '{}' run tiny.toml --out '{}'",
            bin.display(),
            out.display(),
            d = dir.path().display()
        ))
        .output()
        .expect("su");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    let shaping = report
        .lines()
        .find(|l| l.starts_with("- Shaping: "))
        .unwrap();
    assert!(
        shaping.starts_with("- Shaping: on") && shaping.contains("namespace of its own"),
        "{shaping}"
    );
    let summary: Summary =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_ne!(summary.shaping, "off");
    // 25 ms each way between the regions, measured inside the namespace.
    let rtt: f64 = report
        .lines()
        .find(|l| l.starts_with("| eu-west → us-east | "))
        .and_then(|l| l.split('|').nth(2))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!((45.0..=60.0).contains(&rtt), "{rtt} ms");
}

/// A flash crowd on a small network: 30 listeners start one new song (of about 30 s: four
/// segments or more) within 3 s.
const CROWD: &str = r#"
name = "crowd"
duration_secs = 44
sample_secs = 1
tracker_config = "hot_plays = 4.0\nhot_half_life_secs = 120\nhot_copies = 2\npeer_ttl_secs = 60"

[[regions]]
name = "eu-west"
nodes = 4
node_capacity = "128 MiB"
listeners = 36

[catalogue]
songs = 4
min_secs = 30
max_secs = 32
sample_rates = [44100]
k = 2
m = 1

[workload]
zipf = 1.0
arrivals_per_sec = 0.2
session_songs = [1, 1]
skip_pct = 0
seek_pct = 0
cache = "32 MiB"

[[workload.flash_crowds]]
at_secs = 6
listeners = 30
within_secs = 3
"#;

/// The crowd is served by the crowd: the tracker orders hot copies within seconds of the
/// surge (from its own answers, read twice a second into `hot.jsonl`), long before any
/// play of the crowd is over, and the crowd's later members get most of their bytes from
/// the earlier members and the hot nodes, not rebuilt from shards.
#[test]
fn a_flash_crowd_is_served_by_the_crowd_and_hot_copies_ordered_at_the_surge() {
    let (_dir, out, _) = run_unshaped("run", CROWD, &["--seed", "9"]);
    let plays: Vec<PlayRecord> = jsonl(&out.join("plays.jsonl"));
    let mut crowd: Vec<&PlayRecord> = plays.iter().filter(|p| p.flash).collect();
    crowd.sort_by(|a, b| a.t_secs.total_cmp(&b.t_secs));
    assert_eq!(crowd.len(), 30);
    assert!(crowd.iter().all(|p| p.error.is_none()), "{crowd:?}");
    let song = crowd[0].song;
    let first = crowd[0].t_secs;
    let hot: Vec<medley_testnet::record::HotEvent> = jsonl(&out.join("hot.jsonl"));
    let ordered = hot
        .iter()
        .find(|e| e.song == song && e.what == "ordered")
        .unwrap_or_else(|| panic!("no hot copies of the crowd's song ordered: {hot:?}"));
    // A play is reported when it ends, after the song's 30 s: orders within 4 s of the
    // first listener come from the surge of requests.
    assert!(
        ordered.t_secs - first <= 4.0,
        "ordered {:.1} s after the crowd's first listener",
        ordered.t_secs - first
    );
    let summary: Summary =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let h = summary
        .crowd_hot
        .expect("the crowd's hot copies in summary.json");
    let after = h.ordered_after_secs.expect("ordered");
    assert!((after - (ordered.t_secs - first)).abs() < 1e-6, "{h:?}");
    // The later half of the crowd: most bytes from other listeners and hot nodes.
    let later = &crowd[crowd.len() / 2..];
    let (mut offloaded, mut total) = (0u64, 0u64);
    for p in later {
        let d = &p.result.as_ref().unwrap().delivery;
        offloaded += d.peer_bytes + d.hot_bytes;
        total += d.peer_bytes + d.hot_bytes + d.rebuilt_bytes;
    }
    assert!(
        offloaded * 2 > total,
        "the crowd's later half got {offloaded} of {total} bytes from peers and hot nodes"
    );
}
