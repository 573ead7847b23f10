#!/usr/bin/env bash
# Time to restore full redundancy after a node dies and repair's read rate against the data
# plane's, on a loopback testnet. Builds release binaries. Needs about 12 GiB of disk at the
# default --gib 1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --workspace --bins --locked
exec "${CARGO_TARGET_DIR:-target}/release/repair" "$@"
