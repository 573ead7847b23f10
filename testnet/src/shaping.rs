//! Real network conditions between regions, with `tc` (HTB classes, `netem` delay, jitter
//! and loss, HTB rate for bandwidth) on the loopback device, or, where the kernel has no
//! netem, with the user-space delay line of [`crate::linkemu`] on the same addresses.
//!
//! Each region's processes (nodes, light listeners, lying peers) bind their data-plane
//! sockets to the region's own loopback address, `127.77.<region>.1`; a `u32` filter per
//! ordered pair of regions sends the pair's packets through its own class. A packet crosses
//! `lo` once, so a one-way `latency_ms` of `d` gives a round trip of `2d`. A testnet with
//! regions on their own addresses puts the tracker on the first region's and has every
//! process call it from its own region's (see [`crate::TestnetBuilder::placement`]), so the
//! control plane is shaped too; every other use of loopback on the machine (127.0.0.1) is
//! not. Cutting a region drops every packet between its address and another region's.
//!
//! netem needs root, `tc`, and a kernel with `sch_netem`; [`Shaping::start`] checks all
//! three in a throwaway network namespace first. Without netem it starts the delay line
//! (root, `iptables-legacy` and the kernel's NFQUEUE target), and when neither can run, the
//! run goes on unshaped, saying why. The scenario's `network.emulation` can ask for one.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::Placement;
use crate::linkemu::DelayLine;
use crate::scenario::{Emulation, Network};

/// Why shaping could not be set up or changed.
#[derive(Debug, thiserror::Error)]
pub enum ShapingError {
    /// A `tc` or `ip` command failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed.
        stderr: String,
    },
    /// Shaping cannot run here.
    #[error("{0}")]
    Unavailable(String),
}

/// The shaping of a run: on, with the regions' addresses, or off, with why.
#[derive(Debug)]
pub struct Shaping {
    /// Region name → index (its address is `127.77.<index>.1`).
    regions: HashMap<String, usize>,
    on: bool,
    note: String,
    /// Classes of `within`, by region: cut regions still talk inside.
    within_class: HashMap<usize, u32>,
    /// The user-space delay line, when it shapes instead of netem.
    delay_line: Option<DelayLine>,
}

fn tc(args: &[&str]) -> Result<(), ShapingError> {
    run("tc", args)
}

