//! Reading a file's metadata before publishing: tags with lofty, codec and duration with
//! symphonia's probe. A file neither recognises as audio is refused.

use std::fs::File;
use std::path::Path;

use lofty::file::{AudioFile, TaggedFileExt};
use lofty::tag::Accessor;
use medley_core::SongMeta;
use symphonia::core::codecs::{CODEC_TYPE_NULL, CODEC_TYPE_OPUS, CodecType};
use symphonia::core::formats::{FormatOptions, FormatReader, Track};
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use crate::error::ClientError;

/// Longest text kept from a tag; longer values are cut at a character boundary.
const MAX_TAG: usize = medley_core::MAX_TEXT_FIELD;

/// The metadata of an audio file, or why it is not one.
pub fn probe(path: &Path) -> Result<SongMeta, ClientError> {
    let not_audio = |reason: String| ClientError::NotAudio {
        path: path.to_path_buf(),
        reason,
    };
    let file = File::open(path).map_err(|e| ClientError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let ext = path.extension().and_then(|e| e.to_str());
    let (_, track) = open_format(Box::new(file), ext).map_err(not_audio)?;
    let params = &track.codec_params;
    let codec = codec_name(params.codec).ok_or_else(|| not_audio("unknown codec".into()))?;
    let mut duration_ms = match (params.n_frames, params.sample_rate) {
        (Some(n), Some(rate)) if rate > 0 => Some(n.saturating_mul(1000) / u64::from(rate)),
        _ => None,
    };
    let mime = mime_for(&codec);

    // Tags are optional: a file lofty cannot read still publishes, titled by its name.
    let mut meta = SongMeta {
        codec,
        mime: mime.into(),
        ..SongMeta::default()
    };
    if let Ok(tagged) = lofty::read_from_path(path) {
        let props = tagged.properties();
        if duration_ms.is_none() && !props.duration().is_zero() {
            duration_ms = Some(props.duration().as_millis() as u64);
        }
        meta.bitrate = props.audio_bitrate().map(|kbps| kbps.saturating_mul(1000));
        if let Some(tag) = tagged.primary_tag().or_else(|| tagged.first_tag()) {
            meta.title = clean(tag.title().as_deref()).unwrap_or_default();
            meta.artist = clean(tag.artist().as_deref());
            meta.album = clean(tag.album().as_deref());
            meta.genre = clean(tag.genre().as_deref());
            meta.track = tag.track().and_then(|t| u16::try_from(t).ok());
            meta.year = tag.date().map(|d| d.year).filter(|y| *y > 0);
        }
    }
    meta.duration_ms = duration_ms;
    if meta.bitrate.is_none() {
        meta.bitrate = duration_ms
            .filter(|ms| *ms > 0)
            .and_then(|ms| u32::try_from(size.saturating_mul(8000) / ms).ok());
    }
    if meta.title.is_empty() {
        meta.title = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .and_then(|s| clean(Some(&s)))
            .ok_or_else(|| not_audio("no title and no usable file name".into()))?;
    }
    Ok(meta)
}

/// Finds the container format of `source` (`ext` hints it) and its first audio track.
pub(crate) fn open_format(
    source: Box<dyn MediaSource>,
    ext: Option<&str>,
) -> Result<(Box<dyn FormatReader>, Track), String> {
    let mut hint = Hint::new();
    if let Some(e) = ext {
        hint.with_extension(e);
    }
    let mss = MediaSourceStream::new(source, Default::default());
    let probed = symphonia::default::get_probe()
        .format(
            &hint,
            mss,
            &FormatOptions::default(),
            &MetadataOptions::default(),
        )
        .map_err(|e| format!("no known audio format: {e}"))?;
    let track = probed
        .format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .cloned()
        .ok_or_else(|| "no audio track".to_string())?;
    Ok((probed.format, track))
}

fn codec_name(codec: CodecType) -> Option<String> {
    if codec == CODEC_TYPE_OPUS {
        return Some("opus".into());
    }
    let d = symphonia::default::get_codecs().get_codec(codec)?;
    let name = d.short_name;
    Some(if name.starts_with("pcm") { "pcm" } else { name }.to_string())
}

fn mime_for(codec: &str) -> &'static str {
    match codec {
        "flac" => "audio/flac",
        "vorbis" | "opus" => "audio/ogg",
        "mp3" | "mp2" | "mp1" => "audio/mpeg",
        "pcm" | "adpcm_ms" | "adpcm_ima_wav" => "audio/wav",
        _ => "application/octet-stream",
    }
}

fn clean(s: Option<&str>) -> Option<String> {
    let s = s?.trim();
    if s.is_empty() {
        return None;
    }
    let mut end = s.len().min(MAX_TAG);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Some(s[..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_file_is_not_audio() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("notes.txt");
        std::fs::write(&p, "this is not music\n".repeat(100)).unwrap();
        let e = probe(&p).unwrap_err();
        assert!(matches!(e, ClientError::NotAudio { .. }), "{e}");
        assert!(e.to_string().contains("not an audio file"), "{e}");
    }

    #[test]
    fn clean_trims_and_cuts_at_char_boundary() {
        assert_eq!(clean(Some("  x ")), Some("x".into()));
        assert_eq!(clean(Some("   ")), None);
        let long = "é".repeat(MAX_TAG);
        let c = clean(Some(&long)).unwrap();
        assert!(c.len() <= MAX_TAG);
    }
}
