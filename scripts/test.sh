#!/usr/bin/env bash
# Runs Medley's whole test suite (unit, property, integration and end-to-end tests).
set -euo pipefail
cd "$(dirname "$0")/.."
# ffmpeg: an independent decoder and encoder; chromium and its driver: the web player's
# browser test; postgresql: the tracker replicas' shared store (tests start private
# clusters on loopback); iptables: the testnet's user-space link emulation (a netfilter queue)
# where the kernel has no netem, whose tests run whenever the suite runs as root; from PyPI, py-sonic (a real Subsonic client library) and prometheus-client
# (the reference parser of the metrics text).
bash scripts/setup.sh ffmpeg chromium chromium-driver postgresql iptables
if [ "$(id -u)" -eq 0 ]; then export MEDLEY_REQUIRE_SHAPING=1; fi
python3 -c 'import libsonic, prometheus_client' 2>/dev/null ||
  python3 -m pip install --quiet --disable-pip-version-check py-sonic==1.2.0 prometheus-client==0.21.1
# End-to-end tests start the real binaries (medley, medley-node, medley-tracker).
cargo build --workspace --bins --locked
cargo test --workspace --all-targets --locked "$@"
# The tracker's integration suite again, every tracker on PostgreSQL (a private cluster the
# suite starts on loopback) instead of RocksDB: the same behaviour on both stores.
MEDLEY_TEST_STORE=postgres cargo test -p medley-tracker --test tracker --locked "$@"
cargo test --workspace --doc --locked
