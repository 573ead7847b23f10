//! Shapes of the tracker's HTTP API that the tracker and its clients share, so both sides
//! of the wire use one definition.

use serde::{Deserialize, Serialize};

/// One search result (`GET /v1/search`).
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
    pub fn of(id: &crate::SongId, meta: &crate::SongMeta) -> Self {
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

/// An artist of the catalogue (`GET /v1/browse/artists`).
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

/// A page of search results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResults {
    /// Matches in all.
    pub total: usize,
    /// Results skipped.
    pub offset: usize,
    /// This page.
    pub results: Vec<Hit>,
}

/// A node's repair work, as it reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepairLoad {
    /// Shards its slots should hold that it lacks, as of its last pass.
    pub backlog: u64,
    /// Shards rebuilt or copied since it started.
    pub done: u64,
    /// Repair attempts that failed since it started (retried later).
    pub failed: u64,
    /// Corrupt shards its scrubber found and deleted since it started.
    #[serde(default)]
    pub scrub_bad: u64,
    /// Shards it handed over and deleted since it started.
    #[serde(default)]
    pub handed_over: u64,
    /// Shard bytes it read from other nodes to repair since it started.
    #[serde(default)]
    pub bytes_read: u64,
}

/// Publish grants for one song (`POST /v1/publish/grants`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishGrants {
    /// The song.
    pub song: crate::SongId,
    /// The layout the shards were placed by.
    pub layout_version: u64,
    /// When the grants expire (Unix seconds).
    pub expires: u64,
    /// One or more grants per node holding a slot of the song.
    pub grants: Vec<crate::Grant>,
}

/// Header of a tracker answer that nodes act on: when it was signed (Unix milliseconds).
pub const ANSWER_TIME_HEADER: &str = "x-medley-tracker-time";
/// Header of a tracker answer that nodes act on: the tracker's signature (hex), by
/// [`crate::TrackerKey::sign_statement`] over [`signed_answer`].
pub const ANSWER_SIGNATURE_HEADER: &str = "x-medley-tracker-signature";
/// Largest difference accepted between a signed answer's time and the node's clock.
pub const MAX_ANSWER_AGE_MS: u64 = 5 * 60 * 1000;

/// What the tracker signs of an answer: the path asked (with its query), the time and the
/// body, so an answer cannot be passed off for another request or replayed much later.
pub fn signed_answer(path: &str, time_ms: u64, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(path.len() + body.len() + 24);
    m.extend_from_slice(path.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(time_ms.to_string().as_bytes());
    m.push(b'\n');
    m.extend_from_slice(body);
    m
}
