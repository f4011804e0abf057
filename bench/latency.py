"""Latency benchmark at everyday load: the demo worker with its defaults (no -c) and a Python Celery
prefork worker (-c 2), one after the other on the same private Redis, in the same run.

Per worker:
* sparse round trips: N `demo.add` sends one at a time with a pause between sends (250 ms, 600 ms,
  1.1 s), time from `send_task()` to `AsyncResult.get()` returning: p50 / p99;
* burst after idle: the worker idles, then B tasks are sent at once: time from the first send to
  the last stored result;
* idle Redis commands per second: INFO commandstats over an idle window (the benchmark's own
  INFO/CONFIG calls excluded).
Prints a Markdown table. Figures, not a test: run it on an idle machine.
"""
import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import redis

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PAUSES = (0.25, 0.6, 1.1)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def percentile(xs, p):
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(round(p / 100 * len(xs) + 0.5)) - 1))
    return xs[k]


def idle_calls(r):
    return sum(v["calls"] for k, v in r.info("commandstats").items()
               if k not in ("info",) and not k.startswith("config"))


def round_trips(app, n, pause):
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        got = app.send_task("demo.add", args=(i, 1)).get(timeout=30)
        times.append((time.perf_counter() - t0) * 1000)
        if got != i + 1:
            sys.exit(f"demo.add({i}, 1) returned {got!r}")
        time.sleep(pause)
    return statistics.median(times), percentile(times, 99)


def burst(app, r, b):
    t0 = time.perf_counter()
    with app.producer_or_acquire() as producer:
        ids = [app.send_task("demo.add", args=(1, 2), producer=producer).id for _ in range(b)]
    keys = [f"celery-task-meta-{i}" for i in ids]
    deadline = time.time() + 300
    while time.time() < deadline:
        missing = sum(1 for i in range(0, len(keys), 1000) for v in r.mget(keys[i:i + 1000]) if v is None)
        if missing == 0:
            return (time.perf_counter() - t0) * 1000
        time.sleep(0.005)
    sys.exit(f"the burst of {b} did not finish")


def run_one(name, cmd, env, r, app, args, log):
    r.flushdb()
    p = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, cwd=HERE)
    try:
        app.send_task("demo.add", args=(0, 0)).get(timeout=120)  # ready
        row = {"name": name}
        for pause in PAUSES:
            row[pause] = round_trips(app, args.n, pause)
        time.sleep(2)
        r.config_resetstat()
        before = idle_calls(r)
        time.sleep(args.idle)
        row["idle_cmds"] = (idle_calls(r) - before) / args.idle
        time.sleep(args.burst_idle)
        row["burst_ms"] = burst(app, r, args.burst)
        return row
    finally:
        p.terminate()
        p.wait(timeout=60)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=100, help="sends per pause")
    ap.add_argument("--idle", type=float, default=60, help="seconds of the idle-commands window")
    ap.add_argument("--burst", type=int, default=1000, help="tasks sent at once after idling")
    ap.add_argument("--burst-idle", type=float, default=10, help="seconds idle before the burst")
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    ap.add_argument("--celeriac", default=os.path.join(target, "release/examples/demo"))
    args = ap.parse_args()

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
        rows = [
            run_one("celeriac (demo worker, defaults)", [args.celeriac], env, r, app, args, log),
            run_one("Python Celery prefork (-c 2)",
                    [sys.executable, "-m", "celery", "-A", "bench_app", "worker", "-P", "prefork", "-c", "2",
                     "-l", "WARNING", "--without-mingle", "--without-gossip"],
                    env, r, app, args, log),
        ]
        print(f"{time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())}, {os.cpu_count()} cores, "
              f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.n} sends per pause, "
              f"burst of {args.burst} after {args.burst_idle:g} s idle, idle window {args.idle:g} s\n")
        head = " | ".join(f"{int(p * 1000)} ms pause p50 / p99 (ms)" for p in PAUSES)
        print(f"| worker | {head} | burst after idle (ms) | idle Redis cmds/s |")
        print("|---|" + "---:|" * (len(PAUSES) + 2))
        for row in rows:
            cells = " | ".join(f"{row[p][0]:.1f} / {row[p][1]:.1f}" for p in PAUSES)
            print(f"| {row['name']} | {cells} | {row['burst_ms']:.0f} | {row['idle_cmds']:.2f} |")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
