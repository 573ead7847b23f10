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
    assert!(dir.join(medley_daemon::identity::IDENTITY_FILE).exists());

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

/// Parses OpenMetrics text with the reference Python parser (prometheus_client), returning
/// `name{labels} value` lines of every sample, sorted.
fn prometheus_samples(text: &str) -> Vec<String> {
    let script = "import sys\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
        out = []\n\
        for fam in text_string_to_metric_families(sys.stdin.read()):\n\
        \x20   assert fam.documentation, fam.name\n\
        \x20   for s in fam.samples:\n\
        \x20       labels = ','.join(f'{k}={v}' for k, v in sorted(s.labels.items()))\n\
        \x20       out.append(f'{s.name}{{{labels}}} {int(s.value)}')\n\
        print('\\n'.join(sorted(out)))\n";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "not valid OpenMetrics text (scripts/test.sh installs prometheus-client): {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn sample(samples: &[String], name: &str) -> u64 {
    samples
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in {samples:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metrics_follow_what_the_node_serves() {
    let node = crate::support::NodeProcess::start(&[]);
    let info: NodeInfo = serde_json::from_slice(&std::fs::read(node.info_file()).unwrap()).unwrap();
    let admin = info
        .admin
        .clone()
        .expect("node.json names the admin endpoint");
    assert!(admin.starts_with("http://127.0.0.1:"), "{admin}");
    let http = reqwest::Client::new();
    let metrics = || async {
        prometheus_samples(
            &http
                .get(format!("{admin}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        )
    };
    let before = metrics().await;
    assert_eq!(sample(&before, "medley_node_served_bytes_total{}"), 0);
    assert_eq!(sample(&before, "medley_node_store_shards{}"), 0);
    assert_eq!(sample(&before, "medley_node_store_nearly_full{}"), 0);

    // Store a shard and read it back twice over the data plane.
    let c = crate::support::client().await;
    let data = crate::support::bytes(7, 100_000);
    let id = c
        .put_shard(
            node.peer_id,
            node.addrs.clone(),
            data.clone(),
            crate::support::grant(&node.peer_id, &data),
        )
        .await
        .unwrap();
    for _ in 0..2 {
        assert_eq!(
            c.get_shard(node.peer_id, node.addrs.clone(), id)
                .await
                .unwrap(),
            data
        );
    }
    let after = metrics().await;
    assert_eq!(sample(&after, "medley_node_served_bytes_total{}"), 200_000);
    assert_eq!(sample(&after, "medley_node_store_shards{}"), 1);
    assert_eq!(
        sample(
            &after,
            "medley_node_requests_total{kind=get_shard,outcome=ok}"
        ),
        2
    );
    assert_eq!(
        sample(
            &after,
            "medley_node_requests_total{kind=put_shard,outcome=ok}"
        ),
        1
    );
    // Latency histograms: one observation per request, each in a bucket up to +Inf.
    assert_eq!(
        sample(
            &after,
            "medley_node_request_duration_seconds_count{kind=get_shard}"
        ),
        2
    );
    assert_eq!(
        sample(
            &after,
            "medley_node_request_duration_seconds_bucket{kind=get_shard,le=+Inf}"
        ),
        2
    );
    assert_eq!(sample(&after, "medley_node_peers{}"), 1);

    // `status` reads the same from the running process.
    let dir = node.info_file().parent().unwrap().to_path_buf();
    let d = dir.to_str().unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["status", "--data-dir", d, "--json"], &[])).unwrap();
    assert_eq!(json["peer_id"], info.peer_id.as_str());
    assert_eq!(json["shards"], 1);
    assert_eq!(json["bytes_served"], 200_000);
    assert_eq!(json["requests"], 3);
    assert_eq!(json["hot_segments"], 0);
    assert_eq!(json["peers"], 1, "the test's client is connected");
    let text = ok(&["status", "--data-dir", d], &[]);
    assert!(
        text.contains(&info.peer_id) && text.contains("1 shards"),
        "{text}"
    );
    assert!(text.contains("running unregistered"), "{text}");
    // No running node: a clear error.
    let empty = tempfile::tempdir().unwrap();
    let out = node_cmd(&["status", "--data-dir", empty.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no running node"));
}

fn node_cmd(args: &[&str]) -> Output {
    node(args, &[])
}

/// Every series the bundled Grafana dashboard queries is one that a Medley process exports.
#[test]
fn the_grafana_dashboard_queries_only_exported_metrics() {
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../../deploy/grafana/medley.json")).unwrap();
    let sources = [
        include_str!("../../src/admin.rs"),
        include_str!("../../../tracker/src/api/metrics.rs"),
        include_str!("../../../client/src/gateway/mod.rs"),
    ]
    .concat();
    let mut names = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for (i, _) in expr.match_indices("medley_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                names.push(name);
            }
        }
    }
    assert!(names.len() > 10, "{names:?}");
    for n in &names {
        // A histogram's series are its name with a suffix.
        let n = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| n.strip_suffix(s))
            .unwrap_or(n);
        assert!(
            sources.contains(&format!("\"{n}"))
                || sources.contains(&format!("{n} "))
                || sources.contains(&format!("{n}{{")),
            "the dashboard queries {n}, which nothing exports"
        );
    }
}
