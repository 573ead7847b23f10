//! Popularity and the hot tier's orders: decaying play counters per song and region, which
//! nodes are ordered to hold which song whole, which nodes and listener peers report holding
//! songs whole, and reports of sources that failed or lied.
//!
//! Counters decay exponentially with a half-life, so "hot" means "played a lot lately". A
//! song is hot in a region once its decayed plays, rounded to a whole play, reach
//! `hot_plays`, and cools below half of that (the gap keeps a song near the threshold from
//! flapping). All of this is soft state, kept in
//! memory: after a tracker restart songs heat up again from new plays, and nodes and peers
//! report what they hold with their next heartbeat or announcement. Replicas share it
//! through the store's demand log ([`crate::demand`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use medley_api::{HotSong, PeerAnnouncement};
use medley_core::SongId;

/// A decaying counter.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Heat {
    value: f64,
    at_ms: u64,
}

impl Heat {
    fn at(self, now_ms: u64, half_life_ms: f64) -> f64 {
        let dt = now_ms.saturating_sub(self.at_ms) as f64;
        self.value * (-dt / half_life_ms * std::f64::consts::LN_2).exp()
    }
}

/// Hot-tier settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules {
    /// Decayed plays from which a song is hot in a region.
    pub(crate) hot_plays: f64,
    /// Half-life of the counters.
    pub(crate) half_life_ms: f64,
    /// Nodes per region ordered to hold a hot song.
    pub(crate) copies: usize,
    /// Decayed source requests from which a surge orders copies at once; 0: off.
    pub(crate) surge_requests: f64,
    /// Half-life of the source-request counters.
    pub(crate) surge_half_life_ms: f64,
    /// How long a peer's announcement holds.
    pub(crate) peer_ttl_ms: u64,
    /// Distinct signed reporters of wrong bytes (each weighed by its history, see
    /// `trust_ms`) that ban a source; 0: never.
    pub(crate) ban_reporters: usize,
    /// How long a report of wrong bytes counts towards a ban.
    pub(crate) ban_ms: u64,
    /// How long an identity must have been known before its reports weigh fully; a report
    /// weighs the share of this it has been known (0: every report weighs fully).
    pub(crate) trust_ms: u64,
}

/// How many times its long-run play rate a song's rate of source requests must be for a
/// surge.
const SURGE_FACTOR: f64 = 4.0;
/// Most (song, region) request counters kept: a stranger asking for every song's sources
/// cannot make the tracker keep more.
const MAX_REQUEST_COUNTERS: usize = 200_000;

/// Most reporters remembered per source, and most sources with reports.
const MAX_REPORTERS: usize = 64;
const MAX_REPORTED: usize = 100_000;
/// Most listener peers with a live announcement.
pub(crate) const MAX_PEERS: usize = 100_000;
/// Most identities whose history is kept (when they were first and last heard from).
pub(crate) const MAX_IDENTITIES: usize = 200_000;
/// How long an identity's history is kept after it was last heard from.
const IDENTITY_TTL_MS: u64 = 24 * 3600 * 1000;

/// A candidate node for a hot copy.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub(crate) id: String,
    pub(crate) region: String,
    /// Free bytes it reported.
    pub(crate) free: u64,
    /// Bytes per second it serves lately.
    pub(crate) bytes_per_sec: u64,
}

/// An order for whole copies of a hot song in one region.
#[derive(Debug, Clone, Default)]
struct Order {
    /// The nodes ordered to hold it (fewer than asked while no other node has room).
    nodes: Vec<String>,
    /// The song's bytes, which a node needs free to take it.
    size: u64,
}

/// An order for whole copies of a song in a region, as replicas share it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Ordered {
    pub(crate) song: SongId,
    pub(crate) region: String,
    /// The song's bytes.
    pub(crate) size: u64,
    /// The nodes ordered to hold it.
    pub(crate) nodes: Vec<String>,
}

