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
import statistics
import sys
import time

from benchlib import (add_celeriac_arg, bench_app, load, now, percentile, private_redis, python_worker, round_trip,
                      scratch, start, stop, table, worker_env)


def send_one(app, r, i):
    """One round trip: (milliseconds, name of the worker that ran it)."""
    ms, res = round_trip(app, "demo.add", (i, 1), i + 1)
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
    add_celeriac_arg(ap)
    args = ap.parse_args()

    workers = []
    with scratch() as tmp, private_redis(tmp) as (url, r, _):
        try:
            env = worker_env(url, CELERY_RESULT_EXTENDED="true")
            app = bench_app()
            log = open(os.path.join(tmp, "workers.log"), "w")
            started, load_start = now(), load()

            workers.append(start(python_worker("prefork", ["-c", "2", "-n", "py@%h"]), env, log))
            app.send_task("demo.add", args=(0, 0)).get(timeout=120)  # ready
            rows = [("Python alone", phase(app, r, args.n, args.pause, args.n))]

            rust = start([args.celeriac, "-n", "celeriac@%h"], env, log)
            workers.append(rust)
            deadline = time.time() + 120
            while not any(k.startswith("celeriac@") for reply in app.control.ping(timeout=0.5) for k in reply):
                if time.time() > deadline:
                    sys.exit("the demo worker did not answer a ping in 120 s")
            time.sleep(2)
            rows.append(("Python with celeriac beside it", phase(app, r, args.n, args.pause, 20 * args.n)))
            stop(rust)
            rows.append(("Python alone again", phase(app, r, args.n, args.pause, args.n)))

            print(f"{started}, {os.cpu_count()} cores, load average at start {load_start}, at end {load()}; "
                  f"`demo.add` one at a time, {args.pause:g} s pause; Python Celery prefork -c 2 throughout, "
                  f"the demo worker (defaults) on the same queue in the middle phase\n")
            table(["phase", "sends", "run by Python", "Python p50 / p99 (ms)", "run by celeriac",
                   "celeriac p50 / p99 (ms)"],
                  [[name, str(len(t["python"]) + len(t["celeriac"])), str(len(t["python"])), cell(t["python"]),
                    str(len(t["celeriac"])), cell(t["celeriac"])] for name, t in rows])
        finally:
            for w in workers:
                stop(w)


if __name__ == "__main__":
    main()
