#!/usr/bin/env bash
# Medley's demo: two storage nodes on 127.0.0.1 exchange the erasure-coded shards of a
# song over QUIC and rebuild it with shards missing. Pass an audio file to use your own.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo run --locked -p medley-node --example exchange -- "$@"
