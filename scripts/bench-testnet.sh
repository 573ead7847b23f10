#!/usr/bin/env bash
# How large a network this machine runs for five minutes, and what the testnet itself costs
# per light listener. Runs the same scenario (4 regions, 12 nodes, Zipf(1.0), arrivals
# scaled with the listeners) with a small baseline first and then each size given, and
# prints time to first audio, stalls and failures as ratios against the baseline of the
# same run, and the testnet process's CPU and memory per listener.
#
#   bash scripts/bench-testnet.sh [LISTENERS ...]   (default: 200 400; baseline 20)
#   DURATION=300 BASELINE=20 OUT=runs/bench bash scripts/bench-testnet.sh 200 400 600
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh iptables
cargo build --release --workspace --bins --locked
bin="${CARGO_TARGET_DIR:-target}/release/medley-testnet"
duration="${DURATION:-300}"
baseline="${BASELINE:-20}"
out="${OUT:-runs/bench-testnet}"
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(200 400)
mkdir -p "$out"

scenario() { # listeners -> scenario file
  local n=$1 per=$(( $1 / 4 )) f="$out/large-$1.toml"
  cat > "$f" <<TOML
name = "large-$n"
description = "Benchmark: 4 regions, 12 nodes, $n light listeners, Zipf(1.0), $duration s."
duration_secs = $duration
seed = 1
speed = 2.0
sample_secs = 5
tracker_config = "hot_plays = 4.0\nhot_half_life_secs = 120\nhot_copies = 1\npeer_ttl_secs = 60"
$(for r in eu-west us-east ap-south sa-east; do printf '\n[[regions]]\nname = "%s"\nnodes = 3\nlisteners = %d\n' "$r" "$per"; done)

[network.within]
latency_ms = 2

[network.between]
latency_ms = 40

[catalogue]
songs = 120
min_secs = 8
max_secs = 16
sample_rates = [22050, 44100]

[workload]
zipf = 1.0
arrivals_per_sec = $(python3 -c "print($n / 100)")
session_songs = [2, 6]
skip_pct = 10
seek_pct = 5
cache = "64 MiB"
TOML
  echo "$f"
}

summary() { # run dir, listeners -> one line of figures
  python3 - "$1" "$2" <<'PY'
import csv, sys
d, n = sys.argv[1], int(sys.argv[2])
plays = list(csv.DictReader(open(f"{d}/plays.csv")))
ok = [p for p in plays if p["ok"] == "true"]
ttfa = sorted(float(p["ttfa_ms"]) for p in ok)
q = lambda v, x: v[min(len(v) - 1, max(0, int(-(-x * len(v) // 1)) - 1))] if v else float("nan")
stalled = sum(1 for p in ok if int(p["stalls"]) > 0)
oh = list(csv.DictReader(open(f"{d}/overhead.csv")))
cpu = (float(oh[-1]["cpu_secs"]) - float(oh[0]["cpu_secs"])) / max(0.001, float(oh[-1]["t_secs"]) - float(oh[0]["t_secs"]))
rss = max(int(o["rss_bytes"]) for o in oh) / 1048576
tot = lambda k: sum(int(p[k]) for p in ok)
allb = max(1, sum(tot(k) for k in ("cache_bytes", "peer_bytes", "hot_bytes", "rebuilt_bytes")))
print(f"{n} {len(plays)} {len(plays) - len(ok)} {q(ttfa, .5):.1f} {q(ttfa, .9):.1f} {100 * stalled / max(1, len(ok)):.2f} {cpu:.3f} {rss:.0f} {100 * tot('rebuilt_bytes') / allb:.1f}")
PY
}

lines=()
for n in "$baseline" "${sizes[@]}"; do
  f=$(scenario "$n")
  echo "== $n listeners + 12 nodes, $duration s" >&2
  /usr/bin/time -f "%e s wall, %M KiB peak (testnet process)" "$bin" run "$f" --out "$out/run-$n" >&2
  lines+=("$(summary "$out/run-$n" "$n")")
done

python3 - "${lines[@]}" <<'PY'
import sys
rows = [l.split() for l in sys.argv[1:]]
base = rows[0]
print(f"{'listeners':>9} {'plays':>6} {'failed':>6} {'TTFA p50':>9} {'x base':>7} {'p90':>8} {'x base':>7} {'stalled %':>9} {'cores':>6} {'RSS MiB':>8} {'% core/listener':>15} {'MiB/listener':>12} {'rebuilt %':>9}")
for r in rows:
    n, plays, failed, p50, p90, st, cpu, rss, reb = r
    n = int(n)
    print(f"{n:>9} {plays:>6} {failed:>6} {float(p50):>9.1f} {float(p50)/float(base[3]):>7.2f} {float(p90):>8.1f} {float(p90)/float(base[4]):>7.2f} {float(st):>9.2f} {float(cpu):>6.2f} {float(rss):>8.0f} {100*float(cpu)/n:>15.3f} {float(rss)/n:>12.2f} {float(reb):>9.1f}")
PY
