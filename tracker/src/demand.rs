//! Demand and whole copies: the popularity state ([`crate::popularity`]) behind one lock,
//! with its rules, joined with the node registry where a decision needs the nodes (which
//! may take a hot copy, which hot holders are alive). Soft state: nothing here is persisted.
//! Every method takes `now` (Unix ms) from its caller.

use std::collections::HashMap;

use medley_api::{HotSong, Load, PeerAnnouncement, ReportReason, SourceKind, WholeSource};
use medley_core::SongId;
use parking_lot::Mutex;

use crate::config::TrackerConfig;
use crate::error::StateError;
use crate::popularity::{Candidate, Popularity, Rules};
use crate::registry::{Registry, check_peer};

/// Most songs one listener may announce.
pub const MAX_ANNOUNCED_SONGS: usize = 10_000;
/// Most whole-copy sources listed per region for a song.
pub(crate) const MAX_WHOLE_PER_REGION: usize = 4;

/// How a whole copy ranks (smaller first): in another region, failed lately, class
/// (confirmed peer 0, hot node 1, unconfirmed peer 2), failures (milli), load (bytes/s).
type Rank = (bool, bool, u8, u64, u64);

/// A report of wrong bytes to share with the other replicas: source, signed reporter, Unix
/// ms, weight.
pub(crate) type Lie = (String, String, u64, f64);

/// Reports of wrong bytes kept for the next share at most.
const MAX_UNSHARED_LIES: usize = 10_000;

/// Demand and whole copies.
#[derive(Debug)]
pub(crate) struct Demand {
    rules: Rules,
    state: Mutex<Popularity>,
    /// With replicas: reports of wrong bytes this one got since it last shared them.
    unshared: Option<Mutex<Vec<Lie>>>,
}

impl Demand {
    /// Empty, with the rules of `config`.
    pub(crate) fn new(config: &TrackerConfig) -> Self {
        Self {
            rules: Rules {
                hot_plays: config.hot_plays,
                half_life_ms: config.hot_half_life_secs as f64 * 1000.0,
                copies: config.hot_copies,
                peer_ttl_ms: config.peer_ttl_secs * 1000,
                ban_reporters: config.ban_reporters,
                ban_ms: config.ban_secs * 1000,
                trust_ms: config.report_trust_secs * 1000,
            },
            state: Mutex::default(),
            unshared: config.postgres_url().map(|_| Mutex::default()),
        }
    }

    /// The reports of wrong bytes got since the last call, to share (replicas only).
    pub(crate) fn take_lies(&self) -> Vec<Lie> {
        self.unshared
            .as_ref()
            .map(|u| std::mem::take(&mut *u.lock()))
            .unwrap_or_default()
    }

    /// Takes up reports of wrong bytes other replicas got.
    pub(crate) fn learn_lies(&self, lies: &[Lie], now: u64) {
        let mut pop = self.state.lock();
        for (source, reporter, at, weight) in lies {
            pop.learn_lie(source, reporter, (*at, *weight), self.rules, now);
        }
    }

    /// How long a report of wrong bytes counts.
    pub(crate) fn ban_ms(&self) -> u64 {
        self.rules.ban_ms
    }

    /// Whether clients reported that `source` sent them wrong bytes often enough (from
    /// distinct signed reporters) that it is no longer offered.
    pub(crate) fn banned(&self, source: &str, now: u64) -> bool {
        self.state.lock().banned(source, self.rules, now)
    }

    /// Nodes that may take a hot copy: alive, not draining, with capacity, not banned.
    fn candidates(&self, registry: &Registry, pop: &Popularity, now: u64) -> Vec<Candidate> {
        registry
            .serving(now)
            .into_iter()
            .filter(|r| !pop.banned(&r.peer_id, self.rules, now))
            .map(|r| Candidate {
                // Before its first heartbeat a node has reported nothing: assume it is empty.
                free: if r.load == Load::default() {
                    r.capacity
                } else {
                    r.load.free.min(r.load.hot_free.unwrap_or(u64::MAX))
                },
                bytes_per_sec: r.load.bytes_per_sec,
                id: r.peer_id,
                region: r.region,
            })
            .collect()
    }

