//! Synthesized music: a melody over a bass line, with per-note envelopes and a few
//! harmonics, rendered to PCM and encoded as tagged FLAC that any decoder plays.
//!
//! The same [`Tune`] always gives the same samples and the same file bytes, so a test can
//! rebuild what it published.

use std::f64::consts::TAU;
use std::path::Path;

use lofty::config::WriteOptions;
use lofty::tag::{Accessor, ItemKey, Tag, TagExt, TagType};
use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;

use crate::SynthSong;

/// Parameters of a synthesized piece.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tune {
    /// Seed of the melody, tempo, key and timbre.
    pub seed: u64,
    /// Length in seconds.
    pub seconds: f64,
    /// Samples per second per channel.
    pub sample_rate: u32,
    /// 1 (mono) or 2 (stereo).
    pub channels: u16,
}

impl Tune {
    /// A stereo 44.1 kHz piece of `seconds`.
    pub fn new(seed: u64, seconds: f64) -> Self {
        Self {
            seed,
            seconds,
            sample_rate: 44_100,
            channels: 2,
        }
    }
}

/// Why audio could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// The tune's parameters are out of range.
    #[error("invalid tune: {0}")]
    Invalid(&'static str),
    /// The FLAC encoder refused the input.
    #[error("FLAC encoding failed: {0}")]
    Encode(String),
    /// Writing the file or its tags failed.
    #[error("cannot write {path}: {reason}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

const SCALES: &[&[i32]] = &[
    &[0, 2, 4, 7, 9],        // major pentatonic
    &[0, 3, 5, 7, 10],       // minor pentatonic
    &[0, 2, 4, 5, 7, 9, 11], // major
    &[0, 2, 3, 5, 7, 8, 10], // natural minor
    &[0, 2, 3, 5, 7, 9, 10], // dorian
];

fn midi_hz(note: i32) -> f64 {
    440.0 * 2f64.powf(f64::from(note - 69) / 12.0)
}

/// A note at `hz` from frame `start` for `len` frames, with a fixed set of harmonics.
struct Note<'a> {
    start: usize,
    len: usize,
    hz: f64,
    gain: f64,
    pan: f64,
    harmonics: &'a [f64],
}

/// Mixes `note` into `out`, shaped by an attack-decay-sustain-release envelope.
fn add_note(out: &mut [f64], channels: usize, rate: f64, note: &Note<'_>) {
    let Note {
        start,
        len,
        hz,
        gain,
        pan,
        harmonics,
    } = *note;
    let frames = out.len() / channels;
    let attack = (0.01 * rate) as usize;
    let decay = (0.08 * rate) as usize;
    let release = (0.05 * rate) as usize;
    let sustain = 0.6;
    let end = (start + len + release).min(frames);
    for i in start..end {
        let t = (i - start) as f64;
        let n = i - start;
        let env = if n < attack {
            t / attack as f64
        } else if n < attack + decay {
            1.0 - (1.0 - sustain) * ((n - attack) as f64 / decay as f64)
        } else if n < len {
            sustain
        } else {
            sustain * (1.0 - (n - len) as f64 / release as f64)
        };
        let phase = TAU * hz * t / rate;
        let mut v = 0.0;
        for (h, a) in harmonics.iter().enumerate() {
            v += a * (phase * (h + 1) as f64).sin();
        }
        let v = v * env * gain;
        if channels == 1 {
            out[i] += v;
        } else {
            out[i * channels] += v * (1.0 - pan);
            out[i * channels + 1] += v * pan;
        }
    }
}

/// Renders `tune` to interleaved 16-bit samples (as `i32`, the FLAC encoder's input).
pub fn render(tune: &Tune) -> Result<Vec<i32>, AudioError> {
    if !(0.1..=3600.0).contains(&tune.seconds) {
        return Err(AudioError::Invalid("seconds must be between 0.1 and 3600"));
    }
    if !(8_000..=192_000).contains(&tune.sample_rate) {
        return Err(AudioError::Invalid("sample rate must be 8000 to 192000"));
    }
    if !(1..=2).contains(&tune.channels) {
        return Err(AudioError::Invalid("channels must be 1 or 2"));
    }
    let mut rng = Pcg64Mcg::seed_from_u64(tune.seed ^ 0x6d65_646c_6579);
    let rate = f64::from(tune.sample_rate);
    let channels = usize::from(tune.channels);
    let frames = (tune.seconds * rate) as usize;
    let mut mix = vec![0.0f64; frames * channels];

    let scale = SCALES[rng.random_range(0..SCALES.len())];
    let root = rng.random_range(55..67);
    let bpm: f64 = rng.random_range(84.0..144.0);
    let beat = (60.0 / bpm * rate) as usize;
    let lead: Vec<f64> = (0..4)
        .map(|h| rng.random_range(0.1..1.0) / (h + 1) as f64)
        .collect();
    let bass = [1.0, 0.35, 0.1];

    // Melody: a random walk on the scale, in eighths and quarters, with rests.
    let mut pos = 0usize;
    let mut degree: i32 = rng.random_range(0..scale.len() as i32);
    while pos < frames {
        let len = if rng.random_bool(0.7) { beat / 2 } else { beat };
        if rng.random_bool(0.88) {
            degree = (degree + rng.random_range(-2..=2)).clamp(0, 2 * scale.len() as i32 - 1);
            let octave = degree / scale.len() as i32;
            let note = root + 12 * octave + scale[(degree % scale.len() as i32) as usize];
            let pan = rng.random_range(0.3..0.7);
            let n = Note {
                start: pos,
                len: len * 9 / 10,
                hz: midi_hz(note),
                gain: 0.28,
                pan,
                harmonics: &lead,
            };
            add_note(&mut mix, channels, rate, &n);
        }
        pos += len;
    }
    // Bass: root and fifth on every beat, two octaves down.
    let mut pos = 0usize;
    let mut bar_beat = 0;
    while pos < frames {
        let note = root - 24 + if bar_beat % 4 == 2 { 7 } else { 0 };
        let n = Note {
            start: pos,
            len: beat * 8 / 10,
            hz: midi_hz(note),
            gain: 0.22,
            pan: 0.5,
            harmonics: &bass,
        };
        add_note(&mut mix, channels, rate, &n);
        pos += beat;
        bar_beat += 1;
    }
    // Fade in and out, then quantise.
    let fade = (0.02 * rate) as usize;
    Ok(mix
        .chunks(channels)
        .enumerate()
        .flat_map(|(i, frame)| {
            let g = (i.min(frames - 1 - i.min(frames - 1)) as f64 / fade as f64).min(1.0);
            frame
                .iter()
                .map(move |s| (s * g * 32767.0).round().clamp(-32768.0, 32767.0) as i32)
        })
        .collect())
}

