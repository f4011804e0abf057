#!/usr/bin/env bash
# The Django example's cached-read view under load (a figure, not a test):
#   /tickets/1/     -> tickets.get_ticket served by celeriac (declarative query task, its cache)
#   /tickets-py/1/  -> tickets.get_ticket_py served by a Python Celery prefork worker reading
#                      through Django's cache framework (django-redis), same database, same Redis
# Same run, one after the other, with wrk (Debian) against Django's dev server (threaded).
# Needs PostgreSQL on 127.0.0.1:5432 (user postgres, as scripts/test sets up).
# Usage: bench/django.sh [seconds] [connections]     Appends nothing: prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
secs=${1:-15}
conns=${2:-16}
source scripts/lib/venv.sh
ensure_system_packages
ensure_venv "$root"
command -v wrk >/dev/null || apt-get install -y -q wrk >/dev/null
# CELERIAC_WORKER="<command>" (taking the worker flags) skips the release build, e.g.
# CELERIAC_WORKER=target/debug/celeriac-test-worker; the command is printed with the results.
read -r -a celeriac <<<"${CELERIAC_WORKER:-}"
if [ ${#celeriac[@]} -eq 0 ]; then
  cargo build --release -q -p celeriac-worker --bin celeriac
  celeriac=("${CARGO_TARGET_DIR:-$root/target}/release/celeriac" worker)
fi
py=$CELERIAC_TEST_PYTHON
app="$root/examples/django-app"
work=$(mktemp -d)
pids=()
db="celeriac_bench_django_$$"
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" postgres >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no >"$work/redis.log" 2>&1 &
pids+=($!)
psql -q -h 127.0.0.1 -U postgres -c "CREATE DATABASE $db" postgres
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db"
export CELERIAC_SOURCE_MAIN_URL=$DATABASE_URL
export CELERY_BROKER_URL="redis://127.0.0.1:$redis_port/0"
export CELERY_RESULT_BACKEND=$CELERY_BROKER_URL
export DJANGO_SETTINGS_MODULE=proj.settings
export PYTHONPATH=$app
until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.1; done
(cd "$app" && "$py" manage.py migrate -v 0 --noinput && "$py" manage.py seed_tickets >/dev/null)

"${celeriac[@]}" -Q celeriac -c 8 --config "$app/celeriac.toml" -l WARNING >"$work/celeriac.log" 2>&1 &
pids+=($!)
"$py" -m celery -A proj worker -Q celery -c 2 -P prefork -l WARNING --without-mingle --without-gossip --without-heartbeat >"$work/python.log" 2>&1 &
pids+=($!)
web_port=$(free_port)
"$py" "$app/manage.py" runserver "127.0.0.1:$web_port" --noreload >"$work/web.log" 2>&1 &
pids+=($!)
until curl -sf "http://127.0.0.1:$web_port/tickets/1/" >/dev/null && curl -sf "http://127.0.0.1:$web_port/tickets-py/1/" >/dev/null; do sleep 0.5; done

run() { # path -> "req/s p99"
  local out
  out=$(wrk -t2 -c"$conns" -d"${secs}s" --latency "http://127.0.0.1:$web_port$1")
  echo "$out" >"$work/wrk$(echo "$1" | tr / _).txt"
  local rps p99 errors
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  errors=$(awk '/Non-2xx/ {print $NF} /Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
  echo "| \`$1\` | $2 | $rps | $p99 | ${errors:-none} |"
}

echo "| view | served by | requests/s | p99 | errors |"
echo "|---|---|---|---|---|"
run /tickets/1/ "celeriac (-c 8), declarative task + its cache"
run /tickets-py/1/ "Python Celery prefork (-c 2), Django cache (django-redis) + ORM"
echo
echo "wrk -t2 -c$conns -d${secs}s; Django runserver (threaded) in front of both; celeriac: ${celeriac[*]}; $(nproc) cores; $(date -u +%Y-%m-%d)"

# Task throughput without Django's view in the way: one producer sends TASKS calls of each task
# (warm cache: ticket 1 was read above) and waits until every result is in the backend.
tasks=${TASKS:-2000}
echo
echo "| task | served by | tasks | seconds (send → last result) | tasks/s |"
echo "|---|---|---:|---:|---:|"
(cd "$app" && "$py" - "$tasks" <<'PY'
import sys, time
import django
django.setup()
import redis
from proj.celery import app

n = int(sys.argv[1])
backend = redis.Redis.from_url(app.conf.result_backend)
rows = [
    ("tickets.get_ticket", "celeriac", "celeriac (-c 8), declarative task + its cache"),
    ("tickets.get_ticket_py", "celery", "Python Celery prefork (-c 2), Django cache + ORM"),
]
for name, queue, who in rows:
    started = time.perf_counter()
    ids = [app.send_task(name, args=(1,), queue=queue).id for _ in range(n)]
    keys = [f"celery-task-meta-{i}" for i in ids]
    while backend.exists(*keys) < n:
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    print(f"| `{name}` | {who} | {n} | {elapsed:.2f} | {n / elapsed:.0f} |")
PY
)
