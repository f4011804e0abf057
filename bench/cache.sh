#!/usr/bin/env bash
# Cache benchmarks (figures, not tests): read-path latency (L1 hit, L2 hit, miss → SQLite) and a
# 1000-reader stampede over 4 processes (one PostgreSQL database created and dropped), each on a
# private single Redis and then on a private local Redis Cluster (3 primaries + 3 replicas, the
# cache in cluster mode). Prints Markdown. Needs redis-server and redis-cli on PATH and
# PostgreSQL at $CACHE_BENCH_PG (default postgres://postgres@127.0.0.1:5432/postgres).
# Usage: bench/cache.sh [STAMPEDE_ROUNDS]   (CACHE_BENCH_N = reads per read-path row, default
# 10000; CACHE_BENCH_TARGETS = "single cluster" (default), "single" or "cluster")
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
targets=${CACHE_BENCH_TARGETS:-single cluster}
cargo bench -q -p celeriac-cache --bench read_path --no-run
cargo build -q --release -p celeriac-cache --example stampede

echo "### Cache"
echo
echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), commit $(git rev-parse --short HEAD)"
for target in $targets; do
  case $target in
    single) title="one Redis"; cluster=0 ;;
    cluster) title="Redis Cluster, 3 primaries + 3 replicas"; cluster=1 ;;
    *) echo "unknown target $target (single, cluster)" >&2; exit 2 ;;
  esac
  echo
  echo "#### Read path on $title (one caller, sequential reads, default CacheConfig)"
  echo
  CACHE_BENCH_CLUSTER=$cluster cargo bench -q -p celeriac-cache --bench read_path
  echo
  echo "#### Stampede on $title: 1000 concurrent reads of one cold key, 4 processes × 250 tasks"
  echo
  CACHE_BENCH_CLUSTER=$cluster "${CARGO_TARGET_DIR:-target}/release/examples/stampede" "$rounds"
done
