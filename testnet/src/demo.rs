//! `medley-testnet demo`: a whole network on this machine, a generated library published
//! to it, searched and played from a listener in every region, every result checked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output as ProcOutput;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use medley_client::{FileOutcome, Output, PlayOutcome, decode_to_wav};
use serde::Deserialize;

use crate::Testnet;
use crate::library::{LibrarySong, generate};

/// Settings of the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Keep everything under this folder instead of a temporary one.
    pub dir: Option<PathBuf>,
    /// Songs to generate (at least 12).
    pub songs: usize,
    /// Catalogue and melody seed.
    pub seed: u64,
    /// Storage nodes.
    pub nodes: usize,
    /// Regions.
    pub regions: usize,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            dir: None,
            songs: 12,
            seed: 2026,
            nodes: 6,
            regions: 3,
        }
    }
}

/// Checks passed and failed.
#[derive(Debug, Default)]
pub struct Checks {
    /// (name, passed, detail).
    pub results: Vec<(String, bool, String)>,
}

impl Checks {
    fn check(&mut self, name: impl Into<String>, ok: bool, detail: impl Into<String>) {
        let (name, detail) = (name.into(), detail.into());
        println!(
            "  [{}] {name}{}",
            if ok { " ok " } else { "FAIL" },
            if detail.is_empty() {
                String::new()
            } else {
                format!(": {detail}")
            }
        );
        self.results.push((name, ok, detail));
    }

    /// Checks that failed.
    pub fn failed(&self) -> usize {
        self.results.iter().filter(|r| !r.1).count()
    }
}

#[derive(Debug, Deserialize)]
struct SearchLine {
    id: String,
}

