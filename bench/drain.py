"""Drain benchmark: N `demo.add` tasks produced by real Celery, with results, drained by celeriac
and by a Python Celery prefork worker (-c 2) on the same private Redis, one after the other.

Figures per worker: tasks/s (N / spread of the results' date_done, so start-up time does not
count), peak RSS (VmHWM; for prefork the sum over the parent and its children), idle RSS (VmRSS
two seconds after start on an empty queue) and Redis commands per task (INFO commandstats delta
over the drain, divided by N). Prints a Markdown table and a one-line summary with the ratio.
Defaults: N = 50 000, celeriac -c 512 (`--celeriac-concurrency`); Python is prefork -c 2
(`--python-concurrency`). Either option takes `default`: the worker is started without `-c`
(celeriac: 512 async slots and one thread/process slot per CPU; Celery: prefork, one process
per CPU), for the defaults-vs-defaults figure (`bench/run --celeriac-concurrency default
--python-concurrency default`).
`--signed`: every side signs and checks (Celery's `auth` serializer for tasks and results, with
the key, certificate and store of proto-fixtures/fixtures/signed).

Small check: `.venv-test/bin/python bench/drain.py -n 200 --celeriac target/debug/examples/demo`
"""
import argparse
import os
import sys
import time

from benchlib import (ROOT, add_celeriac_arg, bench_app, c_args, command_calls, concurrency, drained, flag, load, now,
                      private_redis, produce, python_worker, running, scratch, spread, table, tree_kb, worker_env)


def run_one(name, cmd, env, r, app, n, log):
    r.flushdb()
    with running(cmd, env, log) as p:
        time.sleep(2.0)
        idle = tree_kb(p.pid, "VmRSS")
    r.flushdb()
    ids = produce(app, n)
    r.config_resetstat()
    before = command_calls(r)
    with running(cmd, env, log) as p:
        peak = 0
        deadline = time.time() + 600
        done = False
        while time.time() < deadline:
            peak = max(peak, tree_kb(p.pid, "VmHWM"))
            if wait_done(r, ids, 0.5):
                done = True
                break
        peak = max(peak, tree_kb(p.pid, "VmHWM"))
        calls = command_calls(r) - before
    if not done:
        sys.exit(f"{name}: did not drain {n} tasks")
    secs = spread(r, ids, app)
    return {"name": name, "tasks_per_s": n / secs if secs > 0 else float("inf"), "seconds": secs,
            "peak_rss_mb": peak / 1024, "idle_rss_mb": idle / 1024, "cmds_per_task": calls / n}


def wait_done(r, ids, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if drained(r, ids):
            return True
        time.sleep(0.1)
    return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=50000)
    add_celeriac_arg(ap)
    ap.add_argument("--celeriac-concurrency", type=concurrency, default="512",
                    help="celeriac's -c, or `default` to start it without -c")
    ap.add_argument("--python-concurrency", type=concurrency, default="2",
                    help="the Python prefork worker's -c, or `default` to start it without -c (one per CPU)")
    ap.add_argument("--signed", action="store_true",
                    help="sign and check tasks and results (Celery's auth serializer) on every side")
    args = ap.parse_args()

    with scratch() as tmp, private_redis(tmp) as (url, r, _):
        extra = {}
        if args.signed:
            keys = os.path.join(ROOT, "proto-fixtures", "fixtures", "signed")
            extra = dict(CELERY_TASK_SERIALIZER="auth", CELERY_RESULT_SERIALIZER="auth", CELERY_ACCEPT_CONTENT="auth",
                         CELERY_SECURITY_KEY=os.path.join(keys, "key.pem"),
                         CELERY_SECURITY_CERTIFICATE=os.path.join(keys, "cert.pem"),
                         CELERY_SECURITY_CERT_STORE=os.path.join(keys, "store", "*.pem"))
        env = worker_env(url, **extra)
        app = bench_app()
        import celery
        log = open(os.path.join(tmp, "workers.log"), "w")
        started, load_start = now(), load()
        cc, pc = args.celeriac_concurrency, args.python_concurrency
        rows = [
            run_one(f"celeriac (demo worker, {flag(cc)})", [args.celeriac] + c_args(cc), env, r, app, args.n, log),
            run_one(f"Python Celery {celery.__version__} prefork ({flag(pc)})", python_worker("prefork", c_args(pc)),
                    env, r, app, args.n, log),
        ]
        signed = ", signed (auth) tasks and results" if args.signed else ""
        print(f"{started}, N = {args.n} `demo.add` tasks with results{signed}, "
              f"private Redis, {os.cpu_count()} cores, load average at start {load_start}, at end {load()}\n")
        table(["worker", "tasks/s", "drain (s)", "peak RSS (MB)", "idle RSS (MB)", "Redis cmds/task"],
              [[row["name"], f"{row['tasks_per_s']:.0f}", f"{row['seconds']:.2f}", f"{row['peak_rss_mb']:.1f}",
                f"{row['idle_rss_mb']:.1f}", f"{row['cmds_per_task']:.1f}"] for row in rows])
        c, py = rows
        print(f"\nSummary: celeriac {c['tasks_per_s']:.0f} tasks/s, Python prefork {py['tasks_per_s']:.0f} tasks/s, "
              f"ratio {c['tasks_per_s'] / py['tasks_per_s']:.1f}x (issue 15: >= 50x at celeriac's best -c against "
              f"prefork -c 2, >= 20x defaults against defaults); peak / idle RSS celeriac {c['peak_rss_mb']:.1f} / "
              f"{c['idle_rss_mb']:.1f} MB, Python {py['peak_rss_mb']:.1f} / {py['idle_rss_mb']:.1f} MB; Redis commands/task "
              f"celeriac {c['cmds_per_task']:.1f}, Python {py['cmds_per_task']:.1f}; load average {load()}")


if __name__ == "__main__":
    main()
