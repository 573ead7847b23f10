#!/usr/bin/env bash
# Search on a generated catalogue: the tracker over HTTP against PostgreSQL full-text search
# (tsvector + GIN) on the same songs and queries, in one run. Installs PostgreSQL if missing,
# starts a private cluster on a Unix socket (stopped and removed at exit), builds release.
# Extra arguments go to the bench (e.g. --songs 100000).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh postgresql
cargo build --release --workspace --bins --locked
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
pgdir=$(mktemp -d /tmp/medley-pg.XXXXXX)
sock=/tmp/medley-pg-sock
mkdir -p "$sock"
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  chown postgres "$pgdir" "$sock"
  as_pg=(runuser -u postgres --)
fi
cleanup() {
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$pgdir/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$pgdir"
}
trap cleanup EXIT
"${as_pg[@]}" "$pgbin/initdb" -D "$pgdir/data" -U postgres -A trust >/dev/null
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w \
  -o "-p 5499 -k $sock -c listen_addresses='' -c shared_buffers=1GB -c work_mem=64MB -c max_connections=50" start >/dev/null
"${CARGO_TARGET_DIR:-target}/release/search" \
  --pg "host=$sock port=5499 user=postgres dbname=postgres" "$@"
