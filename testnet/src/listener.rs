//! Light listeners: many simulated listeners in one process, each a full
//! [`Client`](medley_client::Client) with its own identity, disk cache and data-plane endpoint
//! serving that cache; what they do not run is a decoder. A play here fetches and verifies
//! every segment as the player would and keeps the player's clock: the first segment sets
//! the time to first audio, segment `i` is due `i` segment-durations later, and one that
//! arrives late is a stall (the clock then waits for it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use medley_client::{Client, ClientError, Delivery};
use medley_core::SongId;
use serde::{Deserialize, Serialize};

/// The fetch of the next song's first segment, made near the end of a play.
pub type Prefetch = tokio::task::JoinHandle<Delivery>;

/// What to play and how.
#[derive(Debug, Clone, Copy)]
pub struct PlayPlan {
    /// The song.
    pub song: SongId,
    /// The song after it, whose first segment is fetched ahead near the end.
    pub next: Option<SongId>,
    /// Playback speed-up: segment deadlines are divided by it.
    pub speed: f64,
    /// Stop after this share of the song.
    pub skip_at: Option<f64>,
    /// At half the song (or at the skip, if sooner), jump to this share of it.
    pub seek_to: Option<f64>,
    /// Report the play to the tracker and note it in the cache (a baseline run does not).
    pub report: bool,
}

/// What a play did.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct PlayResult {
    /// From asking to the first segment in hand.
    pub ttfa_ms: f64,
    /// Segments that arrived after they were due.
    pub stalls: u32,
    /// Time the clock waited for them.
    pub stall_ms: f64,
    /// From the seek to the target segment in hand, if there was a seek.
    pub seek_ms: Option<f64>,
    /// Segments played.
    pub segments_played: usize,
    /// Segments of the song.
    pub segments: usize,
    /// Where the bytes came from.
    pub delivery: Delivery,
    /// Sources caught sending bytes that did not match their hash (and dropped).
    #[serde(default)]
    pub liars_caught: usize,
}

impl PlayResult {
    /// Whether any segment came late.
    pub fn stalled(&self) -> bool {
        self.stalls > 0
    }
}

/// Plays `plan.song` on `client` (see the module). `prefetched` is this song's own
/// fetch-ahead from the play before: the bytes it moved are this play's, taken from where
/// they came from, not from the cache they landed in. Returns the fetch-ahead of the next.
pub async fn play(
    client: &Arc<Client>,
    plan: PlayPlan,
    prefetched: Option<Prefetch>,
) -> Result<(PlayResult, Option<Prefetch>), ClientError> {
    let started = Instant::now();
    let (fetcher, manifest) = client.fetcher_with(plan.song, None).await?;
    let n = fetcher.len().max(1);
    let secs = manifest.meta().duration_ms.unwrap_or(10_000) as f64 / 1000.0;
    let seg = Duration::from_secs_f64(secs / n as f64 / plan.speed);
    let stop_at = plan
        .skip_at
        .map_or(n, |f| ((f * n as f64).ceil() as usize).clamp(1, n));
    let seek = plan.seek_to.map(|to| {
        let from = (n / 2).min(stop_at.saturating_sub(1)).max(1);
        (from, ((to * n as f64) as usize).min(n - 1))
    });
    let mut stats = PlayResult {
        segments: n,
        ..PlayResult::default()
    };
    let mut prefetch = None;
    let mut i = 0usize;
    let mut from = 0usize;
    let mut asked = started;
    let mut first = true;
    'streams: loop {
        // As in the player: a feeder drives the fetch window while segments play.
        let (tx, mut rx) = tokio::sync::mpsc::channel(client.config().read_ahead.max(1));
        let feeder = {
            let fetcher = fetcher.clone();
            tokio::spawn(async move {
                let mut stream = std::pin::pin!(fetcher.stream(from));
                while let Some(item) = stream.next().await {
                    // When it arrived, not when the player got to it.
                    if tx.send((item, Instant::now())).await.is_err() {
                        return;
                    }
                }
            })
        };
        let mut clock: Option<Instant> = None;
        let mut k = 0u32;
        while let Some((item, now)) = rx.recv().await {
            if let Err(e) = item {
                feeder.abort();
                return Err(e);
            }
            let start = *clock.get_or_insert_with(|| {
                let waited = now.duration_since(asked).as_secs_f64() * 1000.0;
                if first {
                    stats.ttfa_ms = waited;
                } else {
                    stats.seek_ms = Some(waited);
                }
                now
            });
            let due = start + seg * k;
            if now > due {
                stats.stalls += 1;
                stats.stall_ms += (now - due).as_secs_f64() * 1000.0;
                clock = Some(start + (now - due));
            }
            if i + 2 == stop_at
                && let Some(next) = plan.next
                && prefetch.is_none()
            {
                // Near the end: the start of the next song, into the cache, while this plays.
                let client = client.clone();
                prefetch = Some(tokio::spawn(async move {
                    match client.fetcher_with(next, None).await {
                        Ok((f, _)) => {
                            let _ = f.segment(0).await;
                            f.report().delivery()
                        }
                        Err(_) => Delivery::default(),
                    }
                }));
            }
            i += 1;
            k += 1;
            stats.segments_played += 1;
            // The player consumes the segment during its duration; the fetcher keeps its
            // window ahead of that.
            let play_until = clock.unwrap_or(start) + seg * k;
            tokio::time::sleep_until(play_until.into()).await;
            if i >= stop_at {
                break;
            }
            if let Some((at, to)) = seek
                && first
                && i == at
            {
                feeder.abort();
                first = false;
                from = to;
                i = to;
                asked = Instant::now();
                continue 'streams;
            }
        }
        feeder.abort();
        if i < stop_at {
            // The fetch stopped without an error and without the song: its task died.
            return Err(ClientError::DataPlane(format!(
                "the fetch of {} stopped at segment {i} of {n}",
                plan.song
            )));
        }
        break;
    }
    stats.delivery = fetcher.report().delivery();
    stats.liars_caught = fetcher.report().liars().len();
    if let Some(p) = prefetched
        && let Ok(p) = p.await
    {
        let moved = p.peer_bytes + p.hot_bytes + p.rebuilt_bytes;
        let d = &mut stats.delivery;
        if d.cache_bytes >= moved {
            d.cache_bytes -= moved;
            d.cache_segments = d
                .cache_segments
                .saturating_sub(p.peer_segments + p.hot_segments + p.rebuilt_segments);
            d.peer_bytes += p.peer_bytes;
            d.hot_bytes += p.hot_bytes;
            d.rebuilt_bytes += p.rebuilt_bytes;
        }
    }
    if plan.report {
        if stop_at == n && seek.is_none() {
            client.note_played(plan.song, &fetcher.segment_ids());
        }
        if let Err(e) = client
            .tracker()
            .report_play(&medley_api::PlayReport::new(
                plan.song,
                &client.config().region,
                Some(stats.delivery.report()),
            ))
            .await
        {
            tracing::warn!(song = %plan.song, error = %e, "cannot report the play");
        }
    }
    Ok((stats, prefetch))
}
