#!/usr/bin/env bash
# Time to first audio and download throughput of Medley against nginx (HTTP Range) on a
# loopback testnet, in one run. Installs nginx if missing; builds release binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh nginx
cargo build --release --workspace --bins --locked
exec "${CARGO_TARGET_DIR:-target}/release/streaming" "$@"
