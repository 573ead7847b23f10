//! Demand and whole copies: the popularity state ([`crate::popularity`]) behind one lock,
//! with its rules, joined with the node registry where a decision needs the nodes (which
//! may take a hot copy, which hot holders are alive). Soft state: nothing here is persisted.
//! Every method takes `now` (Unix ms) from its caller.

use medley_api::{HotSong, Load, PeerAnnouncement, SourceKind, WholeSource};
use medley_core::SongId;
use parking_lot::Mutex;

use crate::config::TrackerConfig;
use crate::error::StateError;
use crate::popularity::{Candidate, Popularity, Rules};
use crate::registry::{Registry, check_peer};

/// Most songs one listener may announce.
pub const MAX_ANNOUNCED_SONGS: usize = 10_000;

/// How a whole copy ranks (smaller first): in another region, failed lately, a hot node
/// (not a listener), failures (milli), load (bytes/s).
type Rank = (bool, bool, u8, u64, u64);

/// Demand and whole copies.
#[derive(Debug)]
pub(crate) struct Demand {
    rules: Rules,
    state: Mutex<Popularity>,
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
            },
            state: Mutex::default(),
        }
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

    /// Records a listener's announcement of the songs it holds whole and serves.
    pub(crate) fn announce(&self, a: PeerAnnouncement, now: u64) -> Result<(), StateError> {
        check_peer(&a.peer_id, &a.region, &a.addrs)?;
        if a.songs.len() > MAX_ANNOUNCED_SONGS {
            return Err(StateError::BadRegistration(
                "a peer announces at most 10000 songs",
            ));
        }
        self.state.lock().announce(a, now);
        Ok(())
    }

    /// Records a client's report that `source` failed it. Sources with recent failures are
    /// ranked last. A report of wrong bytes (`lied`) signed by `reporter` also counts
    /// towards a ban: `ban_reporters` distinct reporters within `ban_secs` ban the source,
    /// which is then offered to nobody. Returns whether the source is banned.
    pub(crate) fn report(
        &self,
        source: &str,
        reporter: Option<&str>,
        lied: bool,
        now: u64,
    ) -> Result<bool, StateError> {
        if source.is_empty() || source.len() > 128 {
            return Err(StateError::BadRegistration(
                "peer_id must be 1 to 128 characters",
            ));
        }
        let rules = self.rules;
        let mut pop = self.state.lock();
        pop.failed(source, rules, now);
        Ok(match reporter {
            Some(r) if lied && r != source => {
                let was = pop.banned(source, rules, now);
                let is = pop.lied(source, r, rules, now);
                if is && !was {
                    tracing::warn!(
                        source,
                        "banned: distinct listeners report it sends wrong bytes"
                    );
                }
                is
            }
            _ => pop.banned(source, rules, now),
        })
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
        // Rank: same region, no recent failure, peer before hot node, fewer failures, less
        // load.
        let mut out: Vec<(WholeSource, Rank)> = Vec::new();
        let mut add = |source: WholeSource, load: u64| {
            let failures = pop.failures_of(&source.peer_id, rules, now);
            let rank = (
                region.is_some_and(|r| r != source.region),
                failures >= 0.5,
                u8::from(source.kind == SourceKind::Hot),
                (failures * 1000.0) as u64,
                load,
            );
            out.push((source, rank));
        };
        for a in pop.peers_with(song, rules, now) {
            if pop.banned(&a.peer_id, rules, now) {
                continue;
            }
            let source = WholeSource {
                peer_id: a.peer_id.clone(),
                addrs: a.addrs.clone(),
                region: a.region.clone(),
                kind: SourceKind::Peer,
            };
            add(source, 0);
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
            add(source, rec.load.bytes_per_sec);
        }
        out.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.peer_id.cmp(&b.0.peer_id)));
        out.into_iter().map(|(s, _)| s).collect()
    }
}
