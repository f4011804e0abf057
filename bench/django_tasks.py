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
import os
import subprocess
import sys
import time

from benchlib import (ROOT, add_celeriac_arg, c_args, concurrency, done_times, drained, flag, load, now, p50_p99,
                      private_redis, produce, python_worker, round_trip, running, scratch, table, worker_env)

APP = os.path.join(ROOT, "examples", "django-app")
PG = ["psql", "-q", "-h", "127.0.0.1", "-U", "postgres"]


def one_at_a_time(app, task, queue, sends, pause, expected):
    times = []
    for _ in range(sends):
        times.append(round_trip(app, task, (1,), expected, queue=queue)[0])
        time.sleep(pause)
    return p50_p99(times)


def drain(app, r, task, queue, n):
    """The running worker stops consuming, n messages are queued, it consumes again: (tasks/s, seconds)."""
    if not app.control.cancel_consumer(queue, reply=True, timeout=5):
        sys.exit("no reply to cancel_consumer")
    ids = produce(app, n, task=task, args=(1,), queue=queue)
    t0 = time.time()
    if not app.control.add_consumer(queue, reply=True, timeout=5):
        sys.exit("no reply to add_consumer")
    deadline = t0 + 1800
    while not drained(r, ids, queue):
        if time.time() > deadline:
            sys.exit(f"{task}: did not drain {n} tasks (see the log)")
        time.sleep(0.05)
    done = done_times(r, ids, app)
    spread = max(done) - min(done)
    return (n / spread if spread > 0 else float("inf")), max(done) - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20000, help="messages queued in advance per worker")
    ap.add_argument("--sends", type=int, default=200, help="calls one at a time per worker")
    ap.add_argument("--pause", type=float, default=0.1, help="seconds between one-at-a-time calls")
    ap.add_argument("--celeriac-concurrency", type=concurrency, default="default")
    ap.add_argument("--python-concurrency", type=concurrency, default="2")
    add_celeriac_arg(ap, help="a binary taking `celeriac worker`'s flags (the demo worker or `celeriac worker`'s path)")
    args = ap.parse_args()

    db = f"celeriac_bench_django_tasks_{os.getpid()}"
    with scratch() as tmp, private_redis(tmp) as (url, r, _):
        subprocess.run(PG + ["-c", f"CREATE DATABASE {db}", "postgres"], check=True)
        try:
            run(args, db, url, r, tmp)
        finally:
            subprocess.run(PG + ["-c", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)", "postgres"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run(args, db, url, r, tmp):
    dsn = f"postgres://postgres@127.0.0.1:5432/{db}"
    env = worker_env(url, drop=("DJANGO_CACHE_URL", "CELERIAC_CACHE_REDIS_URL"), DATABASE_URL=dsn,
                     CELERIAC_SOURCE_MAIN_URL=dsn, DJANGO_SETTINGS_MODULE="proj.settings", PYTHONPATH=APP)
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
    started, load_start = now(), load()
    cc, pc = args.celeriac_concurrency, args.python_concurrency
    sides = [
        ("tickets.get_ticket", "celeriac", f"celeriac (demo worker, {flag(cc)}), declarative task + its cache",
         [args.celeriac, "-Q", "celeriac", "--config", os.path.join(APP, "celeriac.toml"), "-l", "WARNING"]
         + c_args(cc)),
        ("tickets.get_ticket_py", "celery", f"Python Celery prefork ({flag(pc)}), django-redis + ORM",
         python_worker("prefork", ["-Q", "celery"] + c_args(pc), app="proj")),
    ]
    rows = []
    for task, queue, who, cmd in sides:
        with running(cmd, env, log, cwd=APP):
            round_trip(app, task, (1,), expected, queue=queue, timeout=120)  # ready, cache warm
            p50, p99 = one_at_a_time(app, task, queue, args.sends, args.pause, expected)
            rate, total = drain(app, r, task, queue, args.n)
        rows.append((task, who, rate, total, p50, p99))

    print(f"{started}, {os.cpu_count()} cores, load average at start {load_start}, at end {load()}; "
          f"ticket 1, warm cache; drain: {args.n} messages queued in advance; one at a time: {args.sends} calls, "
          f"{args.pause:g} s pause\n")
    table(["task", "served by", "drain tasks/s", "drain add_consumer -> last result (s)", "one at a time p50 / p99 (ms)"],
          [[f"`{task}`", who, f"{rate:.0f}", f"{total:.2f}", f"{p50:.1f} / {p99:.1f}"]
           for task, who, rate, total, p50, p99 in rows], left=2)
    c, py = rows
    print(f"\nSummary: drain ratio celeriac / Python {c[2] / py[2]:.1f}x (issue 15's goal: >= 20x); "
          f"one at a time p50 {c[4]:.1f} vs {py[4]:.1f} ms, p99 {c[5]:.1f} vs {py[5]:.1f} ms")


if __name__ == "__main__":
    main()
