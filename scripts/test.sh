#!/usr/bin/env bash
# Runs Medley's whole test suite (unit, property, integration and end-to-end tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh ffmpeg
# End-to-end tests start the real binaries (medley, medley-node, medley-tracker).
cargo build --workspace --bins --locked
cargo test --workspace --all-targets --locked "$@"
cargo test --workspace --doc --locked
