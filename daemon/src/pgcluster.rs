//! A private PostgreSQL cluster for a test or a testnet run: `initdb` in a directory of the
//! run, the server on a loopback port (no Unix socket), stopped when dropped. Run as root,
//! the server runs as the `postgres` user (it refuses root), which must be able to reach
//! the directory.
//!
//! The server binaries are found in `MEDLEY_PG_BIN` or the newest
//! `/usr/lib/postgresql/*/bin` (Debian's `postgresql` package; `scripts/setup.sh
//! postgresql` installs it).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Why a cluster could not be made or driven.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No PostgreSQL server binaries.
    #[error(
        "no PostgreSQL server found (looked in MEDLEY_PG_BIN and /usr/lib/postgresql/*/bin): install it with `bash scripts/setup.sh postgresql`"
    )]
    NoServer,
    /// A command could not run.
    #[error("cannot run {command}: {source}")]
    Spawn {
        /// The command.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// A command failed.
    #[error("{command} failed: {stderr}")]
    Failed {
        /// The command.
        command: String,
        /// What it printed.
        stderr: String,
    },
    /// The directory cannot be prepared.
    #[error("cannot prepare {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A running private cluster.
#[derive(Debug)]
pub struct Cluster {
    data: PathBuf,
    log: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

fn server_bin() -> Result<PathBuf, ClusterError> {
    if let Some(dir) = std::env::var_os("MEDLEY_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| ClusterError::NoServer)?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b).ok_or(ClusterError::NoServer)
}

/// Whether this process runs as root (its effective uid, from /proc).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn free_port() -> Result<u16, ClusterError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| ClusterError::Spawn {
            command: "bind 127.0.0.1:0".into(),
            source,
        })
}

impl Cluster {
    /// Makes a cluster in `dir/data` if there is none, and starts it on a free loopback
    /// port.
    pub fn start(dir: &Path) -> Result<Self, ClusterError> {
        let bin = server_bin()?;
        let as_postgres = is_root();
        std::fs::create_dir_all(dir).map_err(|source| ClusterError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let cluster = Self {
            data: dir.join("data"),
            log: dir.join("postgres.log"),
            bin,
            port: free_port()?,
            as_postgres,
        };
        if as_postgres {
            let d = dir.display().to_string();
            cluster.run("chown", &["-R", "postgres", &d])?;
            if cluster
                .run("runuser", &["-u", "postgres", "--", "test", "-w", &d])
                .is_err()
            {
                return Err(ClusterError::Dir {
                    path: dir.to_path_buf(),
                    source: std::io::Error::other(
                        "the server runs as the postgres user, which cannot reach this folder: \
                         let it through the folders above (chmod o+x) or choose another folder",
                    ),
                });
            }
        }
        if !cluster.data.join("PG_VERSION").exists() {
            let initdb = cluster.bin.join("initdb").display().to_string();
            let data = cluster.data.display().to_string();
            cluster.run_as_server(
                &initdb,
                &["-D", &data, "-U", "postgres", "-A", "trust", "--no-sync"],
            )?;
        }
        cluster.pg_ctl_start()?;
        cluster.stop_when_gone(None)?;
        Ok(cluster)
    }

    /// A cluster in a new directory under the system's temporary one, stopped and removed
    /// once this process is gone (however it ends).
    pub fn start_temporary() -> Result<Self, ClusterError> {
        let dir = std::env::temp_dir().join(format!(
            "medley-pg-{}-{:08x}",
            std::process::id(),
            getrandom::u32().unwrap_or(0)
        ));
        let cluster = Self::start(&dir)?;
        cluster.stop_when_gone(Some(&dir))?;
        Ok(cluster)
    }

    /// Leaves a watcher that stops the server (and removes `remove`) once this process is
    /// gone: a test binary killed, or one that never drops a cluster kept for all its
    /// tests, leaves no server behind.
    fn stop_when_gone(&self, remove: Option<&Path>) -> Result<(), ClusterError> {
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = format!(
            "{}'{}' -D '{}' -m immediate stop",
            if self.as_postgres {
                "runuser -u postgres -- "
            } else {
                ""
            },
            pg_ctl.display(),
            self.data.display()
        );
        let rm = remove.map_or(String::new(), |d| format!("; rm -rf '{}'", d.display()));
        let script = format!(
            "while kill -0 {} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1{rm}",
            std::process::id()
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|source| ClusterError::Spawn {
                command: "sh".into(),
                source,
            })?;
        Ok(())
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<Output, ClusterError> {
        let out = Command::new(program)
            .args(args)
            .output()
            .map_err(|source| ClusterError::Spawn {
                command: program.into(),
                source,
            })?;
        if !out.status.success() {
            return Err(ClusterError::Failed {
                command: format!("{program} {}", args.join(" ")),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(out)
    }

    /// Runs a server program, as `postgres` when this process is root.
    fn run_as_server(&self, program: &str, args: &[&str]) -> Result<Output, ClusterError> {
        if self.as_postgres {
            let mut all = vec!["-u", "postgres", "--", program];
            all.extend_from_slice(args);
            self.run("runuser", &all)
        } else {
            self.run(program, args)
        }
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<Output, ClusterError> {
        let pg_ctl = self.bin.join("pg_ctl").display().to_string();
        let data = self.data.display().to_string();
        let mut all = vec!["-D", data.as_str()];
        all.extend_from_slice(args);
        self.run_as_server(&pg_ctl, &all)
    }

    fn pg_ctl_start(&self) -> Result<(), ClusterError> {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c max_connections=200",
            self.port
        );
        let log = self.log.display().to_string();
        self.pg_ctl(&["-l", &log, "-w", "-t", "60", "-o", &opts, "start"])?;
        Ok(())
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates database `name`.
    pub fn create_database(&self, name: &str) -> Result<(), ClusterError> {
        let psql = self.bin.join("psql").display().to_string();
        let port = self.port.to_string();
        self.run(
            &psql,
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-q",
                "-c",
                &format!("CREATE DATABASE \"{name}\""),
            ],
        )?;
        Ok(())
    }

    /// Stops the server (fast: connections are closed, committed data is on disk).
    pub fn stop(&self) -> Result<(), ClusterError> {
        self.pg_ctl(&["-m", "fast", "-w", "stop"])?;
        Ok(())
    }

    /// Starts the server again after [`Cluster::stop`], on the same port.
    pub fn restart(&self) -> Result<(), ClusterError> {
        self.pg_ctl_start()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
    }
}

/// A new, empty database on this process's private cluster (started at the first call):
/// each test gets its own.
pub fn test_database() -> Result<String, ClusterError> {
    static CLUSTER: std::sync::OnceLock<Result<Cluster, String>> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let cluster = CLUSTER
        .get_or_init(|| Cluster::start_temporary().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| ClusterError::Failed {
            command: "the test cluster".into(),
            stderr: e.clone(),
        })?;
    let name = format!(
        "test_{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    cluster.create_database(&name)?;
    Ok(cluster.url(&name))
}
