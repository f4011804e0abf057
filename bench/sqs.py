"""SQS benchmark: the demo worker and a Python Celery prefork worker (-c 2), one after the other on
the same private moto SQS emulator (server mode, from the test venv), results in a private Redis.

Per worker:
* drain: N `demo.add` tasks sent by real Celery to the SQS queue before the worker starts; tasks/s
  = N / spread of the results' date_done (start-up not counted); peak RSS (VmHWM, prefork: parent
  and children summed);
* one at a time: R sends of `demo.add`, each waited for (`AsyncResult.get()`) before a 250 ms
  pause and the next send: p50 / p99 of send → result.
Both use the same transport options (long polling, kombu's defaults otherwise). moto is one Python
process on this machine's 2 cores: the figures are the emulator's, not AWS's, and say how the two
workers compare on it, not what SQS itself would give. Figures, not a test: run on an idle machine.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import redis

from drain import free_port, proc_kb, spread, tree
from latency import round_trips

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OPTIONS = {"region": "us-east-1", "is_secure": False, "wait_time_seconds": 1, "visibility_timeout": 600}


def start(cmd, env, tmp, name):
    log = open(os.path.join(tmp, f"{name}.log"), "w")
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=log, cwd=HERE)


def wait_port(port):
    import socket
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def missing(r, ids):
    keys = [f"celery-task-meta-{i}" for i in ids]
    return sum(1 for i in range(0, len(keys), 1000) for v in r.mget(keys[i:i + 1000]) if v is None)


def drain(name, cmd, env, r, app, n, tmp):
    r.flushdb()
    with app.producer_or_acquire() as producer:
        ids = [app.send_task("demo.add", args=(1, 2), producer=producer).id for _ in range(n)]
    p = start(cmd, env, tmp, name + "-drain")
    peak = 0
    deadline = time.time() + 900
    try:
        while time.time() < deadline:
            peak = max(peak, sum(proc_kb(q, "VmHWM") for q in tree(p.pid)))
            if missing(r, ids) == 0:
                break
            time.sleep(0.2)
        else:
            sys.exit(f"{name}: did not drain {n} tasks in 900 s")
    finally:
        p.terminate()
        p.wait(timeout=120)
    secs = spread(r, ids, app)
    return n / secs if secs > 0 else float("inf"), secs, peak / 1024


def one_at_a_time(name, cmd, env, r, app, rounds, tmp):
    r.flushdb()
    p = start(cmd, env, tmp, name + "-latency")
    try:
        app.send_task("demo.add", args=(0, 0)).get(timeout=120)  # ready
        return round_trips(app, rounds, 0.25)
    finally:
        p.terminate()
        p.wait(timeout=120)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=2000, help="tasks per drain")
    ap.add_argument("--rounds", type=int, default=100, help="one-at-a-time sends")
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    ap.add_argument("--celeriac", default=os.path.join(target, "release/examples/demo"))
    ap.add_argument("--celeriac-concurrency", type=int, default=512,
                    help="celeriac's -c in the drain (the one-at-a-time run uses its defaults)")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp()
    rport, mport = free_port(), free_port()
    procs = [
        subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL),
        subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(mport)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]
    try:
        wait_port(rport)
        wait_port(mport)
        backend = f"redis://127.0.0.1:{rport}/0"
        r = redis.Redis.from_url(backend)
        env = dict(os.environ, CELERY_BROKER_URL=f"sqs://testing:testing@127.0.0.1:{mport}",
                   CELERY_BROKER_TRANSPORT_OPTIONS=json.dumps(OPTIONS), CELERY_RESULT_BACKEND=backend,
                   CELERIAC_LOG_FORMAT="json", CELERY_WORKER_LOGLEVEL="WARNING")
        for k in ("CELERY_WORKER_CONCURRENCY", "CELERIAC_ASYNC_CONCURRENCY"):
            env.pop(k, None)
        os.environ.update(env)
        sys.path.insert(0, HERE)
        from bench_app import app
        python = [sys.executable, "-m", "celery", "-A", "bench_app", "worker", "-P", "prefork", "-c", "2",
                  "-l", "WARNING", "--without-mingle", "--without-gossip"]
        workers = [
            ("celeriac", f"celeriac (demo worker; drain -c {args.celeriac_concurrency}, one at a time: defaults)",
             [args.celeriac, "-c", str(args.celeriac_concurrency)], [args.celeriac]),
            ("python", "Python Celery 5.7.0 prefork (-c 2)", python, python),
        ]
        rows = []
        for key, label, drain_cmd, latency_cmd in workers:
            rate, secs, peak = drain(key, drain_cmd, env, r, app, args.n, tmp)
            p50, p99 = one_at_a_time(key, latency_cmd, env, r, app, args.rounds, tmp)
            rows.append((label, rate, secs, peak, p50, p99))
        print(f"{time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())}, {os.cpu_count()} cores, load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; moto SQS emulator, transport options "
              f"{json.dumps(OPTIONS)}; drain of {args.n} `demo.add`, {args.rounds} sends one at a time\n")
        print("| worker | drain tasks/s | drain (s) | peak RSS (MB) | one at a time p50 / p99 (ms) |")
        print("|---|---:|---:|---:|---:|")
        for label, rate, secs, peak, p50, p99 in rows:
            print(f"| {label} | {rate:.0f} | {secs:.2f} | {peak:.1f} | {p50:.1f} / {p99:.1f} |")
        c, py = rows
        print(f"\nSummary: drain ratio {c[1] / py[1]:.1f}x; one at a time p50 {c[4]:.1f} vs {py[4]:.1f} ms")
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