pub(crate) fn run(cmd: &str, args: &[&str]) -> Result<(), ShapingError> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ShapingError::Unavailable(format!("cannot run {cmd}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ShapingError::Command {
            command: format!("{cmd} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// The loopback address of region `i`.
pub fn region_ip(i: usize) -> String {
    format!("127.77.{i}.1")
}

/// Fails unless this process runs as root (its effective uid, from /proc).
pub(crate) fn require_root() -> Result<(), ShapingError> {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false);
    if root {
        Ok(())
    } else {
        Err(ShapingError::Unavailable("not running as root".into()))
    }
}

/// Checks that this process may shape traffic: root, `tc` and `ip`, and `sch_netem` in the
/// kernel (tried in a throwaway namespace, so the host is not touched).
pub fn probe() -> Result<(), ShapingError> {
    require_root()?;
    if crate::userns::inside() {
        // The namespace is this run's own: its loopback can be tried directly.
        let r = run(
            "tc",
            &["qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
        );
        let _ = run("tc", &["qdisc", "del", "dev", "lo", "root"]);
        return r.map_err(|e| {
            ShapingError::Unavailable(format!("this kernel cannot run netem (sch_netem): {e}"))
        });
    }
    let ns = format!("medley-probe-{}", std::process::id());
    run("ip", &["netns", "add", &ns])
        .map_err(|e| ShapingError::Unavailable(format!("cannot make a network namespace: {e}")))?;
    let r = run(
        "ip",
        &["netns", "exec", &ns, "ip", "link", "set", "lo", "up"],
    )
    .and_then(|()| {
        run(
            "ip",
            &[
                "netns", "exec", &ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay",
                "1ms",
            ],
        )
    });
    let _ = run("ip", &["netns", "del", &ns]);
    r.map_err(|e| {
        ShapingError::Unavailable(format!("this kernel cannot run netem (sch_netem): {e}"))
    })
}

impl Shaping {
    /// No shaping, because `why`.
    pub fn off(why: &str) -> Self {
        Self {
            regions: HashMap::new(),
            on: false,
            note: format!("off: {why}"),
            within_class: HashMap::new(),
            delay_line: None,
        }
    }

    /// Shapes loopback traffic between `regions` as `network` says: with netem where the
    /// kernel has it (and the scenario does not ask for the delay line), else with the
    /// user-space delay line, its jitter and loss drawn from `seed`.
    pub fn start(regions: &[String], network: &Network, seed: u64) -> Result<Self, ShapingError> {
        if regions.len() > 250 {
            return Err(ShapingError::Unavailable("more than 250 regions".into()));
        }
        let netem = match network.emulation {
            Emulation::Userspace => Err(ShapingError::Unavailable(
                "the scenario asks for the user-space delay line".into(),
            )),
            Emulation::Auto | Emulation::Netem => probe(),
        };
        match (netem, network.emulation) {
            (Ok(()), _) => Self::start_netem(regions, network),
            (Err(e), Emulation::Netem) => Err(e),
            (Err(why), _) => {
                crate::linkemu::probe().map_err(|e| {
                    ShapingError::Unavailable(format!("{why}; and no user-space delay line: {e}"))
                })?;
                Self::start_delay_line(regions, network, seed, &why.to_string())
            }
        }
    }

    /// The regions by name, with their indexes.
    fn indexed(regions: &[String]) -> HashMap<String, usize> {
        regions
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, r)| (r, i))
            .collect()
    }

    /// The links between every ordered pair of regions, as the note lists them.
    fn describe(regions: &[String], network: &Network) -> String {
        let mut lines = Vec::new();
        for ra in regions {
            for rb in regions {
                let l = network.link(ra, rb);
                lines.push(format!(
                    "{ra} → {rb}: {} ms ± {} ms, {} % loss, {}",
                    l.latency_ms,
                    l.jitter_ms,
                    l.loss_pct,
                    if l.bandwidth_mbit > 0.0 {
                        format!("{} Mbit/s", l.bandwidth_mbit)
                    } else {
                        "unlimited".into()
                    }
                ));
            }
        }
        lines.join("; ")
    }

    fn start_delay_line(
        regions: &[String],
        network: &Network,
        seed: u64,
        why: &str,
    ) -> Result<Self, ShapingError> {
        let links = regions
            .iter()
            .flat_map(|a| regions.iter().map(move |b| network.link(a, b)))
            .collect();
        let line = DelayLine::start(regions.len(), links, seed)?;
        Ok(Self {
            regions: Self::indexed(regions),
            on: true,
            note: format!(
                "on: user-space delay line (a netfilter queue between the regions' addresses, 127.77.<region>.1), because netem is not used here ({why}); {}",
                Self::describe(regions, network)
            ),
            within_class: HashMap::new(),
            delay_line: Some(line),
        })
    }

    fn start_netem(regions: &[String], network: &Network) -> Result<Self, ShapingError> {
        // A qdisc left by a run that died is replaced.
        let _ = tc(&["qdisc", "del", "dev", "lo", "root"]);
        tc(&[
            "qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "0", "r2q",
            "1000",
        ])?;
        let mut s = Self {
            regions: Self::indexed(regions),
            on: true,
            note: String::new(),
            within_class: HashMap::new(),
            delay_line: None,
        };
        let mut class = 10u32;
        for (a, ra) in regions.iter().enumerate() {
            for (b, rb) in regions.iter().enumerate() {
                let l = network.link(ra, rb);
                let rate = if l.bandwidth_mbit > 0.0 {
                    format!("{}kbit", (l.bandwidth_mbit * 1000.0).round() as u64)
                } else {
                    "100gbit".to_string()
                };
                let id = format!("1:{class:x}");
                tc(&[
                    "class", "add", "dev", "lo", "parent", "1:", "classid", &id, "htb", "rate",
                    &rate,
                ])?;
                let delay = format!("{}ms", l.latency_ms);
                let jitter = format!("{}ms", l.jitter_ms);
                let loss = format!("{}%", l.loss_pct);
                let handle = format!("{class:x}:");
                tc(&[
                    "qdisc", "add", "dev", "lo", "parent", &id, "handle", &handle, "netem",
                    "delay", &delay, &jitter, "loss", &loss, "limit", "100000",
                ])?;
                let (src, dst) = (format!("127.77.{a}.0/24"), format!("127.77.{b}.0/24"));
                tc(&[
                    "filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "100",
                    "u32", "match", "ip", "src", &src, "match", "ip", "dst", &dst, "flowid", &id,
                ])?;
                if a == b {
                    s.within_class.insert(a, class);
                }
                class += 1;
            }
        }
        s.note = format!(
            "on: netem on loopback between the regions' addresses (127.77.<region>.1); {}",
            Self::describe(regions, network)
        );
        Ok(s)
    }

    /// Whether traffic is shaped.
    pub fn on(&self) -> bool {
        self.on
    }

    /// What shaping does, or why it is off.
    pub fn note(&self) -> String {
        self.note.clone()
    }

    /// Where each region's processes bind (empty when off: everything on 127.0.0.1).
    pub fn placement(&self) -> Placement {
        Placement {
            region_ips: if self.on {
                self.regions
                    .iter()
                    .map(|(r, &i)| (r.clone(), region_ip(i)))
                    .collect()
            } else {
                HashMap::new()
            },
        }
    }

    /// The QUIC listen address of a light listener in `region`, when shaped.
    pub fn listen_addr(&self, region: &str) -> Option<String> {
        let i = self.regions.get(region).filter(|_| self.on)?;
        Some(format!("/ip4/{}/udp/0/quic-v1", region_ip(*i)))
    }

    /// Cuts `region` off from the other regions (`cut`), or joins it again.
    pub fn cut(&mut self, region: &str, cut: bool) -> Result<(), ShapingError> {
        let Some(&i) = self.regions.get(region).filter(|_| self.on) else {
            return Err(ShapingError::Unavailable("shaping is off".into()));
        };
        if let Some(line) = &self.delay_line {
            line.cut(i, cut);
            return Ok(());
        }
        let (keep, drop) = (format!("{}", 10 + 2 * i), format!("{}", 11 + 2 * i));
        if !cut {
            let _ = tc(&["filter", "del", "dev", "lo", "parent", "1:", "prio", &keep]);
            return tc(&["filter", "del", "dev", "lo", "parent", "1:", "prio", &drop]);
        }
        let net = format!("127.77.{i}.0/24");
        let within = format!("1:{:x}", self.within_class.get(&i).copied().unwrap_or(10));
        tc(&[
            "filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", &keep, "u32",
            "match", "ip", "src", &net, "match", "ip", "dst", &net, "flowid", &within,
        ])?;
        for side in ["src", "dst"] {
            tc(&[
                "filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", &drop,
                "u32", "match", "ip", side, &net, "action", "drop",
            ])?;
        }
        Ok(())
    }

    /// Round trips between every ordered pair of regions, measured with UDP echoes between
    /// their addresses (median of 20), in ms. Empty when off.
    pub async fn measure_rtts(&self) -> Vec<(String, String, f64)> {
        if !self.on {
            return Vec::new();
        }
        let mut names: Vec<(&String, &usize)> = self.regions.iter().collect();
        names.sort_by_key(|(_, i)| **i);
        let mut out = Vec::new();
        for &(ra, &a) in &names {
            for &(rb, &b) in &names {
                if let Ok(ms) = udp_rtt(&region_ip(a), &region_ip(b), 20).await {
                    out.push((ra.clone(), rb.clone(), ms));
                }
            }
        }
        out
    }

    /// Removes the shaping.
    pub fn stop(&mut self) {
        if !self.on {
            return;
        }
        match self.delay_line.take() {
            Some(mut line) => line.stop(),
            None => {
                let _ = tc(&["qdisc", "del", "dev", "lo", "root"]);
            }
        }
        self.on = false;
    }

    /// Packets the delay line passed and dropped so far (when it shapes).
    pub fn delay_line_counters(&self) -> Option<(u64, u64)> {
        use std::sync::atomic::Ordering::Relaxed;
        self.delay_line.as_ref().map(|l| {
            let c = l.counters();
            (c.passed.load(Relaxed), c.dropped.load(Relaxed))
        })
    }

    /// Which mechanism shapes: `netem`, `userspace` or `off`.
    pub fn mechanism(&self) -> &'static str {
        match (self.on, &self.delay_line) {
            (false, _) => "off",
            (true, Some(_)) => "userspace",
            (true, None) => "netem",
        }
    }
}

impl Drop for Shaping {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The median round trip of `n` UDP echoes from `from` to `to` (both local addresses).
pub async fn udp_rtt(from: &str, to: &str, n: usize) -> std::io::Result<f64> {
    let echo = tokio::net::UdpSocket::bind((to, 0)).await?;
    let target = echo.local_addr()?;
    let echoer = tokio::spawn(async move {
        let mut buf = [0u8; 64];
        while let Ok((len, peer)) = echo.recv_from(&mut buf).await {
            let _ = echo.send_to(&buf[..len], peer).await;
        }
    });
    let sock = tokio::net::UdpSocket::bind((from, 0)).await?;
    let mut times = Vec::new();
    let mut buf = [0u8; 64];
    for i in 0..n as u32 {
        let start = Instant::now();
        sock.send_to(&i.to_le_bytes(), target).await?;
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await
        {
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    echoer.abort();
    if times.is_empty() {
        return Err(std::io::Error::other("no echo came back"));
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}
