//! The tracker's composition root: state plus HTTP server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::info;

use crate::api::{App, router};
use crate::config::{ConfigError, TrackerConfig};
use crate::error::StateError;
use crate::state::State;

/// File in the data directory where a running tracker writes its address.
pub const TRACKER_INFO_FILE: &str = "tracker.json";

/// File in the data directory through which local admin commands reach the tracker: the
/// API over a Unix socket, admin requests allowed without a token (mode 0600).
pub const ADMIN_SOCKET_FILE: &str = "admin.sock";

/// What a running tracker tells local tools (`tracker.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackerInfo {
    /// Base URL of the API, e.g. `http://127.0.0.1:4700`.
    pub url: String,
    /// Process id.
    pub pid: u32,
    /// The admin socket, as a tracker client's base URL (`unix:<path>`).
    #[serde(default)]
    pub admin: Option<String>,
}

/// Why the tracker could not start.
#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The state could not be opened.
    #[error(transparent)]
    State(#[from] StateError),
    /// Binding or file I/O failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Address or file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A running tracker.
#[derive(Debug)]
pub struct Tracker {
    addr: SocketAddr,
    /// Base URL of the API.
    url: String,
    data_dir: PathBuf,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    liveness: tokio::task::JoinHandle<()>,
    auditor: tokio::task::JoinHandle<()>,
    app: Arc<App>,
}

impl Tracker {
    /// Opens the state and starts serving the API.
    pub async fn bind(config: TrackerConfig) -> Result<Self, TrackerError> {
        let publishers = config.validate()?;
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|source| TrackerError::Io {
            what: "cannot create",
            path: data_dir.display().to_string(),
            source,
        })?;
        let info_path = data_dir.join(TRACKER_INFO_FILE);
        let _ = std::fs::remove_file(&info_path);
        let listen = config.listen;
        let state = tokio::task::spawn_blocking(move || State::open(config, &publishers))
            .await
            .map_err(|e| TrackerError::Io {
                what: "cannot open",
                path: "state".into(),
                source: std::io::Error::other(e),
            })??;
        let app = Arc::new(App::new(state));
        let config = app.state.config().clone();
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(medley_daemon::http::tls_config(cert, key).map_err(
                |e| TrackerError::Io {
                    what: "cannot load the TLS certificate",
                    path: cert.display().to_string(),
                    source: std::io::Error::other(e),
                },
            )?),
            _ => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let opts = medley_daemon::http::ServeOptions {
            header_read_timeout: Duration::from_secs(config.header_read_timeout_secs),
            max_connections: config.max_connections,
            max_connections_per_ip: config.max_connections_per_ip,
            tls,
            ..medley_daemon::http::ServeOptions::default()
        };
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| TrackerError::Io {
                what: "cannot listen on",
                path: listen.to_string(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| TrackerError::Io {
            what: "cannot read address of",
            path: listen.to_string(),
            source,
        })?;
        let socket_path = data_dir.join(ADMIN_SOCKET_FILE);
        let socket = match bind_admin_socket(&socket_path) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "no admin socket: admin commands need the HTTP API and admin_token");
                None
            }
        };
        let (stop, stopped) = watch::channel(false);
        let liveness = tokio::spawn(watch_liveness(app.clone(), stop.subscribe()));
        if app.state.is_replicated() {
            tokio::spawn(follow_journal(app.clone(), stop.subscribe()));
        }
        let auditor = tokio::spawn(crate::audit::run(app.clone(), stop.subscribe()));
        let router = router(app.clone());
        let until_stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let admin = socket
            .is_some()
            .then(|| format!("unix:{}", socket_path.display()));
        let local = socket.map(|socket| {
            tokio::spawn(medley_daemon::http::serve_unix(
                socket,
                router.clone(),
                opts.clone(),
                until_stopped(stop.subscribe()),
            ))
        });
        let task = tokio::spawn(async move {
            medley_daemon::http::serve(listener, router, opts, until_stopped(stopped)).await;
            if let Some(local) = local {
                let _ = local.await;
            }
        });
        let info = TrackerInfo {
            url: format!("{scheme}://{addr}"),
            pid: std::process::id(),
            admin,
        };
        medley_daemon::write_json_file(&info_path, &info).map_err(|source| TrackerError::Io {
            what: "cannot write",
            path: info_path.display().to_string(),
            source,
        })?;
        info!(url = %info.url, "tracker running");
        Ok(Self {
            addr,
            url: info.url,
            data_dir,
            stop,
            task,
            liveness,
            auditor,
            app,
        })
    }

    /// The address the API listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL of the API.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The admin socket, as a tracker client's base URL (`unix:<path>`).
    pub fn admin_url(&self) -> String {
        format!("unix:{}", self.data_dir.join(ADMIN_SOCKET_FILE).display())
    }

    /// The state, for in-process use (tests, the testnet).
    pub fn state(&self) -> &State {
        &self.app.state
    }

    /// Stops accepting requests and waits up to `timeout` for in-flight ones and for the
    /// state to be closed (its database lock released), so the same data directory can be
    /// opened again at once.
    pub async fn shutdown(self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout_at(deadline, self.task).await;
        let _ = tokio::time::timeout_at(deadline, self.liveness).await;
        let _ = tokio::time::timeout_at(deadline, self.auditor).await;
        // Blocking work started by requests may still hold the state for a moment.
        while Arc::strong_count(&self.app) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The store is written, and its connections closed, off the async threads.
        let app = self.app;
        let flushed = tokio::task::spawn_blocking(move || {
            let r = app.state.flush_plays();
            drop(app);
            r
        })
        .await;
        if let Ok(Err(e)) = flushed {
            tracing::error!(error = %e, "cannot write the last play counts");
        }
        let _ = std::fs::remove_file(self.data_dir.join(TRACKER_INFO_FILE));
        let _ = std::fs::remove_file(self.data_dir.join(ADMIN_SOCKET_FILE));
        info!("tracker stopped");
    }
}

