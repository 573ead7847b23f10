//! Synthetic catalogues.
//!
//! Shape: about one artist per 40 songs; artists are chosen per album with a Zipf(1)
//! popularity, so a few artists have many albums and most have one; albums hold 6 to 14
//! tracks; each artist keeps one genre and a career of a few decades; durations are
//! log-normal around 3.5 minutes, cut to 1–12 minutes.

use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;

/// Genres used by the generator.
pub const GENRES: &[&str] = &[
    "Rock",
    "Pop",
    "Jazz",
    "Classical",
    "Electronic",
    "Hip-Hop",
    "Folk",
    "Blues",
    "Soul",
    "Reggae",
    "Country",
    "Metal",
    "Ambient",
    "Funk",
    "Latin",
    "Punk",
    "Indie",
    "R&B",
    "Techno",
    "Soundtrack",
];

const ADJECTIVES: &[&str] = &[
    "Velvet",
    "Silent",
    "Golden",
    "Broken",
    "Electric",
    "Midnight",
    "Crimson",
    "Hollow",
    "Wild",
    "Lonely",
    "Neon",
    "Frozen",
    "Burning",
    "Gentle",
    "Restless",
    "Silver",
    "Distant",
    "Savage",
    "Paper",
    "Northern",
    "Hidden",
    "Lucky",
    "Quiet",
    "Bitter",
    "Sweet",
    "Wandering",
    "Endless",
    "Scarlet",
    "Crystal",
    "Faded",
    "Blue",
    "Early",
    "Last",
    "Secret",
    "Heavy",
    "Little",
];
const NOUNS: &[&str] = &[
    "Fox", "River", "Mirror", "Garden", "Engine", "Harbor", "Lantern", "Comet", "Desert", "Ocean",
    "Window", "Thunder", "Shadow", "Highway", "Mountain", "Letter", "Station", "Candle", "Echo",
    "Horizon", "Forest", "Island", "Signal", "Sparrow", "Wolf", "Moon", "Summer", "Winter",
    "Heart", "City", "Dream", "Storm", "Rain", "Fire", "Stone", "Glass", "Tide", "Orchard",
];
const PLURALS: &[&str] = &[
    "Foxes",
    "Rivers",
    "Mirrors",
    "Engines",
    "Lanterns",
    "Comets",
    "Wolves",
    "Sparrows",
    "Shadows",
    "Strangers",
    "Kings",
    "Ghosts",
    "Sailors",
    "Dreamers",
    "Machines",
    "Satellites",
    "Tigers",
];
const FIRST: &[&str] = &[
    "Maria", "John", "Aiko", "Lars", "Amara", "Diego", "Elena", "Kwame", "Sofia", "Mateo",
    "Ingrid", "Ravi", "Chloe", "Yusuf", "Nina", "Oskar", "Leila", "Tomas", "Hana", "Felix", "Zara",
    "Emil",
];
const LAST: &[&str] = &[
    "Lindqvist",
    "Okafor",
    "Tanaka",
    "Moreau",
    "Kowalski",
    "Haddad",
    "Silva",
    "Novak",
    "Brennan",
    "Varga",
    "Petrov",
    "Mendes",
    "Jansen",
    "Calloway",
    "Achebe",
    "Rossi",
    "Nakamura",
    "Holm",
];
const VERBS: &[&str] = &[
    "Running", "Falling", "Dancing", "Waiting", "Calling", "Dreaming", "Burning", "Drifting",
    "Chasing", "Holding", "Leaving", "Breaking", "Shining", "Turning", "Singing", "Walking",
];

/// What catalogue to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogSpec {
    /// Number of songs.
    pub songs: usize,
    /// Seed; the same spec always gives the same catalogue.
    pub seed: u64,
}

/// One generated song's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthSong {
    /// Position in the catalogue, from 0.
    pub index: usize,
    /// Title.
    pub title: String,
    /// Artist.
    pub artist: String,
    /// Album.
    pub album: String,
    /// Genre, one of [`GENRES`].
    pub genre: String,
    /// Year of release.
    pub year: u16,
    /// Track number on the album, from 1.
    pub track: u16,
    /// Duration in milliseconds.
    pub duration_ms: u64,
}

fn pick<'a>(rng: &mut Pcg64Mcg, words: &[&'a str]) -> &'a str {
    words[rng.random_range(0..words.len())]
}

fn rng_for(seed: u64, domain: u64, index: u64) -> Pcg64Mcg {
    // Mix so that nearby seeds and indices give unrelated streams.
    let mut x = seed
        ^ domain.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ index.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 31;
    Pcg64Mcg::seed_from_u64(x)
}

struct Artist {
    name: String,
    genre: &'static str,
    first_year: u16,
}

fn artist(seed: u64, index: usize) -> Artist {
    let mut r = rng_for(seed, 1, index as u64);
    let name = match r.random_range(0..6) {
        0 => format!("The {} {}", pick(&mut r, ADJECTIVES), pick(&mut r, PLURALS)),
        1 | 2 => format!("{} {}", pick(&mut r, FIRST), pick(&mut r, LAST)),
        3 => format!("{} {}", pick(&mut r, ADJECTIVES), pick(&mut r, NOUNS)),
        4 => format!("{} & the {}", pick(&mut r, FIRST), pick(&mut r, PLURALS)),
        _ => format!("{} {}", pick(&mut r, NOUNS), pick(&mut r, PLURALS)),
    };
    Artist {
        name,
        genre: GENRES[r.random_range(0..GENRES.len())],
        first_year: r.random_range(1955..=2022),
    }
}