/// All of the popularity state.
#[derive(Debug, Default)]
pub(crate) struct Popularity {
    heat: HashMap<(SongId, String), Heat>,
    /// (song, region) → decaying count of source requests (fast: detects surges).
    requests: HashMap<(SongId, String), Heat>,
    /// (song, region) → the order for a whole copy there.
    orders: BTreeMap<(SongId, String), Order>,
    /// node → songs it reports holding whole.
    held: HashMap<String, BTreeSet<SongId>>,
    /// peer id → its live announcement.
    peers: HashMap<String, Announced>,
    /// song → peers whose live announcement lists it.
    by_song: HashMap<SongId, BTreeSet<String>>,
    /// source (node or peer id) → decayed count of failures reported by clients.
    failures: HashMap<String, Heat>,
    /// source → signed reporter → (unix ms of its last report that the source sent bytes
    /// not matching their hash, the weight of that report).
    liars: HashMap<String, HashMap<String, (u64, f64)>>,
    /// identity → (unix ms first heard from, last heard from): the history a report is
    /// weighed by.
    identities: HashMap<String, (u64, u64)>,
}

/// A listener's live announcement.
#[derive(Debug, Clone)]
pub(crate) struct Announced {
    pub(crate) announcement: PeerAnnouncement,
    /// When it was made.
    at_ms: u64,
    /// Whether another client reported a verified segment from it.
    pub(crate) confirmed: bool,
}

impl Popularity {
    /// Counts a play of `song` (of `size` bytes) in `region`; orders copies when it turns
    /// hot. `candidates`: live nodes that may take a copy.
    #[cfg(test)]
    pub(crate) fn play(
        &mut self,
        rules: Rules,
        song: SongId,
        size: u64,
        region: &str,
        candidates: &[Candidate],
        now_ms: u64,
    ) -> f64 {
        self.plays(rules, song, size, region, 1.0, Some(candidates), now_ms)
    }

