#!/usr/bin/env bash
# Peer-assisted delivery on a loopback testnet: listeners with disk caches that serve each
# other, hot copies on nodes, a Zipf workload and a flash crowd. Builds release binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --workspace --bins --locked
exec "${CARGO_TARGET_DIR:-target}/release/peer_assist" "$@"
