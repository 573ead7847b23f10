//! Starting `medley-node` processes and a client peer for tests.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use medley_net::{Multiaddr, Peer, PeerHandle, PeerId};
use medley_node::{NODE_INFO_FILE, NodeInfo};

/// A grant by the test tracker key (which every test node trusts) for `node` to store
/// `data`.
pub(crate) fn grant(node: &PeerId, data: &[u8]) -> medley_core::Grant {
    medley_core::test_utils::test_grant(&node.to_string(), vec![medley_core::ShardId::of(data)])
}

/// Puts `data` on `node` under a valid grant; the shard's id.
pub(crate) async fn put(
    c: &PeerHandle,
    node: &NodeProcess,
    data: &[u8],
) -> Result<medley_core::ShardId, medley_net::RequestError> {
    c.put_shard(
        node.peer_id,
        node.addrs.clone(),
        data.to_vec(),
        grant(&node.peer_id, data),
    )
    .await
}

/// A node process, killed when dropped.
pub(crate) struct NodeProcess {
    pub(crate) child: Child,
    pub(crate) peer_id: PeerId,
    pub(crate) addrs: Vec<Multiaddr>,
    data_dir: std::path::PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl NodeProcess {
    /// Starts a node in a fresh temporary data dir.
    pub(crate) fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut node = Self::start_in(dir.path(), extra);
        node._dir = Some(dir);
        node
    }

    /// Starts a node in `dir`; waits until it has written its addresses.
    pub(crate) fn start_in(dir: &Path, extra: &[&str]) -> Self {
        Self::spawn(dir, extra, true)
    }

    /// Starts a node in `dir` that knows no tracker key.
    pub(crate) fn start_keyless(dir: &Path) -> Self {
        Self::spawn(dir, &[], false)
    }

    /// Starts a node in `dir` with `extra` flags; `trust_test_key`: configured with the
    /// test tracker key.
    pub(crate) fn spawn(dir: &Path, extra: &[&str], trust_test_key: bool) -> Self {
        let _ = std::fs::remove_file(dir.join(NODE_INFO_FILE));
        let mut command = Command::new(env!("CARGO_BIN_EXE_medley-node"));
        if trust_test_key {
            command.env(
                "MEDLEY_TRACKER_KEY",
                medley_core::test_utils::test_tracker_key().id().to_string(),
            );
        }
        let child = command
            .arg("run")
            .arg("--data-dir")
            .arg(dir)
            .args([
                "--listen",
                "/ip4/127.0.0.1/udp/0/quic-v1",
                "--region",
                "test",
            ])
            .args(extra)
            .env("MEDLEY_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start medley-node");
        let info = wait_for_info(dir, Duration::from_secs(60));
        Self {
            child,
            peer_id: info.peer_id.parse().unwrap(),
            addrs: info.listen.iter().map(|a| a.parse().unwrap()).collect(),
            data_dir: dir.to_path_buf(),
            _dir: None,
        }
    }

    /// The node's `/status`, from its admin endpoint.
    pub(crate) async fn status(&self) -> medley_node::NodeStatus {
        let info = wait_for_info(&self.data_dir, Duration::from_secs(10));
        let admin = info.admin.expect("the node has an admin endpoint");
        reqwest::get(format!("{admin}/status"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Where the node writes its `node.json`.
    pub(crate) fn info_file(&self) -> std::path::PathBuf {
        self.data_dir.join(NODE_INFO_FILE)
    }

    /// Whether the process is still running.
    pub(crate) fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Sends SIGTERM.
    pub(crate) fn sigterm(&self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success(), "kill -TERM {pid}");
    }

    /// Waits for the process to exit; fails the test after `timeout`.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let started = std::time::Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                started.elapsed() < timeout,
                "node did not stop within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_info(dir: &Path, timeout: Duration) -> NodeInfo {
    let path = dir.join(NODE_INFO_FILE);
    medley_daemon::wait_for_json_file(&path, timeout)
        .unwrap_or_else(|| panic!("node did not write {} in {timeout:?}", path.display()))
}

/// A client peer that only asks.
pub(crate) async fn client() -> PeerHandle {
    Peer::dial_only().await.unwrap()
}

/// Deterministic pseudo-random bytes.
pub(crate) fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
