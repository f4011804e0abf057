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

Small check: `.venv-test/bin/python bench/sqs.py -n 50 --rounds 5 --celeriac target/debug/examples/demo`
"""
import argparse
import json
import os
import subprocess
import sys
import time

import redis

from benchlib import (add_celeriac_arg, bench_app, free_port, load, missing, now, produce, python_worker,
                      redis_server_cmd, round_trips, running, scratch, spread, table, tree_kb, wait_port, worker_env)

OPTIONS = {"region": "us-east-1", "is_secure": False, "wait_time_seconds": 1, "visibility_timeout": 600}


def log_file(tmp, name):
    return open(os.path.join(tmp, f"{name}.log"), "w")


def drain(name, cmd, env, r, app, n, tmp):
    r.flushdb()
    ids = produce(app, n)
    peak = 0
    deadline = time.time() + 900
    with running(cmd, env, log_file(tmp, name + "-drain"), timeout=120) as p:
        while time.time() < deadline:
            peak = max(peak, tree_kb(p.pid, "VmHWM"))
            if missing(r, ids) == 0:
                break
            time.sleep(0.2)
        else:
            sys.exit(f"{name}: did not drain {n} tasks in 900 s")
    secs = spread(r, ids, app)
    return n / secs if secs > 0 else float("inf"), secs, peak / 1024


def one_at_a_time(name, cmd, env, r, app, rounds, tmp):
    r.flushdb()
    with running(cmd, env, log_file(tmp, name + "-latency"), timeout=120):
        app.send_task("demo.add", args=(0, 0)).get(timeout=120)  # ready
        return round_trips(app, rounds, 0.25)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=2000, help="tasks per drain")
    ap.add_argument("--rounds", type=int, default=100, help="one-at-a-time sends")
    add_celeriac_arg(ap)
    ap.add_argument("--celeriac-concurrency", type=int, default=512,
                    help="celeriac's -c in the drain (the one-at-a-time run uses its defaults)")
    args = ap.parse_args()

    with scratch() as tmp:
        rport, mport = free_port(), free_port()
        procs = [
            subprocess.Popen(redis_server_cmd(rport, tmp), stdout=subprocess.DEVNULL),
            subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(mport)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        ]
        try:
            wait_port(rport)
            wait_port(mport)
            backend = f"redis://127.0.0.1:{rport}/0"
            r = redis.Redis.from_url(backend)
            env = worker_env(f"sqs://testing:testing@127.0.0.1:{mport}", backend=backend,
                             CELERY_BROKER_TRANSPORT_OPTIONS=json.dumps(OPTIONS))
            app = bench_app()
            python = python_worker("prefork", ["-c", "2"])
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
            print(f"{now()}, {os.cpu_count()} cores, load average "
                  f"{load()}; moto SQS emulator, transport options "
                  f"{json.dumps(OPTIONS)}; drain of {args.n} `demo.add`, {args.rounds} sends one at a time\n")
            table(["worker", "drain tasks/s", "drain (s)", "peak RSS (MB)", "one at a time p50 / p99 (ms)"],
                  [[label, f"{rate:.0f}", f"{secs:.2f}", f"{peak:.1f}", f"{p50:.1f} / {p99:.1f}"]
                   for label, rate, secs, peak, p50, p99 in rows])
            c, py = rows
            print(f"\nSummary: drain ratio {c[1] / py[1]:.1f}x; one at a time p50 {c[4]:.1f} vs {py[4]:.1f} ms")
        finally:
            for p in procs:
                p.terminate()
                p.wait()


if __name__ == "__main__":
    main()
