#!/usr/bin/env bash
# Runs Medley's whole test suite (unit, property, integration and end-to-end tests).
set -euo pipefail
cd "$(dirname "$0")/.."
# ffmpeg: an independent decoder and encoder; chromium and its driver: the web player's
# browser test; py-sonic (PyPI): a real Subsonic client library.
bash scripts/setup.sh ffmpeg chromium chromium-driver
python3 -c 'import libsonic' 2>/dev/null ||
  python3 -m pip install --quiet --disable-pip-version-check py-sonic==1.2.0
# End-to-end tests start the real binaries (medley, medley-node, medley-tracker).
cargo build --workspace --bins --locked
cargo test --workspace --all-targets --locked "$@"
cargo test --workspace --doc --locked
