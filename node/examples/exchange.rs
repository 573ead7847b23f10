//! Two storage nodes exchanging the shards of a song over QUIC.
//!
//! Cuts an audio file (or a generated WAV tune) into 256 KiB segments, erasure-codes each
//! into 4+2 shards, stores even slots on node A and odd slots on node B, has node A fetch
//! the shards it lacks from node B, then rebuilds the file from A and B with two shards of
//! every segment missing, and checks it byte for byte.
//!
//! cargo run --release -p medley-node --example exchange -- [FILE] [--out rebuilt.wav]

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use medley_core::{
    Codec, DEFAULT_K, DEFAULT_M, DEFAULT_SEGMENT_SIZE, Segmenter, ShardId, TrackerKey,
};
use medley_node::{Node, NodeConfig};

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut input = None;
    let mut out = None;
    while let Some(a) = args.next() {
        if a == "--out" {
            out = Some(args.next().context("--out needs a file name")?);
        } else {
            input = Some(a);
        }
    }
    let (name, song) = match input {
        Some(path) => (
            path.clone(),
            std::fs::read(&path).with_context(|| format!("cannot read {path}"))?,
        ),
        None => ("generated tune (WAV, 12 s)".to_string(), tune_wav(12.0)),
    };
    println!("song: {name}, {} bytes", song.len());

    let dir = tempfile::tempdir()?;
    // No tracker here: this program plays its part and signs the grants uploads need.
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let tracker_key = TrackerKey::from_seed(seed);
    let start_node = |sub: &str| NodeConfig {
        data_dir: dir.path().join(sub),
        tracker_key: Some(tracker_key.id()),
        listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".into()],
        ..NodeConfig::default()
    };
    let a = Node::bind(start_node("a")).await?;
    let b = Node::bind(start_node("b")).await?;
    let (a_addrs, b_addrs) = (a.listen_addrs().await, b.listen_addrs().await);
    println!("node A {} at {}", a.peer_id(), a_addrs[0]);
    println!("node B {} at {}", b.peer_id(), b_addrs[0]);

    // Publish: even shard slots to A, odd ones to B (B's through the data plane, from A).
    let codec = Codec::new(DEFAULT_K, DEFAULT_M)?;
    let t = Instant::now();
    let mut segments = Vec::new();
    for seg in Segmenter::new(&song[..], DEFAULT_SEGMENT_SIZE) {
        let seg = seg?;
        let mut ids = Vec::new();
        for (slot, (id, shard)) in codec.encode_with_ids(&seg.bytes)?.into_iter().enumerate() {
            if slot % 2 == 0 {
                a.store().put(medley_node::Tier::Durable, id.0, &shard)?;
            } else {
                let grant = tracker_key.grant(
                    &b.peer_id().to_string(),
                    vec![id],
                    medley_core::unix_now() + 60,
                )?;
                a.peer()
                    .put_shard(b.peer_id(), b_addrs.clone(), shard, grant)
                    .await?;
            }
            ids.push(id);
        }
        segments.push((seg.id, seg.bytes.len(), ids));
    }
    println!(
        "stored {} segments x {} shards in {:?}",
        segments.len(),
        codec.total(),
        t.elapsed()
    );

    // Exchange: A fetches from B every shard it lacks, each checked against its id.
    let t = Instant::now();
    let mut moved = 0usize;
    for (_, _, ids) in &segments {
        for id in ids.iter().skip(1).step_by(2) {
            let shard = a
                .peer()
                .get_shard(b.peer_id(), b_addrs.clone(), *id)
                .await?;
            a.store().put(medley_node::Tier::Durable, id.0, &shard)?;
            moved += shard.len();
        }
    }
    println!(
        "node A fetched {moved} bytes of shards from node B in {:?}",
        t.elapsed()
    );

    // Rebuild with two shards of every segment missing, reading the rest from both nodes.
    let t = Instant::now();
    let mut rebuilt = Vec::with_capacity(song.len());
    for (i, (seg_id, len, ids)) in segments.iter().enumerate() {
        let lost = [i % codec.total(), (i + 3) % codec.total()];
        let mut slots: Vec<Option<Vec<u8>>> = Vec::new();
        for (slot, id) in ids.iter().enumerate() {
            if lost.contains(&slot) {
                slots.push(None);
                continue;
            }
            let (peer, addrs) = if slot % 2 == 0 {
                (a.peer_id(), &a_addrs)
            } else {
                (b.peer_id(), &b_addrs)
            };
            slots.push(Some(
                b.peer()
                    .get_shard(peer, addrs.clone(), *id)
                    .await
                    .or_else(|_| fetch_local(&a, *id))?,
            ));
        }
        rebuilt.extend(codec.reconstruct_verified(&slots, *len, *seg_id)?);
    }
    if rebuilt != song {
        bail!("rebuilt file differs from the original");
    }
    println!(
        "rebuilt {} bytes with 2 of 6 shards missing per segment in {:?}: identical",
        rebuilt.len(),
        t.elapsed()
    );
    if let Some(out) = out {
        std::fs::write(&out, &rebuilt).with_context(|| format!("cannot write {out}"))?;
        println!("wrote {out}");
    }
    a.shutdown(Duration::from_secs(5)).await?;
    b.shutdown(Duration::from_secs(5)).await?;
    Ok(())
}

fn fetch_local(node: &Node, id: ShardId) -> Result<Vec<u8>> {
    node.store()
        .get(medley_node::Tier::Durable, id.0)?
        .context("shard missing")
}

/// A short tune as 16-bit mono 44.1 kHz PCM WAV: a few notes with a soft envelope.
fn tune_wav(seconds: f32) -> Vec<u8> {
    const RATE: u32 = 44_100;
    let notes = [261.63f32, 329.63, 392.00, 523.25, 392.00, 329.63];
    let n = (seconds * RATE as f32) as usize;
    let mut pcm = Vec::with_capacity(n * 2);
    for i in 0..n {
        let t = i as f32 / RATE as f32;
        let note = notes[(t * 2.0) as usize % notes.len()];
        let phase = (t * 2.0).fract();
        let env = (phase * 20.0).min(1.0) * (1.0 - phase).powf(0.5);
        let s = (2.0 * std::f32::consts::PI * note * t).sin() * 0.6
            + (4.0 * std::f32::consts::PI * note * t).sin() * 0.2;
        pcm.extend_from_slice(&((s * env * 0.8 * i16::MAX as f32) as i16).to_le_bytes());
    }
    let mut wav = Vec::with_capacity(44 + pcm.len());
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + pcm.len() as u32).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&RATE.to_le_bytes());
    wav.extend_from_slice(&(RATE * 2).to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(pcm.len() as u32).to_le_bytes());
    wav.extend_from_slice(&pcm);
    wav
}
