"""I/O-bound drain: N `demo.sleep(MS)` tasks queued before the worker starts, then drained, against
the ideal N x MS / c.

Usage: bench/iobound [-n N] [--ms MS] [--concurrency C,C,...] [--gevent-concurrency C]
  (defaults 10000, 50, 100,1000, 100; small check:
  `.venv-test/bin/python bench/iobound.py -n 200 --concurrency 10,100 --gevent-concurrency 10
  --celeriac target/debug/examples/demo`)

On one private Redis, with results: the demo worker at each `-c` in turn, then a Python Celery
worker with the gevent pool (`-P gevent -c C`; `--gevent-concurrency 0` skips it). The test venv
has no gevent: unless it does, the script makes `.venv-bench-gevent` (gevent 26.9.0 from PyPI, Celery and
the rest from the test venv through a .pth file) and says so. Per worker: start -> last result
(from starting the worker process to the latest result's `date_done`, start-up included), the
ideal N x MS / c, percent of ideal (ideal / start -> last), and first -> last result (the results'
`date_done` spread, start-up left out). Prints a Markdown table and the load average at start and
end. Figures, not a test: run it on an idle machine.
"""
import argparse
import os
import subprocess
import sys
import sysconfig
import time

from benchlib import (ROOT, add_celeriac_arg, bench_app, done_times, drained, load, now, private_redis, produce,
                      python_worker, running, scratch, table, worker_env)

GEVENT_VENV = os.path.join(ROOT, ".venv-bench-gevent")


def gevent_python():
    """A Python with gevent and the test venv's Celery: the test venv's own, or .venv-bench-gevent."""
    try:
        import gevent  # noqa: F401
        return sys.executable, "test venv"
    except ImportError:
        pass
    py = os.path.join(GEVENT_VENV, "bin", "python")
    if not os.path.exists(py):
        print(f"(no gevent in the test venv: making {GEVENT_VENV} with gevent from PyPI)", file=sys.stderr)
        subprocess.run([sys._base_executable, "-m", "venv", GEVENT_VENV], check=True)
        subprocess.run([py, "-m", "pip", "install", "-q", "gevent==26.9.0"], check=True)
        site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              check=True, capture_output=True, text=True).stdout.strip()
        with open(os.path.join(site, "celeriac-test-venv.pth"), "w") as f:
            f.write(sysconfig.get_paths()["purelib"] + "\n")
    return py, os.path.basename(GEVENT_VENV)


def run_one(name, cmd, c, env, r, app, args, log):
    r.flushdb()
    ids = produce(app, args.n, task="demo.sleep", args=(args.ms,))
    t0 = time.time()
    with running(cmd, env, log) as p:
        deadline = t0 + 1800
        while not drained(r, ids):
            if time.time() > deadline or p.poll() is not None:
                sys.exit(f"{name}: did not drain {args.n} tasks (see the log)")
            time.sleep(0.05)
    done = done_times(r, ids, app)
    ideal = args.n * args.ms / 1000 / c
    total = max(done) - t0
    return [name, f"{total:.2f}", f"{ideal:.2f}", f"{100 * ideal / total:.0f} %", f"{max(done) - min(done):.2f}"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=10000)
    ap.add_argument("--ms", type=int, default=50, help="each task's sleep")
    ap.add_argument("--concurrency", default="100,1000", help="the demo worker's -c values, comma-separated")
    ap.add_argument("--gevent-concurrency", type=int, default=100, help="Python's gevent pool -c; 0 skips it")
    add_celeriac_arg(ap)
    args = ap.parse_args()

    with scratch() as tmp, private_redis(tmp) as (url, r, _):
        env = worker_env(url)
        app = bench_app()
        log = open(os.path.join(tmp, "workers.log"), "w")
        started, load_start = now(), load()
        rows = []
        for c in (int(x) for x in args.concurrency.split(",")):
            rows.append(run_one(f"celeriac (demo worker, -c {c})", [args.celeriac, "-c", str(c)], c, env, r, app,
                                args, log))
        note = "Python gevent row skipped (--gevent-concurrency 0)"
        if args.gevent_concurrency:
            py, where = gevent_python()
            version = subprocess.run([py, "-c", "import celery, gevent; print(celery.__version__, gevent.__version__)"],
                                     check=True, capture_output=True, text=True).stdout.split()
            c = args.gevent_concurrency
            rows.append(run_one(f"Python Celery {version[0]} gevent pool (-P gevent -c {c})",
                                [py] + python_worker("gevent", ["-c", str(c)])[1:], c, env, r, app, args, log))
            note = f"gevent {version[1]} from {where}"
        print(f"{started}, {os.cpu_count()} cores, load average at start {load_start}, at end {load()}; "
              f"{args.n} x `demo.sleep({args.ms})` queued before each worker starts, with results; {note}\n")
        table(["worker", "start -> last result (s)", "ideal N x ms / c (s)", "% of ideal", "first -> last result (s)"],
              rows)


if __name__ == "__main__":
    main()
