//! End to end: a tracker and six nodes as real processes on loopback, the real `medley`
//! binary, real audio files (synthesized FLAC, an Ogg Vorbis file made by ffmpeg, an
//! untagged WAV).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{assert_get_identical, fails, ok, play, publish, reference_wav};
use medley_client::TrackerClient;
use medley_testnet::Testnet;
use medley_testnet::library::{LibrarySong, generate};

fn search(net: &Testnet, args: &[&str]) -> Vec<String> {
    let out = ok(net
        .medley("us-east", false)
        .arg("search")
        .args(args)
        .args(["--json", "--limit", "100"]));
    let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("search --json");
    v.iter()
        .map(|h| h["id"].as_str().expect("id").to_string())
        .collect()
}

fn ffmpeg(args: &[&str]) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .output()
        .expect("ffmpeg is installed (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Raw 16-bit stereo PCM of a synthesized tune.
fn pcm(seed: u64, seconds: f64) -> Vec<u8> {
    medley_synth::render(&medley_synth::Tune::new(seed, seconds))
        .unwrap()
        .iter()
        .flat_map(|s| (*s as i16).to_le_bytes())
        .collect()
}

fn write_wav(path: &Path, pcm: &[u8]) {
    let mut h = Vec::new();
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&(36 + pcm.len() as u32).to_le_bytes());
    h.extend_from_slice(b"WAVEfmt ");
    h.extend_from_slice(&16u32.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&44_100u32.to_le_bytes());
    h.extend_from_slice(&(44_100u32 * 4).to_le_bytes());
    h.extend_from_slice(&4u16.to_le_bytes());
    h.extend_from_slice(&16u16.to_le_bytes());
    h.extend_from_slice(b"data");
    h.extend_from_slice(&(pcm.len() as u32).to_le_bytes());
    h.extend_from_slice(pcm);
    std::fs::write(path, h).unwrap();
}

/// Encodes raw 16-bit stereo 44.1 kHz PCM with ffmpeg, with `codec` options and tags.
fn encode(raw: &Path, codec: &[&str], tags: &[&str], out: &Path) {
    let mut args = vec![
        "-f",
        "s16le",
        "-ar",
        "44100",
        "-ac",
        "2",
        "-i",
        raw.to_str().unwrap(),
    ];
    args.extend_from_slice(codec);
    for t in tags {
        args.extend_from_slice(&["-metadata", t]);
    }
    args.push(out.to_str().unwrap());
    ffmpeg(&args);
}