    /// Counts `plays` plays of `song` (a fraction for plays heard a while ago, decayed
    /// since). With `candidates` (the replica that makes the orders), orders copies when
    /// the song turns hot; without, only counts.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn plays(
        &mut self,
        rules: Rules,
        song: SongId,
        size: u64,
        region: &str,
        plays: f64,
        candidates: Option<&[Candidate]>,
        now_ms: u64,
    ) -> f64 {
        let key = (song, region.to_string());
        let heat = self.heat.entry(key.clone()).or_insert(Heat {
            value: 0.0,
            at_ms: now_ms,
        });
        let value = heat.at(now_ms, rules.half_life_ms) + plays;
        *heat = Heat {
            value,
            at_ms: now_ms.max(heat.at_ms),
        };
        // Rounded to whole plays: plays in quick succession count in full, not a hair less.
        if let Some(candidates) = candidates
            && value.round() >= rules.hot_plays
        {
            self.top_up(rules, &key, size, candidates);
        }
        value
    }

    /// Counts a request for `song`'s sources from `region`. When the rate of requests
    /// jumps (a flash crowd: at least `surge_requests` decayed requests, at a rate at least
    /// [`SURGE_FACTOR`] times the song's long-run play rate there) and the song is not
    /// ordered there yet, returns the plays to add so that it is hot at once: the crowd's
    /// later members then find hot copies, instead of the copies coming after the crowd
    /// has played. 0 otherwise.
    pub(crate) fn request(&mut self, rules: Rules, song: SongId, region: &str, now_ms: u64) -> f64 {
        if rules.surge_requests <= 0.0 || rules.copies == 0 {
            return 0.0;
        }
        let key = (song, region.to_string());
        if self.requests.len() >= MAX_REQUEST_COUNTERS && !self.requests.contains_key(&key) {
            return 0.0;
        }
        let counter = self.requests.entry(key.clone()).or_insert(Heat {
            value: 0.0,
            at_ms: now_ms,
        });
        let value = counter.at(now_ms, rules.surge_half_life_ms) + 1.0;
        *counter = Heat {
            value,
            at_ms: now_ms.max(counter.at_ms),
        };
        if value.round() < rules.surge_requests || self.orders.contains_key(&key) {
            return 0.0;
        }
        let heat = self
            .heat
            .get(&key)
            .map_or(0.0, |h| h.at(now_ms, rules.half_life_ms));
        // Rates of exponentially decaying counters: count × ln 2 / half-life (ln 2 cancels).
        let fast = value / rules.surge_half_life_ms;
        let long = heat / rules.half_life_ms;
        if fast < SURGE_FACTOR * long {
            return 0.0;
        }
        // Counted as the plays it takes to be hot (rounded as the threshold is), and at
        // least one, which orders the copies.
        let missing = (rules.hot_plays - heat).round().max(1.0);
        tracing::info!(%song, region, requests = value, plays = heat, "surge of demand");
        missing
    }

    /// Gives `key` up to `rules.copies` ordered nodes of its region, least loaded first. The
    /// order is kept even while no node has room, so that later sweeps fill it.
    fn top_up(
        &mut self,
        rules: Rules,
        key: &(SongId, String),
        size: u64,
        candidates: &[Candidate],
    ) {
        let have = self
            .orders
            .get(key)
            .map(|o| o.nodes.clone())
            .unwrap_or_default();
        if have.len() >= rules.copies {
            return;
        }
        let mut load: HashMap<&str, usize> = HashMap::new();
        for o in self.orders.values() {
            for n in &o.nodes {
                *load.entry(n.as_str()).or_default() += 1;
            }
        }
        let mut pick: Vec<&Candidate> = candidates
            .iter()
            .filter(|c| c.region == key.1 && c.free >= size && !have.contains(&c.id))
            .collect();
        pick.sort_by_key(|c| {
            (
                load.get(c.id.as_str()).copied().unwrap_or(0),
                c.bytes_per_sec,
                c.id.clone(),
            )
        });
        let mut nodes = have;
        let before = nodes.len();
        nodes.extend(
            pick.into_iter()
                .take(rules.copies - nodes.len())
                .map(|c| c.id.clone()),
        );
        if nodes.len() > before {
            tracing::info!(song = %key.0, region = %key.1, nodes = ?nodes, "song is hot: ordering whole copies");
        }
        self.orders.insert(key.clone(), Order { nodes, size });
    }

    /// Releases the copies of songs that cooled, drops orders on nodes that are no longer
    /// candidates, tops up orders of songs still hot, forgets cold counters and expired
    /// peers. Returns the number of orders released.
    pub(crate) fn sweep(&mut self, rules: Rules, candidates: &[Candidate], now_ms: u64) -> usize {
        let released = self.sweep_orders(rules, candidates, now_ms);
        self.forget(rules, now_ms);
        released
    }

    /// Releases the copies of songs that cooled, drops orders on nodes that are no longer
    /// candidates and tops up orders of songs still hot. Returns the number released.
    fn sweep_orders(&mut self, rules: Rules, candidates: &[Candidate], now_ms: u64) -> usize {
        let alive: BTreeSet<&str> = candidates.iter().map(|c| c.id.as_str()).collect();
        let mut released = 0;
        let keys: Vec<(SongId, String)> = self.orders.keys().cloned().collect();
        for key in keys {
            let heat = self
                .heat
                .get(&key)
                .map_or(0.0, |h| h.at(now_ms, rules.half_life_ms));
            if heat < rules.hot_plays / 2.0 {
                tracing::info!(song = %key.0, region = %key.1, "song cooled: releasing its copies");
                self.orders.remove(&key);
                released += 1;
                continue;
            }
            let Some(order) = self.orders.get_mut(&key) else {
                continue;
            };
            order.nodes.retain(|n| alive.contains(n.as_str()));
            let size = order.size;
            self.top_up(rules, &key, size, candidates);
        }
        released
    }

    /// Forgets cold counters, old failures and reports, expired peers and identities long
    /// unheard from.
    pub(crate) fn forget(&mut self, rules: Rules, now_ms: u64) {
        // A counter this low would take one play to come back from anyway.
        self.heat
            .retain(|_, h| h.at(now_ms, rules.half_life_ms) >= 0.05);
        self.requests
            .retain(|_, h| h.at(now_ms, rules.surge_half_life_ms) >= 0.05);
        self.failures
            .retain(|_, h| h.at(now_ms, rules.half_life_ms) >= 0.05);
        self.forget_old_lies(rules, now_ms);
        self.sweep_peers(rules, now_ms);
        self.identities
            .retain(|_, (_, last)| now_ms.saturating_sub(*last) <= IDENTITY_TTL_MS);
    }

    /// Every order for whole copies, as one replica tells the others.
    pub(crate) fn orders(&self) -> Vec<Ordered> {
        self.orders
            .iter()
            .map(|((song, region), o)| Ordered {
                song: *song,
                region: region.clone(),
                size: o.size,
                nodes: o.nodes.clone(),
            })
            .collect()
    }

    /// Takes up the orders the replica that makes them made (see [`Popularity::orders`]).
    pub(crate) fn set_orders(&mut self, orders: Vec<Ordered>) {
        self.orders = orders
            .into_iter()
            .map(|o| {
                (
                    (o.song, o.region),
                    Order {
                        nodes: o.nodes,
                        size: o.size,
                    },
                )
            })
            .collect();
    }

    /// The songs `node` reports holding whole.
    pub(crate) fn held_by(&self, node: &str) -> Option<&BTreeSet<SongId>> {
        self.held.get(node)
    }

    /// Songs `node` is ordered to hold.
    pub(crate) fn orders_of(&self, node: &str) -> Vec<SongId> {
        let mut v: Vec<SongId> = self
            .orders
            .iter()
            .filter(|(_, o)| o.nodes.iter().any(|n| n == node))
            .map(|((song, _), _)| *song)
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Records what a node holds whole.
    pub(crate) fn set_held(&mut self, node: &str, songs: BTreeSet<SongId>) {
        if songs.is_empty() {
            self.held.remove(node);
        } else {
            self.held.insert(node.to_string(), songs);
        }
    }

    /// Nodes that report holding `song` whole.
    pub(crate) fn holders(&self, song: SongId) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .held
            .iter()
            .filter(|(_, s)| s.contains(&song))
            .map(|(n, _)| n.as_str())
            .collect();
        v.sort_unstable();
        v
    }

    /// Takes a peer's announcement out of the index.
    fn withdraw(&mut self, peer_id: &str) {
        if let Some(old) = self.peers.remove(peer_id) {
            for song in old.announcement.all_songs() {
                if let Some(set) = self.by_song.get_mut(&song) {
                    set.remove(peer_id);
                    if set.is_empty() {
                        self.by_song.remove(&song);
                    }
                }
            }
        }
    }

    /// Records a peer's announcement (an empty one withdraws it). Refused (false) when
    /// [`MAX_PEERS`] live announcements are held already and none has expired.
    pub(crate) fn announce(&mut self, a: PeerAnnouncement, rules: Rules, now_ms: u64) -> bool {
        let confirmed = self
            .peers
            .get(&a.peer_id)
            .is_some_and(|old| old.confirmed && old.announcement.addrs == a.addrs);
        self.withdraw(&a.peer_id);
        if a.songs.is_empty() && a.partial.is_empty() {
            return true;
        }
        if self.peers.len() >= MAX_PEERS {
            self.sweep_peers(rules, now_ms);
            if self.peers.len() >= MAX_PEERS {
                return false;
            }
        }
        for song in a.all_songs() {
            self.by_song
                .entry(song)
                .or_default()
                .insert(a.peer_id.clone());
        }
        self.peers.insert(
            a.peer_id.clone(),
            Announced {
                announcement: a,
                at_ms: now_ms,
                confirmed,
            },
        );
        true
    }

    fn sweep_peers(&mut self, rules: Rules, now_ms: u64) {
        let expired: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, a)| now_ms.saturating_sub(a.at_ms) > rules.peer_ttl_ms)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.withdraw(&id);
        }
    }

    /// Peers whose live announcement lists `song`.
    pub(crate) fn peers_with(&self, song: SongId, rules: Rules, now_ms: u64) -> Vec<&Announced> {
        self.by_song
            .get(&song)
            .into_iter()
            .flatten()
            .filter_map(|id| self.peers.get(id))
            .filter(|a| now_ms.saturating_sub(a.at_ms) <= rules.peer_ttl_ms)
            .collect()
    }

    /// Whether `id` announced songs (live or not yet swept).
    pub(crate) fn is_peer(&self, id: &str) -> bool {
        self.peers.contains_key(id)
    }

    /// Records that a client other than `peer` got a verified segment from it.
    pub(crate) fn confirm(&mut self, peer: &str) {
        if let Some(a) = self.peers.get_mut(peer) {
            a.confirmed = true;
        }
    }

    /// Records that a signed request came from `identity`, so that its history counts.
    pub(crate) fn heard_from(&mut self, identity: &str, now_ms: u64) {
        if let Some(h) = self.identities.get_mut(identity) {
            h.1 = now_ms;
            return;
        }
        if self.identities.len() >= MAX_IDENTITIES {
            self.identities
                .retain(|_, (_, last)| now_ms.saturating_sub(*last) <= IDENTITY_TTL_MS);
            if self.identities.len() >= MAX_IDENTITIES {
                // Full of recent identities: a newcomer stays without history (its reports
                // weigh nothing) until room is made.
                return;
            }
        }
        self.identities
            .insert(identity.to_string(), (now_ms, now_ms));
    }

    /// What a report by `identity` weighs now: the share of `trust_ms` it has been known.
    pub(crate) fn weight(&self, identity: &str, rules: Rules, now_ms: u64) -> f64 {
        if rules.trust_ms == 0 {
            return 1.0;
        }
        self.identities.get(identity).map_or(0.0, |(first, _)| {
            (now_ms.saturating_sub(*first) as f64 / rules.trust_ms as f64).min(1.0)
        })
    }

    /// Entries of every map keyed by what strangers send: peers, songs announced, sources
    /// with failures, sources with lie reports, identities.
    pub(crate) fn sizes(&self) -> [usize; 5] {
        [
            self.peers.len(),
            self.by_song.len(),
            self.failures.len(),
            self.liars.len(),
            self.identities.len(),
        ]
    }

    /// Records a failure of `source` reported by a client (a node or peer the tracker
    /// knows: the caller checks).
    pub(crate) fn failed(&mut self, source: &str, rules: Rules, now_ms: u64) {
        if self.failures.len() >= MAX_REPORTED && !self.failures.contains_key(source) {
            self.failures
                .retain(|_, h| h.at(now_ms, rules.half_life_ms) >= 0.05);
            if self.failures.len() >= MAX_REPORTED {
                return;
            }
        }
        let h = self.failures.entry(source.to_string()).or_insert(Heat {
            value: 0.0,
            at_ms: now_ms,
        });
        *h = Heat {
            value: h.at(now_ms, rules.half_life_ms) + 1.0,
            at_ms: now_ms,
        };
    }

    /// Records `reporter`'s (signed) report that `source` sent bytes that do not match
    /// their hash. Returns whether `source` is banned now.
    pub(crate) fn lied(&mut self, source: &str, reporter: &str, rules: Rules, now_ms: u64) -> bool {
        if self.liars.len() >= MAX_REPORTED && !self.liars.contains_key(source) {
            self.forget_old_lies(rules, now_ms);
            if self.liars.len() >= MAX_REPORTED {
                return self.banned(source, rules, now_ms);
            }
        }
        let weight = self.weight(reporter, rules, now_ms);
        let reporters = self.liars.entry(source.to_string()).or_default();
        if reporters.len() >= MAX_REPORTERS && !reporters.contains_key(reporter) {
            // Keep the weightiest, newest: drop the lightest, oldest report.
            if let Some(least) = reporters
                .iter()
                .min_by(|a, b| {
                    (a.1.1, a.1.0)
                        .partial_cmp(&(b.1.1, b.1.0))
                        .unwrap_or(std::cmp::Ordering::Equal)
                })
                .map(|(r, _)| r.clone())
            {
                reporters.remove(&least);
            }
        }
        reporters.insert(reporter.to_string(), (now_ms, weight));
        self.banned(source, rules, now_ms)
    }

    /// Takes up a report of wrong bytes another replica got: `reporter`'s about `source` at
    /// `at_ms`, weighing `weight`. Kept within the same bounds as the reports this replica
    /// gets; a newer report of the same reporter wins.
    pub(crate) fn learn_lie(
        &mut self,
        source: &str,
        reporter: &str,
        (at_ms, weight): (u64, f64),
        rules: Rules,
        now_ms: u64,
    ) {
        if now_ms.saturating_sub(at_ms) > rules.ban_ms || !(0.0..=1.0).contains(&weight) {
            return;
        }
        if self.liars.len() >= MAX_REPORTED && !self.liars.contains_key(source) {
            return;
        }
        let reporters = self.liars.entry(source.to_string()).or_default();
        let room = reporters.len() < MAX_REPORTERS;
        match reporters.get_mut(reporter) {
            Some(known) if known.0 >= at_ms => {}
            Some(known) => *known = (at_ms, weight),
            None if room => {
                reporters.insert(reporter.to_string(), (at_ms, weight));
            }
            None => {}
        }
    }

    /// Whether `source` is banned: distinct peers reported it within `ban_ms`, their
    /// reports weighing `ban_reporters` in all.
    pub(crate) fn banned(&self, source: &str, rules: Rules, now_ms: u64) -> bool {
        rules.ban_reporters > 0
            && self.liars.get(source).is_some_and(|r| {
                let weight: f64 = r
                    .values()
                    .filter(|(t, _)| now_ms.saturating_sub(*t) <= rules.ban_ms)
                    .map(|(_, w)| w)
                    .sum();
                // A hair under a whole report still counts (floating-point sums).
                weight + 1e-9 >= rules.ban_reporters as f64
            })
    }

    fn forget_old_lies(&mut self, rules: Rules, now_ms: u64) {
        self.liars.retain(|_, r| {
            r.retain(|_, (t, _)| now_ms.saturating_sub(*t) <= rules.ban_ms);
            !r.is_empty()
        });
    }

    /// Recent failures of `source` (decayed).
    pub(crate) fn failures_of(&self, source: &str, rules: Rules, now_ms: u64) -> f64 {
        self.failures
            .get(source)
            .map_or(0.0, |h| h.at(now_ms, rules.half_life_ms))
    }

    /// The songs hot anywhere, hottest first.
    pub(crate) fn hot(&self, rules: Rules, now_ms: u64) -> Vec<HotSong> {
        let mut v: Vec<HotSong> = self
            .orders
            .iter()
            .map(|((song, region), o)| HotSong {
                song: *song,
                region: region.clone(),
                heat: self.heat_of(*song, region, rules, now_ms),
                ordered: o.nodes.clone(),
                held_by: o
                    .nodes
                    .iter()
                    .filter(|n| self.held.get(*n).is_some_and(|s| s.contains(song)))
                    .cloned()
                    .collect(),
            })
            .collect();
        v.sort_by(|a, b| b.heat.total_cmp(&a.heat));
        v
    }

    /// The decayed plays of `song` in `region` now.
    pub(crate) fn heat_of(&self, song: SongId, region: &str, rules: Rules, now_ms: u64) -> f64 {
        self.heat
            .get(&(song, region.to_string()))
            .map_or(0.0, |h| h.at(now_ms, rules.half_life_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules = Rules {
        hot_plays: 3.0,
        half_life_ms: 10_000.0,
        copies: 2,
        surge_requests: 0.0,
        surge_half_life_ms: 1_000.0,
        peer_ttl_ms: 5_000,
        ban_reporters: 2,
        ban_ms: 60_000,
        trust_ms: 0,
    };

    #[test]
    fn distinct_reporters_ban_a_liar_until_their_reports_age() {
        let mut p = Popularity::default();
        assert!(!p.lied("liar", "alice", RULES, 0));
        assert!(
            !p.lied("liar", "alice", RULES, 10),
            "one reporter twice is not two"
        );
        assert!(p.lied("liar", "bob", RULES, 20));
        assert!(p.banned("liar", RULES, 60_000));
        assert!(!p.banned("honest", RULES, 60_000));
        assert!(!p.banned("liar", RULES, 60_011), "alice's report aged out");
        let never = Rules {
            ban_reporters: 0,
            ..RULES
        };
        assert!(!p.banned("liar", never, 20));
        // Bounded: a flood of reporters keeps at most MAX_REPORTERS per source.
        for i in 0..1000 {
            p.lied("x", &format!("r{i}"), RULES, 100 + i);
        }
        assert_eq!(p.liars["x"].len(), MAX_REPORTERS);
        p.sweep(RULES, &[], 10_000_000);
        assert!(p.liars.is_empty());
    }

    fn song(n: u8) -> SongId {
        SongId::from_bytes([n; 32])
    }

    fn node(id: &str, region: &str, free: u64, bps: u64) -> Candidate {
        Candidate {
            id: id.into(),
            region: region.into(),
            free,
            bytes_per_sec: bps,
        }
    }

    #[test]
    fn counters_decay_by_half_every_half_life() {
        let mut p = Popularity::default();
        let nodes = [];
        p.play(RULES, song(1), 10, "eu", &nodes, 0);
        p.play(RULES, song(1), 10, "eu", &nodes, 0);
        assert!((p.heat_of(song(1), "eu", RULES, 0) - 2.0).abs() < 1e-9);
        assert!((p.heat_of(song(1), "eu", RULES, 10_000) - 1.0).abs() < 1e-9);
        assert!((p.heat_of(song(1), "eu", RULES, 20_000) - 0.5).abs() < 1e-9);
        assert_eq!(p.heat_of(song(1), "us", RULES, 0), 0.0, "per region");
    }

    #[test]
    fn a_hot_song_gets_the_least_loaded_nodes_of_its_region_with_room() {
        let mut p = Popularity::default();
        let nodes = [
            node("busy", "eu", 1 << 30, 900),
            node("full", "eu", 5, 0),
            node("idle", "eu", 1 << 30, 10),
            node("calm", "eu", 1 << 30, 20),
            node("far", "us", 1 << 30, 0),
        ];
        for _ in 0..2 {
            p.play(RULES, song(1), 1000, "eu", &nodes, 0);
        }
        assert!(p.orders_of("idle").is_empty(), "not hot after 2 plays");
        p.play(RULES, song(1), 1000, "eu", &nodes, 0);
        assert_eq!(p.orders_of("idle"), vec![song(1)]);
        assert_eq!(p.orders_of("calm"), vec![song(1)]);
        for n in ["busy", "full", "far"] {
            assert!(p.orders_of(n).is_empty(), "{n}");
        }
        // A second hot song goes to the nodes with fewer orders first.
        for _ in 0..3 {
            p.play(RULES, song(2), 1000, "eu", &nodes, 0);
        }
        let o = p.orders_of("busy");
        assert_eq!(
            o,
            vec![song(2)],
            "busy has no order yet, so it comes before idle/calm"
        );
    }

    #[test]
    fn a_surge_is_a_rise_against_the_songs_own_long_run_rate() {
        let rules = Rules {
            surge_requests: 3.0,
            ..RULES
        };
        let nodes = [node("a", "eu", 1 << 30, 0), node("b", "eu", 1 << 30, 0)];
        let mut p = Popularity::default();
        // A song played twice lately: three requests within moments are a surge; it takes
        // the one play it lacks to be hot, and is ordered.
        p.plays(rules, song(1), 10, "eu", 2.0, Some(&nodes), 0);
        assert_eq!(p.request(rules, song(1), "eu", 0), 0.0);
        assert_eq!(p.request(rules, song(1), "eu", 10), 0.0);
        let plays = p.request(rules, song(1), "eu", 20);
        assert_eq!(plays, 1.0);
        p.plays(rules, song(1), 10, "eu", plays, Some(&nodes), 20);
        assert_eq!(p.orders_of("a"), vec![song(1)]);
        assert_eq!(p.request(rules, song(1), "eu", 30), 0.0, "ordered already");
        // Requests spread out never add up to a surge.
        for t in 0..10 {
            assert_eq!(p.request(rules, song(2), "eu", t * 3_000), 0.0);
        }
        // A song this region plays steadily at a high rate (90 decayed plays, not yet hot
        // at 100): three quick requests are within its usual demand.
        let steady = Rules {
            hot_plays: 100.0,
            ..rules
        };
        p.plays(steady, song(3), 10, "eu", 90.0, Some(&nodes), 0);
        for t in 0..3 {
            assert_eq!(p.request(steady, song(3), "eu", t), 0.0);
        }
        assert_eq!(p.request(steady, song(3), "us", 3), 0.0);
        assert_eq!(p.request(steady, song(3), "us", 4), 0.0);
        assert_eq!(
            p.request(steady, song(3), "us", 5),
            100.0,
            "a surge elsewhere"
        );
        // Off: never.
        for t in 0..10 {
            assert_eq!(p.request(RULES, song(4), "eu", t), 0.0);
        }
    }

    #[test]
    fn a_cooled_song_is_released_and_dead_nodes_are_replaced() {
        let mut p = Popularity::default();
        let nodes = [
            node("a", "eu", 1 << 30, 0),
            node("b", "eu", 1 << 30, 1),
            node("c", "eu", 1 << 30, 2),
        ];
        for _ in 0..4 {
            p.play(RULES, song(1), 10, "eu", &nodes, 0);
        }
        assert_eq!(p.orders_of("a"), vec![song(1)]);
        assert_eq!(p.orders_of("b"), vec![song(1)]);
        // Node a is gone: c takes its place while the song is still hot.
        let without_a = &nodes[1..];
        assert_eq!(p.sweep(RULES, without_a, 1_000), 0);
        assert!(p.orders_of("a").is_empty());
        assert_eq!(p.orders_of("c"), vec![song(1)]);
        // Four plays decay below 1.5 after two half-lives (4 → 1): released.
        assert_eq!(p.sweep(RULES, without_a, 20_000), 1);
        assert!(p.orders_of("b").is_empty() && p.orders_of("c").is_empty());
        assert!(p.hot(RULES, 20_000).is_empty());
    }

    #[test]
    fn fresh_identities_weigh_nothing_until_they_have_a_history() {
        let rules = Rules {
            trust_ms: 100_000,
            ..RULES
        };
        let mut p = Popularity::default();
        // Two identities first heard from just now: their reports do not ban.
        for r in ["sybil-1", "sybil-2"] {
            p.heard_from(r, 1_000);
            assert!(!p.lied("holder", r, rules, 1_000));
        }
        assert!(!p.banned("holder", rules, 1_000));
        // Two known for the whole trust period do.
        for r in ["old-1", "old-2"] {
            p.heard_from(r, 0);
        }
        assert!(!p.lied("liar", "old-1", rules, 100_000));
        assert!(p.lied("liar", "old-2", rules, 100_000));
        // Half-known identities weigh half: four make a ban of two.
        for r in ["half-1", "half-2", "half-3"] {
            p.heard_from(r, 50_000);
            assert!(!p.lied("other", r, rules, 100_000), "{r}");
        }
        p.heard_from("half-4", 50_000);
        assert!(p.lied("other", "half-4", rules, 100_000));
    }

    #[test]
    fn peers_expire_and_failures_decay() {
        let mut p = Popularity::default();
        let a = PeerAnnouncement {
            peer_id: "p1".into(),
            addrs: vec!["/ip4/127.0.0.1/udp/1/quic-v1".into()],
            region: "eu".into(),
            songs: vec![song(1)],
            partial: Vec::new(),
        };
        assert!(p.announce(a.clone(), RULES, 0));
        assert_eq!(p.peers_with(song(1), RULES, 1_000).len(), 1);
        assert!(p.peers_with(song(2), RULES, 1_000).is_empty());
        assert!(p.peers_with(song(1), RULES, 6_000).is_empty(), "expired");
        // A new announcement replaces the old one in the index.
        let b = PeerAnnouncement {
            songs: vec![song(2)],
            partial: Vec::new(),
            ..a.clone()
        };
        assert!(p.announce(b, RULES, 1_000));
        assert!(p.peers_with(song(1), RULES, 1_000).is_empty());
        assert_eq!(p.peers_with(song(2), RULES, 1_000).len(), 1);
        p.sweep(RULES, &[], 100_000);
        assert_eq!(p.sizes()[..2], [0, 0], "swept from the index too");
        p.failed("n1", RULES, 0);
        p.failed("n1", RULES, 0);
        assert!((p.failures_of("n1", RULES, 10_000) - 1.0).abs() < 1e-9);
        assert_eq!(p.failures_of("n2", RULES, 0), 0.0);
    }
}
