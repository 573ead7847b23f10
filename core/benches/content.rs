//! Content-model benchmarks: BLAKE3, and Reed-Solomon encode/rebuild with both candidate
//! crates, at 64 KiB shards (4+2, 10+4) and at Medley's 256 KiB segments.
//!
//! `cargo bench -p medley-core --bench content` measures Medley's codec (`reed-solomon-erasure`
//! with its C SIMD kernels) against `reed-solomon-simd`; add `--no-default-features` to
//! measure `reed-solomon-erasure` in pure Rust instead.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use medley_core::{Codec, Hash};
use std::hint::black_box;

const SHARD: usize = 64 * 1024;

fn data(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761) as u8 ^ (i >> 9) as u8)
        .collect()
}

fn codec_name() -> &'static str {
    if cfg!(feature = "simd") {
        "rse-simd-accel"
    } else {
        "rse-pure-rust"
    }
}

/// The `k` zero-padded data shards of `seg`, as `Codec::encode` lays them out.
fn split_padded(seg: &[u8], k: usize, shard_len: usize) -> Vec<Vec<u8>> {
    (0..k)
        .map(|i| {
            let mut s = vec![0u8; shard_len];
            let start = (i * shard_len).min(seg.len());
            let end = ((i + 1) * shard_len).min(seg.len());
            s[..end - start].copy_from_slice(&seg[start..end]);
            s
        })
        .collect()
}

fn hashing(c: &mut Criterion) {
    let mut g = c.benchmark_group("blake3");
    for len in [64 * 1024, 256 * 1024] {
        let d = data(len);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::from_parameter(len), &d, |b, d| {
            b.iter(|| Hash::of(black_box(d)))
        });
    }
    g.finish();
}

/// (label, k, m, segment length)
fn cases() -> [(&'static str, u8, u8, usize); 4] {
    [
        ("4+2/64KiB-shards", 4, 2, 4 * SHARD),
        ("10+4/64KiB-shards", 10, 4, 10 * SHARD),
        ("4+2/256KiB-segment", 4, 2, 256 * 1024),
        ("10+4/256KiB-segment", 10, 4, 256 * 1024),
    ]
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    for (label, k, m, len) in cases() {
        let seg = data(len);
        g.throughput(Throughput::Bytes(len as u64));
        let codec = Codec::new(k, m).unwrap();
        g.bench_function(BenchmarkId::new(codec_name(), label), |b| {
            b.iter(|| codec.encode(black_box(&seg)).unwrap())
        });

        let (k, m) = (usize::from(k), usize::from(m));
        let shard_len = codec.shard_len(len);
        g.bench_function(BenchmarkId::new("rs-simd", label), |b| {
            b.iter(|| {
                // Same work as Codec::encode: split, pad, encode, collect k + m shards.
                let mut shards = split_padded(&seg, k, shard_len);
                let parity = reed_solomon_simd::encode(k, m, &shards).unwrap();
                shards.extend(parity);
                shards
            })
        });
    }
    g.finish();
}

fn rebuild(c: &mut Criterion) {
    let mut g = c.benchmark_group("rebuild");
    for (label, k, m, len) in cases() {
        let seg = data(len);
        g.throughput(Throughput::Bytes(len as u64));
        let codec = Codec::new(k, m).unwrap();
        let shards = codec.encode(&seg).unwrap();
        // Lose the first m data shards: the worst case, m shards to recompute.
        let slots: Vec<Option<&Vec<u8>>> = shards
            .iter()
            .enumerate()
            .map(|(i, s)| (i >= usize::from(m)).then_some(s))
            .collect();
        g.bench_function(BenchmarkId::new(codec_name(), label), |b| {
            b.iter(|| codec.reconstruct(black_box(&slots), len).unwrap())
        });

        let (k, m) = (usize::from(k), usize::from(m));
        let shard_len = codec.shard_len(len);
        let originals = split_padded(&seg, k, shard_len);
        let recovery = reed_solomon_simd::encode(k, m, &originals).unwrap();
        g.bench_function(BenchmarkId::new("rs-simd", label), |b| {
            b.iter(|| {
                let restored = reed_solomon_simd::decode(
                    k,
                    m,
                    originals.iter().enumerate().skip(m),
                    recovery.iter().enumerate(),
                )
                .unwrap();
                let mut out = Vec::with_capacity(len);
                for i in 0..k {
                    out.extend_from_slice(restored.get(&i).unwrap_or(&originals[i]));
                }
                out.truncate(len);
                out
            })
        });
    }
    g.finish();
}

criterion_group!(benches, hashing, encode, rebuild);
criterion_main!(benches);
