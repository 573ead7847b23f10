//! Process plumbing shared by Medley's daemons (`medley-node`, `medley-tracker`): logging,
//! the async runtime, exit codes, shutdown signals, TOML config files, and the JSON info file
//! (`node.json`, `tracker.json`) through which a running daemon tells local tools, tests and
//! the testnet where it listens.

pub mod http;
pub mod identity;
pub mod keyfile;
pub mod metrics;
pub mod pgcluster;
pub mod settings;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing_subscriber::EnvFilter;

/// Sets up logging to stderr (colour only on a terminal), runs `main` on a multi-threaded
/// runtime and turns its result into an exit code, printing the whole error chain.
pub fn run_main<F>(log_filter: &str, main: F) -> ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(log_filter).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(main);
    // Tasks still running (a shutdown cut short) are dropped with the runtime, and with
    // them what they hold open (a node's database is closed, not torn down by `exit`);
    // blocking work gets a moment to end.
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<Interrupted>().is_some() => ExitCode::from(130),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A daemon's graceful stop was cut short by a second signal: [`run_main`] exits with 130
/// once the runtime is down.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("stopped at once by a second signal")]
pub struct Interrupted;

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Why a config file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this config.
    #[error("config file {path} is invalid: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error, with line and column.
        source: Box<toml::de::Error>,
    },
}

/// Reads and parses a TOML config file.
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigFileError::Parse {
        path: path.to_path_buf(),
        source: Box::new(source),
    })
}

/// The config file to read: the one given, else `name` in the data dir if it exists.
pub fn config_path(
    explicit: Option<&Path>,
    data_dir: Option<&Path>,
    name: &str,
) -> Option<PathBuf> {
    match (explicit, data_dir) {
        (Some(p), _) => Some(p.to_path_buf()),
        (None, Some(d)) if d.join(name).exists() => Some(d.join(name)),
        _ => None,
    }
}

/// Loads a daemon's or tool's settings: the config file [`config_path`] picks (the one given,
/// else `name` in the data dir), or the defaults when there is none. Callers then apply the
/// environment and flags on top.
pub fn load_config<T: DeserializeOwned + Default>(
    explicit: Option<&Path>,
    data_dir: Option<&Path>,
    name: &str,
) -> Result<T, ConfigFileError> {
    match config_path(explicit, data_dir, name) {
        Some(p) => load_toml(&p),
        None => Ok(T::default()),
    }
}

/// Writes `value` as JSON to `path` through a temporary file and a rename, so a reader never
/// sees half a file.
pub fn write_json_file<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, path)
}

/// Resident memory of process `pid` (`None`: this process), in bytes, from `/proc`; `None`
/// where it cannot be read.
pub fn resident_bytes(pid: Option<u32>) -> Option<u64> {
    let path = pid.map_or_else(
        || "/proc/self/status".to_string(),
        |p| format!("/proc/{p}/status"),
    );
    let status = std::fs::read_to_string(path).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Waits (polling every 20 ms) until `path` holds JSON that parses as `T`; `None` after
/// `timeout`. Blocks the calling thread.
pub fn wait_for_json_file<T: DeserializeOwned>(path: &Path, timeout: Duration) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
        {
            return Some(v);
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub use medley_core::error_chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_file_round_trip_and_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("info.json");
        assert_eq!(
            wait_for_json_file::<Vec<u32>>(&path, Duration::from_millis(50)),
            None
        );
        write_json_file(&path, &vec![1u32, 2]).unwrap();
        assert_eq!(
            wait_for_json_file::<Vec<u32>>(&path, Duration::from_secs(1)),
            Some(vec![1, 2])
        );
        assert!(!dir.path().join("info.json.tmp").exists());
        // A file that is not the expected shape is not accepted.
        assert_eq!(
            wait_for_json_file::<String>(&path, Duration::from_millis(50)),
            None
        );
    }

    #[derive(Debug, Default, PartialEq, serde::Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Settings {
        region: String,
        port: u16,
    }

    #[test]
    fn load_config_prefers_the_given_file_then_the_data_dir_then_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let none: Settings = load_config(None, Some(d), "x.toml").unwrap();
        assert_eq!(none, Settings::default());
        std::fs::write(d.join("x.toml"), "region = \"eu\"\n").unwrap();
        let found: Settings = load_config(None, Some(d), "x.toml").unwrap();
        assert_eq!(found.region, "eu");
        std::fs::write(d.join("other.toml"), "port = 9\n").unwrap();
        let given: Settings = load_config(Some(&d.join("other.toml")), Some(d), "x.toml").unwrap();
        assert_eq!(
            given,
            Settings {
                region: String::new(),
                port: 9
            }
        );
        std::fs::write(d.join("x.toml"), "colour = 1\n").unwrap();
        let e = load_config::<Settings>(None, Some(d), "x.toml").unwrap_err();
        assert!(e.to_string().contains("x.toml"), "{e}");
    }
}

