//! Publishing: probe a file, cut it into segments, code each into `k + m` shards, upload
//! every shard to its slot node (bounded parallelism, retries), then commit the signed
//! manifest to the tracker.
//!
//! The manifest is computed first, in one pass over the file; if the tracker already has
//! the song, nothing is uploaded. A second pass uploads, holding at most a few segments in
//! memory. The manifest is signed deterministically, so the same file and key always give
//! the same song id: publishing again is idempotent.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt, stream};
use indicatif::ProgressBar;
use medley_api::PublishGrants;
use medley_core::{
    Codec, DEFAULT_SEGMENT_SIZE, Grant, Manifest, ManifestBody, PublisherKey, SegmentEntry,
    Segmenter, ShardId, SongMeta,
};
use medley_net::{PeerHandle, RequestError};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use crate::error::ClientError;
use crate::tracker::{Holder, holder};
use crate::{Client, probe};

/// Attempts per shard upload.
const UPLOAD_ATTEMPTS: u32 = 3;

/// A published song.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Published {
    /// The file.
    pub path: PathBuf,
    /// The song's id.
    pub id: String,
    /// Its metadata.
    pub meta: SongMeta,
    /// False when the tracker already had it (nothing was uploaded).
    pub created: bool,
    /// Shards uploaded.
    pub shards: usize,
    /// Bytes uploaded.
    pub bytes: u64,
}

/// What happened to one file of a publish run (`medley publish --json` prints a list).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum FileOutcome {
    /// Published (or already there).
    Published(Published),
    /// Not audio; left alone.
    Skipped {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Publishing failed.
    Failed {
        /// The file.
        path: PathBuf,
        /// Why.
        error: String,
    },
}

/// The outcome of publishing a file or a folder.
#[derive(Debug, Default, Serialize)]
pub struct PublishSummary {
    /// Every file, in the order handled.
    pub files: Vec<FileOutcome>,
}

impl PublishSummary {
    /// Files that failed.
    pub fn failures(&self) -> usize {
        self.files
            .iter()
            .filter(|f| matches!(f, FileOutcome::Failed { .. }))
            .count()
    }
}

/// Shared by the files of one publish run.
struct Session {
    key: PublisherKey,
    codec: Codec,
    /// Nodes an upload gave up on in this run: later files fail at once instead of waiting
    /// out the retries again.
    failed: std::sync::Mutex<HashMap<medley_net::PeerId, String>>,
}

impl Session {
    fn failed_before(&self, peer: &medley_net::PeerId) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(peer)
            .cloned()
    }

    fn mark_failed(&self, peer: medley_net::PeerId, reason: String) {
        self.failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(peer)
            .or_insert(reason);
    }
}

/// Where one song's shards go and the grants to put them there: one answer of the tracker
/// (`POST /v1/publish/grants`) names, per segment and slot, the node and its addresses.
struct Plan {
    /// Per segment, per slot, the node to upload to.
    holders: Vec<Vec<Option<Holder>>>,
    /// Grant index by (node, shard).
    index: HashMap<(String, ShardId), usize>,
    grants: Vec<Grant>,
}

impl Plan {
    fn new(g: PublishGrants, manifest: &Manifest) -> Result<Self, ClientError> {
        let segments = manifest.body().segments.len();
        if g.placement.len() != segments {
            return Err(ClientError::BadTrackerData {
                what: "publish grants",
                reason: format!(
                    "they place {} segments, the manifest has {segments}",
                    g.placement.len()
                ),
            });
        }
        let holders = g
            .placement
            .iter()
            .map(|slots| {
                slots
                    .iter()
                    .map(|node| {
                        let node = node.as_ref()?;
                        holder(node, g.addrs.get(node).map_or(&[][..], |a| &a[..]))
                    })
                    .collect()
            })
            .collect();
        let mut index = HashMap::new();
        for (i, grant) in g.grants.iter().enumerate() {
            for s in &grant.shards {
                index.insert((grant.node.clone(), *s), i);
            }
        }
        Ok(Self {
            holders,
            index,
            grants: g.grants,
        })
    }

    fn holder(&self, segment: usize, slot: usize) -> Option<&Holder> {
        self.holders.get(segment)?.get(slot)?.as_ref()
    }

    fn grant(&self, node: &medley_net::PeerId, shard: &ShardId) -> Option<&Grant> {
        let i = *self.index.get(&(node.to_string(), *shard))?;
        self.grants.get(i)
    }
}

