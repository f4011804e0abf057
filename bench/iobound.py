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
import datetime
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time

import redis

from drain import free_port

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
GEVENT_VENV = os.path.join(ROOT, ".venv-bench-gevent")


def load():
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


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


def drained(r, ids):
    if r.llen("celery") or r.hlen("unacked"):
        return False
    keys = [f"celery-task-meta-{i}" for i in ids]
    return all(v is not None for i in range(0, len(keys), 1000) for v in r.mget(keys[i:i + 1000]))


def run_one(name, cmd, c, env, r, app, args, log):
    r.flushdb()
    with app.producer_or_acquire() as producer:
        ids = [app.send_task("demo.sleep", args=(args.ms,), producer=producer).id for _ in range(args.n)]
    t0 = time.time()
    p = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, cwd=HERE)
    try:
        deadline = t0 + 1800
        while not drained(r, ids):
            if time.time() > deadline or p.poll() is not None:
                sys.exit(f"{name}: did not drain {args.n} tasks (see the log)")
            time.sleep(0.05)
    finally:
        p.terminate()
        p.wait(timeout=60)
    keys = [f"celery-task-meta-{i}" for i in ids]
    done = [datetime.datetime.fromisoformat(app.backend.decode(v)["date_done"]).timestamp()
            for i in range(0, len(keys), 1000) for v in r.mget(keys[i:i + 1000])]
    ideal = args.n * args.ms / 1000 / c
    total = max(done) - t0
    return (f"| {name} | {total:.2f} | {ideal:.2f} | {100 * ideal / total:.0f} % | "
            f"{max(done) - min(done):.2f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=10000)
    ap.add_argument("--ms", type=int, default=50, help="each task's sleep")
    ap.add_argument("--concurrency", default="100,1000", help="the demo worker's -c values, comma-separated")
    ap.add_argument("--gevent-concurrency", type=int, default=100, help="Python's gevent pool -c; 0 skips it")
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    ap.add_argument("--celeriac", default=os.path.join(target, "release/examples/demo"))
    args = ap.parse_args()
    args.celeriac = os.path.abspath(args.celeriac)

    tmp = tempfile.mkdtemp()
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
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
                   CELERY_WORKER_LOGLEVEL="WARNING")
        for k in ("CELERY_WORKER_CONCURRENCY", "CELERIAC_ASYNC_CONCURRENCY"):
            env.pop(k, None)
        os.environ.update(env)
        sys.path.insert(0, HERE)
        from bench_app import app
        log = open(os.path.join(tmp, "workers.log"), "w")
        started, load_start = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()), load()
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
                                [py, "-m", "celery", "-A", "bench_app", "worker", "-P", "gevent", "-c", str(c),
                                 "-l", "WARNING", "--without-mingle", "--without-gossip"], c, env, r, app, args, log))
            note = f"gevent {version[1]} from {where}"
        print(f"{started}, {os.cpu_count()} cores, load average at start {load_start}, at end {load()}; "
              f"{args.n} x `demo.sleep({args.ms})` queued before each worker starts, with results; {note}\n")
        print("| worker | start -> last result (s) | ideal N x ms / c (s) | % of ideal | first -> last result (s) |")
        print("|---|---:|---:|---:|---:|")
        print("\n".join(rows))
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
