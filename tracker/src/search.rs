//! Full-text search over song metadata with tantivy. Reads metadata only, never audio.
//!
//! Fields: title, artist, album, genre (stored, shown), one combined field of their words
//! (tokenized, lowercased; searched), year (numeric; filtered), exact lowercased artist,
//! album and genre (filters), and the song id.
//!
//! A query is split into words. Every word must match the combined field exactly, or, in
//! later phases that run only when the earlier ones do not fill the requested page, the
//! last word as a prefix (search as you type) and then every word within an edit distance
//! (1 for words of 4+ characters, 2 for 8+: typo tolerance). Results are ranked by BM25 on
//! the combined field, where a title word counts three times and an artist word twice
//! (BM25F's field weights as term frequencies), so title and artist matches weigh more than
//! album and genre; exact matches outrank expanded ones. When a later phase runs, `total`
//! counts its matches. On a large catalogue the expansions are most of a query's cost, and
//! one posting list per word (not a union over four fields) lets ranking skip whole blocks
//! of documents that cannot reach the page (block-max WAND).
//!
//! The index is derived state: RocksDB is the source of truth. Each publish appends to a
//! journal in RocksDB; the index records in its commit payload the journal position it has
//! reached, and at start it replays what it lacks. A missing or unreadable index is rebuilt
//! from scratch.

use std::ops::Bound;
use std::path::Path;

use medley_core::{SongId, SongMeta};
use parking_lot::Mutex;
use tantivy::collector::{Count, TopDocs};
use tantivy::query::EnableScoring;
use tantivy::query::{
    BooleanQuery, BoostQuery, FuzzyTermQuery, Occur, Query, RangeQuery, TermQuery,
};
use tantivy::schema::{
    Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
    Value,
};
use tantivy::{
    DocSet, Index, IndexReader, IndexWriter, ReloadPolicy, TERMINATED, TantivyDocument, Term, doc,
};

/// Largest page of results.
pub const MAX_LIMIT: usize = 100;
/// Longest query accepted, in bytes.
pub const MAX_QUERY: usize = 256;
/// Largest page of artists.
pub(crate) const MAX_ARTISTS: usize = 500;
/// Songs of one artist read to count its albums.
const MAX_ARTIST_SONGS: usize = 1000;
/// Most words of a query that are used.
const MAX_WORDS: usize = 8;
/// Matches counted one by one (shared among the index segments by their sizes); past them,
/// a segment's total is estimated from how densely they fell among its documents so far.
/// Counting a query of two common words exactly walked hundreds of thousands of matches.
const EXACT_COUNT: u32 = 10_000;
/// Bytes of stored fields compressed together (tantivy's default is 16 KiB).
const DOC_STORE_BLOCK: usize = 4096;

pub(crate) use medley_api::{Artist, Hit, SearchQuery, SearchResults};

/// How the words of a query match, from the cheapest to the most forgiving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Every word exactly.
    Exact,
    /// And the last word as a prefix.
    Prefix,
    /// And every word within an edit distance.
    Typos,
}

/// How many times each searched field's words go into the combined field: a word's
/// frequency there weighs its field (BM25F's weighted term frequency), so a title or artist
/// match outranks an album or genre match.
const TITLE_WEIGHT: usize = 3;
const ARTIST_WEIGHT: usize = 2;

/// Search failures.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The query is unusable.
    #[error("bad query: {0}")]
    BadQuery(String),
    /// tantivy failed.
    #[error("search index: {0}")]
    Index(#[from] tantivy::TantivyError),
    /// The index directory could not be prepared.
    #[error("search index directory {path}: {source}")]
    Io {
        /// Directory.
        path: String,
        /// Error.
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy)]
struct Fields {
    id: Field,
    title: Field,
    artist: Field,
    album: Field,
    genre: Field,
    year: Field,
    duration: Field,
    track: Field,
    mime: Field,
    bitrate: Field,
    artist_exact: Field,
    album_exact: Field,
    genre_exact: Field,
    all: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let fields = Fields {
        id: b.add_text_field("id", STRING | STORED),
        title: b.add_text_field("title", STORED),
        artist: b.add_text_field("artist", STORED),
        album: b.add_text_field("album", STORED),
        genre: b.add_text_field("genre", STORED),
        year: b.add_u64_field("year", INDEXED | STORED),
        duration: b.add_u64_field("duration_ms", STORED),
        track: b.add_u64_field("track", STORED),
        mime: b.add_text_field("mime", STORED),
        bitrate: b.add_u64_field("bitrate", STORED),
        artist_exact: b.add_text_field("artist_exact", STRING),
        album_exact: b.add_text_field("album_exact", STRING),
        genre_exact: b.add_text_field("genre_exact", STRING),
        // Every searched word of a song in one field, with frequencies (BM25) and without
        // positions: one posting list per word to intersect, not a union of four.
        all: b.add_text_field(
            "all",
            TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer("default")
                    .set_index_option(IndexRecordOption::WithFreqs),
            ),
        ),
    };
    (b.build(), fields)
}

