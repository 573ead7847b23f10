//! The catalogue: signed manifests, the publishers allowed to add them, the journal of
//! commits that feeds the search index, the placement index (which segments each partition
//! holds) and play counts.
//!
//! Laws: a manifest is committed only if it decodes canonically, is consistent, is signed by
//! an authorised publisher and uses the network's code; its manifest, journal entry and
//! placement records are written in one synced batch; the search index is derived and
//! catches up from the journal at start; a committed song is never removed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use medley_api::{Committed, PublishGrants};
use medley_core::{
    Layout, MAX_GRANT_SHARDS, Manifest, PublisherId, SegmentEntry, SegmentId, ShardId, SongId,
    TrackerKey, partition_of,
};
use parking_lot::{Mutex, RwLock};
use tracing::info;

use crate::db::{CF_JOURNAL, CF_MANIFESTS, CF_PLACEMENT, CF_PLAYS, CF_PUBLISHERS, Db, NewSong};
use crate::error::{StateError, corrupt};
use crate::search::{Artist, Hit, Search, SearchError, SearchQuery, SearchResults};

/// Most regions whose plays of one song are listed.
const MAX_PLAY_REGIONS: usize = 1024;

/// Deepest offset of `GET /v1/browse/songs`: reaching it reads every song before it.
pub const MAX_BROWSE_OFFSET: usize = 100_000;

/// What an import did.
#[derive(Debug, Default)]
pub struct Imported {
    /// Songs new to the catalogue.
    pub created: usize,
    /// Songs it had already (or repeated in the input).
    pub existing: usize,
    /// Manifests refused: their position in the input and why.
    pub rejected: Vec<(usize, String)>,
}

fn grant_error(e: &medley_core::GrantError) -> &'static str {
    match e {
        medley_core::GrantError::TooLarge(what) => what,
        _ => "a grant could not be signed",
    }
}

/// Every node named in a placement, once.
fn layout_nodes(placement: &[Vec<Option<String>>]) -> impl Iterator<Item = &str> {
    let mut seen = HashSet::new();
    placement
        .iter()
        .flatten()
        .flatten()
        .map(String::as_str)
        .filter(move |id| seen.insert(*id))
}

fn play_count(v: &[u8]) -> u64 {
    v.try_into().map_or(0, u64::from_le_bytes)
}

/// Songs whose sizes a catalogue keeps in memory (about 50 bytes each).
const SONG_SIZES_KEPT: std::num::NonZeroUsize = match std::num::NonZeroUsize::new(100_000) {
    Some(n) => n,
    None => panic!("not zero"),
};

/// The catalogue.
#[derive(Debug)]
pub(crate) struct Catalog {
    db: Arc<Db>,
    search: Search,
    publishers: RwLock<HashSet<PublisherId>>,
    /// Held while the index follows the journal, so it takes every position once and in
    /// order.
    indexing: Mutex<()>,
    /// The last journal position the search index holds.
    indexed: std::sync::atomic::AtomicU64,
    /// Plays counted and not yet written, by key (song id and region): the count stored
    /// when the first was counted, and how many since. Added to the store together every
    /// second ([`Catalog::flush_plays`]), not one synced write per play.
    pending_plays: Mutex<HashMap<Vec<u8>, (u64, u64)>>,
    /// [`Catalog::partition_size`]'s answers, until a publish writes to their partition:
    /// audits ask for every partition each round, and a scan of the placement index each
    /// time would read it whole.
    sizes: Mutex<HashMap<u16, (u64, u64)>>,
    /// Songs' sizes by id, most recently asked kept: a play report needs only that, and a
    /// manifest never changes, so it is read from the store once, not once per play.
    song_sizes: Mutex<lru::LruCache<SongId, u64>>,
    partitions: u16,
    k: u8,
    m: u8,
}