/// Binds the admin socket at `path`, readable and writable by this user only. A socket
/// file left by a tracker that died is replaced; one a running tracker answers on is not.
fn bind_admin_socket(path: &std::path::Path) -> Result<tokio::net::UnixListener, TrackerError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |what: &'static str| {
        let path = path.display().to_string();
        move |source| TrackerError::Io { what, path, source }
    };
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(TrackerError::Io {
            what: "another tracker answers on",
            path: path.display().to_string(),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        });
    }
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path).map_err(io("cannot listen on"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io("cannot restrict"))?;
    Ok(listener)
}

/// With replicas: indexes songs committed through any of them as soon as the database
/// announces the commit (or at the latest every half second), so a song published through
/// one is searchable on all within a second.
async fn follow_journal(app: Arc<App>, mut stopped: watch::Receiver<bool>) {
    loop {
        let a = app.clone();
        let waited =
            tokio::task::spawn_blocking(move || a.state.follow_journal(Duration::from_millis(500)));
        let r = tokio::select! {
            _ = stopped.wait_for(|s| *s) => return,
            r = waited => r,
        };
        match r {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot follow the journal; will retry");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => tracing::error!(error = %e, "journal task failed"),
        }
    }
}

/// Every second (or a quarter of the grace period, if shorter), takes nodes that missed
/// their heartbeats for the grace period out of the layout, so their slots go to live nodes,
/// which rebuild the shards; and releases the hot copies of songs that cooled.
async fn watch_liveness(app: Arc<App>, mut stopped: watch::Receiver<bool>) {
    let grace = Duration::from_secs(app.state.config().node_grace_secs);
    let period = (grace / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        if let Some(l) = &app.limiter {
            l.retain_recent();
        }
        let app = app.clone();
        let result = tokio::task::spawn_blocking(move || {
            if let Err(e) = app.state.follow_replicas() {
                tracing::error!(error = %e, "cannot read what other replicas wrote; will retry");
            }
            app.state.sweep_hot();
            if let Err(e) = app.state.flush_plays() {
                tracing::error!(error = %e, "cannot write the play counts; will retry");
            }
            app.state.refresh_layout()
        })
        .await;
        match result {
            Ok(Ok(Some(version))) => info!(version, "layout follows node liveness"),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "cannot recompute the layout"),
            Err(e) => tracing::error!(error = %e, "layout task failed"),
        }
    }
}