/// The search index.
pub(crate) struct Search {
    index: Index,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    fields: Fields,
}

impl std::fmt::Debug for Search {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Search")
    }
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .take(MAX_WORDS)
        .collect()
}

impl Search {
    /// Opens the index in `dir`, or creates it (also when the existing one is unreadable).
    /// Returns the index and whether it was (re)created empty.
    pub(crate) fn open(dir: &Path) -> Result<(Self, bool), SearchError> {
        let (schema, fields) = schema();
        let io = |source| SearchError::Io {
            path: dir.display().to_string(),
            source,
        };
        let existing = dir.join("meta.json").exists();
        let opened = if existing {
            Index::open_in_dir(dir)
                .ok()
                .filter(|i| i.schema() == schema)
        } else {
            None
        };
        let (index, fresh) = match opened {
            Some(i) => (i, false),
            None => {
                if dir.exists() {
                    std::fs::remove_dir_all(dir).map_err(io)?;
                }
                std::fs::create_dir_all(dir).map_err(io)?;
                // Small doc-store blocks: a result page reads twenty songs from blocks spread
                // over the whole catalogue, and each read decompresses its whole block.
                let settings = tantivy::IndexSettings {
                    docstore_blocksize: DOC_STORE_BLOCK,
                    ..Default::default()
                };
                (
                    Index::builder()
                        .schema(schema)
                        .settings(settings)
                        .create_in_dir(dir)?,
                    true,
                )
            }
        };
        // Search a query's segments on all cores: a query's latency, not only the
        // throughput of many, then scales with the machine.
        let mut index = index;
        index.set_default_multithread_executor()?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        // 15 MB is tantivy's minimum per thread; one indexing thread keeps the tracker light.
        let writer = index.writer_with_num_threads(1, 32 * 1024 * 1024)?;
        Ok((
            Self {
                index,
                reader,
                writer: Mutex::new(writer),
                fields,
            },
            fresh,
        ))
    }

    /// Merges the index into one segment (after a bulk import): a query then looks up each
    /// word, walks its automaton and keeps its top page once, not once per segment.
    pub(crate) fn merge_all(&self) -> Result<(), SearchError> {
        let ids = self.index.searchable_segment_ids()?;
        if ids.len() > 1 {
            let mut writer = self.writer.lock();
            writer.merge(&ids).wait()?;
            writer.garbage_collect_files().wait()?;
        }
        self.reader.reload()?;
        Ok(())
    }

    /// The journal position the committed index has reached (0: none).
    pub(crate) fn position(&self) -> Result<u64, SearchError> {
        Ok(self
            .index
            .load_metas()?
            .payload
            .and_then(|p| p.parse().ok())
            .unwrap_or(0))
    }

