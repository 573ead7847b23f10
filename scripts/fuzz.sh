#!/usr/bin/env bash
# Fuzzing campaign: runs every cargo-fuzz target in fuzz/ for RUNS executions (default 10
# million) and prints libFuzzer's final stats. Needs a nightly toolchain (rustup) and
# cargo-fuzz, installed here if missing. A crash leaves its input in fuzz/artifacts/<target>/;
# each becomes a regression test.
#
#   bash scripts/fuzz.sh                   # every target, 10 M runs each
#   RUNS=100000 bash scripts/fuzz.sh wire_decode
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
bash ../scripts/setup.sh
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
runs="${RUNS:-10000000}"
targets=("$@")
((${#targets[@]})) || targets=(manifest_decode wire_decode range_header client_config)
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "== $t: $runs runs" >&2
  cargo +nightly fuzz run -O "$t" "corpus/$t" -- -runs="$runs" -print_final_stats=1 \
    -rss_limit_mb=4096 -max_len=65536 2>&1 | grep -E "^(stat::|Done|#[0-9]+ +DONE)|ERROR|panicked"
done