impl Client {
    /// Publishes a file, or every audio file under a folder (recursively, in name order).
    /// Files that are not audio are skipped and reported; a failure of one file does not
    /// stop the others.
    pub async fn publish_path(&self, path: &Path) -> Result<PublishSummary, ClientError> {
        let meta = std::fs::metadata(path).map_err(|e| ClientError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let files = if meta.is_dir() {
            let mut v = Vec::new();
            walk(path, &mut v)?;
            v
        } else {
            vec![path.to_path_buf()]
        };
        let single = !meta.is_dir();
        let mut summary = PublishSummary::default();
        let session = OnceCell::new();
        for file in files {
            let outcome = match self.publish_in(&session, &file).await {
                Ok(p) => FileOutcome::Published(p),
                Err(ClientError::NotAudio { reason, .. }) if !single => {
                    FileOutcome::Skipped { path: file, reason }
                }
                Err(e) if single => return Err(e),
                Err(e) => FileOutcome::Failed {
                    path: file,
                    error: e.to_string(),
                },
            };
            summary.files.push(outcome);
        }
        Ok(summary)
    }

    /// Publishes one audio file.
    pub async fn publish_file(&self, path: &Path) -> Result<Published, ClientError> {
        self.publish_in(&OnceCell::new(), path).await
    }

    /// What every file of a publish run shares, fetched once, when the first audio file
    /// needs it: the key, the network's coding and where each partition's slots live.
    async fn session<'a>(&self, cell: &'a OnceCell<Session>) -> Result<&'a Session, ClientError> {
        cell.get_or_try_init(|| async {
            let stats = self.tracker().stats().await?;
            let codec = Codec::new(stats.k, stats.m).map_err(|e| ClientError::BadTrackerData {
                what: "coding parameters",
                reason: e.to_string(),
            })?;
            Ok(Session {
                key: self.publisher_key()?,
                codec,
                failed: std::sync::Mutex::new(HashMap::new()),
            })
        })
        .await
    }

    async fn publish_in(
        &self,
        session: &OnceCell<Session>,
        path: &Path,
    ) -> Result<Published, ClientError> {
        let meta = {
            let p = path.to_path_buf();
            tokio::task::spawn_blocking(move || probe(&p))
                .await
                .map_err(|e| ClientError::Decode(e.to_string()))??
        };
        let session = self.session(session).await?;
        let (codec, key) = (&session.codec, session.key.clone());
        let manifest = {
            let (p, m, c) = (path.to_path_buf(), meta.clone(), codec.clone());
            tokio::task::spawn_blocking(move || build_manifest(&p, m, &c, &key))
                .await
                .map_err(|e| ClientError::Decode(e.to_string()))??
        };
        let id = manifest.id();
        if crate::tracker::has_song(self.tracker(), id).await? {
            return Ok(Published {
                path: path.to_path_buf(),
                id: id.to_string(),
                meta,
                created: false,
                shards: 0,
                bytes: 0,
            });
        }
        let plan = Plan::new(self.tracker().publish_grants(&manifest).await?, &manifest)?;
        let peer = self.peer().await?.clone();
        let total_bytes =
            manifest.body().total_size * u64::from(codec.total() as u32) / u64::from(codec.k());
        let bar = progress_bar(total_bytes, path);
        let (shards, bytes) = upload(
            path,
            &manifest,
            codec,
            session,
            &plan,
            &peer,
            self.config().upload_parallelism,
            &bar,
        )
        .await;
        bar.finish_and_clear();
        let (shards, bytes) = (shards?, bytes);
        let committed = self.tracker().publish(&manifest).await?;
        Ok(Published {
            path: path.to_path_buf(),
            id: committed.id.to_string(),
            meta,
            created: committed.created,
            shards,
            bytes,
        })
    }
}