    /// Adds songs and commits, recording `position` as reached.
    pub(crate) fn add(
        &self,
        songs: &[(SongId, SongMeta)],
        position: u64,
    ) -> Result<(), SearchError> {
        let f = self.fields;
        let mut writer = self.writer.lock();
        for (id, meta) in songs {
            // Replays may repeat a song: delete first so it is indexed once.
            writer.delete_term(Term::from_field_text(f.id, &id.to_string()));
            let mut d = doc!(f.id => id.to_string(), f.title => meta.title.clone());
            for _ in 0..TITLE_WEIGHT {
                d.add_text(f.all, &meta.title);
            }
            for a in meta
                .artist
                .iter()
                .flat_map(|a| std::iter::repeat_n(a, ARTIST_WEIGHT))
            {
                d.add_text(f.all, a);
            }
            for t in [&meta.album, &meta.genre].into_iter().flatten() {
                d.add_text(f.all, t);
            }
            if let Some(a) = &meta.artist {
                d.add_text(f.artist, a);
                d.add_text(f.artist_exact, a.to_lowercase());
            }
            if let Some(a) = &meta.album {
                d.add_text(f.album, a);
                d.add_text(f.album_exact, a.to_lowercase());
            }
            if let Some(ms) = meta.duration_ms {
                d.add_u64(f.duration, ms);
            }
            if let Some(t) = meta.track {
                d.add_u64(f.track, u64::from(t));
            }
            d.add_text(f.mime, &meta.mime);
            if let Some(b) = meta.bitrate {
                d.add_u64(f.bitrate, u64::from(b));
            }
            if let Some(g) = &meta.genre {
                d.add_text(f.genre, g);
                d.add_text(f.genre_exact, g.to_lowercase());
            }
            if let Some(y) = meta.year {
                d.add_u64(f.year, u64::from(y));
            }
            writer.add_document(d)?;
        }
        let mut commit = writer.prepare_commit()?;
        commit.set_payload(&position.to_string());
        commit.commit()?;
        drop(writer);
        self.reader.reload()?;
        Ok(())
    }

    /// The query of `q` in `phase`: every word must match the combined field (exactly, or
    /// as the phase allows), plus the filters. One exact word without filters is a bare
    /// term query, so that ranking can skip blocks (block-max WAND), as it can for a
    /// conjunction of exact words.
    fn query(&self, q: &SearchQuery, ws: &[String], phase: Phase) -> Box<dyn Query> {
        let f = self.fields;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for (i, w) in ws.iter().enumerate() {
            let last = i + 1 == ws.len();
            let term = Term::from_field_text(f.all, w);
            let exact: Box<dyn Query> =
                Box::new(TermQuery::new(term.clone(), IndexRecordOption::WithFreqs));
            let mut expanded: Vec<(Occur, Box<dyn Query>)> = Vec::new();
            if phase != Phase::Exact && last {
                expanded.push((
                    Occur::Should,
                    Box::new(FuzzyTermQuery::new_prefix(term.clone(), 0, true)),
                ));
            }
            let distance = match w.chars().count() {
                0..=3 => 0,
                4..=7 => 1,
                _ => 2,
            };
            if phase == Phase::Typos && distance > 0 {
                expanded.push((
                    Occur::Should,
                    Box::new(FuzzyTermQuery::new(term, distance, true)),
                ));
            }
            if expanded.is_empty() {
                clauses.push((Occur::Must, exact));
            } else {
                // Expanded words match with a constant score: an exact match weighs more.
                expanded.push((Occur::Should, Box::new(BoostQuery::new(exact, 2.0))));
                clauses.push((Occur::Must, Box::new(BooleanQuery::new(expanded))));
            }
        }
        // Exact, case-insensitive filters on whole values.
        for (field, value) in [
            (f.artist_exact, &q.artist),
            (f.album_exact, &q.album),
            (f.genre_exact, &q.genre),
        ] {
            if let Some(v) = value {
                let term = Term::from_field_text(field, &v.to_lowercase());
                clauses.push((
                    Occur::Must,
                    Box::new(TermQuery::new(term, IndexRecordOption::Basic)),
                ));
            }
        }
        if q.year_from.is_some() || q.year_to.is_some() {
            let lo = q.year_from.map_or(Bound::Unbounded, |y| {
                Bound::Included(Term::from_field_u64(f.year, u64::from(y)))
            });
            let hi = q.year_to.map_or(Bound::Unbounded, |y| {
                Bound::Included(Term::from_field_u64(f.year, u64::from(y)))
            });
            clauses.push((Occur::Must, Box::new(RangeQuery::new(lo, hi))));
        }
        if clauses.len() == 1
            && let Some((_, only)) = clauses.pop()
        {
            return only;
        }
        Box::new(BooleanQuery::new(clauses))
    }

