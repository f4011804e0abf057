"""Result-backend fixtures: what a real Python Celery worker writes to Redis.

Run by `capture.py` after the task cases. Starts `celery -A capture_app worker -P solo` on the capture's
private redis-server (broker DB 0, result backend DB 1) and, per case, empties the backend DB,
listens to every pub/sub message (PSUBSCRIBE before sending), runs the producer code, waits for
the outcome, and records every backend key (type, TTL, value) it leaves, what was published,
and every command run on the backend DB meanwhile (raw MONITOR lines, all clients).
"""

import base64
import gc
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import celery
import kombu

from capture import HERE, clear_json, producer_namespace, write_json
from capture_app import make_app

WAIT_SECONDS = 60

#: (case, description, producer code that sets `result`, worker run: "default" or "extended",
#:  how to wait: "result" = result.get/join, "sentinel" = a later task on the same solo worker)
RESULT_CASES = [
    ("result_success_int", "add(2, 3) succeeds", "result = add.delay(2, 3)", "default", "result"),
    ("result_success_str", "returns non-ASCII text", "result = echo.delay('héllo 🎉')",
     "default", "result"),
    ("result_success_none", "returns None", "result = echo.delay(None)", "default", "result"),
    ("result_success_bigint", "returns 2**100", "result = echo.delay(2**100)", "default", "result"),
    ("result_success_datetime", "returns an aware datetime",
     "result = echo.delay(datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc))",
     "default", "result"),
    ("result_success_dict", "returns a nested dict",
     "result = echo.delay({'a': 1, 'nested': {'b': [1, 2.5, None]}, 'text': 'é'})",
     "default", "result"),
    ("result_failure_valueerror", "raises ValueError with a message",
     "result = fail_value_error.delay('bad value: 42')", "default", "result"),
    ("result_failure_custom_exception", "raises capture_app.CustomError",
     "result = fail_custom.delay('custom problem')", "default", "result"),
    ("result_started", "track_started task: STARTED then SUCCESS (see published)",
     "result = slow.delay(0.5)", "default", "result"),
    ("result_retry", "task retries once with countdown=1: RETRY then SUCCESS (see published)",
     "result = retry_once.delay()", "default", "result"),
    ("result_revoked_expired", "expires in the past: the worker revokes it",
     "result = add.apply_async((2, 3), expires=datetime.now(timezone.utc) - timedelta(minutes=1))",
     "default", "result"),
    ("result_extended", "add(2, 3) on a worker with result_extended=True",
     "result = add.apply_async((2, 3), kwargs={}, headers={'tenant': 'acme'})",
     "extended", "result"),
    ("result_ignore_result", "task with ignore_result=True: no result key",
     "result = quiet.delay(5)", "default", "sentinel"),
    ("group_result_saved", "group of two, joined, then GroupResult.save()",
     "result = group(add.s(1, 1), add.s(2, 2)).apply_async()\n"
     "result.join(timeout=60)\nresult.save()", "default", "result"),
    ("chord_redis_keys", "chord of three with a tsum callback: every key the backend leaves",
     "result = chord([add.s(i, i) for i in range(3)], tsum.s()).apply_async()",
     "default", "result"),
]


class Worker:
    """A real `celery worker -P solo` subprocess on the private server."""

    def __init__(self, server, extended):
        self.log = tempfile.NamedTemporaryFile(prefix="celeriac-capture-worker-", suffix=".log",
                                               delete=False)
        env = dict(os.environ,
                   CAPTURE_BROKER_URL=server.url(0),
                   CAPTURE_BACKEND_URL=server.url(1),
                   CAPTURE_EXTENDED="1" if extended else "0")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "capture_app", "worker", "-P", "solo",
             "-l", "INFO", "-n", "capture@localhost", "--without-gossip", "--without-mingle",
             "--without-heartbeat"],
            cwd=HERE, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        os.unlink(self.log.name)

    def log_text(self):
        self.log.flush()
        with open(self.log.name, encoding="utf-8", errors="replace") as f:
            return f.read()


class Listener:
    """PSUBSCRIBE * on a dedicated connection; keeps everything except kombu's fanout channels."""

    def __init__(self, server):
        self.pubsub = server.client(1).pubsub()
        self.pubsub.psubscribe("*")
        self.messages = []
        self.last = time.monotonic()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopped.is_set():
            msg = self.pubsub.get_message(timeout=0.1)
            if msg and msg["type"] == "pmessage":
                channel = msg["channel"].decode("utf-8")
                if not channel.startswith("/"):
                    self.messages.append({"channel": channel, "data": _text(msg["data"])})
                self.last = time.monotonic()

    def settle(self, quiet=0.5):
        """Wait until nothing has been published for `quiet` seconds."""
        while time.monotonic() - self.last < quiet:
            time.sleep(0.05)

    def close(self):
        self.stopped.set()
        self.thread.join()
        self.pubsub.close()


