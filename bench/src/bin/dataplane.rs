//! Data-plane throughput: fetch `--total` bytes of 256 KiB segments from one Medley node on
//! loopback, with 1 and with 16 requests in flight, and compare with raw quinn moving the
//! same segments over loopback in the same run.
//!
//! Medley's path: a `medley-node` (RocksDB hot tier on disk, libp2p over QUIC, streams
//! kept across requests, postcard framing) serves `GetSegment`; the client checks each
//! segment's BLAKE3 on receipt. The node serves from its hot cache, segments held in memory
//! as they were when read from disk and checked (by default it holds all `--distinct`
//! segments, as a node holds a popular song); with `--hot-cache 0` every fetch reads the
//! disk and checks what it read. The baseline: a quinn server holding the same segments in
//! memory answers a 32-byte id on a bidirectional stream with the
//! bytes, no hashing. Both use the same QUIC windows (libp2p-quic's: 10 MB per stream,
//! 15 MB per connection) and the same crypto provider (aws-lc-rs).
//!
//! Two quinn baselines run: stock (TLS 1.3 negotiates AES-128-GCM, AES-NI) and one that
//! offers upstream libp2p-tls's cipher order, so it negotiates ChaCha20-Poly1305 as stock
//! libp2p does. The first is the bar; Medley's patched libp2p-tls (`third_party/`) offers
//! AES-128-GCM first too. The second shows what upstream's order would cost.
//!
//! Each row also gives the CPU cores the process kept busy (client and server together),
//! and before the table: the node's read of one segment with its BLAKE3 check, BLAKE3 alone,
//! and the round trip of a request answered without a blob, against quinn's.
//!
//! cargo run --release -p medley-bench --bin dataplane -- --total 1GiB

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use futures::StreamExt;
use medley_bench::{median, mib_per_s, pseudo_random};
use medley_core::SegmentId;
use medley_net::Peer;
use medley_node::{Node, NodeConfig, Tier};

#[derive(Parser)]
struct Args {
    /// Bytes to fetch per measurement.
    #[arg(long, default_value = "1GiB")]
    total: bytesize::ByteSize,
    /// Distinct segments stored (fetched round-robin until `total` is reached).
    #[arg(long, default_value_t = 512)]
    distinct: usize,
    /// Segment size.
    #[arg(long, default_value_t = 256 * 1024)]
    segment: usize,
    /// Repetitions of each measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Requests in flight to measure, e.g. `--in-flight 1,16`.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 16])]
    in_flight: Vec<usize>,
    /// Memory the node keeps checked hot segments in. The default, the node's, holds the
    /// `--distinct` segments, as a node holds a popular song's; 0 makes every fetch read the
    /// disk and check what it read.
    #[arg(long)]
    hot_cache: Option<bytesize::ByteSize>,
    /// Measure Medley only, without the quinn baselines (for profiling).
    #[arg(long)]
    medley_only: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let segments: Vec<Vec<u8>> = (0..args.distinct)
        .map(|i| pseudo_random(i as u64 + 1, args.segment))
        .collect();
    let ids: Vec<SegmentId> = segments.iter().map(|s| SegmentId::of(s)).collect();
    let fetches = (args.total.as_u64() as usize).div_ceil(args.segment);
    let total_bytes = (fetches * args.segment) as u64;

