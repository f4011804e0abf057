"""Mixed fleet: does a celeriac worker beside a Python Celery worker, both consuming the same queue,
make the Python worker's round trip worse?

Usage: bench/mixed [-n SAMPLES] [--pause SECS]   (defaults 200, 0.25; small check:
`.venv-test/bin/python bench/mixed.py -n 20 --celeriac target/debug/examples/demo`)

On one private Redis, one Python Celery prefork -c 2 worker (`-n py@%h`) runs throughout. `demo.add`
is sent one at a time with a pause between sends, time from `send_task()` to `AsyncResult.get()`
returning, in three phases of the same run: the Python worker alone; with the demo worker at its
defaults consuming the same queue beside it (each round trip counted for the worker that ran it,
read from the result's `worker` field, `result_extended` on both sides; sends go on until the
Python worker has run SAMPLES of them); alone again after the demo worker stopped. Prints p50 / p99
per phase and worker as a Markdown table, and the load average at start and end.
Figures, not a test: run it on an idle machine.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import redis

from drain import free_port
from latency import percentile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def load():
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def send_one(app, r, i):
    """One round trip: (milliseconds, name of the worker that ran it)."""
    t0 = time.perf_counter()
    res = app.send_task("demo.add", args=(i, 1))
    got = res.get(timeout=30)
    ms = (time.perf_counter() - t0) * 1000
    if got != i + 1:
        sys.exit(f"demo.add({i}, 1) returned {got!r}")
    worker = json.loads(r.get(f"celery-task-meta-{res.id}")).get("worker") or "?"
    return ms, worker


def phase(app, r, n, pause, cap):
    """Sends until the Python worker has run n tasks (at most cap sends): {worker kind: [ms]}."""
    times = {"python": [], "celeriac": []}
    for i in range(cap):
        ms, worker = send_one(app, r, i)
        times["python" if worker.startswith("py@") else "celeriac"].append(ms)
        if len(times["python"]) >= n:
            break
        time.sleep(pause)
    return times


def cell(xs):
    return f"{statistics.median(xs):.1f} / {percentile(xs, 99):.1f}" if xs else "—"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=200, help="round trips run by the Python worker per phase")
    ap.add_argument("--pause", type=float, default=0.25, help="seconds between sends")
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    ap.add_argument("--celeriac", default=os.path.join(target, "release/examples/demo"))
    args = ap.parse_args()
    args.celeriac = os.path.abspath(args.celeriac)

    tmp = tempfile.mkdtemp()
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
    workers = []
    try:
        url = f"redis://127.0.0.1:{port}/0"
        r = redis.Redis.from_url(url)
        for _ in range(100):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        env = dict(os.environ, CELERY_BROKER_URL=url, CELERY_RESULT_BACKEND=url, CELERIAC_LOG_FORMAT="json",
                   CELERY_WORKER_LOGLEVEL="WARNING", CELERY_RESULT_EXTENDED="true")
        for k in ("CELERY_WORKER_CONCURRENCY", "CELERIAC_ASYNC_CONCURRENCY"):
            env.pop(k, None)
        os.environ.update(env)
        sys.path.insert(0, HERE)
        from bench_app import app
        log = open(os.path.join(tmp, "workers.log"), "w")
        started, load_start = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()), load()

        py = subprocess.Popen([sys.executable, "-m", "celery", "-A", "bench_app", "worker", "-P", "prefork", "-c", "2",
                               "-n", "py@%h", "-l", "WARNING", "--without-mingle", "--without-gossip"],
                              env=env, stdout=log, stderr=log, cwd=HERE)
        workers.append(py)
        app.send_task("demo.add", args=(0, 0)).get(timeout=120)  # ready
        rows = [("Python alone", phase(app, r, args.n, args.pause, args.n))]

        rust = subprocess.Popen([args.celeriac, "-n", "celeriac@%h"], env=env, stdout=log, stderr=log, cwd=HERE)
        workers.append(rust)
        deadline = time.time() + 120
        while not any(k.startswith("celeriac@") for reply in app.control.ping(timeout=0.5) for k in reply):
            if time.time() > deadline:
                sys.exit("the demo worker did not answer a ping in 120 s")
        time.sleep(2)
        rows.append(("Python with celeriac beside it", phase(app, r, args.n, args.pause, 20 * args.n)))
        rust.terminate()
        rust.wait(timeout=60)
        rows.append(("Python alone again", phase(app, r, args.n, args.pause, args.n)))

        print(f"{started}, {os.cpu_count()} cores, load average at start {load_start}, at end {load()}; "
              f"`demo.add` one at a time, {args.pause:g} s pause; Python Celery prefork -c 2 throughout, "
              f"the demo worker (defaults) on the same queue in the middle phase\n")
        print("| phase | sends | run by Python | Python p50 / p99 (ms) | run by celeriac | celeriac p50 / p99 (ms) |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, t in rows:
            p, c = t["python"], t["celeriac"]
            print(f"| {name} | {len(p) + len(c)} | {len(p)} | {cell(p)} | {len(c)} | {cell(c)} |")
    finally:
        for w in workers:
            w.terminate()
            w.wait(timeout=60)
        server.terminate()
        server.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