impl Catalog {
    /// The catalogue in `db`, with the search index in `index_dir` caught up, and the
    /// configured `publishers` authorised.
    pub(crate) fn open(
        db: Arc<Db>,
        index_dir: &std::path::Path,
        publishers: &[PublisherId],
        partitions: u16,
        (k, m): (u8, u8),
    ) -> Result<Self, StateError> {
        for p in publishers {
            db.put(CF_PUBLISHERS, &p.0, b"")?;
        }
        let (search, fresh) = Search::open(index_dir)?;
        let indexed = if fresh { 0 } else { search.position()? };
        let catalog = Self {
            db,
            search,
            publishers: RwLock::new(HashSet::new()),
            song_sizes: Mutex::new(lru::LruCache::new(SONG_SIZES_KEPT)),
            indexing: Mutex::new(()),
            indexed: std::sync::atomic::AtomicU64::new(indexed),
            pending_plays: Mutex::new(HashMap::new()),
            sizes: Mutex::new(HashMap::new()),
            partitions,
            k,
            m,
        };
        catalog.reload_publishers()?;
        let replayed = catalog.catch_up_index(&HashMap::new())?;
        if fresh && replayed > 0 {
            // Rebuilt from scratch in batches: one segment, as after an import.
            catalog.search.merge_all()?;
        }
        catalog.backfill_placement()?;
        Ok(catalog)
    }

    /// Reads the authorised publisher keys back from the store (replicas share them).
    pub(crate) fn reload_publishers(&self) -> Result<(), StateError> {
        let mut keys = HashSet::new();
        for (key, _) in self.db.scan(CF_PUBLISHERS)? {
            let bytes: [u8; 32] = key
                .as_ref()
                .try_into()
                .map_err(|_| corrupt("publisher key", "not 32 bytes"))?;
            keys.insert(PublisherId(bytes));
        }
        *self.publishers.write() = keys;
        Ok(())
    }

    /// Brings the search index up to the journal: songs committed by other replicas become
    /// searchable here. Returns how many it indexed.
    pub(crate) fn follow_journal(&self) -> Result<usize, StateError> {
        self.catch_up_index(&HashMap::new())
    }

    /// Counts one play of song `id` in `region`; returns the song's plays there so far.
    /// Written at the next [`Catalog::flush_plays`].
    pub(crate) fn count_play(&self, id: SongId, region: &str) -> Result<u64, StateError> {
        if region.is_empty() || region.len() > 64 {
            return Err(StateError::BadPlay("region must be 1 to 64 bytes"));
        }
        let mut key = id.as_bytes().to_vec();
        key.extend_from_slice(region.as_bytes());
        let mut pending = self.pending_plays.lock();
        let stored = match pending.get(&key) {
            Some(_) => 0,
            None => self.db.get(CF_PLAYS, &key)?.map_or(0, |v| play_count(&v)),
        };
        let (stored, since) = pending.entry(key).or_insert((stored, 0));
        *since += 1;
        Ok(*stored + *since)
    }

    /// Writes the plays counted since the last flush, in one batch.
    pub(crate) fn flush_plays(&self) -> Result<(), StateError> {
        let mut pending = self.pending_plays.lock();
        if pending.is_empty() {
            return Ok(());
        }
        let deltas: Vec<(Vec<u8>, u64)> = pending
            .iter()
            .map(|(k, (_, since))| (k.clone(), *since))
            .collect();
        self.db.add_counts(&deltas)?;
        pending.clear();
        Ok(())
    }

