#!/usr/bin/env bash
# `celeriac warm` throughput and memory: a full pass over N rows (default 100,000 then 1,000,000)
# from a local Postgres and from the TDS test server (SQLite file behind it) into a private Redis
# and into a private local Redis Cluster (3 primaries + 3 replicas, `[cache] cluster = true`).
# Prints, per source, target and size: rows/s (rows / the job's own elapsed time), the wall time of the
# process, its CPU time (user + system) and rows per CPU-second (a figure less sensitive to
# other load on the machine), its peak RSS (/usr/bin/time) and the load average before the run.
#
# Usage: bench/warm.sh [ROWS...]   (e.g. bench/warm.sh 100000 1000000)
# Needs: Postgres on 127.0.0.1:5432 (user postgres, trust), redis-server, redis-cli, sqlite3,
# /usr/bin/time. Builds in release into $CARGO_TARGET_DIR (default: target). BATCH=2000 sets
# batch_size; WARM_EXTRA adds [[warm]] settings (e.g. WARM_EXTRA='rows_per_second = 1e12' turns
# off the overlap of a page's Redis write with the next page's read, for comparison);
# WARM_TARGETS="single cluster" (default), "single" or "cluster".
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(100000 1000000)
BATCH=${BATCH:-2000}
TARGETS=${WARM_TARGETS:-single cluster}
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release -p celeriac-worker --bin celeriac -p tds-test-server --bin tds-test-server >/dev/null
CELERIAC=$TARGET/release/celeriac
TDS=$TARGET/release/tds-test-server

DB=celeriac_bench_warm_$$
DIR=$(mktemp -d)
REDIS_PORT=$((20000 + RANDOM % 10000))
TDS_PORT=$((15000 + RANDOM % 5000)) # below the ephemeral port range
CLUSTER_PORTS=()
TDS_PID=
redis-server --port "$REDIS_PORT" --save "" --appendonly no --daemonize yes \
  --pidfile "$DIR/redis.pid" >/dev/null