fn run_ok(cmd: &mut std::process::Command, what: &str) -> anyhow::Result<ProcOutput> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run medley for {what}"))?;
    if !out.status.success() {
        bail!(
            "medley {what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

fn search_ids(net: &Testnet, region: &str, args: &[&str]) -> anyhow::Result<Vec<String>> {
    let out = run_ok(
        net.medley(region, false)
            .arg("search")
            .args(args)
            .args(["--limit", "100", "--json"]),
        &format!("search {args:?}"),
    )?;
    let hits: Vec<SearchLine> =
        serde_json::from_slice(&out.stdout).context("search --json printed invalid JSON")?;
    Ok(hits.into_iter().map(|h| h.id).collect())
}

/// A word of `text` with one letter dropped, as a typing mistake (words of 5+ letters).
fn typo(text: &str) -> Option<String> {
    let w = text
        .split_whitespace()
        .find(|w| w.chars().count() >= 5 && w.chars().all(char::is_alphabetic))?;
    let mut c: Vec<char> = w.chars().collect();
    c.remove(c.len() / 2);
    Some(c.into_iter().collect())
}

/// Runs the demo; returns the checks (the caller exits non-zero if any failed).
pub async fn run(opts: DemoOptions) -> anyhow::Result<Checks> {
    let started = Instant::now();
    let mut checks = Checks::default();
    println!(
        "starting a tracker and {} nodes in {} regions…",
        opts.nodes, opts.regions
    );
    let mut builder = Testnet::builder().nodes(opts.nodes).regions(opts.regions);
    if let Some(d) = &opts.dir {
        builder = builder.dir(d);
    }
    let mut net = builder.spawn().await.context("cannot start the testnet")?;
    println!(
        "  tracker at {}; data under {}",
        net.tracker_url(),
        net.dir().display()
    );
    let regions = net.regions();

    // The library.
    let lib_dir = net.dir().join("library");
    println!(
        "synthesizing {} songs into {}…",
        opts.songs,
        lib_dir.display()
    );
    let songs = {
        let (d, n, seed) = (lib_dir.clone(), opts.songs.max(12), opts.seed);
        tokio::task::spawn_blocking(move || generate(&d, n, seed, 14.0, 30.0))
            .await
            .context("synthesis panicked")??
    };
    std::fs::write(
        lib_dir.join("notes.txt"),
        "liner notes, not music\n".repeat(40),
    )
    .context("cannot write notes.txt")?;

    // Publish the whole folder.
    println!("publishing {}…", lib_dir.display());
    let out = run_ok(
        net.medley(&regions[0], true)
            .arg("publish")
            .arg(&lib_dir)
            .arg("--json"),
        "publish",
    )?;
    let lines: Vec<FileOutcome> =
        serde_json::from_slice(&out.stdout).context("publish --json printed invalid JSON")?;
    let mut ids: BTreeMap<PathBuf, String> = BTreeMap::new();
    let mut skipped = Vec::new();
    let mut failed = Vec::new();
    for l in lines {
        match l {
            FileOutcome::Published(p) => {
                if !p.created {
                    failed.push(format!("{} was already there", p.path.display()));
                }
                ids.insert(p.path, p.id);
            }
            FileOutcome::Skipped { path, reason } => skipped.push((path, reason)),
            FileOutcome::Failed { path, error } => {
                failed.push(format!("{}: {error}", path.display()))
            }
        }
    }
    checks.check(
        format!("publish {} songs", songs.len()),
        ids.len() == songs.len() && failed.is_empty(),
        format!(
            "{} published, {} failed {:?}",
            ids.len(),
            failed.len(),
            failed
        ),
    );
    checks.check(
        "skip the file that is not audio",
        skipped.len() == 1 && skipped[0].0.ends_with("notes.txt"),
        skipped.first().map(|s| s.1.clone()).unwrap_or_default(),
    );
    let id_of = |s: &LibrarySong| ids.get(&s.path).cloned().unwrap_or_default();

    // Publishing again changes nothing.
    let again = run_ok(
        net.medley(&regions[0], true)
            .arg("publish")
            .arg(&songs[0].path)
            .arg("--json"),
        "publish again",
    )?;
    let again: Vec<FileOutcome> = serde_json::from_slice(&again.stdout)?;
    checks.check(
        "publishing a file again is idempotent",
        matches!(again.as_slice(), [FileOutcome::Published(p)] if !p.created && p.id == id_of(&songs[0])),
        "",
    );

    // Search.
    println!("searching…");
    let (mut by_artist, mut by_genre, mut by_album) = (0, 0, 0);
    for (i, s) in songs.iter().enumerate() {
        let id = id_of(s);
        let r = &regions[i % regions.len()];
        by_artist += usize::from(search_ids(&net, r, &["--artist", &s.song.artist])?.contains(&id));
        by_genre += usize::from(search_ids(&net, r, &["--genre", &s.song.genre])?.contains(&id));
        by_album += usize::from(
            search_ids(&net, r, &[&s.song.title, "--album", &s.song.album])?.contains(&id),
        );
    }
    let n = songs.len();
    checks.check(
        "find every song by artist",
        by_artist == n,
        format!("{by_artist}/{n}"),
    );
    checks.check(
        "find every song by genre",
        by_genre == n,
        format!("{by_genre}/{n}"),
    );
    checks.check(
        "find every song by title within its album",
        by_album == n,
        format!("{by_album}/{n}"),
    );
    let mut typos = (0, 0);
    for s in &songs {
        if let Some(t) = typo(&s.song.artist) {
            typos.1 += 1;
            typos.0 += usize::from(search_ids(&net, &regions[0], &[&t])?.contains(&id_of(s)));
        }
    }
    checks.check(
        "find songs by a misspelt artist",
        typos.0 == typos.1,
        format!("{}/{}", typos.0, typos.1),
    );
    let mut prefixes = 0;
    for s in &songs {
        let first: String = s.song.title.chars().take(4).collect();
        prefixes += usize::from(
            search_ids(&net, &regions[0], &[&first, "--artist", &s.song.artist])?
                .contains(&id_of(s)),
        );
    }
    checks.check(
        "find songs by the first letters of the title",
        prefixes == n,
        format!("{prefixes}/{n}"),
    );

    // Play from a listener in each region.
    println!("playing every song from a listener in its region…");
    let plays_dir = net.dir().join("plays");
    std::fs::create_dir_all(&plays_dir)?;
    let mut plays: Vec<(String, String, PlayOutcome)> = Vec::new();
    let mut identical = 0;
    for (i, s) in songs.iter().enumerate() {
        let id = id_of(s);
        let region = regions[i % regions.len()].clone();
        let wav = plays_dir.join(format!("{}.wav", &id[..12.min(id.len())]));
        let out = run_ok(
            net.medley(&region, false)
                .args(["play", &id, "--json", "--out"])
                .arg(&wav),
            &format!("play {id}"),
        )?;
        let outcome: PlayOutcome =
            serde_json::from_slice(&out.stdout).context("play --json printed invalid JSON")?;
        let reference = plays_dir.join("reference.wav");
        decode_to_wav(&s.path, &Output::File(reference.clone()))
            .with_context(|| format!("cannot decode {}", s.path.display()))?;
        if same_file(&wav, &reference)? {
            identical += 1;
        }
        plays.push((region, s.song.title.clone(), outcome));
    }
    checks.check(
        "every play decodes to the same PCM as the source file",
        identical == n,
        format!("{identical}/{n}"),
    );

    // Download byte-identical, one song per region.
    let mut downloads = 0;
    for (i, r) in regions.iter().enumerate() {
        let s = &songs[i % n];
        let file = net.dir().join(format!("download-{i}.flac"));
        run_ok(
            net.medley(r, false)
                .args(["get", &id_of(s), "-o"])
                .arg(&file),
            "get",
        )?;
        downloads += usize::from(same_file(&file, &s.path)?);
    }
    checks.check(
        "downloads are byte-identical",
        downloads == regions.len(),
        format!("{downloads}/{}", regions.len()),
    );

    // Storage per node, from the nodes' last heartbeats.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let nodes = net.tracker()?.nodes().await?;
    println!();
    println!("summary");
    println!("  songs published: {}", ids.len());
    let audio: u64 = songs
        .iter()
        .map(|s| std::fs::metadata(&s.path).map(|m| m.len()).unwrap_or(0))
        .sum();
    println!(
        "  audio bytes: {} ({} with parity)",
        bytesize::ByteSize(audio),
        bytesize::ByteSize(audio * 3 / 2)
    );
    println!("  bytes stored per node:");
    let mut stored_total = 0;
    for n in &nodes {
        let used = n.node.capacity.saturating_sub(n.node.load.free);
        stored_total += used;
        println!(
            "    {:<10} {}…  {:>10}",
            n.node.region,
            &n.node.peer_id[..16.min(n.node.peer_id.len())],
            bytesize::ByteSize(used).to_string()
        );
    }
    checks.check(
        "the nodes hold every shard",
        stored_total >= audio,
        format!(
            "{} stored for {} of audio",
            bytesize::ByteSize(stored_total),
            bytesize::ByteSize(audio)
        ),
    );
    println!("  plays (time to first audio):");
    let mut ttfa: Vec<f64> = Vec::new();
    for (region, title, p) in &plays {
        println!(
            "    {:<9} {:<32} {:>7.1} ms  {} sources",
            region,
            title.chars().take(32).collect::<String>(),
            p.time_to_first_audio_ms,
            p.sources_used
        );
        ttfa.push(p.time_to_first_audio_ms);
    }
    ttfa.sort_by(f64::total_cmp);
    if !ttfa.is_empty() {
        println!(
            "  time to first audio: median {:.1} ms, max {:.1} ms",
            ttfa[ttfa.len() / 2],
            ttfa[ttfa.len() - 1]
        );
    }
    println!(
        "  checks: {} passed, {} failed; {:.1} s in all",
        checks.results.len() - checks.failed(),
        checks.failed(),
        started.elapsed().as_secs_f64()
    );
    net.shutdown();
    Ok(checks)
}

fn same_file(a: &Path, b: &Path) -> anyhow::Result<bool> {
    let x = std::fs::read(a).with_context(|| format!("cannot read {}", a.display()))?;
    let y = std::fs::read(b).with_context(|| format!("cannot read {}", b.display()))?;
    Ok(x == y)
}
