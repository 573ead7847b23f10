//! The catalogue as the API shows it: songs, search, browsing, publishing and play reports.

use std::collections::{BTreeMap, HashMap};

use medley_core::{Grant, SongId, SongMeta};
use serde::{Deserialize, Serialize};

/// A song as `GET /v1/songs/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Song {
    /// Its id.
    pub id: SongId,
    /// Its metadata.
    #[serde(flatten)]
    pub meta: SongMeta,
    /// File size in bytes.
    pub size: u64,
    /// Segments.
    pub segments: usize,
    /// Bytes per segment (the last one may be shorter).
    pub segment_size: u32,
    /// Data shards per segment.
    pub k: u8,
    /// Parity shards per segment.
    pub m: u8,
    /// The publisher's key (hex).
    pub publisher: String,
    /// Plays reported, in all.
    #[serde(default)]
    pub plays: u64,
    /// Plays reported, per region.
    #[serde(default)]
    pub plays_by_region: BTreeMap<String, u64>,
}

impl Song {
    /// A committed manifest as the API shows it, before its plays are counted in.
    pub fn of(m: &medley_core::Manifest) -> Self {
        let b = m.body();
        Self {
            id: m.id(),
            meta: b.meta.clone(),
            size: b.total_size,
            segments: b.segments.len(),
            segment_size: b.segment_size,
            k: b.k,
            m: b.m,
            publisher: b.publisher.to_string(),
            plays: 0,
            plays_by_region: BTreeMap::new(),
        }
    }
}

/// A search request (`GET /v1/search`, as query parameters).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// Free text; may be empty when filters are given.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub q: String,
    /// Only this artist (case-insensitive, whole name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artist: Option<String>,
    /// Only this album (case-insensitive, whole name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub album: Option<String>,
    /// Only this genre (case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genre: Option<String>,
    /// Only songs from this year on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub year_from: Option<u16>,
    /// Only songs up to this year.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub year_to: Option<u16>,
    /// Results to skip.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: usize,
    /// Results to return (the tracker caps it); 20 by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    /// Song id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Artist.
    pub artist: Option<String>,
    /// Album.
    pub album: Option<String>,
    /// Genre.
    pub genre: Option<String>,
    /// Year.
    pub year: Option<u16>,
    /// Duration in milliseconds.
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// Track number on its album.
    #[serde(default)]
    pub track: Option<u16>,
    /// MIME type of the file.
    #[serde(default)]
    pub mime: Option<String>,
    /// Average bitrate in bits per second.
    #[serde(default)]
    pub bitrate: Option<u32>,
    /// Relevance.
    pub score: f32,
}

impl Hit {
    /// A song as a result with no relevance score (browsing, not searching).
    pub fn of(id: &SongId, meta: &SongMeta) -> Self {
        Self {
            id: id.to_string(),
            title: meta.title.clone(),
            artist: meta.artist.clone(),
            album: meta.album.clone(),
            genre: meta.genre.clone(),
            year: meta.year,
            duration_ms: meta.duration_ms,
            track: meta.track,
            mime: Some(meta.mime.clone()),
            bitrate: meta.bitrate,
            score: 0.0,
        }
    }
}

/// A page of search results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResults {
    /// Matches in all: exact up to the tracker's exact-count threshold (10,000 matches per
    /// index segment), past it an estimate (see `approximate`).
    pub total: usize,
    /// Whether `total` is an estimate: the matches were counted up to the threshold and the
    /// rest estimated from how densely they fell among the documents walked so far.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub approximate: bool,
    /// Results skipped.
    pub offset: usize,
    /// This page.
    pub results: Vec<Hit>,
}

/// An artist of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artist {
    /// The name as tagged.
    pub name: String,
    /// The name lowercased: the paging cursor and the `artist` search filter.
    pub key: String,
    /// Songs by the artist.
    pub songs: usize,
    /// Distinct albums of those songs.
    pub albums: usize,
}

/// `GET /v1/browse/artists` parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtistsQuery {
    /// The cursor: artists whose key sorts after this (case-insensitive).
    #[serde(default)]
    pub after: String,
    /// Page size; 100 by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// A page of artists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtistPage {
    /// This page.
    pub artists: Vec<Artist>,
    /// The cursor of the next page, if this one was full.
    pub next: Option<String>,
}

/// `GET /v1/browse/songs` parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SongsQuery {
    /// Songs to skip.
    #[serde(default)]
    pub offset: usize,
    /// Page size (1 to 500); 100 by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// A page of the catalogue in id order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SongPage {
    /// Songs in the catalogue.
    pub total: u64,
    /// Songs skipped.
    pub offset: usize,
    /// This page.
    pub songs: Vec<Hit>,
}

/// `GET /v1/browse/random` parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomQuery {
    /// Songs wanted; 10 by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<usize>,
    /// Only this genre.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genre: Option<String>,
}

/// Songs at random.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RandomSongs {
    /// The songs.
    pub songs: Vec<Hit>,
}

/// Publish grants for one song (`POST /v1/publish/grants`): everything a publisher needs
/// to upload, in one answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishGrants {
    /// The song.
    pub song: SongId,
    /// The layout the shards were placed by.
    pub layout_version: u64,
    /// When the grants expire (Unix seconds).
    pub expires: u64,
    /// One or more grants per node holding a slot of the song.
    pub grants: Vec<Grant>,
    /// For each segment (in manifest order), the node of each shard slot (`None`: the slot
    /// has no node).
    #[serde(default)]
    pub placement: Vec<Vec<Option<String>>>,
    /// The data-plane addresses of every node named in `placement`.
    #[serde(default)]
    pub addrs: HashMap<String, Vec<String>>,
}

/// What `POST /v1/publish` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    /// The song's id.
    pub id: SongId,
    /// False when the same manifest was already committed.
    pub created: bool,
}

/// Bytes of one play by where they came from, as the client saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryReport {
    /// From the listener's own cache.
    #[serde(default)]
    pub cache_bytes: u64,
    /// Whole segments from other listeners.
    #[serde(default)]
    pub peer_bytes: u64,
    /// Whole segments from hot nodes.
    #[serde(default)]
    pub hot_bytes: u64,
    /// Rebuilt from shards of the durable tier.
    #[serde(default)]
    pub rebuilt_bytes: u64,
}

/// A play (`POST /v1/plays`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlayReport {
    /// The song's id (hex). Text, not [`SongId`], so that a malformed id is refused as
    /// `bad_id` rather than as malformed JSON.
    pub song: String,
    /// The listener's region.
    pub region: String,
    /// Where the play's bytes came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryReport>,
}

impl PlayReport {
    /// A report of a play of `song` in `region`.
    pub fn new(song: SongId, region: &str, delivery: Option<DeliveryReport>) -> Self {
        Self {
            song: song.to_string(),
            region: region.to_string(),
            delivery,
        }
    }
}

/// The answer to a play report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayRecorded {
    /// The song.
    pub song: SongId,
    /// Its plays in the reporter's region so far.
    pub plays_in_region: u64,
}

/// Bytes of plays that clients reported, by where they came from (`GET /v1/stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivered {
    /// Listeners' own caches.
    pub cache: u64,
    /// Other listeners.
    pub peer: u64,
    /// Hot nodes.
    pub hot: u64,
    /// Rebuilt from shards.
    pub rebuilt: u64,
}