    // Medley node with the segments in its hot tier.
    let dir = tempfile::tempdir()?;
    let node = Node::bind(NodeConfig {
        data_dir: dir.path().to_path_buf(),
        listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".into()],
        capacity: bytesize::ByteSize::gib(64),
        // One client moves everything: measure the data plane, not the per-peer cap.
        peer_bytes_per_sec: bytesize::ByteSize::b(0),
        hot_cache: args.hot_cache.unwrap_or(NodeConfig::default().hot_cache),
        ..NodeConfig::default()
    })
    .await?;
    for (id, s) in ids.iter().zip(&segments) {
        node.store().put(Tier::Hot, id.0, s)?;
    }
    // What each fetch must do besides moving bytes, measured alone: the node's read, first
    // from RocksDB, then again (from the hot cache when it is on).
    let read_all = || -> Result<Duration> {
        let t = Instant::now();
        for id in &ids {
            node.store().get(Tier::Hot, id.0)?;
        }
        Ok(t.elapsed() / ids.len() as u32)
    };
    let (node_read, node_read_again) = (read_all()?, read_all()?);
    let t = Instant::now();
    for s in &segments {
        std::hint::black_box(SegmentId::of(s));
    }
    let hash = t.elapsed() / ids.len() as u32;
    let node_id = node.peer_id();
    let node_addrs = node.listen_addrs().await;
    let client = Peer::dial_only().await?;
    // Raw quinn server with the same segments in memory.
    let table: Arc<HashMap<[u8; 32], Vec<u8>>> = Arc::new(
        ids.iter()
            .zip(&segments)
            .map(|(id, s)| (*id.as_bytes(), s.clone()))
            .collect(),
    );
    let (_, quinn_aes) = raw_quinn(table.clone(), false).await?;
    let (_, quinn_chacha) = raw_quinn(table, true).await?;
    // A request with no blob in its answer (an unknown id): the fixed cost of a fetch.
    let missing = SegmentId::of(b"not stored");
    let medley_empty = round_trip("the node", || {
        let (client, addrs) = (client.clone(), node_addrs.clone());
        async move { Ok(client.get_segment(node_id, addrs, missing).await.is_ok()) }
    })
    .await?;
    // The same through a peer that answers at once, without a store: the data plane alone.
    let bare = Peer::spawn(
        medley_net::Keypair::generate_ed25519(),
        medley_net::PeerConfig {
            listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse()?],
            ..Default::default()
        },
        Arc::new(medley_net::NoService),
        Default::default(),
    )
    .await?;
    let (bare_id, bare_addrs) = (bare.peer_id(), bare.listen_addrs().await);
    let bare_empty = round_trip("a peer that serves nothing", || {
        let (client, addrs) = (client.clone(), bare_addrs.clone());
        async move { Ok(client.has(bare_id, addrs, vec![]).await.is_ok()) }
    })
    .await?;
    bare.shutdown(Duration::from_secs(1)).await;
    let quinn_empty = round_trip("quinn", || {
        let conn = quinn_aes.clone();
        async move { Ok(fetch_quinn(&conn, missing).await? != 0) }
    })
    .await?;
    println!(
        "per {} B segment: node read from RocksDB with its BLAKE3 check {node_read:.1?}, read again {node_read_again:.1?}, BLAKE3 alone {hash:.1?}",
        args.segment
    );
    println!(
        "round trip of a request answered without a blob: medley {medley_empty:.1?} (a peer without a store: {bare_empty:.1?}), quinn AES {quinn_empty:.1?}"
    );
    println!(
        "fetching {} ({} x {} B segments, {} distinct) per run, median of {}",
        args.total, fetches, args.segment, args.distinct, args.reps
    );
    println!(
        "{:>9} | {:>12} | {:>12} | {:>15} | {:>15} | {:>18} | {:>8} | {:>10}",
        "in flight",
        "medley MiB/s",
        "medley cores",
        "quinn AES MiB/s",
        "quinn AES cores",
        "quinn ChaCha MiB/s",
        "vs AES",
        "vs ChaCha"
    );
    for &in_flight in &args.in_flight {
        let (mut m, mut qa, mut qc) = (Vec::new(), Vec::new(), Vec::new());
        let (mut m_cores, mut qa_cores) = (Vec::new(), Vec::new());
        for _ in 0..args.reps {
            // Interleaved in rounds of a sixteenth of the bytes each, so that all three see
            // the same machine load even when it changes within a run.
            let mut spent = [Spent::default(); 3];
            let per_round = fetches.div_ceil(ROUNDS);
            for start in (0..fetches).step_by(per_round) {
                let range = start..(start + per_round).min(fetches);
                spent[0] += Spent::of(medley_run(
                    &client,
                    node_id,
                    &node_addrs,
                    &ids,
                    range.clone(),
                    in_flight,
                ))
                .await;
                if !args.medley_only {
                    spent[1] +=
                        Spent::of(quinn_run(&quinn_aes, &ids, range.clone(), in_flight)).await;
                    spent[2] += Spent::of(quinn_run(&quinn_chacha, &ids, range, in_flight)).await;
                }
            }
            m.push(spent[0].mib_per_s(total_bytes));
            m_cores.push(spent[0].cores());
            qa.push(spent[1].mib_per_s(total_bytes));
            qa_cores.push(spent[1].cores());
            qc.push(spent[2].mib_per_s(total_bytes));
        }
        let (m, m_cores) = (median(&mut m), median(&mut m_cores));
        if args.medley_only {
            println!("{in_flight:>9} | {m:>12.1} | {m_cores:>12.2} |");
            continue;
        }
        let (qa, qc, qa_cores) = (median(&mut qa), median(&mut qc), median(&mut qa_cores));
        println!(
            "{in_flight:>9} | {m:>12.1} | {m_cores:>12.2} | {qa:>15.1} | {qa_cores:>15.2} | {qc:>18.1} | {:>7.2}x | {:>9.2}x",
            m / qa,
            m / qc
        );
    }
    node.shutdown(Duration::from_secs(5)).await?;
    Ok(())
}

/// The mean time of a request that must be refused, over 2,000 after one to connect: `ask`
/// makes one and tells whether it was (wrongly) answered.
async fn round_trip<F: std::future::Future<Output = Result<bool>>>(
    what: &str,
    mut ask: impl FnMut() -> F,
) -> Result<Duration> {
    const ROUNDS: u32 = 2000;
    ask().await?;
    let t = Instant::now();
    for _ in 0..ROUNDS {
        if ask().await? {
            anyhow::bail!("{what} answered a request it should have refused");
        }
    }
    Ok(t.elapsed() / ROUNDS)
}

/// Rounds each measurement is split into, interleaved with the others'.
const ROUNDS: usize = 16;

/// Wall time and CPU time spent on a measurement, added up over its rounds.
#[derive(Debug, Default, Clone, Copy)]
struct Spent {
    wall: Duration,
    /// CPU seconds of this process (client and server together: both live in it).
    cpu: f64,
}

