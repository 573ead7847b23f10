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
    /// Relevance.
    pub score: f32,
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
