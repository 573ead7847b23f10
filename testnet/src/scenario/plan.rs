//! Checking a scenario and drawing its schedule from a seed.

use std::collections::HashSet;

use rand::{RngExt, SeedableRng};

use super::{
    Churn, FaultKind, Link, NodeRef, PlannedPlay, Scenario, ScenarioError, Schedule, Session,
    TimedFault, bad,
};

impl Scenario {
    fn region_index(&self, field: &str, name: &str) -> Result<usize, ScenarioError> {
        self.regions
            .iter()
            .position(|r| r.name == name)
            .ok_or_else(|| {
                bad(
                    field,
                    format!(
                        "unknown region {name:?} (regions: {})",
                        self.regions
                            .iter()
                            .map(|r| r.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })
    }

    fn node_ref(&self, field: &str, text: &str) -> Result<NodeRef, ScenarioError> {
        let (region, index) = text.split_once('/').ok_or_else(|| {
            bad(
                field,
                format!("{text:?} is not `region/index`, e.g. `eu-west/0`"),
            )
        })?;
        let r = self.region_index(field, region)?;
        let index: usize = index
            .parse()
            .map_err(|_| bad(field, format!("{index:?} is not a node index")))?;
        if index >= self.regions[r].nodes {
            return Err(bad(
                field,
                format!(
                    "region {region} has {} nodes: no node {index}",
                    self.regions[r].nodes
                ),
            ));
        }
        Ok(NodeRef { region: r, index })
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        if self.name.trim().is_empty() {
            return Err(bad("name", "must not be empty"));
        }
        positive("duration_secs", self.duration_secs)?;
        positive("speed", self.speed)?;
        positive("sample_secs", self.sample_secs)?;
        if !(1..=5).contains(&self.trackers) {
            return Err(bad("trackers", "1 to 5"));
        }
        if self.regions.is_empty() {
            return Err(bad("regions", "at least one region is needed"));
        }
        let mut names = HashSet::new();
        for (i, r) in self.regions.iter().enumerate() {
            let ok = !r.name.is_empty()
                && r.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !ok {
                return Err(bad(
                    format!("regions[{i}].name"),
                    format!("{:?}: use lowercase letters, digits and '-'", r.name),
                ));
            }
            if !names.insert(r.name.as_str()) {
                return Err(bad(
                    format!("regions[{i}].name"),
                    format!("region {:?} is listed twice", r.name),
                ));
            }
            if r.nodes > 0 && r.node_capacity.as_u64() < 16 * 1024 * 1024 {
                return Err(bad(
                    format!("regions[{i}].node_capacity"),
                    "at least 16 MiB".to_string(),
                ));
            }
        }
        if self.regions.len() > 200 {
            return Err(bad("regions", "at most 200 regions"));
        }
        let c = &self.catalogue;
        if c.k == 0 {
            return Err(bad("catalogue.k", "at least one data shard"));
        }
        let shards = usize::from(c.k) + usize::from(c.m);
        if shards > 255 {
            return Err(bad("catalogue.m", "k + m must be at most 255"));
        }
        if shards > self.total_nodes() {
            return Err(bad(
                "catalogue.k",
                format!(
                    "{}+{} = {shards} shards per segment need {shards} distinct nodes; the regions have {}",
                    c.k,
                    c.m,
                    self.total_nodes()
                ),
            ));
        }
        if c.songs == 0 {
            return Err(bad("catalogue.songs", "at least one song"));
        }
        positive("catalogue.min_secs", c.min_secs)?;
        positive("catalogue.max_secs", c.max_secs)?;
        if c.min_secs > c.max_secs {
            return Err(bad("catalogue.min_secs", "longer than catalogue.max_secs"));
        }
        if c.max_secs > 1200.0 {
            return Err(bad("catalogue.max_secs", "at most 1200 s"));
        }
        if c.sample_rates.is_empty() {
            return Err(bad("catalogue.sample_rates", "at least one sample rate"));
        }
        for (i, &r) in c.sample_rates.iter().enumerate() {
            if !(8_000..=192_000).contains(&r) {
                return Err(bad(
                    format!("catalogue.sample_rates[{i}]"),
                    format!("{r} Hz: use 8000 to 192000"),
                ));
            }
        }
        self.validate_network()?;
        let w = &self.workload;
        if self.total_listeners() == 0 {
            return Err(bad("regions", "no listeners in any region"));
        }
        at_least_zero("workload.zipf", w.zipf)?;
        positive("workload.arrivals_per_sec", w.arrivals_per_sec)?;
        if w.session_songs[0] == 0 || w.session_songs[0] > w.session_songs[1] {
            return Err(bad(
                "workload.session_songs",
                "[min, max] with 1 <= min <= max",
            ));
        }
        percent("workload.skip_pct", w.skip_pct)?;
        percent("workload.seek_pct", w.seek_pct)?;
        at_least_zero("workload.listener_upload_mbit", w.listener_upload_mbit)?;
        for (i, f) in w.flash_crowds.iter().enumerate() {
            let field = |n: &str| format!("workload.flash_crowds[{i}].{n}");
            within_run(&field("at_secs"), f.at_secs, self.duration_secs)?;
            at_least_zero(&field("within_secs"), f.within_secs)?;
            if f.listeners == 0 || f.listeners > self.total_listeners() {
                return Err(bad(
                    field("listeners"),
                    format!("1 to {} (the listeners there are)", self.total_listeners()),
                ));
            }
        }
        for i in 0..self.faults.len() {
            self.fault(i)?;
        }
        if let Some(ch) = &self.churn {
            at_least_zero("churn.node_kills_per_min", ch.node_kills_per_min)?;
            at_least_zero("churn.listener_kills_per_min", ch.listener_kills_per_min)?;
            positive("churn.node_down_secs", ch.node_down_secs)?;
            positive("churn.listener_down_secs", ch.listener_down_secs)?;
        }
        Ok(())
    }

    fn validate_network(&self) -> Result<(), ScenarioError> {
        check_link("network.within", &self.network.within)?;
        check_link("network.between", &self.network.between)?;
        let mut pairs = HashSet::new();
        for (i, l) in self.network.links.iter().enumerate() {
            let f = format!("network.links[{i}]");
            let a = self.region_index(&format!("{f}.between"), &l.between[0])?;
            let b = self.region_index(&format!("{f}.between"), &l.between[1])?;
            if a == b {
                return Err(bad(
                    format!("{f}.between"),
                    "a link joins two different regions (use network.within)",
                ));
            }
            if !pairs.insert((a.min(b), a.max(b))) {
                return Err(bad(
                    format!("{f}.between"),
                    "this pair of regions is listed twice",
                ));
            }
            check_link(&f, &l.link())?;
        }
        Ok(())
    }

    /// Fault `i`, checked.
    fn fault(&self, i: usize) -> Result<TimedFault, ScenarioError> {
        let f = &self.faults[i];
        let field = |n: &str| format!("faults[{i}].{n}");
        within_run(&field("at_secs"), f.at_secs, self.duration_secs)?;
        let node = || -> Result<NodeRef, ScenarioError> {
            let text = f
                .node
                .as_deref()
                .ok_or_else(|| bad(field("node"), format!("{} needs a node", f.action)))?;
            self.node_ref(&field("node"), text)
        };
        let region = || -> Result<usize, ScenarioError> {
            let text = f
                .region
                .as_deref()
                .ok_or_else(|| bad(field("region"), format!("{} needs a region", f.action)))?;
            self.region_index(&field("region"), text)
        };
        let count = |r: usize, cap: bool| -> Result<usize, ScenarioError> {
            let n = f.count.unwrap_or(1);
            let there = self.regions[r].listeners;
            if n == 0 || (cap && n > there) {
                return Err(bad(
                    field("count"),
                    format!("1 to {there} (the listeners of that region)"),
                ));
            }
            if n > 64 {
                return Err(bad(field("count"), "at most 64"));
            }
            Ok(n)
        };
        let kind = match f.action.as_str() {
            "kill_node" => FaultKind::KillNode { node: node()? },
            "restart_node" => FaultKind::RestartNode { node: node()? },
            "corrupt_node" => {
                let fraction = f.fraction.unwrap_or(0.1);
                if !(fraction > 0.0 && fraction <= 1.0) {
                    return Err(bad(field("fraction"), "between 0 (excluded) and 1"));
                }
                FaultKind::CorruptNode {
                    node: node()?,
                    fraction,
                }
            }
            "kill_listeners" => {
                let region = region()?;
                FaultKind::KillListeners {
                    region,
                    count: count(region, true)?,
                }
            }
            "restart_listeners" => {
                let region = region()?;
                FaultKind::RestartListeners {
                    region,
                    count: count(region, true)?,
                }
            }
            "cut_region" => FaultKind::CutRegion { region: region()? },
            "heal_region" => FaultKind::HealRegion { region: region()? },
            "lying_peer" => {
                let region = region()?;
                FaultKind::LyingPeer {
                    region,
                    count: count(region, false)?,
                }
            }
            "rogue_nodes" => {
                let region = region()?;
                let capacity = f.capacity.map_or(1u64 << 60, |c| c.as_u64());
                if capacity == 0 {
                    return Err(bad(field("capacity"), "at least 1 byte"));
                }
                FaultKind::RogueNodes {
                    region,
                    count: count(region, false)?,
                    capacity,
                    admitted: f.admitted.unwrap_or(true),
                }
            }
            "rogues_vanish" => FaultKind::RoguesVanish,
            "kill_tracker" | "restart_tracker" => {
                let tracker = f.tracker.unwrap_or(0);
                if tracker >= self.trackers {
                    return Err(bad(
                        field("tracker"),
                        format!(
                            "0 to {} (the run's trackers)",
                            self.trackers.saturating_sub(1)
                        ),
                    ));
                }
                if f.action == "kill_tracker" {
                    FaultKind::KillTracker { tracker }
                } else {
                    FaultKind::RestartTracker { tracker }
                }
            }
            other => {
                return Err(bad(
                    field("action"),
                    format!(
                        "unknown action {other:?} (kill_node, restart_node, corrupt_node, \
                         kill_listeners, restart_listeners, cut_region, heal_region, lying_peer, \
                         rogue_nodes, rogues_vanish, kill_tracker, restart_tracker)"
                    ),
                ));
            }
        };
        Ok(TimedFault {
            at_secs: f.at_secs,
            kind,
        })
    }

    /// The schedule `seed` draws: sessions (Poisson arrivals, Zipf songs, skips, seeks),
    /// flash crowds, the scenario's faults and churn. Deterministic in `(self, seed)`.
    pub fn schedule(&self, seed: u64) -> Result<Schedule, ScenarioError> {
        self.validate()?;
        let w = &self.workload;
        let listeners = self.total_listeners();
        let zipf = Zipf::new(self.catalogue.songs, w.zipf);
        // One stream per purpose, so adding faults does not move the sessions.
        let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
        let mut sessions = Vec::new();
        let mut t = 0.0;
        loop {
            t += exponential(&mut rng, w.arrivals_per_sec);
            if t >= self.duration_secs {
                break;
            }
            let listener = rng.random_range(0..listeners);
            let n = rng.random_range(w.session_songs[0]..=w.session_songs[1]);
            let plays = (0..n)
                .map(|_| {
                    let song = zipf.sample(rng.random::<f64>());
                    let skip = rng.random::<f64>() * 100.0 < w.skip_pct;
                    let seek = rng.random::<f64>() * 100.0 < w.seek_pct;
                    let skip_at = skip.then(|| 0.2 + 0.6 * rng.random::<f64>());
                    let seek_to = seek.then(|| rng.random::<f64>() * 0.9);
                    PlannedPlay {
                        song,
                        skip_at,
                        seek_to,
                    }
                })
                .collect();
            sessions.push(Session {
                at_secs: t,
                listener,
                plays,
                flash: false,
            });
        }
        let mut flash_rng = rand_pcg::Pcg64::seed_from_u64(seed ^ 0xf1a5_4c0d);
        for (i, f) in w.flash_crowds.iter().enumerate() {
            let mut who: Vec<usize> = (0..listeners).collect();
            // A partial Fisher-Yates shuffle picks the crowd.
            for j in 0..f.listeners {
                let k = flash_rng.random_range(j..listeners);
                who.swap(j, k);
            }
            for &listener in &who[..f.listeners] {
                sessions.push(Session {
                    at_secs: f.at_secs + flash_rng.random::<f64>() * f.within_secs,
                    listener,
                    plays: vec![PlannedPlay {
                        song: self.catalogue.songs + i,
                        skip_at: None,
                        seek_to: None,
                    }],
                    flash: true,
                });
            }
        }
        sessions.sort_by(|a, b| a.at_secs.total_cmp(&b.at_secs));
        let mut faults = Vec::new();
        for i in 0..self.faults.len() {
            faults.push(self.fault(i)?);
        }
        if let Some(ch) = &self.churn {
            let mut churn_rng = rand_pcg::Pcg64::seed_from_u64(seed ^ 0xc4a7_0000);
            self.churn_faults(ch, &mut churn_rng, &mut faults);
        }
        faults.sort_by(|a, b| a.at_secs.total_cmp(&b.at_secs));
        Ok(Schedule {
            seed,
            sessions,
            faults,
        })
    }

    fn churn_faults(&self, ch: &Churn, rng: &mut rand_pcg::Pcg64, out: &mut Vec<TimedFault>) {
        let nodes: Vec<NodeRef> = self
            .regions
            .iter()
            .enumerate()
            .flat_map(|(r, reg)| (0..reg.nodes).map(move |index| NodeRef { region: r, index }))
            .collect();
        // A node is never crashed twice at once; at most m nodes are down together, so
        // churn alone never makes a song unplayable.
        let mut down_until: Vec<f64> = vec![0.0; nodes.len()];
        let most_down = usize::from(self.catalogue.m).max(1);
        if ch.node_kills_per_min > 0.0 {
            let mut t = 0.0;
            loop {
                t += exponential(rng, ch.node_kills_per_min / 60.0);
                if t >= self.duration_secs {
                    break;
                }
                let pick = rng.random_range(0..nodes.len());
                let down = down_until.iter().filter(|&&u| u > t).count();
                if down_until[pick] > t || down >= most_down {
                    continue;
                }
                down_until[pick] = t + ch.node_down_secs;
                out.push(TimedFault {
                    at_secs: t,
                    kind: FaultKind::KillNode { node: nodes[pick] },
                });
                if t + ch.node_down_secs < self.duration_secs {
                    out.push(TimedFault {
                        at_secs: t + ch.node_down_secs,
                        kind: FaultKind::RestartNode { node: nodes[pick] },
                    });
                }
            }
        }
        if ch.listener_kills_per_min > 0.0 {
            let mut t = 0.0;
            loop {
                t += exponential(rng, ch.listener_kills_per_min / 60.0);
                if t >= self.duration_secs {
                    break;
                }
                let region = rng.random_range(0..self.regions.len());
                if self.regions[region].listeners == 0 {
                    continue;
                }
                out.push(TimedFault {
                    at_secs: t,
                    kind: FaultKind::KillListeners { region, count: 1 },
                });
                if t + ch.listener_down_secs < self.duration_secs {
                    out.push(TimedFault {
                        at_secs: t + ch.listener_down_secs,
                        kind: FaultKind::RestartListeners { region, count: 1 },
                    });
                }
            }
        }
    }
}

fn positive(field: &str, v: f64) -> Result<(), ScenarioError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(bad(field, format!("{v} must be a number above 0")))
    }
}

fn at_least_zero(field: &str, v: f64) -> Result<(), ScenarioError> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(bad(field, format!("{v} must not be negative")))
    }
}

