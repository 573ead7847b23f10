//! Link emulation in user space, for kernels without `sch_netem`: a delay line on a
//! netfilter queue.
//!
//! One `iptables` rule sends every loopback packet between two region addresses
//! (`127.77.<region>.1`) to queue [`QUEUE_NUM`]; this process holds each one for its link's
//! delay (plus jitter), passes it through the link's bandwidth (a packet waits for the ones
//! before it on the same link, as on a real bottleneck), drops it with the link's loss
//! probability or when its region is cut off, and then lets the kernel deliver it. Packets
//! cross `lo` once, so a one-way `latency_ms` of `d` gives a round trip of `2d`, as with netem.
//! The rule is put with `--queue-bypass`: were this process to die, packets would flow
//! unshaped rather than stop.
//!
//! Needs root (or the network namespace's own root), `iptables-legacy` and a kernel with
//! `NETFILTER_XT_TARGET_NFQUEUE`. The kernel keeps up to 65,536 packets waiting;
//! each packet costs one round trip through this process (see BENCHMARKS.md for cores per
//! packets per second).

use std::collections::{BinaryHeap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::{RngExt, SeedableRng};

use crate::scenario::Link;
use crate::shaping::ShapingError;

/// The netfilter queue the delay line reads.
pub const QUEUE_NUM: u16 = 7707;
/// Packets the kernel keeps waiting for this process at most.
const QUEUE_LEN: u32 = 65_536;
/// Bytes of each packet copied to this process: its IPv4 header is enough.
const COPY_BYTES: u16 = 40;
/// Longest a packet waits for its link's bandwidth before it is dropped (a full buffer).
const MAX_QUEUEING: Duration = Duration::from_millis(500);
/// Longest the delay line sleeps between looking for new packets.
const POLL: Duration = Duration::from_micros(200);
/// The addresses queued: every region's.
const REGIONS_NET: &str = "127.77.0.0/16";

/// The rule that sends region traffic to the queue, as `iptables` arguments after the verb.
fn rule() -> Vec<&'static str> {
    vec![
        "OUTPUT",
        "-o",
        "lo",
        "-s",
        REGIONS_NET,
        "-d",
        REGIONS_NET,
        "-j",
        "NFQUEUE",
        "--queue-num",
        "7707",
        "--queue-bypass",
    ]
}

fn iptables(verb: &str) -> Result<(), ShapingError> {
    let mut args = vec!["-w", verb];
    args.extend(rule());
    crate::shaping::run("iptables-legacy", &args)
}

/// Checks that a delay line can run here: root, `iptables-legacy`, the NFQUEUE target and
/// a netfilter queue this process can bind.
pub fn probe() -> Result<(), ShapingError> {
    crate::shaping::require_root()?;
    let mut q = nfq::Queue::open().map_err(|e| {
        ShapingError::Unavailable(format!("cannot open a netfilter queue socket: {e}"))
    })?;
    q.bind(QUEUE_NUM).map_err(|e| {
        ShapingError::Unavailable(format!("cannot bind netfilter queue {QUEUE_NUM}: {e}"))
    })?;
    let _ = q.unbind(QUEUE_NUM);
    // The target: a rule that is added and removed at once.
    let _ = iptables("-D");
    iptables("-I").map_err(|e| {
        ShapingError::Unavailable(format!("cannot queue packets with iptables-legacy: {e}"))
    })?;
    iptables("-D")
}

/// What the delay line counted.
#[derive(Debug, Default)]
pub struct Counters {
    /// Packets passed on.
    pub passed: AtomicU64,
    /// Packets dropped: lost, cut off or over a full link.
    pub dropped: AtomicU64,
}

/// A held packet: due time, arrival order, the message to pass.
struct Held(Instant, u64, nfq::Message);

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.0, self.1) == (other.0, other.1)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    /// Reversed: the heap's top is the packet due first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.0, other.1).cmp(&(self.0, self.1))
    }
}

/// The links between `n` regions: `links[a * n + b]` from region `a` to region `b`.
#[derive(Debug, Clone)]
struct Table {
    n: usize,
    links: Vec<Link>,
}

