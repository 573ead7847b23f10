//! The operator's commands as processes: `init` from a clean folder, `config` showing the
//! settings in their order of precedence (file < environment < flag), `run` from what `init`
//! wrote.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use medley_node::{NODE_INFO_FILE, NodeInfo};

fn node(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_medley-node"));
    cmd.args(args).env("MEDLEY_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run medley-node")
}

fn ok(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = node(args, env);
    assert!(
        out.status.success(),
        "medley-node {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn setting(config: &str, key: &str) -> String {
    let v: toml::Table = toml::from_str(config).expect("config prints TOML");
    v.get(key)
        .map(|v| v.to_string())
        .unwrap_or_else(|| panic!("{key} missing from\n{config}"))
}

#[test]
fn init_then_config_precedence_then_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let d = dir.to_str().unwrap();
    let out = ok(
        &[
            "init",
            "--data-dir",
            d,
            "--region",
            "file-region",
            "--capacity",
            "2 GiB",
        ],
        &[],
    );
    assert!(out.contains("node identity: 12D3"), "{out}");
    let file = dir.join("medley-node.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("region = \"file-region\""), "{text}");
    assert!(
        text.contains("# Environment: MEDLEY_REPAIR_CONCURRENCY\nrepair_concurrency = 8"),
        "{text}"
    );
    assert!(
        text.contains("# tracker = \"http://127.0.0.1:4700\""),
        "{text}"
    );
    assert!(dir.join(medley_net::IDENTITY_FILE).exists());

    // A second init refuses and changes nothing; --force replaces the file.
    let again = node(&["init", "--data-dir", d, "--region", "other"], &[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    ok(
        &[
            "init",
            "--data-dir",
            d,
            "--region",
            "file-region",
            "--capacity",
            "2 GiB",
            "--force",
        ],
        &[],
    );

    // file < environment < flag, for a setting with a flag and one without.
    let shown = ok(&["config", "--data-dir", d], &[]);
    assert_eq!(setting(&shown, "region"), "\"file-region\"");
    assert_eq!(setting(&shown, "capacity"), "\"2.0 GiB\"");
    let env = [
        ("MEDLEY_REGION", "env-region"),
        ("MEDLEY_REPAIR_CONCURRENCY", "3"),
    ];
    let shown = ok(&["config", "--data-dir", d], &env);
    assert_eq!(setting(&shown, "region"), "\"env-region\"");
    assert_eq!(setting(&shown, "repair_concurrency"), "3");
    let shown = ok(
        &["config", "--data-dir", d, "--region", "flag-region"],
        &env,
    );
    assert_eq!(setting(&shown, "region"), "\"flag-region\"");
    assert_eq!(setting(&shown, "repair_concurrency"), "3");
    // A bad value names its variable.
    let bad = node(
        &["config", "--data-dir", d],
        &[("MEDLEY_REPAIR_CONCURRENCY", "lots")],
    );
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("MEDLEY_REPAIR_CONCURRENCY") && err.contains("lots"),
        "{err}"
    );

    // run uses what init wrote.
    let mut child = Command::new(env!("CARGO_BIN_EXE_medley-node"))
        .args([
            "run",
            "--data-dir",
            d,
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
        ])
        .env("MEDLEY_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let info: Option<NodeInfo> =
        medley_daemon::wait_for_json_file(&dir.join(NODE_INFO_FILE), Duration::from_secs(60));
    let _ = child.kill();
    let _ = child.wait();
    let info = info.expect("the node started from the init'd folder");
    assert_eq!(info.region, "file-region");
    assert!(
        out.contains(&info.peer_id),
        "init printed the identity the node runs with"
    );
    assert!(Path::new(&dir).join("db").exists());
}
