//! Link emulation in user space, for kernels without `sch_netem`: a delay line on a
//! netfilter queue.
//!
//! One `iptables` rule sends every loopback packet between two region addresses
//! (`127.77.<region>.1`) to queue [`QUEUE_NUM`]; this process holds each one for its link's
//! delay (plus jitter), passes it through the link's bandwidth (a packet waits for the ones
//! before it on the same link, as on a real bottleneck), drops it with the link's loss
//! probability or when its region is cut off, and then lets the kernel deliver it. Packets
//! cross `lo` once, so a one-way `latency_ms` of `d` gives a round trip of `2d`, as with netem.
//! Jitter varies the delay but never reorders a link's packets (a packet never leaves before
//! one sent earlier on its link, as through a real router's queue): independent jitter per
//! packet, netem's default, reorders packets by milliseconds, which QUIC and TCP take for
//! loss, and turned a 90 ms round trip into a second-long first fetch.
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

/// When packets leave each link.
struct LinkClocks {
    /// When each link is free again: the bandwidth's queue.
    free_at: Vec<Instant>,
    /// When each link's last packet leaves: none leaves before it (no reordering).
    last_due: Vec<Instant>,
}

impl LinkClocks {
    fn new(links: usize) -> Self {
        let now = Instant::now();
        Self {
            free_at: vec![now; links],
            last_due: vec![now; links],
        }
    }

    /// When a packet of `bytes` sent `now` on link `i` (`link`'s settings, `jitter_ms`
    /// drawn for it) is delivered: after the packets before it went through the link's
    /// bandwidth, its delay plus jitter later, and never before a packet sent earlier on
    /// the link. `None`: dropped, the link's queue is full.
    fn schedule(
        &mut self,
        i: usize,
        link: &Link,
        bytes: u64,
        jitter_ms: f64,
        now: Instant,
    ) -> Option<Instant> {
        let slot = &mut self.free_at[i];
        let start = (*slot).max(now);
        if link.bandwidth_mbit > 0.0 {
            if start.duration_since(now) > MAX_QUEUEING {
                return None;
            }
            let bits = bytes as f64 * 8.0;
            *slot = start + Duration::from_secs_f64(bits / (link.bandwidth_mbit * 1e6));
        }
        let delay_ms = (link.latency_ms + jitter_ms).max(0.0);
        let due =
            ((*slot).max(now) + Duration::from_secs_f64(delay_ms / 1000.0)).max(self.last_due[i]);
        self.last_due[i] = due;
        Some(due)
    }
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
    let mut clocks = LinkClocks::new(table.n * table.n);
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
            let jitter = if link.jitter_ms > 0.0 {
                rng.random_range(-link.jitter_ms..=link.jitter_ms)
            } else {
                0.0
            };
            let bytes = msg.get_original_len() as u64;
            let Some(due) = clocks.schedule(a * table.n + b, &link, bytes, jitter, now) else {
                pass(&mut q, msg, nfq::Verdict::Drop);
                continue;
            };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_varies_the_delay_but_never_reorders_a_link() {
        let link = Link {
            latency_ms: 45.0,
            jitter_ms: 5.0,
            ..Link::default()
        };
        let mut clocks = LinkClocks::new(2);
        let t0 = Instant::now();
        let mut rng = rand_pcg::Pcg64::seed_from_u64(1);
        let mut last = t0;
        let mut delays = Vec::new();
        for n in 0..1000u32 {
            // A packet every 10 µs: far closer than the jitter.
            let now = t0 + Duration::from_micros(u64::from(n) * 10);
            let jitter = rng.random_range(-5.0..=5.0);
            let due = clocks.schedule(0, &link, 1200, jitter, now).unwrap();
            assert!(due >= last, "packet {n} would overtake the one before it");
            last = due;
            delays.push(due.duration_since(now).as_secs_f64() * 1000.0);
        }
        assert!(
            delays.iter().all(|&d| (40.0..=50.0).contains(&d)),
            "{delays:?}"
        );
        // The other link is not held up by this one.
        let due = clocks.schedule(1, &link, 1200, -5.0, t0).unwrap();
        assert!((due.duration_since(t0).as_secs_f64() * 1000.0 - 40.0).abs() < 1e-6);
    }

    #[test]
    fn a_full_link_drops_and_a_free_one_serialises_at_its_rate() {
        let link = Link {
            bandwidth_mbit: 8.0,
            ..Link::default()
        };
        let mut clocks = LinkClocks::new(1);
        let t0 = Instant::now();
        // 1,000 bytes at 8 Mbit/s: 1 ms each.
        let first = clocks.schedule(0, &link, 1000, 0.0, t0).unwrap();
        let second = clocks.schedule(0, &link, 1000, 0.0, t0).unwrap();
        assert_eq!(second.duration_since(first), Duration::from_millis(1));
        let mut dropped = 0;
        for _ in 0..1000 {
            dropped += usize::from(clocks.schedule(0, &link, 1000, 0.0, t0).is_none());
        }
        // Half a second of queue holds about 500 packets of a millisecond.
        assert!((490..=510).contains(&dropped), "{dropped} dropped");
    }
}
