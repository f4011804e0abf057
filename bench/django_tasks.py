"""The Django example's cached read without the view in the way: `tickets.get_ticket` served by
celeriac's declarative query task (its cache) vs `tickets.get_ticket_py` served by a Python Celery
prefork worker reading through Django's cache framework (django-redis) in front of the ORM.

Usage: bench/django-tasks [-n N] [--sends R] [--pause SECS] [--celeriac-concurrency C|default]
  [--python-concurrency C|default]   (defaults 20000, 200, 0.1, default, 2; small check:
  `.venv-test/bin/python bench/django_tasks.py -n 200 --sends 20 --celeriac target/debug/examples/demo`)

Same run, same private Redis (broker, results and both caches), same PostgreSQL database (created
for the run from examples/django-app's migrations and seed_tickets, dropped after), ticket 1 every
time. Per worker, one after the other: the worker starts, one call warms its cache, R calls one at
a time (`send_task()` -> `AsyncResult.get()`, a pause between sends: p50 / p99); then the same
worker, its cache still warm, stops consuming its queue (`cancel_consumer`), N messages are queued
in advance by one producer (so the producer is not the bottleneck), and it consumes again
(`add_consumer`): tasks/s = N / the results' `date_done` spread, and `add_consumer` -> last
result. The demo worker serves `tickets.get_ticket` with
examples/django-app/celeriac.toml on the `celeriac` queue, the Python worker `-A proj` on
`celery`, as the example routes them. Needs PostgreSQL on 127.0.0.1:5432 (user postgres, as
scripts/test sets up). Prints a Markdown table, the ratio, and the load average at start and end.
Figures, not a test: run it on an idle machine.
"""
import argparse
import datetime
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import redis

from drain import c_args, concurrency, flag, free_port
from latency import percentile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
APP = os.path.join(ROOT, "examples", "django-app")
PG = ["psql", "-q", "-h", "127.0.0.1", "-U", "postgres"]


def load():
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def one_at_a_time(app, task, queue, sends, pause, expected):
    times = []
    for _ in range(sends):
        t0 = time.perf_counter()
        got = app.send_task(task, args=(1,), queue=queue).get(timeout=30)
        times.append((time.perf_counter() - t0) * 1000)
        if got != expected:
            sys.exit(f"{task}(1) returned {got!r}, expected {expected!r}")
        time.sleep(pause)
    return statistics.median(times), percentile(times, 99)