    /// Builds the placement index from the catalogue when it is empty but songs exist (a
    /// database written before the index existed).
    fn backfill_placement(&self) -> Result<(), StateError> {
        if !self.db.is_empty(CF_PLACEMENT)? || self.db.is_empty(CF_MANIFESTS)? {
            return Ok(());
        }
        info!("building the placement index from the catalogue");
        let partitions = self.partitions;
        for chunk in self.db.scan(CF_MANIFESTS)?.chunks(10_000) {
            let mut owned = Vec::new();
            for (k, v) in chunk {
                let id = SongId::from_bytes(
                    k.as_ref()
                        .try_into()
                        .map_err(|_| corrupt("manifest key", "not 32 bytes"))?,
                );
                let m = Manifest::decode_expecting(v, id)?;
                owned.extend(placement_records(&m, partitions));
            }
            let records: Vec<(&'static str, &[u8], &[u8])> = owned
                .iter()
                .map(|(k, v)| (CF_PLACEMENT, k.as_slice(), v.as_slice()))
                .collect();
            self.db.put_all(&records)?;
        }
        Ok(())
    }

    /// Segments of partition `partition` in id order, after `after`, at most `limit`: what
    /// the nodes on its slots must hold.
    pub(crate) fn partition_segments(
        &self,
        partition: u16,
        after: Option<SegmentId>,
        limit: usize,
    ) -> Result<Vec<SegmentEntry>, StateError> {
        let partitions = self.partitions;
        if partition >= partitions {
            return Err(StateError::UnknownPartition {
                partition,
                partitions,
            });
        }
        let prefix = partition.to_be_bytes();
        let mut start = prefix.to_vec();
        if let Some(a) = after {
            start.extend_from_slice(a.as_bytes());
            // The first key after `after`: append a zero byte.
            start.push(0);
        }
        let slots = usize::from(self.k + self.m);
        self.db
            .scan_prefix(CF_PLACEMENT, &prefix, &start, limit)?
            .into_iter()
            .map(|(k, v)| {
                let id: [u8; 32] = k
                    .get(2..)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| corrupt("placement key", "not 34 bytes"))?;
                if v.len() != 4 + 32 * slots {
                    return Err(corrupt("placement record", "wrong length").into());
                }
                let len = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
                let shards = v[4..]
                    .chunks_exact(32)
                    .map(|c| {
                        let mut b = [0u8; 32];
                        b.copy_from_slice(c);
                        ShardId::from_bytes(b)
                    })
                    .collect();
                Ok(SegmentEntry {
                    id: SegmentId::from_bytes(id),
                    len,
                    shards,
                })
            })
            .collect()
    }

    /// Indexes every journal entry the search index has not reached yet, in journal order;
    /// the metadata of songs in `known` is taken from it, the others' read from the store.
    /// Returns how many it indexed.
    fn catch_up_index(
        &self,
        known: &HashMap<SongId, medley_core::SongMeta>,
    ) -> Result<usize, StateError> {
        let _indexing = self.indexing.lock();
        let from = self.indexed.load(std::sync::atomic::Ordering::Acquire);
        let entries = self.db.scan_from(CF_JOURNAL, &(from + 1).to_be_bytes())?;
        if entries.is_empty() {
            return Ok(0);
        }
        let total = entries.len();
        let loud = total > 1 && known.is_empty();
        if loud {
            info!(from, entries = total, "search index catching up");
        }
        let mut done = 0;
        let mut elsewhere = false;
        for chunk in entries.chunks(10_000) {
            let mut positions = Vec::with_capacity(chunk.len());
            for (k, v) in chunk {
                let seq = u64::from_be_bytes(
                    k.as_ref()
                        .try_into()
                        .map_err(|_| corrupt("journal key", "not 8 bytes"))?,
                );
                let id = SongId::from_bytes(
                    v.as_ref()
                        .try_into()
                        .map_err(|_| corrupt("journal entry", "not 32 bytes"))?,
                );
                positions.push((seq, id));
            }
            let missing: Vec<SongId> = positions
                .iter()
                .map(|(_, id)| *id)
                .filter(|id| !known.contains_key(id))
                .collect();
            elsewhere |= !missing.is_empty();
            let read = self.manifests(&missing)?;
            let mut songs = Vec::with_capacity(positions.len());
            for (_, id) in &positions {
                let meta = match known.get(id) {
                    Some(meta) => meta.clone(),
                    None => read
                        .get(id)
                        .ok_or(StateError::UnknownSong(*id))?
                        .meta()
                        .clone(),
                };
                songs.push((*id, meta));
            }
            let last = positions.last().map_or(from, |(seq, _)| *seq);
            self.search.add(&songs, last)?;
            self.indexed
                .store(last, std::sync::atomic::Ordering::Release);
            done += songs.len();
            if loud && total > 10_000 {
                info!(indexed = done, of = total, "search index catching up");
            }
        }
        if elsewhere {
            // Songs committed through another replica placed segments this one has not
            // counted.
            self.sizes.lock().clear();
        }
        Ok(done)
    }