    /// The stored fields of document `addr` as a search result.
    fn hit(
        &self,
        searcher: &tantivy::Searcher,
        addr: tantivy::DocAddress,
        score: f32,
    ) -> Result<Hit, SearchError> {
        let f = self.fields;
        let d: TantivyDocument = searcher.doc(addr)?;
        let text = |field| {
            d.get_first(field)
                .and_then(|v| v.as_str().map(str::to_string))
        };
        let number = |field| d.get_first(field).and_then(|v| v.as_u64());
        Ok(Hit {
            id: text(f.id).unwrap_or_default(),
            title: text(f.title).unwrap_or_default(),
            artist: text(f.artist),
            album: text(f.album),
            genre: text(f.genre),
            year: number(f.year).and_then(|y| u16::try_from(y).ok()),
            duration_ms: number(f.duration),
            track: number(f.track).and_then(|t| u16::try_from(t).ok()),
            mime: text(f.mime),
            bitrate: number(f.bitrate).and_then(|b| u32::try_from(b).ok()),
            score,
        })
    }

    /// Artists in name order (case-insensitive), after `after` (a lowercased name), at most
    /// `limit`: each with its display name, songs and albums. Reads the exact-artist term
    /// dictionary, so a page costs its own size, not the catalogue's.
    pub(crate) fn artists(&self, after: &str, limit: usize) -> Result<Vec<Artist>, SearchError> {
        if limit == 0 || limit > MAX_ARTISTS {
            return Err(SearchError::BadQuery(format!(
                "limit must be 1 to {MAX_ARTISTS}"
            )));
        }
        let f = self.fields;
        let searcher = self.reader.searcher();
        // Each segment's dictionary is sorted: the first `limit` names after the cursor of
        // every segment hold the first `limit` overall.
        let mut names = std::collections::BTreeSet::new();
        for reader in searcher.segment_readers() {
            let index = reader.inverted_index(f.artist_exact)?;
            let mut terms = index
                .terms()
                .range()
                .gt(after.as_bytes())
                .into_stream()
                .map_err(|e| SearchError::Index(e.into()))?;
            let mut taken = 0;
            while taken < limit && terms.advance() {
                if let Ok(name) = std::str::from_utf8(terms.key()) {
                    names.insert(name.to_string());
                    taken += 1;
                }
            }
        }
        let mut out = Vec::new();
        for key in names.into_iter().take(limit) {
            let term = Term::from_field_text(f.artist_exact, &key);
            let query = TermQuery::new(term, IndexRecordOption::Basic);
            let (top, songs) = searcher.search(
                &query,
                &(
                    TopDocs::with_limit(MAX_ARTIST_SONGS).order_by_score(),
                    Count,
                ),
            )?;
            if songs == 0 {
                continue;
            }
            let mut name = None;
            let mut albums = std::collections::BTreeSet::new();
            for (_, addr) in top {
                let hit = self.hit(&searcher, addr, 0.0)?;
                if let Some(a) = hit.album {
                    albums.insert(a.to_lowercase());
                }
                name = name.or(hit.artist);
            }
            out.push(Artist {
                name: name.unwrap_or_else(|| key.clone()),
                key,
                songs,
                albums: albums.len(),
            });
        }
        Ok(out)
    }

    /// Up to `size` songs picked at random (without repeats), optionally of one genre.
    pub(crate) fn random(&self, size: usize, genre: Option<&str>) -> Result<Vec<Hit>, SearchError> {
        use rand::{RngExt as _, SeedableRng as _};
        if size == 0 || size > MAX_LIMIT {
            return Err(SearchError::BadQuery(format!(
                "size must be 1 to {MAX_LIMIT}"
            )));
        }
        let searcher = self.reader.searcher();
        let readers = searcher.segment_readers();
        let total: u64 = readers.iter().map(|r| u64::from(r.max_doc())).sum();
        let seed =
            getrandom::u64().map_err(|e| SearchError::BadQuery(format!("no randomness: {e}")))?;
        let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
        let mut picked = std::collections::HashSet::new();
        let mut out = Vec::new();
        // Rejection sampling: deleted documents and other genres are skipped; the attempts
        // are bounded so a rare genre cannot make this spin.
        for _ in 0..size * 50 {
            if out.len() == size || total == 0 {
                break;
            }
            let mut n = rng.random_range(0..total);
            let Some((ord, reader)) = readers.iter().enumerate().find(|(_, r)| {
                let here = u64::from(r.max_doc());
                if n < here {
                    true
                } else {
                    n -= here;
                    false
                }
            }) else {
                break;
            };
            let doc = u32::try_from(n).unwrap_or(u32::MAX);
            if reader.is_deleted(doc) || !picked.insert((ord, doc)) {
                continue;
            }
            let hit = self.hit(&searcher, tantivy::DocAddress::new(ord as u32, doc), 0.0)?;
            if genre.is_some_and(|g| {
                !hit.genre
                    .as_deref()
                    .is_some_and(|h| h.eq_ignore_ascii_case(g))
            }) {
                continue;
            }
            out.push(hit);
        }
        Ok(out)
    }

