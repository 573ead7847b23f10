//! Medley's client: publishes songs to the network, searches the catalogue, and streams
//! songs from their shard holders, rebuilding and verifying every segment before it is
//! played or written.
//!
//! The `medley` binary is a thin layer over [`Client`]: `publish`, `search`, `play`, `get`,
//! and `serve`, the local HTTP gateway ([`gateway`]): streams with Range, a web player and
//! the Subsonic API.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod cache;
pub mod cli;
mod config;
mod device;
mod disk_cache;
mod error;
mod fetch;
pub mod gateway;
mod play;
mod probe;
mod publish;
mod share;
mod tracker;

use std::sync::Arc;
use std::time::Duration;

use medley_core::{PublisherKey, SongId};
use medley_daemon::identity::load_or_create_identity;
use medley_net::{NoService, Peer, PeerConfig, PeerHandle};
use tokio::sync::OnceCell;

pub use cache::{CacheStats, SegmentCache, SegmentStore};
pub use config::{
    CONFIG_FILE, ClientConfig, PUBLISHER_KEY_FILE, default_data_dir, load_or_create_publisher_key,
};
pub use disk_cache::DiskCache;
pub use error::ClientError;
pub use fetch::{Delivery, FetchOptions, Fetcher, Report, SourceStats};
pub use medley_api::{
    Artist, Committed, Hit, HotSong, NodeEntry, SearchQuery, SearchResults, Song, SourceKind,
    Stats, TrackerClient, TrackerError,
};
pub use play::{Downloaded, Output, PlayOutcome, decode_reader, decode_to_wav};
pub use probe::probe;
pub use publish::{FileOutcome, PublishSummary, Published};
pub use share::ShareStats;
pub use tracker::{Holder, SongSources, WholeCopy, has_song, song_sources};

/// A client session: configuration, the tracker, and (started on first use) a data-plane
/// peer with the persistent identity from the data directory.
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    tracker: TrackerClient,
    /// The tracker client that signs with this listener's identity, once the peer started.
    signed: std::sync::OnceLock<TrackerClient>,
    peer: OnceCell<PeerHandle>,
    /// The persistent cache of played segments, if on.
    /// Opened on first use: commands that play nothing never scan it.
    disk: std::sync::OnceLock<Option<Arc<DiskCache>>>,
    /// What this listener served to others.
    share: Arc<ShareStats>,
    /// Stops the announcements (and withdraws them).
    share_cancel: medley_net::CancellationToken,
    announcer: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Wakes the announcer when a song was played through.
    played: Arc<tokio::sync::Notify>,
}

