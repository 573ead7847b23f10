//! Streaming a song: segments arrive verified, in order, from the [`Fetcher`]; a decoder
//! thread reads them as one byte stream, decodes with symphonia and writes 16-bit PCM as
//! WAV. Also a byte-identical download.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use medley_core::SongId;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::DecoderOptions;
use symphonia::core::errors::Error as SymError;
use symphonia::core::io::ReadOnlySource;

use crate::Client;
use crate::error::ClientError;
use crate::fetch::{FetchOptions, SourceStats};

/// Segments in flight during a download.
const DOWNLOAD_WINDOW: usize = 32;

/// Where decoded audio goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A WAV file.
    File(PathBuf),
    /// WAV on standard output (sizes in the header are left open, as for a stream).
    Stdout,
    /// The default audio output device.
    Device,
}

/// Where decoded samples go once the stream's format is known.
enum Sink {
    Wav(WavWriter),
    Device(crate::device::DeviceSink),
}

impl Sink {
    fn open(output: &Output, channels: u16, rate: u32) -> Result<Self, ClientError> {
        let wav = |sink: std::io::Result<Box<dyn WriteSeek>>, seekable| {
            sink.and_then(|s| WavWriter::create(s, seekable, channels, rate))
                .map(Sink::Wav)
                .map_err(|e| output_error(output, e))
        };
        match output {
            Output::File(p) => wav(File::create(p).map(|f| Box::new(f) as _), true),
            Output::Stdout => wav(Ok(Box::new(Pipe(std::io::stdout()))), false),
            Output::Device => crate::device::DeviceSink::open(channels, rate).map(Sink::Device),
        }
    }

    fn samples(&mut self, s: &[i16], output: &Output) -> Result<(), ClientError> {
        match self {
            Sink::Wav(w) => w.samples(s).map_err(|e| output_error(output, e)),
            Sink::Device(d) => {
                d.write(s);
                Ok(())
            }
        }
    }

    fn finish(self, output: &Output) -> Result<(), ClientError> {
        match self {
            Sink::Wav(w) => w.finish().map_err(|e| output_error(output, e)),
            Sink::Device(d) => {
                let underruns = d.finish();
                if underruns > 0 {
                    tracing::info!(underruns, "the audio device ran dry");
                }
                Ok(())
            }
        }
    }
}

fn output_error(output: &Output, e: std::io::Error) -> ClientError {
    ClientError::Io {
        path: match output {
            Output::File(p) => p.clone(),
            Output::Stdout => PathBuf::from("-"),
            Output::Device => PathBuf::from("(audio device)"),
        },
        source: e,
    }
}

/// What a play did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlayOutcome {
    /// Song id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Artist.
    pub artist: Option<String>,
    /// From the start of the command to the first PCM written.
    pub time_to_first_audio_ms: f64,
    /// Sample frames written.
    pub frames: u64,
    /// Sample rate.
    pub sample_rate: u32,
    /// Channels.
    pub channels: u16,
    /// Segments fetched.
    pub segments: usize,
    /// Sources that delivered shards.
    pub sources_used: usize,
    /// Per-source record, by peer id.
    pub sources: std::collections::BTreeMap<String, SourceStats>,
    /// Sources that sent bytes not matching their hash.
    pub bad_sources: Vec<String>,
    /// Where the bytes came from: own cache, other listeners, hot nodes, rebuilt from shards.
    pub delivery: crate::fetch::Delivery,
}

/// What a download did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Downloaded {
    /// Song id.
    pub id: String,
    /// Bytes written.
    pub bytes: u64,
    /// Sources that delivered shards.
    pub sources_used: usize,
    /// Sources that sent bytes not matching their hash.
    pub bad_sources: Vec<String>,
}

/// A blocking reader over the verified segments arriving on a channel.
struct SegmentReader {
    rx: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, ClientError>>,
    buf: bytes::Bytes,
    pos: usize,
    failure: Arc<Mutex<Option<ClientError>>>,
    consumed: Arc<AtomicUsize>,
}

