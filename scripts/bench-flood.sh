#!/usr/bin/env bash
# Time to first audio of a listener while one peer floods the node it streams from, against
# the same without the flood, on a loopback testnet. Builds release binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --workspace --bins --locked
exec "${CARGO_TARGET_DIR:-target}/release/flood" "$@"