impl Client {
    /// A client with `config` (validated here).
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        config.validate()?;
        let tracker = TrackerClient::builder(&config.tracker)
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .ca_file(config.tracker_ca.clone())
            .local_address(config.tracker_source)
            .build()?;
        Ok(Self {
            config,
            tracker,
            signed: std::sync::OnceLock::new(),
            peer: OnceCell::new(),
            disk: std::sync::OnceLock::new(),
            share: Arc::new(ShareStats::default()),
            share_cancel: medley_net::CancellationToken::new(),
            announcer: parking_lot::Mutex::new(None),
            played: Arc::new(tokio::sync::Notify::new()),
        })
    }

    /// The persistent cache of played segments, if on.
    pub fn disk_cache(&self) -> Option<&Arc<DiskCache>> {
        self.disk
            .get_or_init(|| {
                if self.config.cache_bytes.as_u64() == 0 {
                    return None;
                }
                let dir = self.config.data_dir.join("cache");
                match DiskCache::open(&dir, self.config.cache_bytes.as_u64()) {
                    Ok(c) => Some(Arc::new(c)),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot open the cache: playing without one");
                        None
                    }
                }
            })
            .as_ref()
    }

    /// What this listener served to other listeners.
    pub fn share_stats(&self) -> &Arc<ShareStats> {
        &self.share
    }

    /// Records that `song` (with these segments) was played through, so that it is held
    /// whole and can be announced.
    pub fn note_played(&self, song: SongId, segments: &[medley_core::SegmentId]) {
        if let Some(d) = self.disk_cache() {
            d.note_song(song, segments);
            self.played.notify_one();
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The tracker; signing announcements and reports once the data-plane peer (and so
    /// the identity) is up.
    pub fn tracker(&self) -> &TrackerClient {
        self.signed.get().unwrap_or(&self.tracker)
    }

    /// The data-plane peer, started on first use.
    pub async fn peer(&self) -> Result<&PeerHandle, ClientError> {
        self.peer
            .get_or_try_init(|| async {
                let dir = &self.config.data_dir;
                let key = load_or_create_identity(dir)
                    .map_err(|e| ClientError::DataPlane(e.to_string()))?;
                let _ = self.signed.set(self.tracker.with_signer(key.clone()));
                let mut config = PeerConfig {
                    request_timeout: Duration::from_secs(self.config.request_timeout_secs),
                    agent: format!("medley-client/{}", env!("CARGO_PKG_VERSION")),
                    ..PeerConfig::default()
                };
                let serving = self
                    .disk_cache()
                    .cloned()
                    .filter(|_| self.config.serve_cache);
                let handler: Arc<dyn medley_net::Handler> = match &serving {
                    Some(cache) => {
                        let listen = self.config.serve_listen.parse().map_err(|e| {
                            ClientError::Config(format!(
                                "serve_listen {:?}: {e}",
                                self.config.serve_listen
                            ))
                        })?;
                        config.listen = vec![listen];
                        config.max_concurrent_inbound = self.config.serve_max_peers;
                        Arc::new(share::CacheService {
                            cache: cache.clone(),
                            limiter: Arc::new(medley_daemon::RateLimiter::new(
                                self.config.serve_bytes_per_sec.as_u64(),
                            )),
                            stats: self.share.clone(),
                        })
                    }
                    None => Arc::new(NoService),
                };
                let peer = Peer::spawn(key, config, handler, medley_net::CancellationToken::new())
                    .await
                    .map_err(|e| ClientError::DataPlane(e.to_string()))?;
                if let Some(cache) = serving {
                    *self.announcer.lock() = Some(tokio::spawn(share::announce(
                        self.tracker().clone(),
                        peer.clone(),
                        cache,
                        self.config.region.clone(),
                        Duration::from_secs(self.config.announce_secs),
                        self.played.clone(),
                        self.share_cancel.clone(),
                    )));
                }
                Ok(peer)
            })
            .await
    }

    /// The publisher key from the data directory (created if missing).
    pub fn publisher_key(&self) -> Result<PublisherKey, ClientError> {
        load_or_create_publisher_key(&self.config.data_dir)
    }

    /// The fetch settings from the configuration.
    pub fn fetch_options(&self) -> FetchOptions {
        FetchOptions {
            extra_sources: self.config.extra_sources,
            hedge_after: Duration::from_millis(self.config.hedge_after_ms),
            read_ahead: self.config.read_ahead,
        }
    }

    /// A fetcher for song `id`: its verified manifest and its sources.
    pub async fn fetcher(
        &self,
        id: SongId,
    ) -> Result<(Arc<Fetcher>, medley_core::Manifest), ClientError> {
        self.fetcher_with(id, None).await
    }

    /// A fetcher for song `id` that uses `cache`, if given.
    pub async fn fetcher_with(
        &self,
        id: SongId,
        cache: Option<Arc<dyn SegmentStore>>,
    ) -> Result<(Arc<Fetcher>, medley_core::Manifest), ClientError> {
        self.fetcher_opts(id, cache, self.fetch_options()).await
    }

    /// A fetcher for song `id` that uses `cache`, if given, and fetches as `opts` say.
    pub(crate) async fn fetcher_opts(
        &self,
        id: SongId,
        cache: Option<Arc<dyn SegmentStore>>,
        opts: FetchOptions,
    ) -> Result<(Arc<Fetcher>, medley_core::Manifest), ClientError> {
        let manifest = self
            .tracker()
            .manifest(id)
            .await
            .map_err(tracker::unknown_song(id))?;
        let body = manifest.body();
        let sources = song_sources(
            self.tracker(),
            id,
            body.segments.len(),
            manifest.codec().total(),
            Some(&self.config.region),
        )
        .await?;
        let peer = self.peer().await?.clone();
        let me = peer.peer_id();
        if cache.is_none()
            && let Some(d) = self.disk_cache()
        {
            let ids: Vec<medley_core::SegmentId> = body.segments.iter().map(|s| s.id).collect();
            d.note_fetching(id, &ids);
        }
        let mut fetcher = Fetcher::new(
            peer,
            &manifest,
            sources.holders,
            opts,
            Arc::new(Report::default()),
        )
        // Never itself: it would only find what its cache already missed.
        .with_whole(sources.whole.into_iter().filter(|w| w.peer != me).collect())
        .with_reporter(self.tracker().clone(), id);
        if let Some(c) = cache.or_else(|| {
            self.disk_cache()
                .map(|d| d.clone() as Arc<dyn SegmentStore>)
        }) {
            fetcher = fetcher.with_cache(c);
        }
        Ok((Arc::new(fetcher), manifest))
    }

    /// Withdraws the announcement of the cache and stops the data-plane peer, if it was
    /// started.
    pub async fn shutdown(&self) {
        self.share_cancel.cancel();
        let announcer = self.announcer.lock().take();
        if let Some(a) = announcer {
            let _ = tokio::time::timeout(Duration::from_secs(2), a).await;
        }
        if let Some(p) = self.peer.get() {
            p.shutdown(Duration::from_secs(2)).await;
        }
    }
}