class Monitor:
    """Raw MONITOR lines of the backend DB (`<time> [<db> <client>] "CMD" "arg" …`), in order."""

    def __init__(self, server, db=1):
        self.db = db
        self.sock = socket.create_connection(("127.0.0.1", server.port))
        self.sock.sendall(b"MONITOR\r\n")
        self.file = self.sock.makefile("rb")
        if self.file.readline() != b"+OK\r\n":
            raise RuntimeError("MONITOR was refused")
        self.lines = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        marker = f"[{self.db} ".encode()
        try:
            for line in self.file:
                if line.startswith(b"+") and marker in line:
                    self.lines.append(line[1:].rstrip(b"\r\n").decode("utf-8", "replace"))
        except (OSError, ValueError):
            pass

    def close(self):
        self.sock.shutdown(socket.SHUT_RDWR)
        self.thread.join()
        self.file.close()
        self.sock.close()


def _text(value):
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(value).decode("ascii")}


def dump_keys(client, skip):
    """Every key of the backend DB with its type, TTL (seconds, -1 = none) and value."""
    out = {}
    for key in sorted(client.scan_iter(count=1000)):
        name = key.decode("utf-8")
        if any(s in name for s in skip):
            continue
        kind = client.type(key).decode()
        if kind == "string":
            value = _text(client.get(key))
        elif kind == "list":
            value = [_text(v) for v in client.lrange(key, 0, -1)]
        elif kind == "set":
            value = sorted(_text(v) for v in client.smembers(key))
        elif kind == "zset":
            value = [[_text(m), s] for m, s in client.zrange(key, 0, -1, withscores=True)]
        elif kind == "hash":
            value = {_text(k): _text(v) for k, v in sorted(client.hgetall(key).items())}
        else:
            value = None
        out[name] = {"type": kind, "ttl": client.ttl(key), "value": value}
    return out


def wait_ready(app, worker):
    """Send a task and wait for its result; fail early if the worker exits."""
    probe = app.tasks["tasks.add"].delay(0, 0)
    deadline = time.monotonic() + WAIT_SECONDS
    while not probe.ready():
        if worker.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not answer:\n{worker.log_text()}")
        time.sleep(0.1)


def capture_result_case(server, app, case, description, code, wait):
    backend = server.client(1)
    backend.flushdb()
    listener = Listener(server)
    monitor = Monitor(server)
    skip = set()
    ns = producer_namespace(app)
    try:
        exec(code, ns)  # noqa: S102 — our own case code, above
        result = ns["result"]
        if wait == "sentinel":
            sentinel = app.tasks["tasks.add"].delay(0, 0)
            sentinel.get(timeout=WAIT_SECONDS)
            skip.add(sentinel.id)
        elif hasattr(result, "join"):
            result.join(timeout=WAIT_SECONDS, propagate=False)
        else:
            result.get(timeout=WAIT_SECONDS, propagate=False)
            if result.state == "PENDING":
                raise RuntimeError(f"{case}: no outcome within {WAIT_SECONDS} s")
        listener.settle()
    finally:
        monitor.close()
        listener.close()
    published = [m for m in listener.messages if not any(s in m["channel"] for s in skip)]
    fixture = {
        "case": case,
        "celery_version": celery.__version__,
        "kombu_version": kombu.__version__,
        "description": description,
        "producer_call": code,
        "task_id": result.id,
        "keys": dump_keys(backend, skip),
        "published": published,
        "backend_commands": [c for c in monitor.lines if not any(s in c for s in skip)],
    }
    # Let the results unsubscribe now, while the server still runs (5.3 does it in __del__).
    del result, ns
    gc.collect()
    return fixture


def run_result_cases(server, out_dir, versions, only):
    """Capture the result cases (all, or those named in `only`) into `out_dir`."""
    if not only:
        clear_json(out_dir)
    index = []
    for run in ("default", "extended"):
        cases = [c for c in RESULT_CASES if c[3] == run and (not only or c[0] in only)]
        if not cases:
            continue
        worker = Worker(server, extended=run == "extended")
        app = make_app(server.url(0), server.url(1))
        try:
            wait_ready(app, worker)
            for case, description, code, _, wait in cases:
                fixture = capture_result_case(server, app, case, description, code, wait)
                write_json(os.path.join(out_dir, f"{case}.json"), fixture)
                index.append({"case": case, "description": description,
                              "keys": len(fixture["keys"]),
                              "published": len(fixture["published"])})
                print(f"  {case}: {len(fixture['keys'])} key(s), "
                      f"{len(fixture['published'])} published")
        finally:
            app.close()
            worker.stop()
    if not only:
        write_json(os.path.join(out_dir, "INDEX.json"), {**versions, "cases": index})

