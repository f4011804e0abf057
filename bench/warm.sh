#!/usr/bin/env bash
# Warm N rows (default 1,000,000) from a local Postgres into a private Redis; prints rows/s and
# peak RSS. Usage: bench/warm.sh [ROWS]. Needs postgres on 127.0.0.1:5432 and redis-server.
set -euo pipefail
ROWS=${1:-1000000}
cd "$(dirname "$0")/.."
cargo build --release -p celeriac-worker --bin celeriac >/dev/null
DB=celeriac_bench_warm_$$
PORT=$((20000 + RANDOM % 20000))
DIR=$(mktemp -d)
redis-server --port "$PORT" --save "" --appendonly no --daemonize yes --pidfile "$DIR/redis.pid" >/dev/null
cleanup() { kill "$(cat "$DIR/redis.pid")" 2>/dev/null || true; psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB" >/dev/null; rm -rf "$DIR"; }
trap cleanup EXIT
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $DB"
psql -h 127.0.0.1 -U postgres -d "$DB" -qc "CREATE TABLE tickets AS SELECT g::bigint AS id, 'ticket ' || g AS title, (g % 1000)::numeric(10,2) AS price FROM generate_series(1, $ROWS) g; ALTER TABLE tickets ADD PRIMARY KEY (id)"
cat > "$DIR/warm.toml" <<TOML
broker_url = "redis://127.0.0.1:$PORT/0"
[sources.main]
url = "postgres://postgres@127.0.0.1:5432/$DB"
[[tasks]]
name = "q.get_ticket"
source = "main"
sql = "SELECT id, title, price FROM tickets WHERE id = :id"
params = ["id"]
key = "ticket:{id}"
ttl = "1h"
[[warm]]
task = "q.get_ticket"
table = "tickets"
key_column = "id"
columns = ["id", "title", "price"]
batch_size = 2000
TOML
/usr/bin/time -v target/release/celeriac warm --config "$DIR/warm.toml" 2>"$DIR/time.txt" | tee "$DIR/out.txt"
grep -E "Maximum resident|Elapsed" "$DIR/time.txt"
