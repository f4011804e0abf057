"""Per-task cost of a celeriac drain, measured so that other load on the machine does not change it.

N `demo.add` tasks are produced by real Celery into the `celery` queue of a private Redis and
moved aside; the worker starts on the empty queue and settles; then the counters are zeroed and
the tasks are put back in one `RENAME`, and the worker drains them (with results). Printed per
task:

* Redis commands (`INFO commandstats` delta: calls and microseconds per command; commands run
  inside Lua scripts are counted under their own names as well as in the script's `evalsha`);
* Redis CPU (`INFO cpu` used_cpu_user + used_cpu_sys delta) and worker CPU (/proc utime+stime);
* with `--callgrind`: the instructions of the worker and of redis-server (both run under
  valgrind's callgrind, counters zeroed before the drain and dumped after it), which do not
  depend on the machine's load. Redis's microsecond figures are then inflated by valgrind; read
  its instruction count instead.

Usage: .venv-test/bin/python bench/cost.py -n 20000 -c 512 [--callgrind] [--celeriac PATH]
(small check: `.venv-test/bin/python bench/cost.py -n 500 -c 16 --celeriac target/debug/examples/demo`)
"""
import argparse
import glob
import os
import shutil
import subprocess
import sys
import time

from benchlib import add_celeriac_arg, bench_app, drained, private_redis, produce, scratch, table

STAGING = "bench.staging"


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_cpu(r):
    info = r.info("cpu")
    return info["used_cpu_user"] + info["used_cpu_sys"]


def settle(r, timeout):
    """Wait until the worker polls the empty queue (its fetch script runs), then a little more."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        stats = r.info("commandstats")
        if stats.get("cmdstat_evalsha", {}).get("calls", 0) >= 3:
            time.sleep(1.0)
            return
        time.sleep(0.2)
    sys.exit("the worker did not start polling")


def callgrind(tmp):
    return ["valgrind", "--tool=callgrind", "--dump-instr=no", f"--callgrind-out-file={tmp}/callgrind.out.%p"]


def dump_callgrind(tmp, pid, keep, clocked=None):
    """Dump `pid`'s counters (zeroed before the drain) and return its instruction total, less
    the inclusive cost of the `clocked` function (work done on a timer, so proportional to the
    drain's wall time, which valgrind stretches)."""
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    dump = sorted(glob.glob(f"{tmp}/callgrind.out.{pid}.*"))[-1]
    if keep:
        shutil.copy(dump, keep)
    return callgrind_total(dump) - (callgrind_inclusive(dump, clocked) if clocked else 0)


def callgrind_inclusive(path, function):
    """Inclusive instructions of `function` in a callgrind dump (0 when it never ran)."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", path],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.rstrip().split(" [")[0].endswith(":" + function):
            return int(line.split()[0].replace(",", ""))
    return 0


def callgrind_total(path):
    with open(path) as f:
        for line in f:
            if line.startswith("totals:") or line.startswith("summary:"):
                return int(line.split()[1])
    raise ValueError(f"no totals in {path}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("-c", type=int, default=512, help="celeriac's -c")
    add_celeriac_arg(ap)
    ap.add_argument("--callgrind", action="store_true", help="run the worker under valgrind's callgrind")
    args = ap.parse_args()

    worker = None
    with scratch() as tmp, private_redis(tmp, wrap=callgrind(tmp) if args.callgrind else (), tries=1200,
                                         quiet=True) as (url, r, server):
        try:
            os.environ.update(CELERY_BROKER_URL=url, CELERY_RESULT_BACKEND=url)
            app = bench_app()
            ids = produce(app, args.n)
            r.rename("celery", STAGING)

            env = dict(os.environ, CELERIAC_LOG_FORMAT="json", CELERY_WORKER_LOGLEVEL="WARNING")
            cmd = [args.celeriac, "-c", str(args.c)]
            if args.callgrind:
                cmd = callgrind(tmp) + cmd
            log = open(os.path.join(tmp, "worker.log"), "w")
            worker = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, cwd=tmp)
            settle(r, 300 if args.callgrind else 30)
            if args.callgrind:
                for pid in (worker.pid, server.pid):
                    subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
            r.config_resetstat()
            cpu_w, cpu_r = cpu_seconds(worker.pid), redis_cpu(r)
            started = time.time()
            r.rename(STAGING, "celery")
            while r.exists(STAGING) or not drained(r, ids):
                if time.time() - started > 1800:
                    sys.exit("did not drain")
                time.sleep(0.1)
            cpu_w, cpu_r = cpu_seconds(worker.pid) - cpu_w, redis_cpu(r) - cpu_r
            stats = r.info("commandstats")
            ir = redis_ir = None
            if args.callgrind:
                ir = dump_callgrind(tmp, worker.pid, os.environ.get("BENCH_KEEP_CALLGRIND"))
                keep = os.environ.get("BENCH_KEEP_CALLGRIND")
                redis_ir = dump_callgrind(tmp, server.pid, keep and keep + ".redis", "serverCron")
            report(r, stats, args, cpu_w, cpu_r, ir, redis_ir)
        finally:
            if worker is not None:
                worker.terminate()
                try:
                    worker.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    worker.kill()


def report(r, stats, args, cpu_w, cpu_r, ir, redis_ir):
    n = args.n
    print(f"N = {n} `demo.add` tasks with results, celeriac -c {args.c}, private Redis "
          f"{r.info('server')['redis_version']}\n")
    top = {k: v for k, v in stats.items() if k.removeprefix("cmdstat_") not in
           ("config", "info", "llen", "exists", "hlen", "mget", "rename", "ping")}
    table(["command", "calls/task", "usec/task"],
          [[k.removeprefix("cmdstat_"), f"{v['calls'] / n:.3f}", f"{v['usec'] / n:.2f}"]
           for k, v in sorted(top.items(), key=lambda kv: -kv[1]["calls"])])
    calls = sum(v["calls"] for v in top.values())
    print(f"\nRedis commands/task: {calls / n:.2f} (every command, also those inside scripts)")
    print(f"Redis CPU/task: {cpu_r / n * 1e6:.1f} us (used_cpu_user+sys)")
    print(f"worker CPU/task: {cpu_w / n * 1e6:.1f} us (utime+stime{', under valgrind' if ir else ''})")
    if ir is not None:
        print(f"worker instructions/task: {ir / n:,.0f} (callgrind Ir)")
        print(f"Redis instructions/task: {redis_ir / n:,.0f} (callgrind Ir, without serverCron)")


if __name__ == "__main__":
    main()