impl Spent {
    async fn of(work: impl std::future::Future<Output = ()>) -> Self {
        let cpu = medley_testnet::run::self_usage().0;
        let start = Instant::now();
        work.await;
        Self {
            wall: start.elapsed(),
            cpu: medley_testnet::run::self_usage().0 - cpu,
        }
    }

    fn mib_per_s(&self, bytes: u64) -> f64 {
        mib_per_s(bytes, self.wall)
    }

    /// The CPU cores kept busy meanwhile.
    fn cores(&self) -> f64 {
        self.cpu / self.wall.as_secs_f64()
    }
}

impl std::ops::AddAssign for Spent {
    fn add_assign(&mut self, other: Self) {
        self.wall += other.wall;
        self.cpu += other.cpu;
    }
}

async fn medley_run(
    client: &medley_net::PeerHandle,
    node: medley_net::PeerId,
    addrs: &[medley_net::Multiaddr],
    ids: &[SegmentId],
    fetches: std::ops::Range<usize>,
    in_flight: usize,
) {
    futures::stream::iter(fetches)
        .map(|i| {
            let (client, addrs, id) = (client.clone(), addrs.to_vec(), ids[i % ids.len()]);
            async move { client.get_segment(node, addrs, id).await }
        })
        .buffer_unordered(in_flight)
        .for_each(|r| async move {
            if let Err(e) = r {
                panic!("medley fetch failed: {e}");
            }
        })
        .await;
}

async fn quinn_run(
    conn: &quinn::Connection,
    ids: &[SegmentId],
    fetches: std::ops::Range<usize>,
    in_flight: usize,
) {
    futures::stream::iter(fetches)
        .map(|i| {
            let conn = conn.clone();
            let id = ids[i % ids.len()];
            async move { fetch_quinn(&conn, id).await }
        })
        .buffer_unordered(in_flight)
        .for_each(|r| async move {
            match r {
                Ok(n) => assert!(n > 0),
                Err(e) => panic!("quinn fetch failed: {e:#}"),
            }
        })
        .await;
}

/// aws-lc-rs with TLS 1.3 suites in upstream libp2p-tls's order (ChaCha20 first) or rustls's default
/// order (AES-GCM first).
fn provider(chacha_first: bool) -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::aws_lc_rs::cipher_suite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.cipher_suites = if chacha_first {
        vec![
            TLS13_CHACHA20_POLY1305_SHA256,
            TLS13_AES_256_GCM_SHA384,
            TLS13_AES_128_GCM_SHA256,
        ]
    } else {
        vec![
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
            TLS13_CHACHA20_POLY1305_SHA256,
        ]
    };
    Arc::new(p)
}

fn transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.stream_receive_window(10_000_000u32.into());
    t.receive_window(15_000_000u32.into());
    t.max_concurrent_bidi_streams(256u32.into());
    t
}

async fn raw_quinn(
    table: Arc<HashMap<[u8; 32], Vec<u8>>>,
    chacha_first: bool,
) -> Result<(std::net::SocketAddr, quinn::Connection)> {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
    let cert_der = rustls::pki_types::CertificateDer::from(cert.cert.der().to_vec());
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der());
    let tls = rustls::ServerConfig::builder_with_provider(provider(chacha_first))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key.into())?;
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(tls)?,
    ));
    server_config.transport_config(Arc::new(transport()));
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server_config),
        loopback_socket()?,
        Arc::new(quinn::TokioRuntime),
    )?;
    let addr = endpoint.local_addr()?;
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let table = table.clone();
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let table = table.clone();
                    tokio::spawn(async move {
                        let mut id = [0u8; 32];
                        if recv.read_exact(&mut id).await.is_err() {
                            return;
                        }
                        if let Some(bytes) = table.get(&id) {
                            let _ = send.write_all(bytes).await;
                        }
                        let _ = send.finish();
                        let _ = send.stopped().await;
                    });
                }
            });
        }
    });

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der)?;
    let tls = rustls::ClientConfig::builder_with_provider(provider(chacha_first))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut client_config = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls)?,
    ));
    client_config.transport_config(Arc::new(transport()));
    let mut client = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        loopback_socket()?,
        Arc::new(quinn::TokioRuntime),
    )?;
    client.set_default_client_config(client_config);
    let conn = client
        .connect(addr, "localhost")?
        .await
        .context("quinn connect")?;
    Ok((addr, conn))
}

async fn fetch_quinn(conn: &quinn::Connection, id: SegmentId) -> Result<usize> {
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(id.as_bytes()).await?;
    send.finish()?;
    let bytes = recv.read_to_end(16 * 1024 * 1024).await?;
    Ok(bytes.len())
}

/// A UDP socket on loopback with the buffers Medley's transport asks for (8 MiB each way,
/// as far as the kernel grants), so that the raw quinn baseline runs on the same sockets.
fn loopback_socket() -> anyhow::Result<std::net::UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    socket.set_recv_buffer_size(8 << 20)?;
    socket.set_send_buffer_size(8 << 20)?;
    let addr: std::net::SocketAddr = "127.0.0.1:0".parse()?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}
