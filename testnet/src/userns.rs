//! Shaping without root: `medley-testnet run` and `sweep`, started by a user who is not
//! root, run themselves again inside a user and network namespace of their own
//! (`unshare --user --map-root-user --net`), where they are root of a private loopback: the
//! link emulation (netem or the delay line) then shapes that loopback, and nothing outside
//! the namespace is touched. Files written are the user's own.
//!
//! Tracker replicas (a private PostgreSQL cluster) cannot start there: `initdb` refuses to
//! run as root and the namespace maps no other user.

use std::process::{Command, ExitCode};

/// Set in the environment of the command run again inside the namespace.
pub const IN_NAMESPACE: &str = "MEDLEY_TESTNET_NAMESPACE";

/// Whether this process runs inside the namespace [`rerun_in_namespace`] made.
pub fn inside() -> bool {
    std::env::var_os(IN_NAMESPACE).is_some()
}

fn effective_uid() -> Option<u32> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                .and_then(|u| u.parse().ok())
        })
}

/// Runs this command again inside a user and network namespace of its own when this
/// process is not root and the system allows such namespaces; returns the exit code of that
/// run. `None`: run here (as root, already inside, or without namespaces, unshaped then).
/// Inside, brings the namespace's loopback up.
pub fn rerun_in_namespace() -> Option<ExitCode> {
    if inside() {
        let up = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status();
        if !up.is_ok_and(|s| s.success()) {
            eprintln!("medley-testnet: cannot bring up the namespace's loopback");
        }
        return None;
    }
    if effective_uid() == Some(0) {
        return None;
    }
    let ns = ["--user", "--map-root-user", "--net"];
    let works = Command::new("unshare")
        .args(ns)
        .arg("true")
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        return None;
    }
    let exe = std::env::current_exe().ok()?;
    // iptables' lock file (under /run) is the host's: one of the user's own instead.
    let lock = std::env::temp_dir().join(format!(
        "medley-xtables-{}.lock",
        effective_uid().unwrap_or(0)
    ));
    let status = Command::new("unshare")
        .args(ns)
        .arg("--")
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(IN_NAMESPACE, "1")
        .env("XTABLES_LOCKFILE", lock)
        .status();
    match status {
        Ok(s) => Some(ExitCode::from(
            s.code().map_or(1, |c| u8::try_from(c).unwrap_or(1)),
        )),
        Err(e) => {
            eprintln!(
                "medley-testnet: cannot make a namespace for shaping ({e}); running unshaped"
            );
            None
        }
    }
}
