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
"""
import argparse
import datetime
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import redis

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def proc_kb(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except FileNotFoundError:
        return 0
    return 0


def tree(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    pids = [pid]
    for child in out:
        pids += tree(int(child))
    return pids


def total_calls(r):
    return sum(v["calls"] for k, v in r.info("commandstats").items())


def produce(app, n):
    with app.producer_or_acquire() as producer:
        return [app.send_task("demo.add", args=(1, 2), producer=producer).id for _ in range(n)]


def wait_done(r, ids, timeout):
    keys = [f"celery-task-meta-{i}" for i in ids]
    deadline = time.time() + timeout
    while time.time() < deadline:
        if r.llen("celery") == 0 and r.hlen("unacked") == 0:
            missing = sum(1 for i in range(0, len(keys), 1000) for v in r.mget(keys[i:i + 1000]) if v is None)
            if missing == 0:
                return True
        time.sleep(0.1)
    return False


def spread(r, ids, app):
    keys = [f"celery-task-meta-{i}" for i in ids]
    dates = []
    for i in range(0, len(keys), 1000):
        for v in r.mget(keys[i:i + 1000]):
            d = app.backend.decode(v)["date_done"]
            dates.append(datetime.datetime.fromisoformat(d))
    return (max(dates) - min(dates)).total_seconds()


def run_one(name, cmd, env, r, app, n, log):
    r.flushdb()
    p = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, cwd=HERE)
    time.sleep(2.0)
    idle = sum(proc_kb(q, "VmRSS") for q in tree(p.pid))
    p.terminate()
    p.wait(timeout=60)
    r.flushdb()
    ids = produce(app, n)
    r.config_resetstat()
    before = total_calls(r)
    p = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, cwd=HERE)
    peak = 0
    deadline = time.time() + 600
    done = False
    while time.time() < deadline:
        peak = max(peak, sum(proc_kb(q, "VmHWM") for q in tree(p.pid)))
        if wait_done(r, ids, 0.5):
            done = True
            break
    peak = max(peak, sum(proc_kb(q, "VmHWM") for q in tree(p.pid)))
    calls = total_calls(r) - before
    p.terminate()
    p.wait(timeout=60)
    if not done:
        sys.exit(f"{name}: did not drain {n} tasks")
    secs = spread(r, ids, app)
    return {"name": name, "tasks_per_s": n / secs if secs > 0 else float("inf"), "seconds": secs,
            "peak_rss_mb": peak / 1024, "idle_rss_mb": idle / 1024, "cmds_per_task": calls / n}


def concurrency(value):
    """`-c` value of a worker: a positive number, or `default` (no `-c`)."""
    if value == "default":
        return None
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError("a positive number or `default`")
    return int(value)


def c_args(c):
    return [] if c is None else ["-c", str(c)]


def flag(c):
    return "defaults, no -c" if c is None else f"-c {c}"


def load():
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=50000)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    ap.add_argument("--celeriac", default=os.path.join(target, "release/examples/demo"))
    ap.add_argument("--celeriac-concurrency", type=concurrency, default="512",
                    help="celeriac's -c, or `default` to start it without -c")
    ap.add_argument("--python-concurrency", type=concurrency, default="2",
                    help="the Python prefork worker's -c, or `default` to start it without -c (one per CPU)")
    ap.add_argument("--signed", action="store_true",
                    help="sign and check tasks and results (Celery's auth serializer) on every side")
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
        if args.signed:
            keys = os.path.join(ROOT, "proto-fixtures", "fixtures", "signed")
            env.update(CELERY_TASK_SERIALIZER="auth", CELERY_RESULT_SERIALIZER="auth", CELERY_ACCEPT_CONTENT="auth",
                       CELERY_SECURITY_KEY=os.path.join(keys, "key.pem"),
                       CELERY_SECURITY_CERTIFICATE=os.path.join(keys, "cert.pem"),
                       CELERY_SECURITY_CERT_STORE=os.path.join(keys, "store", "*.pem"))
        for k in ("CELERY_WORKER_CONCURRENCY", "CELERIAC_ASYNC_CONCURRENCY"):
            env.pop(k, None)
        os.environ.update(env)
        sys.path.insert(0, HERE)
        from bench_app import app
        import celery
        log = open(os.path.join(tmp, "workers.log"), "w")
        started, load_start = time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime()), load()
        cc, pc = args.celeriac_concurrency, args.python_concurrency
        rows = [
            run_one(f"celeriac (demo worker, {flag(cc)})", [args.celeriac] + c_args(cc), env, r, app, args.n, log),
            run_one(f"Python Celery {celery.__version__} prefork ({flag(pc)})",
                    [sys.executable, "-m", "celery", "-A", "bench_app", "worker", "-P", "prefork"] + c_args(pc)
                    + ["-l", "WARNING", "--without-mingle", "--without-gossip"],
                    env, r, app, args.n, log),
        ]
        signed = ", signed (auth) tasks and results" if args.signed else ""
        print(f"{started}, N = {args.n} `demo.add` tasks with results{signed}, "
              f"private Redis, {os.cpu_count()} cores, load average at start {load_start}, at end {load()}\n")
        print("| worker | tasks/s | drain (s) | peak RSS (MB) | idle RSS (MB) | Redis cmds/task |")
        print("|---|---:|---:|---:|---:|---:|")
        for row in rows:
            print(f"| {row['name']} | {row['tasks_per_s']:.0f} | {row['seconds']:.2f} | {row['peak_rss_mb']:.1f} | "
                  f"{row['idle_rss_mb']:.1f} | {row['cmds_per_task']:.1f} |")
        c, py = rows
        print(f"\nSummary: celeriac {c['tasks_per_s']:.0f} tasks/s, Python prefork {py['tasks_per_s']:.0f} tasks/s, "
              f"ratio {c['tasks_per_s'] / py['tasks_per_s']:.1f}x (issue 15: >= 50x at celeriac's best -c against "
              f"prefork -c 2, >= 20x defaults against defaults); peak / idle RSS celeriac {c['peak_rss_mb']:.1f} / "
              f"{c['idle_rss_mb']:.1f} MB, Python {py['peak_rss_mb']:.1f} / {py['idle_rss_mb']:.1f} MB; Redis commands/task "
              f"celeriac {c['cmds_per_task']:.1f}, Python {py['cmds_per_task']:.1f}; load average {load()}")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