/// Encodes interleaved 16-bit samples as a FLAC stream.
pub fn encode_flac(
    samples: &[i32],
    channels: u16,
    sample_rate: u32,
) -> Result<Vec<u8>, AudioError> {
    use flacenc::component::BitRepr;
    use flacenc::error::Verify;
    let config = flacenc::config::Encoder::default()
        .into_verified()
        .map_err(|(_, e)| AudioError::Encode(format!("{e:?}")))?;
    let source = flacenc::source::MemSource::from_samples(
        samples,
        usize::from(channels),
        16,
        sample_rate as usize,
    );
    let stream = flacenc::encode_with_fixed_block_size(&config, source, config.block_size)
        .map_err(|e| AudioError::Encode(format!("{e:?}")))?;
    let mut sink = flacenc::bitsink::ByteSink::new();
    stream
        .write(&mut sink)
        .map_err(|e| AudioError::Encode(format!("{e:?}")))?;
    let mut bytes = sink.as_slice().to_vec();
    // STREAMINFO's minimum block size must leave out the last block (FLAC format, section
    // STREAMINFO); the encoder counts it, which makes a fixed-blocksize stream look
    // variable and strict decoders (symphonia) refuse its frames. Bytes 8..10 hold the
    // minimum, 10..12 the maximum, right after "fLaC" and the block header.
    if bytes.len() > 12 && &bytes[..4] == b"fLaC" {
        let (min, max) = bytes.split_at_mut(10);
        min[8..10].copy_from_slice(&max[..2]);
    }
    Ok(bytes)
}

/// Writes `tune` to `path` as FLAC, tagged (Vorbis comments) with `song`'s metadata when
/// given. Returns the file's size.
pub fn write_flac(path: &Path, tune: &Tune, song: Option<&SynthSong>) -> Result<u64, AudioError> {
    let write_err = |reason: String| AudioError::Write {
        path: path.display().to_string(),
        reason,
    };
    let samples = render(tune)?;
    let flac = encode_flac(&samples, tune.channels, tune.sample_rate)?;
    std::fs::write(path, &flac).map_err(|e| write_err(e.to_string()))?;
    if let Some(song) = song {
        let mut tag = Tag::new(TagType::VorbisComments);
        tag.set_title(song.title.clone());
        tag.set_artist(song.artist.clone());
        tag.set_album(song.album.clone());
        tag.set_genre(song.genre.clone());
        tag.set_track(u32::from(song.track));
        tag.insert_text(ItemKey::Year, song.year.to_string());
        tag.save_to_path(path, WriteOptions::default())
            .map_err(|e| write_err(e.to_string()))?;
    }
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| write_err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_is_deterministic_and_not_silent() {
        let t = Tune::new(3, 1.5);
        let a = render(&t).unwrap();
        assert_eq!(a, render(&t).unwrap());
        assert_eq!(a.len(), (1.5 * 44_100.0) as usize * 2);
        let peak = a.iter().map(|s| s.abs()).max().unwrap();
        assert!(peak > 4000, "peak {peak}");
        assert_ne!(a, render(&Tune::new(4, 1.5)).unwrap());
    }

    #[test]
    fn rejects_bad_parameters() {
        assert!(render(&Tune::new(1, 0.0)).is_err());
        let mut t = Tune::new(1, 1.0);
        t.channels = 3;
        assert!(render(&t).is_err());
    }

    #[test]
    fn flac_is_compressed_and_tagged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.flac");
        let song = crate::catalog(crate::CatalogSpec { songs: 1, seed: 9 })
            .next()
            .unwrap();
        let size = write_flac(&path, &Tune::new(5, 2.0), Some(&song)).unwrap();
        let raw = 2 * 44_100 * 2 * 2;
        assert!(size < raw as u64 * 3 / 4, "{size} bytes for {raw} raw");
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..4], b"fLaC");
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains(&song.artist), "artist tag missing");
    }
}
