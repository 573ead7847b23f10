//! The client's errors.

use std::path::PathBuf;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The tracker could not be reached, refused, or sent something unusable.
    #[error(transparent)]
    Tracker(#[from] medley_api::TrackerError),
    /// No song has this id.
    #[error("no song with id {0}")]
    UnknownSong(String),
    /// A search matched nothing.
    #[error("no song matches {0:?}")]
    NoMatch(String),
    /// The tracker sent something that does not check out.
    #[error("the tracker sent an invalid {what}: {reason}")]
    BadTrackerData {
        /// What.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A file is not audio this client can publish.
    #[error("{path}: not an audio file Medley can publish ({reason})")]
    NotAudio {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A segment could not be fetched from enough sources.
    #[error(
        "segment {index} of the song is unavailable: {have} of the {needed} shards needed \
         ({reasons})"
    )]
    Unavailable {
        /// Segment index.
        index: usize,
        /// Shards fetched.
        have: usize,
        /// Shards needed.
        needed: usize,
        /// Why each source failed.
        reasons: String,
    },
    /// Uploading a shard failed.
    #[error("uploading shard {shard} to node {node} failed: {reason}")]
    Upload {
        /// The shard.
        shard: String,
        /// The node.
        node: String,
        /// Why.
        reason: String,
    },
    /// The data plane could not start.
    #[error("cannot start the data plane: {0}")]
    DataPlane(String),
    /// No audio output device could be opened.
    #[error(
        "no audio output device ({0}); pass --out FILE to write WAV, or --out - for standard output"
    )]
    NoDevice(String),
    /// Decoding the audio failed.
    #[error("cannot decode the audio: {0}")]
    Decode(String),
    /// Reconstructing a segment failed although every shard checked out.
    #[error("segment {index}: {reason}")]
    Rebuild {
        /// Segment index.
        index: usize,
        /// Why.
        reason: String,
    },
}
