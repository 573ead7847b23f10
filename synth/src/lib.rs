//! Seeded synthetic test material for Medley's tests, benchmarks and testnet.
//!
//! [`catalog`] streams a song catalogue of any size with realistic-looking metadata: artist,
//! album and title words, genres, years, track numbers and durations. The same
//! [`CatalogSpec`] always yields the same songs (PCG64 seeded per artist and album, stable
//! across platforms), so a failing test or a benchmark names its catalogue by seed.
//!
//! ```
//! let songs: Vec<_> = medley_synth::catalog(medley_synth::CatalogSpec { songs: 100, seed: 7 }).collect();
//! assert_eq!(songs.len(), 100);
//! assert!(!songs[0].title.is_empty());
//! ```

mod audio;
mod catalog;

pub use audio::{AudioError, Tune, encode_flac, render, write_flac};

pub use catalog::{CatalogSpec, GENRES, SynthSong, catalog};