impl Read for SegmentReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.blocking_recv() {
                Some(Ok(seg)) => {
                    self.buf = seg;
                    self.pos = 0;
                    self.consumed.fetch_add(1, Ordering::Relaxed);
                }
                Some(Err(e)) => {
                    let msg = e.to_string();
                    *self.failure.lock() = Some(e);
                    return Err(std::io::Error::other(msg));
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Writes 16-bit PCM WAV. Written here rather than with a WAV crate because the header must
/// also work on a pipe (sizes left at their maximum, as streaming WAV writers do) and be
/// patched in place for a file.
struct WavWriter {
    out: BufWriter<Box<dyn WriteSeek>>,
    seekable: bool,
    data_bytes: u64,
}

trait WriteSeek: Write + Send {
    fn seek_to(&mut self, pos: u64) -> std::io::Result<()>;
}

impl WriteSeek for File {
    fn seek_to(&mut self, pos: u64) -> std::io::Result<()> {
        self.seek(SeekFrom::Start(pos)).map(|_| ())
    }
}

struct Pipe(std::io::Stdout);

impl Write for Pipe {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl WriteSeek for Pipe {
    fn seek_to(&mut self, _: u64) -> std::io::Result<()> {
        Err(std::io::Error::other("standard output cannot seek"))
    }
}

impl WavWriter {
    /// Writes the header to `sink`; `seekable` sinks get their sizes patched at the end.
    fn create(
        sink: Box<dyn WriteSeek>,
        seekable: bool,
        channels: u16,
        rate: u32,
    ) -> std::io::Result<Self> {
        let mut w = Self {
            out: BufWriter::with_capacity(1 << 16, sink),
            seekable,
            data_bytes: 0,
        };
        let block = channels * 2;
        let mut h = Vec::with_capacity(44);
        h.extend_from_slice(b"RIFF");
        h.extend_from_slice(&u32::MAX.to_le_bytes());
        h.extend_from_slice(b"WAVEfmt ");
        h.extend_from_slice(&16u32.to_le_bytes());
        h.extend_from_slice(&1u16.to_le_bytes()); // PCM
        h.extend_from_slice(&channels.to_le_bytes());
        h.extend_from_slice(&rate.to_le_bytes());
        h.extend_from_slice(&(rate * u32::from(block)).to_le_bytes());
        h.extend_from_slice(&block.to_le_bytes());
        h.extend_from_slice(&16u16.to_le_bytes());
        h.extend_from_slice(b"data");
        h.extend_from_slice(&u32::MAX.to_le_bytes());
        w.out.write_all(&h)?;
        Ok(w)
    }

    fn samples(&mut self, s: &[i16]) -> std::io::Result<()> {
        let mut bytes = Vec::with_capacity(s.len() * 2);
        for v in s {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        self.data_bytes += bytes.len() as u64;
        self.out.write_all(&bytes)
    }

    fn finish(mut self) -> std::io::Result<()> {
        self.out.flush()?;
        if self.seekable {
            let data = u32::try_from(self.data_bytes).unwrap_or(u32::MAX);
            let mut sink = self.out.into_inner().map_err(|e| e.into_error())?;
            sink.seek_to(4)?;
            sink.write_all(&data.saturating_add(36).to_le_bytes())?;
            sink.seek_to(40)?;
            sink.write_all(&data.to_le_bytes())?;
            sink.flush()?;
        }
        Ok(())
    }
}

/// Progress shown while decoding.
struct Progress {
    started: Instant,
    first_audio: Option<Duration>,
    on_first_audio: Option<Box<dyn FnOnce(Duration) + Send>>,
    tick: Box<dyn FnMut(f64) + Send>,
}

/// Decodes the byte stream `source` (a whole audio file) to 16-bit PCM in `writer`, opening
/// it on `output` at the first samples. A queue passes the same writer for every song, so
/// one song's samples follow the last one's with no gap; a song in another sample format
/// reopens an audio device, and is refused for a WAV stream.
/// Returns (frames, rate, channels); `progress.first_audio` is set at the first samples.
fn decode(
    source: Box<dyn Read + Send + Sync>,
    ext: Option<&str>,
    output: &Output,
    progress: &mut Progress,
    writer: &mut Option<(Sink, u32, u16)>,
) -> Result<(u64, u32, u16), ClientError> {
    let (mut format, track) = crate::probe::open_format(Box::new(ReadOnlySource::new(source)), ext)
        .map_err(ClientError::Decode)?;
    let track_id = track.id;
    let mut decoder = symphonia::default::get_codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .map_err(|e| ClientError::Decode(format!("no decoder for this codec: {e}")))?;
    let mut buf: Option<SampleBuffer<i16>> = None;
    let mut frames = 0u64;
    let (mut rate, mut channels) = (0u32, 0u16);
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(SymError::IoError(e)) => return Err(ClientError::Decode(e.to_string())),
            Err(SymError::ResetRequired) => {
                return Err(ClientError::Decode(
                    "the stream changed format midway".into(),
                ));
            }
            Err(e) => return Err(ClientError::Decode(e.to_string())),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(d) => d,
            // A damaged packet is skipped, as players do; the bytes were verified, so this
            // only happens with a file that was damaged before it was published.
            Err(SymError::DecodeError(e)) => {
                tracing::warn!(error = e, "skipping an undecodable packet");
                continue;
            }
            Err(e) => return Err(ClientError::Decode(e.to_string())),
        };
        let spec = *decoded.spec();
        if decoded.frames() == 0 {
            continue;
        }
        let b = buf.get_or_insert_with(|| SampleBuffer::new(decoded.capacity() as u64, spec));
        if b.capacity() < decoded.capacity() * spec.channels.count() {
            *b = SampleBuffer::new(decoded.capacity() as u64, spec);
        }
        b.copy_interleaved_ref(decoded);
        rate = spec.rate;
        channels = spec.channels.count() as u16;
        if let Some((_, r, c)) = writer
            && (*r, *c) != (rate, channels)
        {
            if *output != Output::Device {
                return Err(ClientError::Decode(format!(
                    "this song is {rate} Hz, {channels} channels, the one before it {r} Hz, \
                     {c} channels: one WAV stream cannot hold both; play them separately"
                )));
            }
            if let Some((old, _, _)) = writer.take() {
                old.finish(output)?;
            }
        }
        if writer.is_none() {
            *writer = Some((Sink::open(output, channels, rate)?, rate, channels));
        }
        if let Some((w, _, _)) = writer.as_mut() {
            w.samples(b.samples(), output)?;
        }
        frames += (b.samples().len() / usize::from(channels.max(1))) as u64;
        if progress.first_audio.is_none() {
            let t = progress.started.elapsed();
            progress.first_audio = Some(t);
            if let Some(f) = progress.on_first_audio.take() {
                f(t);
            }
        }
        (progress.tick)(frames as f64 / f64::from(rate.max(1)));
    }
    if frames == 0 {
        return Err(ClientError::Decode("the stream holds no audio".into()));
    }
    Ok((frames, rate, channels))
}

/// Decodes a local audio file to WAV, exactly as `play` decodes a streamed one.
pub fn decode_to_wav(input: &Path, output: &Output) -> Result<(u64, u32, u16), ClientError> {
    let file = File::open(input).map_err(|e| ClientError::Io {
        path: input.to_path_buf(),
        source: e,
    })?;
    let ext = input.extension().and_then(|e| e.to_str());
    let (f, r, c, _) = decode_reader(Box::new(file), ext, output, Instant::now())?;
    Ok((f, r, c))
}

/// Decodes any byte stream holding a whole audio file (`ext` hints its format) to WAV, as
/// `play` does. Returns (frames, sample rate, channels, time from `started` to the first
/// PCM written). Benchmarks use it to decode other sources the same way.
pub fn decode_reader(
    source: Box<dyn Read + Send + Sync>,
    ext: Option<&str>,
    output: &Output,
    started: Instant,
) -> Result<(u64, u32, u16, Duration), ClientError> {
    let mut progress = Progress {
        started,
        first_audio: None,
        on_first_audio: None,
        tick: Box::new(|_| {}),
    };
    let mut writer = None;
    let (frames, rate, channels) = decode(source, ext, output, &mut progress, &mut writer)?;
    if let Some((w, _, _)) = writer {
        w.finish(output)?;
    }
    Ok((
        frames,
        rate,
        channels,
        progress.first_audio.unwrap_or_default(),
    ))
}

/// The file extension of a song's MIME type (also the decoder's format hint).
pub(crate) fn ext_for(mime: &str) -> Option<&'static str> {
    Some(match mime {
        "audio/flac" => "flac",
        "audio/ogg" => "ogg",
        "audio/mpeg" => "mp3",
        "audio/wav" => "wav",
        "audio/opus" => "opus",
        _ => return None,
    })
}

fn play_bar(duration_s: f64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some((duration_s * 10.0) as u64),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = ProgressStyle::with_template("{prefix} [{bar:30}] {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn clock(s: f64) -> String {
    let s = s.max(0.0) as u64;
    format!("{}:{:02}", s / 60, s % 60)
}

impl Client {
    /// Streams song `id` and writes its decoded audio to `output`. `started` is when the
    /// user asked (time to first audio is measured from it); `on_first_audio` is called once
    /// when the first PCM is written.
    pub async fn play(
        &self,
        id: SongId,
        output: Output,
        started: Instant,
        on_first_audio: Option<Box<dyn FnOnce(Duration) + Send>>,
    ) -> Result<PlayOutcome, ClientError> {
        let mut outcomes = self
            .play_queue(&[id], output, started, on_first_audio)
            .await?;
        outcomes
            .pop()
            .ok_or_else(|| ClientError::Decode("nothing was played".into()))
    }

    /// Plays `ids` one after the other into `output` without a gap: one decoder writes
    /// every song's samples to the same output, and each song's segments are fetched while
    /// the one before it still plays (the fetch runs ahead of the decoder by the read-ahead
    /// window, so the next song starts arriving some seconds before this one ends).
    /// Returns what each song did; time to first audio is measured from `started` for the
    /// first song and from the end of the song before for the others.
    pub async fn play_queue(
        &self,
        ids: &[SongId],
        output: Output,
        started: Instant,
        on_first_audio: Option<Box<dyn FnOnce(Duration) + Send>>,
    ) -> Result<Vec<PlayOutcome>, ClientError> {
        // Every song is resolved first: an unknown id fails before any sound.
        let mut songs = Vec::with_capacity(ids.len());
        for &id in ids {
            let (fetcher, manifest) = self.fetcher(id).await?;
            songs.push((id, fetcher, manifest.meta().clone()));
        }
        let failure = Arc::new(Mutex::new(None));
        let fetched = Arc::new(AtomicUsize::new(0));
        let consumed = Arc::new(AtomicUsize::new(0));
        let mut readers = Vec::with_capacity(songs.len());
        let mut senders = Vec::with_capacity(songs.len());
        for _ in &songs {
            let (tx, rx) = tokio::sync::mpsc::channel(2);
            senders.push(tx);
            readers.push(SegmentReader {
                rx,
                buf: bytes::Bytes::new(),
                pos: 0,
                failure: failure.clone(),
                consumed: consumed.clone(),
            });
        }
        // One feeder fetches the songs in order: the next song's first segments are
        // fetched as soon as this song's last ones are in.
        let feeder = {
            let fetchers: Vec<_> = songs.iter().map(|(_, f, _)| f.clone()).collect();
            let fetched = fetched.clone();
            tokio::spawn(async move {
                for (fetcher, tx) in fetchers.into_iter().zip(senders) {
                    let mut s = std::pin::pin!(fetcher.stream(0));
                    while let Some(item) = s.next().await {
                        let stop = item.is_err();
                        fetched.fetch_add(1, Ordering::Relaxed);
                        if tx.send(item).await.is_err() || stop {
                            return;
                        }
                    }
                }
            })
        };
        let bar = play_bar(0.0);
        let plan: Vec<(Option<&'static str>, f64, String)> = songs
            .iter()
            .map(|(_, _, m)| {
                (
                    ext_for(&m.mime),
                    m.duration_ms.unwrap_or(0) as f64 / 1000.0,
                    m.title.clone(),
                )
            })
            .collect();
        let reports: Vec<_> = songs.iter().map(|(_, f, _)| f.report().clone()).collect();
        let out = output.clone();
        let decoded = {
            let (bar, fetched, consumed) = (bar.clone(), fetched.clone(), consumed.clone());
            tokio::task::spawn_blocking(move || {
                let mut writer = None;
                let mut results = Vec::new();
                let mut first_cb = on_first_audio;
                let mut since = started;
                for (((ext, duration_s, title), reader), report) in
                    plan.into_iter().zip(readers).zip(reports)
                {
                    bar.set_length((duration_s * 10.0) as u64);
                    bar.set_position(0);
                    bar.set_prefix(title);
                    let tick = {
                        let (bar, fetched, consumed) =
                            (bar.clone(), fetched.clone(), consumed.clone());
                        let mut last = Instant::now() - Duration::from_secs(1);
                        Box::new(move |t: f64| {
                            if last.elapsed() < Duration::from_millis(100) {
                                return;
                            }
                            last = Instant::now();
                            bar.set_position((t * 10.0) as u64);
                            let ahead = fetched
                                .load(Ordering::Relaxed)
                                .saturating_sub(consumed.load(Ordering::Relaxed));
                            bar.set_message(format!(
                                "{} / {}  buffer {ahead} seg  sources {}",
                                clock(t),
                                clock(duration_s),
                                report.sources_used()
                            ));
                        }) as Box<dyn FnMut(f64) + Send>
                    };
                    let mut progress = Progress {
                        started: since,
                        first_audio: None,
                        on_first_audio: first_cb.take(),
                        tick,
                    };
                    let r = decode(Box::new(reader), ext, &out, &mut progress, &mut writer);
                    since = Instant::now();
                    let failed = r.is_err();
                    results.push(r.map(|(f, rate, ch)| {
                        (f, rate, ch, progress.first_audio.unwrap_or_default())
                    }));
                    if failed {
                        break;
                    }
                }
                let finished = match writer {
                    Some((w, _, _)) => w.finish(&out),
                    None => Ok(()),
                };
                (results, finished)
            })
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))?
        };
        feeder.abort();
        bar.finish_and_clear();
        let (results, finished) = decoded;
        let remove_partial = || {
            if let Output::File(p) = &output {
                let _ = std::fs::remove_file(p);
            }
        };
        // A fetch failure surfaces in the decoder as an I/O error; report the cause.
        if let Some(e) = failure.lock().take() {
            remove_partial();
            return Err(e);
        }
        let mut outcomes = Vec::with_capacity(results.len());
        for ((id, fetcher, meta), r) in songs.into_iter().zip(results) {
            let (frames, sample_rate, channels, ttfa) = match r {
                Ok(v) => v,
                Err(e) => {
                    remove_partial();
                    return Err(e);
                }
            };
            // Answers still in flight go into the summary too.
            fetcher.settle(Duration::from_secs(1)).await;
            let report = fetcher.report();
            outcomes.push(PlayOutcome {
                id: id.to_string(),
                title: meta.title,
                artist: meta.artist,
                time_to_first_audio_ms: ttfa.as_secs_f64() * 1000.0,
                frames,
                sample_rate,
                channels,
                segments: fetcher.len(),
                sources_used: report.sources_used(),
                sources: report
                    .snapshot()
                    .into_iter()
                    .map(|(p, s)| (p.to_string(), s))
                    .collect(),
                bad_sources: report.liars().iter().map(ToString::to_string).collect(),
                delivery: report.delivery(),
            });
            self.note_played(id, &fetcher.segment_ids());
            // The tracker counts plays per region: what runs hot gets whole copies nearby.
            let delivery = report.delivery();
            let play =
                medley_api::PlayReport::new(id, &self.config.region, Some(delivery.report()));
            if let Err(e) = self.tracker().report_play(&play).await {
                tracing::warn!(song = %id, error = %e, "cannot report the play");
            }
        }
        finished.map_err(|e| {
            remove_partial();
            e
        })?;
        Ok(outcomes)
    }

    /// Downloads song `id` byte for byte to `out` (`-`: standard output). A file is written
    /// beside its final name and renamed when complete, so a failed download leaves nothing.
    pub async fn download(&self, id: SongId, out: &Path) -> Result<Downloaded, ClientError> {
        // No play head waits on a download: `k` shard holders per segment, not `k` and
        // spares, so that no bytes are fetched to be thrown away; a slow holder is still
        // hedged after `hedge_after`, and the window keeps many segments in flight.
        let opts = FetchOptions {
            extra_sources: 0,
            ..self.fetch_options()
        };
        let (fetcher, manifest) = self.fetcher_opts(id, None, opts).await?;
        let total = manifest.body().total_size;
        let bar =
            ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("[{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        let to_stdout = out == Path::new("-");
        let part = {
            let mut p = out.as_os_str().to_owned();
            p.push(".part");
            PathBuf::from(p)
        };
        let io = |path: &Path, e: std::io::Error| ClientError::Io {
            path: path.to_path_buf(),
            source: e,
        };
        let mut sink: Box<dyn Write + Send> = if to_stdout {
            Box::new(std::io::stdout())
        } else {
            Box::new(File::create(&part).map_err(|e| io(&part, e))?)
        };
        let result = async {
            let mut bytes = 0u64;
            // A download has no play head: a wider window keeps more sources busy.
            let ahead = self.config().read_ahead.max(DOWNLOAD_WINDOW);
            let mut s = std::pin::pin!(fetcher.stream_with(0, ahead));
            while let Some(seg) = s.next().await {
                let seg = seg?;
                sink.write_all(&seg).map_err(|e| io(out, e))?;
                bytes += seg.len() as u64;
                bar.inc(seg.len() as u64);
            }
            sink.flush().map_err(|e| io(out, e))?;
            Ok::<_, ClientError>(bytes)
        }
        .await;
        bar.finish_and_clear();
        drop(sink);
        let bytes = match result {
            Ok(b) => b,
            Err(e) => {
                if !to_stdout {
                    let _ = std::fs::remove_file(&part);
                }
                return Err(e);
            }
        };
        if !to_stdout {
            File::open(&part)
                .and_then(|f| f.sync_all())
                .map_err(|e| io(&part, e))?;
            std::fs::rename(&part, out).map_err(|e| io(out, e))?;
        }
        self.note_played(id, &fetcher.segment_ids());
        let report = fetcher.report();
        Ok(Downloaded {
            id: id.to_string(),
            bytes,
            sources_used: report.sources_used(),
            bad_sources: report.liars().iter().map(ToString::to_string).collect(),
        })
    }
}
