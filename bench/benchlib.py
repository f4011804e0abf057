"""What the bench scripts share: a private Redis, the workers' environment and command lines,
starting and stopping a worker, RSS and Redis command counts, stored results, round trips,
percentiles and the table header's date and load average."""
import argparse
import contextlib
import datetime
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


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port):
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def redis_server_cmd(port, tmp):
    return ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", tmp]


@contextlib.contextmanager
def scratch():
    """A temporary directory (Redis's files, the workers' logs), removed on exit."""
    tmp = tempfile.mkdtemp()
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def private_redis(tmp, wrap=(), tries=100, quiet=False):
    """A redis-server of its own on a free port (its command behind `wrap`, e.g. valgrind), stopped
    on exit: yields (url, client, server process) once it answers PING."""
    port = free_port()
    server = subprocess.Popen(list(wrap) + redis_server_cmd(port, tmp), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL if quiet else None)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        r = redis.Redis.from_url(url)
        for _ in range(tries):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield url, r, server
    finally:
        server.terminate()
        server.wait()


def worker_env(url, backend=None, drop=(), **extra):
    """The workers' environment (broker `url`, results in `backend` or the broker, JSON logs at
    WARNING, no inherited concurrency nor `drop`), also made this process's so the apps read it."""
    env = dict(os.environ, CELERY_BROKER_URL=url, CELERY_RESULT_BACKEND=backend or url, CELERIAC_LOG_FORMAT="json",
               CELERY_WORKER_LOGLEVEL="WARNING", **extra)
    for k in ("CELERY_WORKER_CONCURRENCY", "CELERIAC_ASYNC_CONCURRENCY") + tuple(drop):
        env.pop(k, None)
    os.environ.update(env)
    return env


def bench_app():
    """The Python side's Celery app (bench/bench_app.py), configured from the environment."""
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    from bench_app import app
    return app


def add_celeriac_arg(ap, **kw):
    """`--celeriac`: the worker binary (made absolute: workers run in another directory), by default
    the release demo worker under CARGO_TARGET_DIR."""
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    ap.add_argument("--celeriac", default=os.path.join(target, "release/examples/demo"), type=os.path.abspath, **kw)


def python_worker(pool, extra=(), app="bench_app"):
    """A Python Celery worker's command line: `-P pool`, then `extra` (e.g. `-c 2`)."""
    return ([sys.executable, "-m", "celery", "-A", app, "worker", "-P", pool] + list(extra)
            + ["-l", "WARNING", "--without-mingle", "--without-gossip"])


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


def start(cmd, env, log, cwd=HERE):
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=log, cwd=cwd)


def stop(p, timeout=60):
    p.terminate()
    p.wait(timeout=timeout)


@contextlib.contextmanager
def running(cmd, env, log, cwd=HERE, timeout=60):
    """A worker process for the `with` block, stopped (SIGTERM) on exit."""
    p = start(cmd, env, log, cwd)
    try:
        yield p
    finally:
        stop(p, timeout)


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


def tree_kb(pid, field):
    """`field` of /proc/PID/status (VmRSS, VmHWM) summed over the process and its descendants."""
    return sum(proc_kb(q, field) for q in tree(pid))


def command_calls(r, exclude_own=False):
    """Redis commands run so far (INFO commandstats); `exclude_own` leaves out INFO and CONFIG."""
    return sum(v["calls"] for k, v in r.info("commandstats").items()
               if not exclude_own or (k not in ("info",) and not k.startswith("config")))


def produce(app, n, task="demo.add", args=(1, 2), queue=None):
    """n messages sent over one producer: their ids."""
    opts = {"queue": queue} if queue else {}
    with app.producer_or_acquire() as producer:
        return [app.send_task(task, args=args, producer=producer, **opts).id for _ in range(n)]


def stored(r, ids):
    """The stored results of `ids` (None where there is none yet), read 1 000 at a time."""
    keys = [f"celery-task-meta-{i}" for i in ids]
    return [v for i in range(0, len(keys), 1000) for v in r.mget(keys[i:i + 1000])]


def missing(r, ids):
    return sum(1 for v in stored(r, ids) if v is None)


def drained(r, ids, queue="celery"):
    """The queue and the unacked hash are empty and every result is stored."""
    return not r.llen(queue) and not r.hlen("unacked") and missing(r, ids) == 0


def done_times(r, ids, app):
    """The results' `date_done` as POSIX timestamps."""
    return [datetime.datetime.fromisoformat(app.backend.decode(v)["date_done"]).timestamp() for v in stored(r, ids)]


def spread(r, ids, app):
    """Seconds from the first result's `date_done` to the last's."""
    done = done_times(r, ids, app)
    return max(done) - min(done)


def percentile(xs, p):
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(round(p / 100 * len(xs) + 0.5)) - 1))
    return xs[k]


def p50_p99(xs):
    return statistics.median(xs), percentile(xs, 99)


def round_trip(app, task, args, expected, timeout=30, **opts):
    """One `send_task()` -> `AsyncResult.get()`: (milliseconds, the AsyncResult)."""
    t0 = time.perf_counter()
    res = app.send_task(task, args=args, **opts)
    got = res.get(timeout=timeout)
    ms = (time.perf_counter() - t0) * 1000
    if got != expected:
        sys.exit(f"{task}{tuple(args)!r} returned {got!r}, expected {expected!r}")
    return ms, res


def round_trips(app, n, pause):
    """n `demo.add` round trips one at a time, `pause` seconds apart: (p50, p99) in ms."""
    times = []
    for i in range(n):
        times.append(round_trip(app, "demo.add", (i, 1), i + 1)[0])
        time.sleep(pause)
    return p50_p99(times)


def now():
    return time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime())


def load():
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def table(head, rows, left=1):
    """A Markdown table: `head` and each row are lists of cells; the first `left` columns align left,
    the rest right."""
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * left + "---:|" * (len(head) - left))
    for row in rows:
        print("| " + " | ".join(row) + " |")