/// Two synthesized FLAC songs, an Ogg Vorbis file tagged by ffmpeg, an untagged WAV and a
/// text file, in a library folder.
fn library(dir: &Path) -> (Vec<LibrarySong>, PathBuf, PathBuf) {
    let lib = dir.join("library");
    let songs = generate(&lib, 2, 41, 6.0, 9.0).unwrap();
    let raw = dir.join("raw.pcm");
    std::fs::write(&raw, pcm(77, 7.0)).unwrap();
    let ogg = lib.join("Real Files/harbour.ogg");
    std::fs::create_dir_all(ogg.parent().unwrap()).unwrap();
    encode(
        &raw,
        &["-c:a", "libvorbis", "-q:a", "4"],
        &[
            "title=Harbour Lights",
            "artist=Ffmpeg Quartet",
            "album=Real Files",
            "genre=Chamber",
            "date=1999",
        ],
        &ogg,
    );
    let wav = lib.join("Morning Raga.wav");
    write_wav(&wav, &pcm(78, 3.0));
    for (codec, ext, title) in [
        ("libmp3lame", "mp3", "Copper Kettle"),
        ("libopus", "opus", "Glass Orchard"),
    ] {
        encode(
            &raw,
            &["-c:a", codec, "-b:a", "128k"],
            &[
                &format!("title={title}"),
                "artist=Ffmpeg Quartet",
                "genre=Chamber",
            ],
            &lib.join(format!("Real Files/{ext}.{ext}")),
        );
    }
    std::fs::write(lib.join("cover.txt"), "not audio\n".repeat(50)).unwrap();
    (songs, ogg, wav)
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_search_get_and_play_real_files() {
    let net = Testnet::builder().log("warn").spawn().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (songs, ogg, wav) = library(dir.path());

    let lines = publish(&net, &dir.path().join("library"));
    let id_of = |p: &Path| {
        lines
            .iter()
            .find(|l| l.path == p && l.outcome == "published")
            .and_then(|l| l.id.clone())
            .unwrap_or_else(|| panic!("{} not published: {lines:?}", p.display()))
    };
    let skipped: Vec<_> = lines.iter().filter(|l| l.outcome == "skipped").collect();
    assert_eq!(skipped.len(), 1, "{lines:?}");
    assert!(skipped[0].path.ends_with("cover.txt"));
    assert_eq!(lines.len(), 7, "{lines:?}");
    let mp3 = dir.path().join("library/Real Files/mp3.mp3");
    let opus = dir.path().join("library/Real Files/opus.opus");
    for (path, codec, mime) in [(&mp3, "mp3", "audio/mpeg"), (&opus, "opus", "audio/ogg")] {
        let m = lines
            .iter()
            .find(|l| &l.path == path)
            .unwrap()
            .meta
            .clone()
            .unwrap();
        assert_eq!(m["codec"], codec, "{m}");
        assert_eq!(m["mime"], mime, "{m}");
        assert_eq!(m["artist"], "Ffmpeg Quartet", "{m}");
        let d = m["duration_ms"].as_u64().unwrap();
        assert!((6_800..=7_200).contains(&d), "{path:?}: duration {d}");
    }

    // Tags were read, and the untagged file is titled by its name.
    let wav_line = lines.iter().find(|l| l.path == wav).unwrap();
    assert_eq!(wav_line.meta.as_ref().unwrap()["title"], "Morning Raga");
    assert_eq!(wav_line.meta.as_ref().unwrap()["codec"], "pcm");
    let ogg_line = lines.iter().find(|l| l.path == ogg).unwrap();
    let m = ogg_line.meta.as_ref().unwrap();
    assert_eq!(m["title"], "Harbour Lights");
    assert_eq!(m["codec"], "vorbis");
    assert_eq!(m["year"], 1999);
    let d = m["duration_ms"].as_u64().unwrap();
    assert!((6_900..=7_100).contains(&d), "duration {d}");

    // Search by artist and by genre finds each song.
    let ogg_id = id_of(&ogg);
    assert!(search(&net, &["--artist", "ffmpeg quartet"]).contains(&ogg_id));
    assert!(search(&net, &["--genre", "Chamber"]).contains(&ogg_id));
    assert!(search(&net, &["harbour", "--album", "Real Files"]).contains(&ogg_id));
    for s in &songs {
        let id = id_of(&s.path);
        assert!(search(&net, &["--artist", &s.song.artist]).contains(&id));
        assert!(search(&net, &["--genre", &s.song.genre]).contains(&id));
        let year = s.song.year.to_string();
        assert!(search(&net, &[&s.song.title, "--year", &year]).contains(&id));
    }

    // get is byte-identical, for every file.
    for path in songs
        .iter()
        .map(|s| s.path.clone())
        .chain([ogg.clone(), wav.clone()])
    {
        let out = dir.path().join("download");
        ok(net
            .medley("ap-south", false)
            .args(["get", &id_of(&path), "-o"])
            .arg(&out));
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&path).unwrap());
    }

    // play --out gives the PCM of decoding the source directly; for FLAC, also the PCM
    // that ffmpeg decodes (an independent decoder).
    let flac = &songs[0].path;
    let played = dir.path().join("played.wav");
    let outcome = play(&net, "eu-west", &id_of(flac), &played);
    let got = std::fs::read(&played).unwrap();
    assert_eq!(got, reference_wav(flac, dir.path()));
    let by_ffmpeg = ffmpeg(&["-i", flac.to_str().unwrap(), "-f", "s16le", "-"]);
    assert_eq!(
        &got[44..],
        &by_ffmpeg[..],
        "PCM differs from ffmpeg's decode"
    );
    assert!(outcome.time_to_first_audio_ms > 0.0);
    assert!(outcome.sources_used >= 4, "{outcome:?}");
    assert!(outcome.bad_sources.is_empty());

    // Without --out, play goes to the audio device. ALSA's file plugin in front of its null
    // device (from a private ~/.asoundrc) records what the device was given; a device with
    // no clock also receives silence whenever it outruns the decoder, so silent frames are
    // left out of the comparison.
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let raw = home.join("device.raw");
    std::fs::write(
        home.join(".asoundrc"),
        format!(
            "pcm.!default {{\n type file\n slave.pcm \"null\"\n file \"{}\"\n format \"raw\"\n}}\n",
            raw.display()
        ),
    )
    .unwrap();
    ok(net
        .medley("eu-west", false)
        .env("HOME", &home)
        .args(["play", &id_of(flac)]));
    let audible = |b: &[u8]| -> Vec<u8> {
        b.chunks_exact(4)
            .filter(|f| *f != [0, 0, 0, 0])
            .flatten()
            .copied()
            .collect()
    };
    let heard = audible(&std::fs::read(&raw).unwrap());
    assert!(!heard.is_empty());
    assert!(heard == audible(&by_ffmpeg), "the device got other samples");

    let outcome = play(&net, "us-east", &ogg_id, &played);
    assert_eq!(
        std::fs::read(&played).unwrap(),
        reference_wav(&ogg, dir.path())
    );
    assert_eq!(outcome.sample_rate, 44_100);
    assert_eq!(outcome.channels, 2);

    let outcome = play(&net, "ap-south", &id_of(&mp3), &played);
    assert_eq!(
        std::fs::read(&played).unwrap(),
        reference_wav(&mp3, dir.path())
    );
    assert!(outcome.frames > 44_100 * 6, "{outcome:?}");
    // Opus publishes and downloads, but this build has no Opus decoder: a clear error.
    let e = fails(
        net.medley("ap-south", false)
            .args(["play", &id_of(&opus), "--out"])
            .arg(&played),
    );
    assert!(e.contains("no decoder for this codec"), "{e}");

    // Play by query, to standard output.
    let out = ok(net
        .medley("ap-south", false)
        .args(["play", "harbour", "lights", "--out", "-"]));
    assert_eq!(out.stdout[44..], reference_wav(&ogg, dir.path())[44..]);

    // Publishing the folder again uploads nothing and changes nothing.
    let again = publish(&net, &dir.path().join("library"));
    assert!(
        again
            .iter()
            .filter(|l| l.outcome == "published")
            .all(|l| l.id.as_deref() == Some(&id_of(&l.path)))
    );
    let stats = net.tracker().unwrap().stats().await.unwrap();
    assert_eq!(stats.songs, 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_song_survives_two_dead_nodes() {
    let mut net = Testnet::builder().log("warn").spawn().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let songs = generate(&dir.path().join("lib"), 3, 5, 8.0, 12.0).unwrap();
    let lines = publish(&net, &dir.path().join("lib"));
    assert_eq!(lines.len(), 3);
    // One node in each of two regions dies at once, without warning.
    net.kill_node(1).unwrap();
    net.kill_node(5).unwrap();
    for (s, line) in songs.iter().zip(&lines) {
        let line_path = &line.path;
        let song = songs.iter().find(|x| &x.path == line_path).unwrap_or(s);
        let id = line.id.clone().unwrap();
        let out = dir.path().join("got");
        let started = Instant::now();
        assert_get_identical(&net, &id, &out, &song.path);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "get took {:?}",
            started.elapsed()
        );
        let wav = dir.path().join("p.wav");
        let outcome = play(&net, "us-east", &id, &wav);
        assert_eq!(
            std::fs::read(&wav).unwrap(),
            reference_wav(&song.path, dir.path())
        );
        assert!(
            outcome.sources_used <= 4,
            "only 4 nodes are alive: {outcome:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_clear_errors_never_wrong_audio() {
    // No scrubbing: the corrupt shard below must still be there when the plays ask for it,
    // not found and rebuilt by the node first.
    let mut net = Testnet::builder()
        .log("warn")
        .node_config("scrub_bytes_per_sec = 0")
        .spawn()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let songs = generate(&dir.path().join("lib"), 1, 9, 10.0, 10.0).unwrap();
    let song = &songs[0];
    let lines = publish(&net, &song.path);
    let id = lines[0].id.clone().unwrap();
    let out = dir.path().join("out.flac");

    // Unknown id, malformed id, a query that matches nothing, a file that is not audio.
    let unknown = "ab".repeat(32);
    let e = fails(
        net.medley("eu-west", false)
            .args(["get", &unknown, "-o"])
            .arg(&out),
    );
    assert!(e.contains("no song with id"), "{e}");
    assert!(!out.exists() && !dir.path().join("out.flac.part").exists());
    let e = fails(
        net.medley("eu-west", false)
            .args(["get", "xyz", "-o"])
            .arg(&out),
    );
    assert!(e.contains("is not a song id"), "{e}");
    let e = fails(
        net.medley("eu-west", false)
            .args(["play", "qqqzzz", "--out"])
            .arg(&out),
    );
    assert!(e.contains("no song matches"), "{e}");
    // No usable audio device and no --out: a clear error.
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join(".asoundrc"), "pcm.!default { type hw card 42 }\n").unwrap();
    let e = fails(
        net.medley("eu-west", false)
            .env("HOME", &home)
            .args(["play", &id]),
    );
    assert!(e.contains("no audio output device"), "{e}");
    assert!(e.contains("--out"), "{e}");
    let txt = dir.path().join("notes.txt");
    std::fs::write(&txt, "hello\n".repeat(100)).unwrap();
    let e = fails(net.medley("eu-west", true).arg("publish").arg(&txt));
    assert!(e.contains("not an audio file"), "{e}");

    // Corrupt every shard of the song that the holder of segment 0's first slot keeps.
    let tracker = TrackerClient::new(net.tracker_url()).unwrap();
    let song_id = id.parse().unwrap();
    let manifest = tracker.manifest(song_id).await.unwrap();
    let segs = manifest.body().segments.clone();
    let holders = medley_client::song_sources(&tracker, song_id, segs.len(), 6, None)
        .await
        .unwrap()
        .holders;
    let victim_peer = holders[0][0].as_ref().unwrap().peer.to_string();
    let victim = net
        .nodes()
        .iter()
        .position(|n| n.peer_id == victim_peer)
        .unwrap();
    net.stop_node(victim).unwrap();
    {
        let store = medley_node::Store::open(
            net.nodes()[victim].data_dir.join("db"),
            &medley_node::StoreConfig::default(),
        )
        .unwrap();
        let mut corrupted = 0;
        for (seg, row) in segs.iter().zip(&holders) {
            for (slot, h) in row.iter().enumerate() {
                if h.as_ref()
                    .is_some_and(|h| h.peer.to_string() == victim_peer)
                {
                    let key = seg.shards[slot].0;
                    let mut bytes = store.get(medley_node::Tier::Durable, key).unwrap().unwrap();
                    bytes[7] ^= 0x55;
                    store
                        .corrupt_for_test(medley_node::Tier::Durable, key, &bytes)
                        .unwrap();
                    corrupted += 1;
                }
            }
        }
        assert!(corrupted >= 1);
    }
    net.start_node(victim).unwrap();
    // Stopped with SIGTERM, the node told the tracker it was leaving; until it has registered
    // again, clients would ask it last and might never reach its corrupt shards.
    common::eventually(30, "the restarted node to be listed alive", || async {
        let nodes = tracker.nodes().await.ok()?;
        nodes
            .iter()
            .any(|n| n.node.peer_id == victim_peer && n.alive)
            .then_some(())
    })
    .await;
    let wav = dir.path().join("p.wav");
    let reference = reference_wav(&song.path, dir.path());
    // Every play is exact. The corrupt source is reported once its answer is in; a play
    // waits a moment for answers still in flight before its summary, and another play asks
    // again if that was not enough.
    let mut reported = None;
    for _ in 0..3 {
        let outcome = play(&net, "eu-west", &id, &wav);
        assert_eq!(std::fs::read(&wav).unwrap(), reference);
        if let Some(s) = outcome
            .sources
            .get(&victim_peer)
            .filter(|s| s.failures >= 1)
        {
            reported = Some(s.clone());
            break;
        }
    }
    let stats = reported.expect("the corrupt source is reported within three plays");
    // The node refuses the damaged bytes: reported as corrupt, or, once its scrubber or an
    // earlier request deleted them for repair to rebuild, as missing.
    let last = stats.last_error.as_deref().unwrap_or("");
    assert!(
        last.contains("corrupt") || last.contains("no shard"),
        "{stats:?}"
    );
    assert_get_identical(&net, &id, &out, &song.path);

    // Every slot holder down: a clear error, in bounded time, and no output left behind.
    for i in 0..net.nodes().len() {
        net.kill_node(i).unwrap();
    }
    let started = Instant::now();
    let e = fails(
        net.medley("eu-west", false)
            .args(["play", &id, "--out"])
            .arg(&wav),
    );
    assert!(e.contains("unavailable"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert!(!wav.exists(), "no partial audio is left");
    let e = fails(
        net.medley("eu-west", false)
            .args(["get", &id, "-o"])
            .arg(out.with_extension("2")),
    );
    assert!(e.contains("unavailable"), "{e}");
    assert!(!out.with_extension("2").exists());

    // Tracker down.
    net.kill_tracker();
    let e = fails(net.medley("eu-west", false).args(["search", "anything"]));
    assert!(e.contains("cannot reach the tracker"), "{e}");
}
