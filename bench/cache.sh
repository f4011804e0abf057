#!/usr/bin/env bash
# Cache benchmarks (figures, not tests): read-path latency (L1 hit, L2 hit, miss → SQLite) and a
# 1000-reader stampede over 4 processes (one private Redis, one PostgreSQL database created and
# dropped). Prints Markdown. Needs redis-server on PATH and PostgreSQL at $CACHE_BENCH_PG
# (default postgres://postgres@127.0.0.1:5432/postgres).
# Usage: bench/cache.sh [STAMPEDE_ROUNDS]   (CACHE_BENCH_N = reads per read-path row, default 10000)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
cargo bench -q -p celeriac-cache --bench read_path --no-run
cargo build -q --release -p celeriac-cache --example stampede

echo "### Cache"
echo
echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), commit $(git rev-parse --short HEAD)"
echo
echo "#### Read path (one caller, sequential reads, default CacheConfig)"
echo
cargo bench -q -p celeriac-cache --bench read_path
echo
echo "#### Stampede: 1000 concurrent reads of one cold key, 4 processes × 250 tasks"
echo
"${CARGO_TARGET_DIR:-target}/release/examples/stampede" "$rounds"