    /// The committed manifests of `ids`, read together.
    fn manifests(&self, ids: &[SongId]) -> Result<HashMap<SongId, Manifest>, StateError> {
        let keys: Vec<&[u8]> = ids.iter().map(|id| id.as_bytes().as_slice()).collect();
        let mut out = HashMap::with_capacity(ids.len());
        for (id, bytes) in ids.iter().zip(self.db.get_many(CF_MANIFESTS, &keys)?) {
            let bytes = bytes.ok_or(StateError::UnknownSong(*id))?;
            out.insert(*id, Manifest::decode_expecting(&bytes, *id)?);
        }
        Ok(out)
    }

    /// [`Catalog::catch_up_index`] after a commit: the commit is durable and the index is
    /// derived, so a failure is logged and the index catches up at its next follow.
    fn index_committed(&self, known: &HashMap<SongId, medley_core::SongMeta>) {
        if let Err(e) = self.catch_up_index(known) {
            tracing::error!(error = %e, "indexing failed; the index catches up later");
        }
    }

    /// Searches the catalogue's metadata.
    pub(crate) fn search(&self, query: &SearchQuery) -> Result<SearchResults, StateError> {
        Ok(self.search.search(query)?)
    }

    /// A page of the catalogue's artists (see [`crate::search`]).
    pub(crate) fn artists(&self, after: &str, limit: usize) -> Result<Vec<Artist>, StateError> {
        Ok(self.search.artists(after, limit)?)
    }

    /// Up to `size` songs at random, optionally of one genre.
    pub(crate) fn random_songs(
        &self,
        size: usize,
        genre: Option<&str>,
    ) -> Result<Vec<Hit>, StateError> {
        Ok(self.search.random(size, genre)?)
    }

    /// Every song of the catalogue in id order, `limit` (1 to 500) after the first `offset`.
    /// The walk to `offset` reads every record before it: `offset` is at most
    /// [`MAX_BROWSE_OFFSET`], and the walk stops when `cancelled` is set.
    pub(crate) fn songs_page(
        &self,
        offset: usize,
        limit: usize,
        cancelled: &std::sync::atomic::AtomicBool,
    ) -> Result<Vec<Hit>, StateError> {
        if limit == 0 || limit > 500 {
            return Err(SearchError::BadQuery("limit must be 1 to 500".into()).into());
        }
        if offset > MAX_BROWSE_OFFSET {
            return Err(SearchError::BadQuery(format!(
                "offset must be at most {MAX_BROWSE_OFFSET}"
            ))
            .into());
        }
        let mut out = Vec::new();
        for (k, v) in self.db.page(CF_MANIFESTS, offset, limit, cancelled)? {
            let id = SongId::from_bytes(
                k.as_ref()
                    .try_into()
                    .map_err(|_| corrupt("manifest key", "not 32 bytes"))?,
            );
            let m = Manifest::decode_expecting(&v, id)?;
            out.push(Hit::of(&id, m.meta()));
        }
        Ok(out)
    }

    /// Plays of song `id` per region.
    pub(crate) fn plays(&self, id: SongId) -> Result<BTreeMap<String, u64>, StateError> {
        let prefix = id.as_bytes();
        let region = |k: &[u8]| String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
        // Plays are counted per region the tracker knows, so a song has a bounded number.
        let mut out: BTreeMap<String, u64> = self
            .db
            .scan_prefix(CF_PLAYS, prefix, prefix, MAX_PLAY_REGIONS)?
            .into_iter()
            .map(|(k, v)| (region(&k), play_count(&v)))
            .collect();
        for (k, (_, since)) in self.pending_plays.lock().iter() {
            if k.starts_with(prefix) {
                *out.entry(region(k)).or_default() += since;
            }
        }
        Ok(out)
    }

