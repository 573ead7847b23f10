//! A generated music library: synthesized songs encoded as tagged FLAC, laid out as
//! `artist/album/NN title.flac`, as a music server would find it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use medley_synth::{CatalogSpec, SynthSong, Tune, catalog, write_flac};

/// A song written to the library.
#[derive(Debug, Clone)]
pub struct LibrarySong {
    /// The file.
    pub path: PathBuf,
    /// Its tags.
    pub song: SynthSong,
    /// Its length in seconds.
    pub seconds: f64,
}

/// Why the library could not be written.
#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    /// Synthesis or encoding failed.
    #[error(transparent)]
    Audio(#[from] medley_synth::AudioError),
    /// A folder could not be created.
    #[error("cannot create {path}: {source}")]
    Io {
        /// The folder.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_alphanumeric() || " -_.,'&()".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_matches('.')
        .to_string()
}

/// Writes `songs` synthesized songs under `dir`, each from a different album of a seeded
/// catalogue (so artists, albums and genres vary), lasting `min_s` to `max_s` seconds.
pub fn generate(
    dir: &Path,
    songs: usize,
    seed: u64,
    min_s: f64,
    max_s: f64,
) -> Result<Vec<LibrarySong>, LibraryError> {
    generate_at(dir, songs, seed, (min_s, max_s), &[], |_| {})
}

/// As [`generate`], with song `i` encoded at `rates[i % rates.len()]` Hz (the synthesizer's
/// default rate when `rates` is empty); `written` is called after each song.
pub fn generate_at(
    dir: &Path,
    songs: usize,
    seed: u64,
    (min_s, max_s): (f64, f64),
    rates: &[u32],
    mut written: impl FnMut(usize),
) -> Result<Vec<LibrarySong>, LibraryError> {
    let mut albums = HashSet::new();
    let mut picked = Vec::new();
    for s in catalog(CatalogSpec {
        songs: songs * 60 + 100,
        seed,
    }) {
        if picked.len() == songs {
            break;
        }
        if albums.insert((s.artist.clone(), s.album.clone())) {
            picked.push(s);
        }
    }
    let mut out = Vec::with_capacity(picked.len());
    for (i, song) in picked.into_iter().enumerate() {
        let folder = dir.join(safe(&song.artist)).join(safe(&song.album));
        std::fs::create_dir_all(&folder).map_err(|e| LibraryError::Io {
            path: folder.clone(),
            source: e,
        })?;
        let path = folder.join(format!("{:02} {}.flac", song.track, safe(&song.title)));
        let frac = ((seed.wrapping_add(i as u64)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11) as f64
            / (1u64 << 53) as f64;
        let seconds = (min_s + (max_s - min_s) * frac).max(0.5);
        let mut tune = Tune::new(seed ^ (i as u64) << 8, seconds);
        if !rates.is_empty() {
            tune.sample_rate = rates[i % rates.len()];
        }
        write_flac(&path, &tune, Some(&song))?;
        written(i + 1);
        out.push(LibrarySong {
            path,
            song,
            seconds,
        });
    }
    Ok(out)
}
