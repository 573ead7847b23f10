#!/usr/bin/env bash
# Seek latency through the local gateway against the time to first byte at the start of a
# song, on a loopback testnet, in one run. Builds release binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --workspace --bins --locked
exec "${CARGO_TARGET_DIR:-target}/release/seek" "$@"