    /// Authorises a publisher key.
    pub(crate) fn add_publisher(&self, key: PublisherId) -> Result<(), StateError> {
        self.db.put(CF_PUBLISHERS, &key.0, b"")?;
        self.publishers.write().insert(key);
        Ok(())
    }

    /// Revokes a publisher key: manifests it signs are refused from now on (songs it
    /// published stay). Returns whether it was authorised.
    pub(crate) fn remove_publisher(&self, key: PublisherId) -> Result<bool, StateError> {
        self.db.delete(CF_PUBLISHERS, &key.0)?;
        Ok(self.publishers.write().remove(&key))
    }

    /// The authorised publisher keys.
    pub(crate) fn publishers(&self) -> Vec<PublisherId> {
        let mut v: Vec<_> = self.publishers.read().iter().copied().collect();
        v.sort();
        v
    }

    /// Commits a signed manifest: it must decode, be consistent, carry a valid signature of
    /// an authorised publisher, and use the network's code. Idempotent.
    pub(crate) fn publish(&self, bytes: &[u8]) -> Result<Committed, StateError> {
        let manifest = self.check(bytes)?;
        let id = manifest.id();
        let placement = placement_records(&manifest, self.partitions);
        let committed = self.db.commit_songs(&[NewSong {
            id: id.as_bytes(),
            manifest: manifest.encoded(),
            placement: &placement,
        }])?;
        if committed.first().copied().flatten().is_none() {
            // Committed before (through this replica or another).
            return Ok(Committed { id, created: false });
        }
        self.placement_changed(&placement);
        self.index_committed(&HashMap::from([(id, manifest.meta().clone())]));
        info!(song = %id, title = %manifest.meta().title, "song published");
        Ok(Committed { id, created: true })
    }

    /// Publish grants for a signed manifest of an authorised publisher (checked as by
    /// [`Catalog::publish`]): for each node of `layout`, the ids of the song's shards placed
    /// on it, at most [`MAX_GRANT_SHARDS`] per grant, signed by `key`, valid until `expires`
    /// (Unix seconds); with each segment's placement and the nodes' addresses (`addrs`).
    pub(crate) fn grants(
        &self,
        bytes: &[u8],
        layout: &Layout,
        addrs: &HashMap<String, (Vec<String>, bool)>,
        key: &TrackerKey,
        expires: u64,
    ) -> Result<PublishGrants, StateError> {
        let manifest = self.check(bytes)?;
        let partitions = u16::try_from(layout.partitions.len()).unwrap_or(u16::MAX);
        let mut by_node: BTreeMap<&str, Vec<ShardId>> = BTreeMap::new();
        for seg in &manifest.body().segments {
            let Some(slots) = layout
                .partitions
                .get(usize::from(partition_of(&seg.id, partitions)))
            else {
                continue;
            };
            for (shard, node) in seg.shards.iter().zip(slots) {
                let ids = by_node.entry(node.as_str()).or_default();
                if !ids.contains(shard) {
                    ids.push(*shard);
                }
            }
        }
        let mut grants = Vec::new();
        for (node, ids) in by_node {
            for chunk in ids.chunks(MAX_GRANT_SHARDS) {
                grants.push(
                    key.grant(node, chunk.to_vec(), expires)
                        .map_err(|e| StateError::BadRegistration(grant_error(&e)))?,
                );
            }
        }
        let placement: Vec<Vec<Option<String>>> = manifest
            .body()
            .segments
            .iter()
            .map(|seg| {
                let holders = layout.holders(&seg.id);
                (0..seg.shards.len())
                    .map(|slot| holders.get(slot).cloned())
                    .collect()
            })
            .collect();
        let addrs = layout_nodes(&placement)
            .filter_map(|id| addrs.get(id).map(|(a, _)| (id.to_string(), a.clone())))
            .collect();
        Ok(PublishGrants {
            song: manifest.id(),
            layout_version: layout.version,
            expires,
            grants,
            placement,
            addrs,
        })
    }