cleanup() {
  [ -n "$TDS_PID" ] && kill "$TDS_PID" 2>/dev/null || true
  for pid in "$DIR"/*.pid; do [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null; done || true
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $DB"

# A private Redis Cluster: 6 nodes on ports base..base+5, cluster bus on base+6..base+11 (below
# the ephemeral port range), 1 replica per primary. Tries another base if a port is taken.
start_cluster() {
  local base p i up
  for _ in 1 2 3 4 5; do
    base=$((10000 + RANDOM % 4000))
    CLUSTER_PORTS=()
    up=1
    for i in 0 1 2 3 4 5; do
      p=$((base + i))
      mkdir -p "$DIR/node$p"
      redis-server --port "$p" --cluster-enabled yes --cluster-port $((p + 6)) \
        --cluster-config-file nodes.conf --cluster-node-timeout 5000 --dir "$DIR/node$p" \
        --save "" --appendonly no --daemonize yes --pidfile "$DIR/node$p.pid" >/dev/null
      CLUSTER_PORTS+=("$p")
    done
    for p in "${CLUSTER_PORTS[@]}"; do
      for _ in $(seq 50); do redis-cli -p "$p" PING >/dev/null 2>&1 && break; sleep 0.1; done
      redis-cli -p "$p" PING >/dev/null 2>&1 || up=0
    done
    [ "$up" = 1 ] && break
    for p in "${CLUSTER_PORTS[@]}"; do
      [ -f "$DIR/node$p.pid" ] && kill "$(cat "$DIR/node$p.pid")" 2>/dev/null
      rm -rf "$DIR/node$p" "$DIR/node$p.pid"
    done
  done
  [ "$up" = 1 ] || { echo "could not start the cluster's nodes" >&2; exit 1; }
  redis-cli --cluster create $(printf '127.0.0.1:%s ' "${CLUSTER_PORTS[@]}") \
    --cluster-replicas 1 --cluster-yes >/dev/null
  for p in "${CLUSTER_PORTS[@]}"; do
    for _ in $(seq 300); do
      redis-cli -p "$p" CLUSTER INFO | grep -q 'cluster_state:ok' && break
      sleep 0.1
    done
  done
}

primaries() {
  for p in "${CLUSTER_PORTS[@]}"; do
    [ "$(redis-cli -p "$p" ROLE | head -n1)" = master ] && echo "$p"
  done
}

flush() { # target
  if [ "$1" = cluster ]; then
    for p in $(primaries); do redis-cli -p "$p" FLUSHALL >/dev/null; done
  else
    redis-cli -p "$REDIS_PORT" FLUSHALL >/dev/null # the private Redis only
  fi
}

dbsize() { # target
  if [ "$1" = cluster ]; then
    local n=0
    for p in $(primaries); do n=$((n + $(redis-cli -p "$p" DBSIZE))); done
    echo "$n"
  else
    redis-cli -p "$REDIS_PORT" DBSIZE
  fi
}

config() { # url target
  local cache=""
  [ "$2" = cluster ] && cache="[cache]
cluster = true
redis_url = \"redis://127.0.0.1:${CLUSTER_PORTS[0]}\""
  cat > "$DIR/warm.toml" <<TOML
broker_url = "redis://127.0.0.1:$REDIS_PORT/0"
$cache
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

measure() { # source target rows
  flush "$2"
  local load
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  if ! /usr/bin/time -v "$CELERIAC" warm --config "$DIR/warm.toml" >"$DIR/out.txt" 2>"$DIR/time.txt"; then
    echo "$1 $2 $3: celeriac warm failed:" >&2
    tail -n 5 "$DIR/out.txt" "$DIR/time.txt" >&2
    return 1
  fi
  local summary secs rss wall keys cpu
  summary=$(grep 'rows read' "$DIR/out.txt")
  secs=$(sed -E 's/.*, ([0-9.]+)s$/\1/' <<<"$summary")
  rss=$(awk -F': ' '/Maximum resident/ {printf "%.1f", $2/1024}' "$DIR/time.txt")
  wall=$(awk -F': ' '/Elapsed \(wall/ {print $2}' "$DIR/time.txt")
  cpu=$(awk -F': ' '/User time|System time/ {t += $2} END {printf "%.1f", t}' "$DIR/time.txt")
  keys=$(dbsize "$2")
  printf '%-9s %-8s %9d rows  %7.1f s  %8.0f rows/s  wall %s  CPU %5s s (%6.0f rows/CPU-s)  peak RSS %6s MiB  keys %s  load %s\n' \
    "$1" "$2" "$3" "$secs" "$(echo "$3 / $secs" | bc -l)" "$wall" "$cpu" "$(echo "$3 / $cpu" | bc -l)" "$rss" "$keys" "$load"
}

case " $TARGETS " in *" cluster "*) start_cluster ;; esac

for n in "${SIZES[@]}"; do
  psql -h 127.0.0.1 -U postgres -d "$DB" -qc "SET client_min_messages = warning;
    DROP TABLE IF EXISTS tickets; CREATE TABLE tickets AS SELECT g::bigint AS id, 'ticket ' || g AS title,
      (g % 1000)::numeric(10,2) AS price FROM generate_series(1, $n) g;
    ALTER TABLE tickets ADD PRIMARY KEY (id);"
  psql -h 127.0.0.1 -U postgres -d "$DB" -qc "VACUUM ANALYZE tickets"
  for target in $TARGETS; do
    config "postgres://postgres@127.0.0.1:5432/$DB" "$target"
    measure postgres "$target" "$n"
  done

  rm -f "$DIR/tds.db"
  sqlite3 "$DIR/tds.db" "CREATE TABLE tickets (id BIGINT PRIMARY KEY, title NVARCHAR(200),
    price DECIMAL(10,2)); WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g
    WHERE x < $n) INSERT INTO tickets SELECT x, 'ticket ' || x, x % 1000 FROM g;"
  "$TDS" --listen "127.0.0.1:$TDS_PORT" --database "$DIR/tds.db" >/dev/null 2>&1 &
  TDS_PID=$!
  for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$TDS_PORT") 2>/dev/null && break; sleep 0.1; done
  for target in $TARGETS; do
    config "server=tcp:127.0.0.1,$TDS_PORT;user=bench;password=bench;database=bench;encrypt=DANGER_PLAINTEXT" "$target"
    measure tds "$target" "$n"
  done
  kill "$TDS_PID"
  wait "$TDS_PID" 2>/dev/null || true
  TDS_PID=
done