/// The delay line.
#[derive(Debug)]
pub struct DelayLine {
    stop: Arc<AtomicBool>,
    cut: Arc<Mutex<HashSet<usize>>>,
    counters: Arc<Counters>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DelayLine {
    /// Starts a delay line for `n` regions with `links[a * n + b]` from region `a` to `b`,
    /// jitter and loss drawn from `seed`.
    pub fn start(n: usize, links: Vec<Link>, seed: u64) -> Result<Self, ShapingError> {
        if links.len() != n * n {
            return Err(ShapingError::Unavailable(
                "one link per ordered pair of regions".into(),
            ));
        }
        let unavailable = |what: &str| {
            let what = what.to_string();
            move |e: std::io::Error| ShapingError::Unavailable(format!("{what}: {e}"))
        };
        let mut q = nfq::Queue::open().map_err(unavailable("cannot open a netfilter queue"))?;
        q.bind(QUEUE_NUM)
            .map_err(unavailable("cannot bind the netfilter queue"))?;
        q.set_copy_range(QUEUE_NUM, COPY_BYTES)
            .map_err(unavailable("cannot set the copy range"))?;
        q.set_queue_max_len(QUEUE_NUM, QUEUE_LEN)
            .map_err(unavailable("cannot set the queue length"))?;
        q.set_nonblocking(true);
        // A rule left by a run that died is replaced.
        let _ = iptables("-D");
        iptables("-I")?;
        let stop = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(Mutex::new(HashSet::new()));
        let counters = Arc::new(Counters::default());
        let table = Table { n, links };
        let (s, c, k) = (stop.clone(), cut.clone(), counters.clone());
        let thread = std::thread::Builder::new()
            .name("medley-delay-line".into())
            .spawn(move || run(q, table, seed, &s, &c, &k))
            .map_err(|e| ShapingError::Unavailable(format!("cannot start the delay line: {e}")))?;
        Ok(Self {
            stop,
            cut,
            counters,
            thread: Some(thread),
        })
    }

    /// Cuts region `i` off from the others (`cut`), or joins it again.
    pub fn cut(&self, i: usize, cut: bool) {
        let mut c = self.cut.lock();
        if cut {
            c.insert(i);
        } else {
            c.remove(&i);
        }
    }

    /// What it counted so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Removes the rule and passes every held packet on.
    pub fn stop(&mut self) {
        let _ = iptables("-D");
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The region index of a region address (`127.77.<i>.x`).
fn region_of(ip: &[u8]) -> Option<usize> {
    (ip.len() == 4 && ip[0] == 127 && ip[1] == 77).then_some(ip[2] as usize)
}

/// The delay line's loop: takes new packets, schedules them on their links, passes those
/// that are due.
fn run(
    mut q: nfq::Queue,
    table: Table,
    seed: u64,
    stop: &AtomicBool,
    cut: &Mutex<HashSet<usize>>,
    counters: &Counters,
) {
    let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
    let mut held: BinaryHeap<Held> = BinaryHeap::new();
    // When each link is free again: the bandwidth's queue.
    let mut free_at: Vec<Instant> = vec![Instant::now(); table.n * table.n];
    let mut order = 0u64;
    let pass = |q: &mut nfq::Queue, mut msg: nfq::Message, verdict: nfq::Verdict| {
        msg.set_verdict(verdict);
        let counter = if verdict == nfq::Verdict::Accept {
            &counters.passed
        } else {
            &counters.dropped
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = q.verdict(msg) {
            tracing::debug!(error = %e, "delay line: cannot pass a packet");
        }
    };
    while !stop.load(Ordering::SeqCst) {
        // Take every packet waiting.
        loop {
            let msg = match q.recv() {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::warn!(error = %e, "delay line: cannot read the queue");
                    break;
                }
            };
            let now = Instant::now();
            let payload = msg.get_payload();
            let pair = (payload.len() >= 20 && payload[0] >> 4 == 4)
                .then(|| (region_of(&payload[12..16]), region_of(&payload[16..20])));
            let Some((Some(a), Some(b))) = pair else {
                pass(&mut q, msg, nfq::Verdict::Accept);
                continue;
            };
            if a >= table.n || b >= table.n {
                pass(&mut q, msg, nfq::Verdict::Accept);
                continue;
            }
            let link = table.links[a * table.n + b];
            let cut_off = a != b && {
                let c = cut.lock();
                c.contains(&a) || c.contains(&b)
            };
            if cut_off || (link.loss_pct > 0.0 && rng.random::<f64>() * 100.0 < link.loss_pct) {
                pass(&mut q, msg, nfq::Verdict::Drop);
                continue;
            }
            // The link's bandwidth: the packet leaves after the ones before it.
            let slot = &mut free_at[a * table.n + b];
            let start = (*slot).max(now);
            if link.bandwidth_mbit > 0.0 {
                if start.duration_since(now) > MAX_QUEUEING {
                    pass(&mut q, msg, nfq::Verdict::Drop);
                    continue;
                }
                let bits = msg.get_original_len() as f64 * 8.0;
                *slot = start + Duration::from_secs_f64(bits / (link.bandwidth_mbit * 1e6));
            }
            let jitter = if link.jitter_ms > 0.0 {
                rng.random_range(-link.jitter_ms..=link.jitter_ms)
            } else {
                0.0
            };
            let delay_ms = (link.latency_ms + jitter).max(0.0);
            let due = (*slot).max(now) + Duration::from_secs_f64(delay_ms / 1000.0);
            order += 1;
            held.push(Held(due, order, msg));
        }
        // Pass every packet that is due.
        let now = Instant::now();
        while held.peek().is_some_and(|h| h.0 <= now) {
            if let Some(Held(_, _, msg)) = held.pop() {
                pass(&mut q, msg, nfq::Verdict::Accept);
            }
        }
        let wait = held
            .peek()
            .map_or(POLL, |h| h.0.saturating_duration_since(now).min(POLL));
        std::thread::sleep(wait);
    }
    // Stopping: nothing stays held.
    while let Some(Held(_, _, msg)) = held.pop() {
        pass(&mut q, msg, nfq::Verdict::Accept);
    }
    let _ = q.unbind(QUEUE_NUM);
}