    /// Counts a play of `song` (`size` bytes) in `region`; orders hot copies when it turns
    /// hot there.
    pub(crate) fn play(
        &self,
        registry: &Registry,
        song: SongId,
        size: u64,
        region: &str,
        now: u64,
    ) {
        if self.rules.copies == 0 {
            return;
        }
        let mut pop = self.state.lock();
        let candidates = self.candidates(registry, &pop, now);
        pop.play(self.rules, song, size, region, &candidates, now);
    }

    /// Releases hot copies of songs that cooled and replaces ordered nodes that went away.
    /// Returns the number of songs released.
    pub(crate) fn sweep(&self, registry: &Registry, now: u64) -> usize {
        let mut pop = self.state.lock();
        let candidates = self.candidates(registry, &pop, now);
        pop.sweep(self.rules, &candidates, now)
    }

    /// Songs node `peer_id` is ordered to hold whole.
    pub(crate) fn orders_of(&self, peer_id: &str) -> Vec<SongId> {
        self.state.lock().orders_of(peer_id)
    }

    /// Records the songs a node reports holding whole.
    pub(crate) fn set_held(&self, peer_id: &str, songs: Vec<SongId>) {
        self.state
            .lock()
            .set_held(peer_id, songs.into_iter().collect());
    }

    /// The songs hot in some region, hottest first.
    pub(crate) fn hot(&self, now: u64) -> Vec<HotSong> {
        self.state.lock().hot(self.rules, now)
    }

    /// Records a listener's announcement of the songs it holds whole and serves. It is
    /// listed as a source once another client confirmed it (see [`Demand::whole_sources`]).
    pub(crate) fn announce(&self, a: PeerAnnouncement, now: u64) -> Result<(), StateError> {
        check_peer(&a.peer_id, &a.region, &a.addrs)?;
        if a.songs.len() > MAX_ANNOUNCED_SONGS {
            return Err(StateError::BadRegistration(
                "a peer announces at most 10000 songs",
            ));
        }
        let mut pop = self.state.lock();
        pop.heard_from(&a.peer_id, now);
        if pop.announce(a, self.rules, now) {
            Ok(())
        } else {
            Err(StateError::Busy(
                "the tracker holds as many announcements as it can",
            ))
        }
    }

    /// Entries of every map keyed by what strangers send (see
    /// [`crate::popularity::Popularity::sizes`]).
    pub(crate) fn sizes(&self) -> [usize; 5] {
        self.state.lock().sizes()
    }

    /// Records a client's report about `source`, a node or peer the tracker knows (reports
    /// about anything else are dropped: nothing a stranger names takes room). `Served`
    /// confirms a peer (by a signed reporter other than it). A failure (`Failed`,
    /// `Timeout`, `BadHash`) ranks the source last for a while. A report of wrong bytes
    /// signed by `reporter` also counts towards a ban, weighed by the reporter's history
    /// (see `report_trust_secs`): reports weighing `ban_reporters` within `ban_secs` ban the
    /// source. Returns whether the source is banned.
    pub(crate) fn report(
        &self,
        registry: &Registry,
        source: &str,
        reporter: Option<&str>,
        reason: ReportReason,
        now: u64,
    ) -> Result<bool, StateError> {
        if source.is_empty() || source.len() > 128 {
            return Err(StateError::BadRegistration(
                "peer_id must be 1 to 128 characters",
            ));
        }
        let rules = self.rules;
        let mut pop = self.state.lock();
        if let Some(r) = reporter {
            pop.heard_from(r, now);
        }
        if !(registry.contains(source) || pop.is_peer(source)) {
            return Ok(false);
        }
        match reason {
            ReportReason::Served => {
                if reporter.is_some_and(|r| r != source) {
                    pop.confirm(source);
                }
            }
            ReportReason::Failed | ReportReason::Timeout | ReportReason::Unknown => {
                pop.failed(source, rules, now);
            }
            ReportReason::BadHash => {
                pop.failed(source, rules, now);
                if let Some(r) = reporter.filter(|r| *r != source) {
                    if let Some(unshared) = &self.unshared {
                        let mut u = unshared.lock();
                        if u.len() < MAX_UNSHARED_LIES {
                            u.push((
                                source.to_string(),
                                r.to_string(),
                                now,
                                pop.weight(r, rules, now),
                            ));
                        }
                    }
                    let was = pop.banned(source, rules, now);
                    let is = pop.lied(source, r, rules, now);
                    if is && !was {
                        tracing::warn!(
                            source,
                            "banned: listeners with a history report it sends wrong bytes"
                        );
                    }
                }
            }
        }
        Ok(pop.banned(source, rules, now))
    }

