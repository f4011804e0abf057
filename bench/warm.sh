#!/usr/bin/env bash
# `celeriac warm` throughput and memory: a full pass over N rows (default 100,000 then 1,000,000)
# from a local Postgres and from the TDS test server (SQLite file behind it) into a private Redis.
# Prints, per source and size: rows/s (rows / the job's own elapsed time), the wall time of the
# process, its CPU time (user + system) and rows per CPU-second (a figure less sensitive to
# other load on the machine), its peak RSS (/usr/bin/time) and the load average before the run.
#
# Usage: bench/warm.sh [ROWS...]   (e.g. bench/warm.sh 100000 1000000)
# Needs: Postgres on 127.0.0.1:5432 (user postgres, trust), redis-server, sqlite3, /usr/bin/time.
# Builds in release into $CARGO_TARGET_DIR (default: target). BATCH=2000 sets batch_size;
# WARM_EXTRA adds [[warm]] settings (e.g. WARM_EXTRA='rows_per_second = 1e12' turns off the
# overlap of a page's Redis write with the next page's read, for comparison).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(100000 1000000)
BATCH=${BATCH:-2000}
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release -p celeriac-worker --bin celeriac -p tds-test-server --bin tds-test-server >/dev/null
CELERIAC=$TARGET/release/celeriac
TDS=$TARGET/release/tds-test-server

DB=celeriac_bench_warm_$$
DIR=$(mktemp -d)
REDIS_PORT=$((20000 + RANDOM % 10000))
TDS_PORT=$((30000 + RANDOM % 10000))
TDS_PID=
redis-server --port "$REDIS_PORT" --save "" --appendonly no --daemonize yes \
  --pidfile "$DIR/redis.pid" >/dev/null
cleanup() {
  [ -n "$TDS_PID" ] && kill "$TDS_PID" 2>/dev/null || true
  [ -f "$DIR/redis.pid" ] && kill "$(cat "$DIR/redis.pid")" 2>/dev/null || true
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $DB"

config() { # url
  cat > "$DIR/warm.toml" <<TOML
broker_url = "redis://127.0.0.1:$REDIS_PORT/0"
[sources.main]
url = "$1"
[[tasks]]
name = "q.get_ticket"
source = "main"
sql = "SELECT id, title, price FROM tickets WHERE id = :id"
params = ["id"]
key = "ticket:{id}"
ttl = "1h"
result = "one"
[[warm]]
task = "q.get_ticket"
table = "tickets"
key_column = "id"
columns = ["id", "title", "price"]
batch_size = $BATCH
${WARM_EXTRA:-}
TOML
}

measure() { # source rows
  redis-cli -p "$REDIS_PORT" FLUSHALL >/dev/null # the private Redis only
  local load
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  if ! /usr/bin/time -v "$CELERIAC" warm --config "$DIR/warm.toml" >"$DIR/out.txt" 2>"$DIR/time.txt"; then
    echo "$1 $2: celeriac warm failed:" >&2
    tail -n 5 "$DIR/out.txt" "$DIR/time.txt" >&2
    return 1
  fi
  local summary secs rss wall keys cpu
  summary=$(grep 'rows read' "$DIR/out.txt")
  secs=$(sed -E 's/.*, ([0-9.]+)s$/\1/' <<<"$summary")
  rss=$(awk -F': ' '/Maximum resident/ {printf "%.1f", $2/1024}' "$DIR/time.txt")
  wall=$(awk -F': ' '/Elapsed \(wall/ {print $2}' "$DIR/time.txt")
  cpu=$(awk -F': ' '/User time|System time/ {t += $2} END {printf "%.1f", t}' "$DIR/time.txt")
  keys=$(redis-cli -p "$REDIS_PORT" DBSIZE)
  printf '%-9s %9d rows  %7.1f s  %8.0f rows/s  wall %s  CPU %5s s (%6.0f rows/CPU-s)  peak RSS %6s MiB  keys %s  load %s\n' \
    "$1" "$2" "$secs" "$(echo "$2 / $secs" | bc -l)" "$wall" "$cpu" "$(echo "$2 / $cpu" | bc -l)" "$rss" "$keys" "$load"
}

for n in "${SIZES[@]}"; do
  psql -h 127.0.0.1 -U postgres -d "$DB" -qc "SET client_min_messages = warning;
    DROP TABLE IF EXISTS tickets; CREATE TABLE tickets AS SELECT g::bigint AS id, 'ticket ' || g AS title,
      (g % 1000)::numeric(10,2) AS price FROM generate_series(1, $n) g;
    ALTER TABLE tickets ADD PRIMARY KEY (id);"
  psql -h 127.0.0.1 -U postgres -d "$DB" -qc "VACUUM ANALYZE tickets"
  config "postgres://postgres@127.0.0.1:5432/$DB"
  measure postgres "$n"

  rm -f "$DIR/tds.db"
  sqlite3 "$DIR/tds.db" "CREATE TABLE tickets (id BIGINT PRIMARY KEY, title NVARCHAR(200),
    price DECIMAL(10,2)); WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g
    WHERE x < $n) INSERT INTO tickets SELECT x, 'ticket ' || x, x % 1000 FROM g;"
  "$TDS" --listen "127.0.0.1:$TDS_PORT" --database "$DIR/tds.db" >/dev/null 2>&1 &
  TDS_PID=$!
  for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$TDS_PORT") 2>/dev/null && break; sleep 0.1; done
  config "server=tcp:127.0.0.1,$TDS_PORT;user=bench;password=bench;database=bench;encrypt=DANGER_PLAINTEXT"
  measure tds "$n"
  kill "$TDS_PID"
  wait "$TDS_PID" 2>/dev/null || true
  TDS_PID=
done