    /// Checks a manifest as [`Catalog::publish`] does, without committing it.
    fn check(&self, bytes: &[u8]) -> Result<Manifest, StateError> {
        let manifest = Manifest::decode(bytes)?;
        let body = manifest.body();
        if !self.publishers.read().contains(&body.publisher) {
            return Err(StateError::UnknownPublisher(body.publisher));
        }
        if (body.k, body.m) != (self.k, self.m) {
            return Err(StateError::Coding {
                k: body.k,
                m: body.m,
                net_k: self.k,
                net_m: self.m,
            });
        }
        Ok(manifest)
    }

    /// Merges the search index into one segment, as after a bulk import.
    pub(crate) fn merge_search(&self) -> Result<(), StateError> {
        Ok(self.search.merge_all()?)
    }

    /// Commits many signed manifests at once, for bulk loads: each is checked as by
    /// [`Catalog::publish`] (on all cores), the new ones are written in one synced batch and
    /// indexed in one index commit. A rejected manifest is reported and skipped; the others
    /// are committed.
    pub(crate) fn import(&self, manifests: &[Vec<u8>]) -> Result<Imported, StateError> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per = manifests.len().div_ceil(threads).max(1);
        let checked: Vec<Result<Manifest, StateError>> = std::thread::scope(|s| {
            let parts: Vec<_> = manifests
                .chunks(per)
                .map(|c| s.spawn(move || c.iter().map(|b| self.check(b)).collect::<Vec<_>>()))
                .collect();
            parts
                .into_iter()
                .flat_map(|h| {
                    h.join().unwrap_or_else(|_| {
                        vec![Err(StateError::Db(corrupt(
                            "import",
                            "a checking thread panicked",
                        )))]
                    })
                })
                .collect()
        });
        let mut out = Imported::default();
        let mut fresh = Vec::new();
        let mut seen = HashSet::new();
        for (i, r) in checked.into_iter().enumerate() {
            match r {
                Ok(m) if seen.insert(m.id()) => fresh.push(m),
                Ok(_) => out.existing += 1,
                Err(e) => out.rejected.push((i, e.to_string())),
            }
        }
        if fresh.is_empty() {
            return Ok(out);
        }
        let ids: Vec<SongId> = fresh.iter().map(Manifest::id).collect();
        let placements: Vec<Vec<(Vec<u8>, Vec<u8>)>> = fresh
            .iter()
            .map(|m| placement_records(m, self.partitions))
            .collect();
        let songs: Vec<NewSong<'_>> = fresh
            .iter()
            .zip(&ids)
            .zip(&placements)
            .map(|((m, id), placement)| NewSong {
                id: id.as_bytes(),
                manifest: m.encoded(),
                placement,
            })
            .collect();
        let committed = self.db.commit_songs(&songs)?;
        let mut known = HashMap::new();
        for ((m, placement), seq) in fresh.iter().zip(&placements).zip(&committed) {
            if seq.is_some() {
                out.created += 1;
                self.placement_changed(placement);
                known.insert(m.id(), m.meta().clone());
            } else {
                out.existing += 1;
            }
        }
        self.index_committed(&known);
        Ok(out)
    }

    /// A committed manifest.
    pub(crate) fn manifest(&self, id: SongId) -> Result<Manifest, StateError> {
        let bytes = self
            .db
            .get(CF_MANIFESTS, id.as_bytes())?
            .ok_or(StateError::UnknownSong(id))?;
        // Stored manifests were verified on commit; check again, the disk may have rotted.
        Ok(Manifest::decode_expecting(&bytes, id)?)
    }

    /// The total size of song `id`'s file (from its manifest, read once).
    pub(crate) fn song_size(&self, id: SongId) -> Result<u64, StateError> {
        if let Some(size) = self.song_sizes.lock().get(&id) {
            return Ok(*size);
        }
        let size = self.manifest(id)?.body().total_size;
        self.song_sizes.lock().put(id, size);
        Ok(size)
    }

    /// Number of songs searchable here: the journal gains one entry per new song, and the
    /// index follows it.
    pub(crate) fn song_count(&self) -> u64 {
        self.indexed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Segments placed in `partition` and the bytes of one slot's shards of them.
    /// The number of partitions.
    pub(crate) fn partition_count(&self) -> u16 {
        self.partitions
    }

    /// For each partition, whether the placement index has a segment in it.
    pub(crate) fn partitions_holding_data(&self) -> Result<Vec<bool>, StateError> {
        (0..self.partitions)
            .map(|p| {
                let prefix = p.to_be_bytes();
                Ok(!self
                    .db
                    .scan_prefix(CF_PLACEMENT, &prefix, &prefix, 1)?
                    .is_empty())
            })
            .collect()
    }

    /// Forgets the sizes of the partitions `placement` records were written to.
    fn placement_changed(&self, placement: &[(Vec<u8>, Vec<u8>)]) {
        let mut sizes = self.sizes.lock();
        for (key, _) in placement {
            if let Some(p) = key.get(..2) {
                sizes.remove(&u16::from_be_bytes([p[0], p[1]]));
            }
        }
    }

    /// The segments of `partition` and the bytes of one shard of each.
    pub(crate) fn partition_size(&self, partition: u16) -> Result<(u64, u64), StateError> {
        if let Some(size) = self.sizes.lock().get(&partition) {
            return Ok(*size);
        }
        let codec = medley_core::Codec::new(self.k, self.m).map_err(|e| corrupt("coding", e))?;
        let (mut segments, mut bytes) = (0u64, 0u64);
        self.db
            .for_each_prefix(CF_PLACEMENT, &partition.to_be_bytes(), |_, v| {
                if let Some(len) = v.get(..4) {
                    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]);
                    segments += 1;
                    bytes += codec.shard_len(len as usize) as u64;
                }
            })?;
        self.sizes.lock().insert(partition, (segments, bytes));
        Ok((segments, bytes))
    }
}

