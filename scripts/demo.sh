#!/usr/bin/env bash
# Medley's demo: a tracker and 6 storage nodes in 3 regions start as real processes on
# 127.0.0.1; a generated library of synthesized, tagged FLAC songs is published, searched
# and played from a listener in each region; every result is checked. Exits 0 only if all
# checks pass. Extra arguments go to `medley-testnet demo` (e.g. --dir DIR --songs 24).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --workspace --bins --locked
exec "${CARGO_TARGET_DIR:-target}/debug/medley-testnet" demo "$@"