    /// Whole copies of `song`, best first for a client in `region`: listener peers, then hot
    /// nodes, each ranked by region (same first), recent failures and load.
    pub(crate) fn whole_sources(
        &self,
        registry: &Registry,
        song: SongId,
        region: Option<&str>,
        now: u64,
    ) -> Vec<WholeSource> {
        let rules = self.rules;
        let pop = self.state.lock();
        // Rank: same region, no recent failure, confirmed peer before hot node before a peer
        // nobody confirmed yet, fewer failures, less load.
        let mut out: Vec<(WholeSource, Rank)> = Vec::new();
        let mut add = |source: WholeSource, class: u8, load: u64| {
            let failures = pop.failures_of(&source.peer_id, rules, now);
            let rank = (
                region.is_some_and(|r| r != source.region),
                failures >= 0.5,
                class,
                (failures * 1000.0) as u64,
                load,
            );
            out.push((source, rank));
        };
        for a in pop.peers_with(song, rules, now) {
            let p = &a.announcement;
            if pop.banned(&p.peer_id, rules, now) {
                continue;
            }
            let source = WholeSource {
                peer_id: p.peer_id.clone(),
                addrs: p.addrs.clone(),
                region: p.region.clone(),
                kind: SourceKind::Peer,
            };
            add(source, if a.confirmed { 0 } else { 2 }, 0);
        }
        for id in pop.holders(song) {
            let Some(rec) = registry.alive(id, now) else {
                continue;
            };
            if pop.banned(id, rules, now) {
                continue;
            }
            let source = WholeSource {
                peer_id: id.to_string(),
                addrs: rec.addrs,
                region: rec.region,
                kind: SourceKind::Hot,
            };
            add(source, 1, rec.load.bytes_per_sec);
        }
        // Unconfirmed peers in a rotating order, so that each gets its turn to be confirmed.
        let turn = (now / 60_000) as usize;
        out.sort_by(|a, b| {
            a.1.cmp(&b.1).then_with(|| {
                let key = |s: &WholeSource| {
                    let h = medley_core::Hash::of(format!("{}{turn}", s.peer_id).as_bytes());
                    *h.as_bytes()
                };
                key(&a.0).cmp(&key(&b.0))
            })
        });
        // A handful per region, one of them at most a peer nobody confirmed: a crowd of
        // announcers cannot push the real copies off the list.
        let mut per_region: HashMap<String, usize> = HashMap::new();
        let mut unconfirmed = 0;
        out.into_iter()
            .filter(|(s, rank)| {
                let n = per_region.entry(s.region.clone()).or_default();
                if *n >= MAX_WHOLE_PER_REGION {
                    return false;
                }
                if rank.2 == 2 {
                    if unconfirmed >= 1 {
                        return false;
                    }
                    unconfirmed += 1;
                }
                *n += 1;
                true
            })
            .map(|(s, _)| s)
            .collect()
    }
}