fn progress_bar(total: u64, path: &Path) -> ProgressBar {
    let bar = medley_daemon::progress_bar(
        Some(total),
        "{msg:30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    );
    bar.set_message(
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    bar
}

/// Lists the files under `dir`, recursively, sorted by path; hidden entries are left out.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ClientError> {
    let io = |e| ClientError::Io {
        path: dir.to_path_buf(),
        source: e,
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .collect::<Result<_, _>>()
        .map_err(io)?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = e.path();
        let ft = e.file_type().map_err(io)?;
        if ft.is_dir() {
            walk(&path, out)?;
        } else if ft.is_file() || (ft.is_symlink() && path.is_file()) {
            out.push(path);
        }
    }
    Ok(())
}

fn open(path: &Path) -> Result<BufReader<File>, ClientError> {
    File::open(path)
        .map(|f| BufReader::with_capacity(1 << 20, f))
        .map_err(|e| ClientError::Io {
            path: path.to_path_buf(),
            source: e,
        })
}

/// First pass: the signed manifest.
fn build_manifest(
    path: &Path,
    meta: SongMeta,
    codec: &Codec,
    key: &PublisherKey,
) -> Result<Manifest, ClientError> {
    let mut segments = Vec::new();
    let mut total = 0u64;
    for s in Segmenter::new(open(path)?, DEFAULT_SEGMENT_SIZE) {
        let s = s.map_err(|e| ClientError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        total += s.bytes.len() as u64;
        let shards = codec
            .encode(&s.bytes)
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        segments.push(SegmentEntry {
            id: s.id,
            len: s.bytes.len() as u32,
            shards: shards.iter().map(|d| ShardId::of(d)).collect(),
        });
    }
    if segments.is_empty() {
        return Err(ClientError::NotAudio {
            path: path.to_path_buf(),
            reason: "the file is empty".into(),
        });
    }
    let body = ManifestBody {
        meta,
        total_size: total,
        segment_size: DEFAULT_SEGMENT_SIZE,
        k: codec.k(),
        m: codec.m(),
        segments,
        publisher: key.id(),
    };
    Manifest::sign(body, key).map_err(|e| ClientError::NotAudio {
        path: path.to_path_buf(),
        reason: format!("its manifest is invalid: {e}"),
    })
}

/// A shard to upload: its segment's index, its slot and its bytes.
type ShardJob = (usize, usize, Vec<u8>);

/// Second pass: uploads every shard; returns (shards, bytes) uploaded.
async fn upload(
    path: &Path,
    manifest: &Manifest,
    codec: &Codec,
    session: &Session,
    plan: &Plan,
    peer: &PeerHandle,
    parallelism: usize,
    bar: &ProgressBar,
) -> (Result<usize, ClientError>, u64) {
    // A reader thread cuts and codes segments; a bounded channel keeps memory to a few.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<ShardJob>, ClientError>>(2);
    let (p, c) = (path.to_path_buf(), codec.clone());
    let expected: Vec<SegmentEntry> = manifest.body().segments.clone();
    let reader = tokio::task::spawn_blocking(move || {
        let file = match open(&p) {
            Ok(f) => f,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        for (index, (s, want)) in Segmenter::new(file, DEFAULT_SEGMENT_SIZE)
            .zip(expected)
            .enumerate()
        {
            let job = s
                .map_err(|e| ClientError::Io {
                    path: p.clone(),
                    source: e,
                })
                .and_then(|s| {
                    if s.id != want.id {
                        return Err(ClientError::Io {
                            path: p.clone(),
                            source: std::io::Error::other("the file changed while publishing"),
                        });
                    }
                    let shards = c
                        .encode(&s.bytes)
                        .map_err(|e| ClientError::Decode(e.to_string()))?;
                    Ok(shards
                        .into_iter()
                        .enumerate()
                        .map(|(slot, d)| (index, slot, d))
                        .collect())
                });
            let failed = job.is_err();
            if tx.blocking_send(job).is_err() || failed {
                return;
            }
        }
    });
    let jobs = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|j| (j, rx)) })
        .map_ok(|v| stream::iter(v.into_iter().map(Ok::<_, ClientError>)))
        .try_flatten();
    let mut bytes = 0u64;
    let result = jobs
        .map(|job| async move {
            let (segment, slot, data) = job?;
            let holder = plan
                .holder(segment, slot)
                .ok_or_else(|| ClientError::Upload {
                    shard: ShardId::of(&data).to_string(),
                    node: "(none)".into(),
                    reason: format!("the layout has no reachable node for slot {slot}"),
                })?;
            if let Some(reason) = session.failed_before(&holder.peer) {
                return Err(ClientError::Upload {
                    shard: ShardId::of(&data).to_string(),
                    node: holder.peer.to_string(),
                    reason: format!("gave up on this node earlier in this run: {reason}"),
                });
            }
            let shard = ShardId::of(&data);
            let grant = plan
                .grant(&holder.peer, &shard)
                .ok_or_else(|| ClientError::Upload {
                    shard: shard.to_string(),
                    node: holder.peer.to_string(),
                    reason: "the tracker granted this shard to no such node; the layout \
                             changed while publishing, publish again"
                        .into(),
                })?;
            let r = put_with_retries(peer, holder, data, grant).await;
            if let Err(ClientError::Upload { reason, .. }) = &r {
                session.mark_failed(holder.peer, reason.clone());
            }
            r
        })
        .buffer_unordered(parallelism.max(1))
        .try_fold(0usize, |n, len| {
            bytes += len as u64;
            bar.inc(len as u64);
            async move { Ok(n + 1) }
        })
        .await;
    let _ = reader.await;
    (result, bytes)
}

async fn put_with_retries(
    peer: &PeerHandle,
    holder: &Holder,
    data: Vec<u8>,
    grant: &Grant,
) -> Result<usize, ClientError> {
    let len = data.len();
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match peer
            .put_shard(
                holder.peer,
                holder.addrs.clone(),
                data.clone(),
                grant.clone(),
            )
            .await
        {
            Ok(_) => return Ok(len),
            Err(e) if attempt < UPLOAD_ATTEMPTS && retryable(&e) => {
                tracing::debug!(node = %holder.peer, error = %e, attempt, "upload failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 3;
                attempt += 1;
            }
            Err(e) => {
                return Err(ClientError::Upload {
                    shard: ShardId::of(&data).to_string(),
                    node: holder.peer.to_string(),
                    reason: e.to_string(),
                });
            }
        }
    }
}

fn retryable(e: &RequestError) -> bool {
    match e.code() {
        Some(c) => c == medley_core::protocol::ErrorCode::BUSY,
        None => !matches!(e, RequestError::Closed),
    }
}