/// The placement index records of a manifest's segments.
fn placement_records(m: &Manifest, partitions: u16) -> Vec<(Vec<u8>, Vec<u8>)> {
    m.body()
        .segments
        .iter()
        .map(|seg| {
            let mut key = Vec::with_capacity(34);
            key.extend_from_slice(&partition_of(&seg.id, partitions).to_be_bytes());
            key.extend_from_slice(seg.id.as_bytes());
            let mut value = Vec::with_capacity(4 + 32 * seg.shards.len());
            value.extend_from_slice(&seg.len.to_le_bytes());
            for s in &seg.shards {
                value.extend_from_slice(s.as_bytes());
            }
            (key, value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn song(title: &str, key: &medley_core::PublisherKey) -> Manifest {
        let meta = medley_core::test_utils::flac_meta(title);
        let audio: Vec<u8> = title.bytes().cycle().take(600_000).collect();
        let body = medley_core::test_utils::body_for(meta, &audio, 256 * 1024, 4, 2, key.id());
        Manifest::sign(body, key).unwrap()
    }

    use crate::db::tests::{Place, on_both_stores};

    fn open(place: &Place, index: &std::path::Path, key: &medley_core::PublisherKey) -> Catalog {
        // One partition: every segment lands in it.
        Catalog::open(place.open(), index, &[key.id()], 1, (4, 2)).unwrap()
    }

    fn found(c: &Catalog, q: &str) -> usize {
        let query = SearchQuery {
            q: q.into(),
            ..SearchQuery::default()
        };
        c.search(&query).unwrap().total
    }

    on_both_stores! {
        fn partition_sizes_follow_every_publish(place: &Place) {
            let dir = tempfile::tempdir().unwrap();
            let key = medley_core::PublisherKey::from_seed([3; 32]);
            let c = open(place, &dir.path().join("index"), &key);
            assert_eq!(c.partition_size(0).unwrap(), (0, 0));
            let first = song("First", &key);
            c.publish(first.encoded()).unwrap();
            let one = c.partition_size(0).unwrap();
            assert_eq!(one.0, first.body().segments.len() as u64);
            assert!(one.1 > 0);
            // Asked again after another publish: the new segments count.
            let second = song("Second", &key);
            c.publish(second.encoded()).unwrap();
            let two = c.partition_size(0).unwrap();
            assert_eq!(two.0, one.0 + second.body().segments.len() as u64);
            assert_eq!(two.1, 2 * one.1, "the same sizes of segments");
        }

        fn a_song_is_published_searched_and_counted_once(place: &Place) {
            let dir = tempfile::tempdir().unwrap();
            let key = medley_core::PublisherKey::from_seed([4; 32]);
            let c = open(place, &dir.path().join("index"), &key);
            let s = song("Harbour Lights", &key);
            assert!(c.publish(s.encoded()).unwrap().created);
            assert!(!c.publish(s.encoded()).unwrap().created, "published twice");
            let imported = c.import(&[s.encoded().to_vec(), song("Tidewater", &key).encoded().to_vec()]).unwrap();
            assert_eq!((imported.created, imported.existing), (1, 1));
            assert_eq!(found(&c, "harbour"), 1);
            assert_eq!(c.song_count(), 2);
            for _ in 0..3 {
                c.count_play(s.id(), "eu").unwrap();
            }
            c.flush_plays().unwrap();
            assert_eq!(c.count_play(s.id(), "eu").unwrap(), 4);
            assert_eq!(c.plays(s.id()).unwrap().get("eu"), Some(&4));
            drop(c);
            // Opened again over the same store and a new index: it is rebuilt from the
            // journal; the play counted but not flushed is gone, the others kept.
            let again = open(place, &dir.path().join("index-2"), &key);
            assert_eq!(found(&again, "tidewater"), 1);
            assert_eq!(again.song_count(), 2);
            assert_eq!(again.plays(s.id()).unwrap().get("eu"), Some(&3));
        }
    }

    /// Two catalogues on one PostgreSQL, as two tracker replicas have: what one commits the
    /// other finds once it follows the journal; plays counted on both add up; a publisher
    /// one authorises the other accepts.
    #[test]
    fn replicas_share_one_catalogue() {
        let place = Place::postgres();
        let dir = tempfile::tempdir().unwrap();
        let key = medley_core::PublisherKey::from_seed([5; 32]);
        let a = open(&place, &dir.path().join("a"), &key);
        let b = open(&place, &dir.path().join("b"), &key);
        let s = song("Lantern Bay", &key);
        assert!(a.publish(s.encoded()).unwrap().created);
        assert_eq!(found(&b, "lantern"), 0, "not followed yet");
        assert_eq!(b.follow_journal().unwrap(), 1);
        assert_eq!(found(&b, "lantern"), 1);
        assert!(
            !b.publish(s.encoded()).unwrap().created,
            "committed already"
        );
        // Both commit at once: each song gets one journal position.
        let (x, y) = (song("Quay Song", &key), song("Gull Call", &key));
        std::thread::scope(|t| {
            t.spawn(|| {
                a.import(&[x.encoded().to_vec(), y.encoded().to_vec()])
                    .unwrap()
            });
            t.spawn(|| {
                b.import(&[y.encoded().to_vec(), x.encoded().to_vec()])
                    .unwrap()
            });
        });
        a.follow_journal().unwrap();
        b.follow_journal().unwrap();
        for c in [&a, &b] {
            assert_eq!(c.song_count(), 3);
            assert_eq!(found(c, "quay"), 1);
            assert_eq!(found(c, "gull"), 1);
        }
        a.count_play(s.id(), "eu").unwrap();
        b.count_play(s.id(), "eu").unwrap();
        b.count_play(s.id(), "eu").unwrap();
        a.flush_plays().unwrap();
        b.flush_plays().unwrap();
        assert_eq!(a.plays(s.id()).unwrap().get("eu"), Some(&3));
        let other = medley_core::PublisherKey::from_seed([6; 32]);
        a.add_publisher(other.id()).unwrap();
        let theirs = song("Other Label", &other);
        assert!(b.publish(theirs.encoded()).is_err(), "not known to b yet");
        b.reload_publishers().unwrap();
        assert!(b.publish(theirs.encoded()).unwrap().created);
    }
}