fn album_title(r: &mut Pcg64Mcg) -> String {
    match r.random_range(0..5) {
        0 => format!("{} {}", pick(r, ADJECTIVES), pick(r, NOUNS)),
        1 => format!("{} of the {}", pick(r, NOUNS), pick(r, NOUNS)),
        2 => format!("The {} Sessions", pick(r, NOUNS)),
        3 => format!("{} {}", pick(r, VERBS), pick(r, PLURALS)),
        _ => pick(r, PLURALS).to_string(),
    }
}

fn song_title(r: &mut Pcg64Mcg) -> String {
    match r.random_range(0..7) {
        0 => format!("{} {}", pick(r, ADJECTIVES), pick(r, NOUNS)),
        1 => format!("{} {}", pick(r, VERBS), pick(r, NOUNS)),
        2 => format!("Song for {}", pick(r, FIRST)),
        3 => format!("{} in the {}", pick(r, NOUNS), pick(r, NOUNS)),
        4 => format!(
            "{} {} {}",
            pick(r, ADJECTIVES),
            pick(r, ADJECTIVES),
            pick(r, NOUNS)
        ),
        5 => format!("{} Again", pick(r, VERBS)),
        _ => pick(r, NOUNS).to_string(),
    }
}

/// Streams the catalogue described by `spec`.
pub fn catalog(spec: CatalogSpec) -> impl Iterator<Item = SynthSong> {
    let artists = (spec.songs / 40).max(1);
    // Zipf(1) over artists: cumulative weights 1/1, 1/2, ... for inverse-CDF sampling.
    let mut cdf = Vec::with_capacity(artists);
    let mut total = 0.0f64;
    for i in 0..artists {
        total += 1.0 / (i as f64 + 1.0);
        cdf.push(total);
    }
    let mut albums = rng_for(spec.seed, 2, 0);
    let mut album_index = 0u64;
    let mut current: Vec<SynthSong> = Vec::new();
    let mut index = 0usize;
    std::iter::from_fn(move || {
        if index >= spec.songs {
            return None;
        }
        if current.is_empty() {
            let x = albums.random::<f64>() * total;
            let a = cdf.partition_point(|&c| c < x).min(artists - 1);
            let artist = artist(spec.seed, a);
            let mut r = rng_for(spec.seed, 3, album_index);
            album_index += 1;
            let album = album_title(&mut r);
            let year = (artist.first_year + r.random_range(0..30)).min(2026);
            let tracks = r.random_range(6..=14u16);
            for track in (1..=tracks).rev() {
                // Log-normal around 3.5 minutes: exp(N(ln 210 s, 0.35)).
                let normal: f64 = (0..12).map(|_| r.random::<f64>()).sum::<f64>() - 6.0;
                let secs = (210.0f64.ln() + 0.35 * normal).exp().clamp(60.0, 720.0);
                current.push(SynthSong {
                    index: 0,
                    title: song_title(&mut r),
                    artist: artist.name.clone(),
                    album: album.clone(),
                    genre: artist.genre.to_string(),
                    year,
                    track,
                    duration_ms: (secs * 1000.0) as u64,
                });
            }
        }
        let mut song = current.pop()?;
        song.index = index;
        index += 1;
        Some(song)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn same_seed_same_catalogue_other_seed_other_catalogue() {
        let a: Vec<_> = catalog(CatalogSpec {
            songs: 500,
            seed: 1,
        })
        .collect();
        let b: Vec<_> = catalog(CatalogSpec {
            songs: 500,
            seed: 1,
        })
        .collect();
        let c: Vec<_> = catalog(CatalogSpec {
            songs: 500,
            seed: 2,
        })
        .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 500);
        assert!(a.iter().enumerate().all(|(i, s)| s.index == i));
    }

    #[test]
    fn fields_are_plausible() {
        for s in catalog(CatalogSpec {
            songs: 2000,
            seed: 9,
        }) {
            assert!(!s.title.is_empty() && !s.artist.is_empty() && !s.album.is_empty());
            assert!(GENRES.contains(&s.genre.as_str()));
            assert!((1955..=2026).contains(&s.year));
            assert!((1..=14).contains(&s.track));
            assert!((60_000..=720_000).contains(&s.duration_ms));
        }
    }

    #[test]
    fn popularity_is_skewed_and_albums_are_ordered() {
        let songs: Vec<_> = catalog(CatalogSpec {
            songs: 20_000,
            seed: 3,
        })
        .collect();
        let mut per_artist: HashMap<&str, usize> = HashMap::new();
        for s in &songs {
            *per_artist.entry(&s.artist).or_default() += 1;
        }
        let mut counts: Vec<usize> = per_artist.values().copied().collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let top: usize = counts.iter().take(counts.len() / 10).sum();
        assert!(
            top * 100 / songs.len() > 30,
            "top 10% of artists have only {top} songs"
        );
        // Within an album, tracks come in order 1, 2, 3...
        for w in songs.windows(2) {
            if w[0].album == w[1].album && w[0].artist == w[1].artist && w[1].track != 1 {
                assert_eq!(w[1].track, w[0].track + 1);
            }
        }
        let mean = songs.iter().map(|s| s.duration_ms).sum::<u64>() / songs.len() as u64;
        assert!(
            (180_000..260_000).contains(&mean),
            "mean duration {mean} ms"
        );
    }
}