fn percent(field: &str, v: f64) -> Result<(), ScenarioError> {
    if v.is_finite() && (0.0..=100.0).contains(&v) {
        Ok(())
    } else {
        Err(bad(field, format!("{v} is not a percentage (0 to 100)")))
    }
}

fn within_run(field: &str, at: f64, duration: f64) -> Result<(), ScenarioError> {
    if at.is_finite() && (0.0..=duration).contains(&at) {
        Ok(())
    } else {
        Err(bad(
            field,
            format!("{at} is outside the run (0 to {duration} s)"),
        ))
    }
}

fn check_link(field: &str, l: &Link) -> Result<(), ScenarioError> {
    at_least_zero(&format!("{field}.latency_ms"), l.latency_ms)?;
    at_least_zero(&format!("{field}.jitter_ms"), l.jitter_ms)?;
    percent(&format!("{field}.loss_pct"), l.loss_pct)?;
    at_least_zero(&format!("{field}.bandwidth_mbit"), l.bandwidth_mbit)?;
    if l.jitter_ms > l.latency_ms {
        return Err(bad(
            format!("{field}.jitter_ms"),
            "larger than the latency: delays would go negative",
        ));
    }
    Ok(())
}

/// An exponential wait with `rate` events per second.
fn exponential(rng: &mut rand_pcg::Pcg64, rate: f64) -> f64 {
    let u: f64 = rng.random::<f64>();
    -(1.0 - u).ln() / rate
}

/// Zipf sampling over ranks `0..n` by inverse CDF.
#[derive(Debug, Clone)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// Ranks `0..n` with weight `1 / (rank + 1)^s`.
    pub fn new(n: usize, s: f64) -> Self {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=n.max(1))
            .map(|k| {
                acc += 1.0 / (k as f64).powf(s);
                acc
            })
            .collect();
        for c in &mut cdf {
            *c /= acc;
        }
        Self { cdf }
    }

    /// The rank for a uniform draw `u` in `[0, 1)`.
    pub fn sample(&self, u: f64) -> usize {
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}