/// A byte-rate limiter (token bucket) shared by tasks: [`RateLimiter::acquire`] waits until
/// the bytes fit in the rate. A burst of up to one second's worth passes at once. A rate of
/// 0 means no limit.
///
/// Hand-written rather than taken from `governor`: that crate counts cells of a `NonZeroU32`
/// with a burst cap, and the amounts here are byte counts of up to a segment, awaited
/// across tasks; a bucket with a mutex and a sleep is all it takes.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    state: std::sync::Mutex<(f64, std::time::Instant)>,
}

impl RateLimiter {
    /// A limiter of `bytes_per_sec` (0: unlimited), with a burst of one second's worth.
    pub fn new(bytes_per_sec: u64) -> Self {
        Self::with_burst(bytes_per_sec, bytes_per_sec)
    }

    /// A limiter of `bytes_per_sec` (0: unlimited) that lets `burst` bytes pass at once.
    pub fn with_burst(bytes_per_sec: u64, burst: u64) -> Self {
        Self {
            rate: bytes_per_sec as f64,
            burst: burst as f64,
            state: std::sync::Mutex::new((burst as f64, std::time::Instant::now())),
        }
    }

    /// Waits until `bytes` may pass.
    pub async fn acquire(&self, bytes: u64) {
        let wait = self.take(bytes);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes `bytes` if they fit in the balance now, without waiting: whether they did
    /// (always, without a rate).
    pub fn try_take(&self, bytes: u64) -> bool {
        self.rate <= 0.0
            || self.with_balance(|balance| {
                let fits = *balance >= bytes as f64;
                if fits {
                    *balance -= bytes as f64;
                }
                fits
            })
    }

    /// Takes `bytes` now and returns how long the caller must wait before they pass (zero
    /// within the burst). The balance may go negative: callers that sleep off their wait
    /// queue fairly in arrival order.
    pub fn take(&self, bytes: u64) -> Duration {
        if self.rate <= 0.0 {
            return Duration::ZERO;
        }
        let debt = self.with_balance(|balance| {
            *balance -= bytes as f64;
            -balance.min(0.0)
        });
        Duration::from_secs_f64(debt / self.rate)
    }

    /// Runs `f` on the balance, refilled up to now.
    fn with_balance<T>(&self, f: impl FnOnce(&mut f64) -> T) -> T {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        let refill = now.duration_since(s.1).as_secs_f64() * self.rate;
        s.0 = (s.0 + refill).min(self.burst);
        s.1 = now;
        f(&mut s.0)
    }
}

#[cfg(test)]
mod rate_tests {
    use super::RateLimiter;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn limits_the_rate_after_the_burst() {
        let l = RateLimiter::new(1_000_000);
        let start = Instant::now();
        // 1 MB burst passes at once; 0.5 MB more must wait about half a second.
        l.acquire(1_000_000).await;
        assert!(start.elapsed() < Duration::from_millis(100));
        l.acquire(500_000).await;
        assert!(
            start.elapsed() >= Duration::from_millis(400),
            "{:?}",
            start.elapsed()
        );
        let free = RateLimiter::new(0);
        let t = Instant::now();
        free.acquire(u64::MAX).await;
        assert!(t.elapsed() < Duration::from_millis(50));
    }
}

/// A progress bar on stderr with `template` (indicatif's syntax), `len` steps (`None`: a
/// spinner). indicatif draws nothing when stderr is not a terminal, so scripts and logs stay
/// quiet.
pub fn progress_bar(len: Option<u64>, template: &str) -> indicatif::ProgressBar {
    let bar =
        indicatif::ProgressBar::with_draw_target(len, indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// The info file (`node.json`, `tracker.json`) a running daemon (`what`) keeps in
/// `data_dir`, or an error saying none runs there.
pub fn read_running_info<T: DeserializeOwned>(
    data_dir: &Path,
    file: &str,
    what: &str,
) -> anyhow::Result<T> {
    let path = data_dir.join(file);
    std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no running {what} in {} (no readable {})",
                data_dir.display(),
                path.display()
            )
        })
}

/// GETs `url` from a local daemon (`who`, for the error) and parses its JSON answer.
pub async fn get_local_json<T: DeserializeOwned>(url: &str, who: &str) -> anyhow::Result<T> {
    get_local_json_as(url, who, None).await
}

/// [`get_local_json`] with an admin bearer token, if there is one. A refusal is reported
/// with the daemon's own error message.
pub async fn get_local_json_as<T: DeserializeOwned>(
    url: &str,
    who: &str,
    token: Option<&str>,
) -> anyhow::Result<T> {
    use anyhow::Context as _;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut request = http.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("{who} does not answer at {url}"))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(String::from))
            .unwrap_or(body);
        anyhow::bail!("{who} refused {url}: {status}: {message}");
    }
    response
        .json()
        .await
        .with_context(|| format!("the answer of {who} at {url} does not parse"))
}