def drain(app, r, task, queue, n):
    """The running worker stops consuming, n messages are queued, it consumes again: (tasks/s, seconds)."""
    if not app.control.cancel_consumer(queue, reply=True, timeout=5):
        sys.exit("no reply to cancel_consumer")
    with app.producer_or_acquire() as producer:
        ids = [app.send_task(task, args=(1,), queue=queue, producer=producer).id for _ in range(n)]
    keys = [f"celery-task-meta-{i}" for i in ids]
    t0 = time.time()
    if not app.control.add_consumer(queue, reply=True, timeout=5):
        sys.exit("no reply to add_consumer")
    deadline = t0 + 1800
    while r.llen(queue) or r.hlen("unacked") or any(
            v is None for i in range(0, n, 1000) for v in r.mget(keys[i:i + 1000])):
        if time.time() > deadline:
            sys.exit(f"{task}: did not drain {n} tasks (see the log)")
        time.sleep(0.05)
    done = [datetime.datetime.fromisoformat(app.backend.decode(v)["date_done"]).timestamp()
            for i in range(0, n, 1000) for v in r.mget(keys[i:i + 1000])]
    spread = max(done) - min(done)
    return (n / spread if spread > 0 else float("inf")), max(done) - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20000, help="messages queued in advance per worker")
    ap.add_argument("--sends", type=int, default=200, help="calls one at a time per worker")
    ap.add_argument("--pause", type=float, default=0.1, help="seconds between one-at-a-time calls")
    ap.add_argument("--celeriac-concurrency", type=concurrency, default="default")
    ap.add_argument("--python-concurrency", type=concurrency, default="2")
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    ap.add_argument("--celeriac", default=os.path.join(target, "release/examples/demo"),
                    help="a binary taking `celeriac worker`'s flags (the demo worker or `celeriac worker`'s path)")
    args = ap.parse_args()
    args.celeriac = os.path.abspath(args.celeriac)

    tmp = tempfile.mkdtemp()
    port = free_port()
    db = f"celeriac_bench_django_tasks_{os.getpid()}"
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
    subprocess.run(PG + ["-c", f"CREATE DATABASE {db}", "postgres"], check=True)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        r = redis.Redis.from_url(url)
        for _ in range(100):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        dsn = f"postgres://postgres@127.0.0.1:5432/{db}"
        env = dict(os.environ, CELERY_BROKER_URL=url, CELERY_RESULT_BACKEND=url, DATABASE_URL=dsn,
                   CELERIAC_SOURCE_MAIN_URL=dsn, DJANGO_SETTINGS_MODULE="proj.settings", PYTHONPATH=APP,
                   CELERIAC_LOG_FORMAT="json")
        for k in ("CELERY_WORKER_CONCURRENCY", "CELERIAC_ASYNC_CONCURRENCY", "DJANGO_CACHE_URL",
                  "CELERIAC_CACHE_REDIS_URL"):
            env.pop(k, None)
        os.environ.update(env)
        manage = [sys.executable, os.path.join(APP, "manage.py")]
        subprocess.run(manage + ["migrate", "-v", "0", "--noinput"], check=True, cwd=APP)
        subprocess.run(manage + ["seed_tickets"], check=True, cwd=APP, stdout=subprocess.DEVNULL)
        sys.path.insert(0, APP)
        import django
        django.setup()
        from proj.celery import app
        from tickets.models import Ticket
        expected = Ticket.objects.get(pk=1).as_dict()
        log = open(os.path.join(tmp, "workers.log"), "w")
        started, load_start = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()), load()
        cc, pc = args.celeriac_concurrency, args.python_concurrency
        sides = [
            ("tickets.get_ticket", "celeriac", f"celeriac (demo worker, {flag(cc)}), declarative task + its cache",
             [args.celeriac, "-Q", "celeriac", "--config", os.path.join(APP, "celeriac.toml"), "-l", "WARNING"]
             + c_args(cc)),
            ("tickets.get_ticket_py", "celery", f"Python Celery prefork ({flag(pc)}), django-redis + ORM",
             [sys.executable, "-m", "celery", "-A", "proj", "worker", "-Q", "celery", "-P", "prefork"] + c_args(pc)
             + ["-l", "WARNING", "--without-mingle", "--without-gossip"]),
        ]
        rows = []
        for task, queue, who, cmd in sides:
            p = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, cwd=APP)
            try:
                got = app.send_task(task, args=(1,), queue=queue).get(timeout=120)  # ready, cache warm
                if got != expected:
                    sys.exit(f"{task}(1) returned {got!r}, expected {expected!r}")
                p50, p99 = one_at_a_time(app, task, queue, args.sends, args.pause, expected)
                rate, total = drain(app, r, task, queue, args.n)
            finally:
                p.terminate()
                p.wait(timeout=60)
            rows.append((task, who, rate, total, p50, p99))

        print(f"{started}, {os.cpu_count()} cores, load average at start {load_start}, at end {load()}; "
              f"ticket 1, warm cache; drain: {args.n} messages queued in advance; one at a time: {args.sends} calls, "
              f"{args.pause:g} s pause\n")
        print("| task | served by | drain tasks/s | drain add_consumer -> last result (s) | one at a time p50 / p99 (ms) |")
        print("|---|---|---:|---:|---:|")
        for task, who, rate, total, p50, p99 in rows:
            print(f"| `{task}` | {who} | {rate:.0f} | {total:.2f} | {p50:.1f} / {p99:.1f} |")
        c, py = rows
        print(f"\nSummary: drain ratio celeriac / Python {c[2] / py[2]:.1f}x (issue 15's goal: >= 20x); "
              f"one at a time p50 {c[4]:.1f} vs {py[4]:.1f} ms, p99 {c[5]:.1f} vs {py[5]:.1f} ms")
    finally:
        server.terminate()
        server.wait()
        subprocess.run(PG + ["-c", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)", "postgres"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