    pub(crate) fn search(&self, q: &SearchQuery) -> Result<SearchResults, SearchError> {
        if q.q.len() > MAX_QUERY {
            return Err(SearchError::BadQuery(format!(
                "query longer than {MAX_QUERY} bytes"
            )));
        }
        let limit = q.limit.unwrap_or(20);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(SearchError::BadQuery(format!(
                "limit must be 1 to {MAX_LIMIT}"
            )));
        }
        if q.offset > 10_000 {
            return Err(SearchError::BadQuery("offset must be at most 10000".into()));
        }
        let ws = words(&q.q);
        if ws.is_empty()
            && q.artist.is_none()
            && q.album.is_none()
            && q.genre.is_none()
            && q.year_from.is_none()
            && q.year_to.is_none()
        {
            return Err(SearchError::BadQuery("give a query or a filter".into()));
        }
        let searcher = self.reader.searcher();
        // Ranking and counting as two passes: ranking alone may skip the blocks that cannot
        // reach the page (block-max WAND over the combined field's posting lists), and
        // counting alone reads document ids only.
        let run = |phase: Phase| -> Result<_, SearchError> {
            let query = self.query(q, &ws, phase);
            let top = searcher.search(
                &query,
                &TopDocs::with_limit(limit)
                    .and_offset(q.offset)
                    .order_by_score(),
            )?;
            Ok((top, count(&searcher, query.as_ref())?))
        };
        // Exact words first. Then, only when they do not fill the page, the last word also
        // as a prefix (search as you type), then every word also to its typo neighbours in
        // the dictionary: exact matches outrank expanded ones anyway, and on a large
        // catalogue the expansions are most of a query's cost (a common last word such as
        // "the" is the prefix of hundreds of terms).
        let (mut top, (mut total, mut approximate)) = run(Phase::Exact)?;
        for phase in [Phase::Prefix, Phase::Typos] {
            if total >= q.offset + limit || ws.is_empty() {
                break;
            }
            (top, (total, approximate)) = run(phase)?;
        }
        let results = top
            .into_iter()
            .map(|(score, addr)| self.hit(&searcher, addr, score))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SearchResults {
            total,
            approximate,
            offset: q.offset,
            results,
        })
    }
}

/// Stretches of an index segment's documents counted apart when the total is estimated.
const COUNT_STRATA: u32 = 16;

/// The matches of `query`, and whether that is an estimate: per index segment, the number
/// of matching documents from its term statistics when the query is one term and nothing
/// is deleted, else counted one by one. Past its share of [`EXACT_COUNT`], a segment is
/// sampled instead (a second walk): its documents are cut into [`COUNT_STRATA`] equal stretches, the
/// matches at the start of each are counted up to a share of the budget, and each
/// stretch's total is extrapolated from its own density (songs published together, such as
/// a new artist's, sit together, so one density for the whole segment would not do).
fn count(searcher: &tantivy::Searcher, query: &dyn Query) -> Result<(usize, bool), SearchError> {
    let weight = query.weight(EnableScoring::disabled_from_searcher(searcher))?;
    let (mut total, mut approximate) = (0f64, false);
    let all_docs: u64 = searcher
        .segment_readers()
        .iter()
        .map(|r| u64::from(r.max_doc()))
        .sum();
    for reader in searcher.segment_readers() {
        if reader.alive_bitset().is_none() && query.is::<TermQuery>() {
            total += f64::from(weight.count(reader)?);
            continue;
        }
        let share = u64::from(EXACT_COUNT) * u64::from(reader.max_doc()) / all_docs.max(1);
        let budget = u32::try_from(share).unwrap_or(EXACT_COUNT).max(16);
        let alive = reader.alive_bitset();
        let is_alive = |doc| alive.is_none_or(|a| a.is_alive(doc));
        let n = walk(
            &mut weight.scorer(reader, 1.0)?,
            &is_alive,
            TERMINATED,
            budget + 1,
        );
        if n <= budget {
            total += f64::from(n);
            continue;
        }
        approximate = true;
        total += by_strata(
            weight.scorer(reader, 1.0)?,
            &is_alive,
            reader.max_doc(),
            (budget / COUNT_STRATA).max(16),
        );
    }
    Ok((total.round() as usize, approximate))
}

