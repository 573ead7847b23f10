#!/usr/bin/env bash
# Installs the system packages Medley's build needs, if they are missing, plus any packages
# named as arguments (the test suite adds ffmpeg, an independent decoder and encoder).
# RocksDB's Rust bindings are generated with bindgen, which needs libclang; the C/C++ parts
# (RocksDB, aws-lc, the Reed-Solomon SIMD kernels) build with the system compilers; audio
# output (cpal) links ALSA, found with pkg-config.
set -euo pipefail
need=()
for pkg in libclang-dev clang libasound2-dev pkg-config "$@"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "installing: ${need[*]}" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