/// Counts the live matches of `scorer` from where it stands up to `end` (excluded), stopping
/// at the `limit`-th, where the scorer is left standing.
fn walk(
    scorer: &mut Box<dyn tantivy::query::Scorer>,
    is_alive: &impl Fn(tantivy::DocId) -> bool,
    end: tantivy::DocId,
    limit: u32,
) -> u32 {
    let mut n = 0;
    let mut doc = scorer.doc();
    while doc < end {
        if is_alive(doc) {
            n += 1;
            if n == limit {
                break;
            }
        }
        doc = scorer.advance();
    }
    n
}

/// The matches of a segment of `max_doc` documents estimated by [`COUNT_STRATA`] equal
/// stretches: in each, up to `per_stratum` are counted and the rest of the stretch is taken
/// to be as dense as its start.
fn by_strata(
    mut scorer: Box<dyn tantivy::query::Scorer>,
    is_alive: &impl Fn(tantivy::DocId) -> bool,
    max_doc: u32,
    per_stratum: u32,
) -> f64 {
    let mut total = 0.0;
    for j in 0..COUNT_STRATA {
        let start = (u64::from(max_doc) * u64::from(j) / u64::from(COUNT_STRATA)) as u32;
        let end = (u64::from(max_doc) * u64::from(j + 1) / u64::from(COUNT_STRATA)) as u32;
        if scorer.doc() < start {
            scorer.seek(start);
        }
        let n = walk(&mut scorer, is_alive, end, per_stratum);
        if n == per_stratum {
            let walked = f64::from(scorer.doc() - start) + 1.0;
            total += f64::from(n) * f64::from(end - start) / walked;
            scorer.advance();
        } else {
            total += f64::from(n);
        }
        if scorer.doc() == TERMINATED {
            break;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn song(n: u32, title: &str) -> (SongId, SongMeta) {
        let meta = SongMeta {
            artist: Some(format!("Artist {n}")),
            ..medley_core::test_utils::flac_meta(title)
        };
        (SongId(medley_core::Hash::of(&n.to_le_bytes())), meta)
    }

    fn query(q: &str) -> SearchQuery {
        SearchQuery {
            q: q.into(),
            ..Default::default()
        }
    }

    #[test]
    fn totals_are_exact_below_the_threshold_and_estimated_close_above_it() {
        let dir = tempfile::tempdir().unwrap();
        let (search, _) = Search::open(dir.path()).unwrap();
        // Every song has "river"; every third also "stone"; every song of the second
        // half "moon" (so matches are not spread evenly over the documents).
        let n = 4 * EXACT_COUNT;
        let songs: Vec<_> = (0..n)
            .map(|i| {
                let mut t = String::from("river");
                if i % 3 == 0 {
                    t.push_str(" stone");
                }
                if i >= n / 2 {
                    t.push_str(" moon");
                }
                song(i, &t)
            })
            .collect();
        search.add(&songs, 1).unwrap();
        search.merge_all().unwrap();

        // One word: its document frequency, exact.
        let r = search.search(&query("river")).unwrap();
        assert_eq!((r.total, r.approximate), (n as usize, false));
        // Two words, fewer matches than the threshold: counted, exact.
        let r = search.search(&query("stone moon")).unwrap();
        let want = (n / 2..n).filter(|i| i % 3 == 0).count();
        assert!(want < EXACT_COUNT as usize);
        assert_eq!((r.total, r.approximate), (want, false));
        // Two words, more: an estimate, said to be one, within 5 %, also when the
        // matches sit together (the second half).
        for (q, want) in [
            ("river stone", (0..n).filter(|i| i % 3 == 0).count()),
            ("river moon", (n / 2) as usize),
        ] {
            let r = search.search(&query(q)).unwrap();
            assert!(want > EXACT_COUNT as usize);
            assert!(r.approximate, "{q}");
            let err = (r.total as f64 - want as f64).abs() / want as f64;
            assert!(err < 0.05, "{q}: estimated {} of {want}", r.total);
            assert_eq!(r.results.len(), 20, "the page is full either way");
        }
    }
}
