"""Capture wire fixtures from real Celery on a private redis-server.

Run through `proto-fixtures/capture` (which makes the venv of each Celery stack). This script:

* starts its own `redis-server` on a free loopback port (no persistence, temp dir) and kills it
  at the end;
* for every task case: empties that server, lets a real Celery producer publish, reads back
  every Redis list element it left (the broker is DB 0, the result backend DB 1), and decodes
  each element with kombu/celery's own functions into the `expected` view;
* writes one JSON file per case to `fixtures/celery-<version>/<case>.json`, plus `INDEX.json`.

Then it runs the result cases with a real worker (see `capture_results.py`).
Nothing in the output is written by hand.
"""

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import celery
import kombu
import redis
from celery.worker.strategy import hybrid_to_proto2, proto1_to_proto2
from kombu.utils import json as kombu_json

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from capture_app import make_app  # noqa: E402

#: Every content type, pickle included: the data is our own, so the capture decodes all of it.
ACCEPT_ALL = [
    "application/json",
    "application/x-msgpack",
    "application/x-yaml",
    "application/x-python-serialize",
]
PICKLE = "application/x-python-serialize"

PROTO1 = {"task_protocol": 1}

#: (case, description, producer code run with the app's tasks in scope, extra app settings)
TASK_CASES = [
    ("p2_args_positional", "positional int args, default options", "add.apply_async((2, 3))", {}),
    ("p2_kwargs", "keyword args only", "add.apply_async(kwargs={'x': 2, 'y': 3})", {}),
    (
        "p2_unicode",
        "non-ASCII text: accents, CJK, astral emoji, NUL, quotes, line separator; non-ASCII kwarg key",
        "echo.apply_async(('héllo', '日本語', '🎉 party 𝄞', 'nul\\x00byte', 'q\"uote\\\\back', 'ls\\u2028ps'),"
        " {'ключ': 'значение 🎉'})",
        {},
    ),
    (
        "p2_nested",
        "nested lists/dicts/tuples, empty containers",
        "echo.apply_async(({'a': [1, [2, [3, {'b': ()}]]], 'e': {}, 'l': []}, [[[]]], ((1, 2), (3,))))",
        {},
    ),
    (
        "p2_scalars",
        "None/True/False, floats (-0.0, 1e300, 0.1), ints at and beyond 64 bits",
        "echo.apply_async((None, True, False, 0, -1, 1.5, -0.0, 1e300, 0.1, 2**63 - 1, 2**63, 2**64,"
        " -2**63, 2**100, -2**70))",
        {},
    ),
    (
        "p2_special_types",
        "datetime aware+naive, date, time, Decimal, UUID, bytes utf-8 and non-utf-8",
        "echo.apply_async((datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc),"
        " datetime(2024, 5, 6, 7, 8, 9), date(2024, 5, 6), dtime(7, 8, 9), Decimal('1.10'),"
        " UUID('12345678-1234-5678-1234-567812345678'), b'utf8 bytes', b'\\x00\\xff\\xfe'),"
        " {'when': datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=2)))})",
        {},
    ),
    ("p2_countdown", "countdown=60 (eta = now + 60 s)", "add.apply_async((2, 3), countdown=60)", {}),
    (
        "p2_eta",
        "aware eta with microseconds",
        "add.apply_async((2, 3), eta=datetime(2030, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc))",
        {},
    ),
    (
        "p2_eta_naive",
        "naive eta",
        "add.apply_async((2, 3), eta=datetime(2030, 1, 2, 3, 4, 5))",
        {},
    ),
    ("p2_expires_seconds", "expires=60 (seconds)", "add.apply_async((2, 3), expires=60)", {}),
    (
        "p2_expires_datetime",
        "expires as an aware datetime",
        "add.apply_async((2, 3), expires=datetime(2031, 2, 3, 4, 5, 6, tzinfo=timezone.utc))",
        {},
    ),
    *[
        (f"p2_priority_{n}", f"priority={n}", f"add.apply_async((2, 3), priority={n})", {})
        for n in range(10)
    ],
    ("p2_custom_queue", "queue='high'", "add.apply_async((2, 3), queue='high')", {}),
    (
        "p2_custom_task_id",
        "task_id chosen by the caller",
        "add.apply_async((2, 3), task_id='custom-id-0001')",
        {},
    ),
    (
        "p2_headers",
        "custom headers merged into the message headers",
        "add.apply_async((2, 3), headers={'x-custom': 'v', 'tenant': 42, 'nested': {'k': [1, 2]}})",
        {},
    ),
    ("p2_retries", "a message as retried: retries=3", "add.apply_async((2, 3), retries=3)", {}),
    (
        "p2_time_limits",
        "per-call hard and soft time limits",
        "add.apply_async((2, 3), time_limit=30, soft_time_limit=20.5)",
        {},
    ),
    (
        "p2_link_and_link_error",
        "success callback and error callback",
        "add.apply_async((2, 3), link=mul.s(4), link_error=on_error.s())",
        {},
    ),
    ("p2_chain", "chain of three tasks", "chain(add.s(2, 3), mul.s(4), add.s(10)).apply_async()", {}),
    ("p2_group", "group of three tasks", "group(add.s(i, i) for i in range(3)).apply_async()", {}),
    (
        "p2_chord",
        "chord: three header tasks and a callback",
        "chord([add.s(i, i) for i in range(3)], tsum.s()).apply_async()",
        {},
    ),
    (
        "p2_chain_with_group_and_chord",
        "chain whose later steps are a group, a task and a chord",
        "chain(add.s(1, 2), group(mul.s(2), mul.s(3)), tsum.s(),"
        " chord([add.si(1, 1), add.si(2, 2)], tsum.s())).apply_async()",
        {},
    ),
    (
        "p2_link_to_group",
        "success callback that is a group",
        "add.apply_async((2, 3), link=group(mul.s(2), mul.s(3)))",
        {},
    ),
    ("p2_ignore_result", "ignore_result=True", "add.apply_async((2, 3), ignore_result=True)", {}),
    ("p2_shadow", "shadow name", "add.apply_async((2, 3), shadow='shadowed.add')", {}),
    (
        "p2_send_task_by_name",
        "app.send_task by name",
        "app.send_task('tasks.add', args=(2, 3), kwargs={})",
        {},
    ),
    (
        "p2_send_task_unregistered",
        "app.send_task of a name no worker registers",
        "app.send_task('tasks.does_not_exist', args=(1,))",
        {},
    ),
    (
        "p2_stamped",
        "signature stamped with two stamps (one a list)",
        "sig = add.s(2, 3)\nsig.stamp(tenant='acme', tags=['a', 'b'])\nsig.apply_async()",
        {},
    ),
    (
        "p2_serializer_msgpack",
        "serializer='msgpack' with bytes, non-ASCII text, 64-bit ints",
        "echo.apply_async((2, 3), {'blob': b'\\x00\\xff', 'text': 'héllo 🎉', 'big': 2**63 - 1,"
        " 'neg': -2**63, 'f': 1.5}, serializer='msgpack')",
        {},
    ),
    (
        "p2_serializer_yaml",
        "serializer='yaml' with an aware datetime and non-ASCII text",
        "echo.apply_async((2, 3), {'when': datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc),"
        " 'text': 'héllo 🎉'}, serializer='yaml')",
        {},
    ),
    ("p2_serializer_pickle", "serializer='pickle'", "add.apply_async((2, 3), serializer='pickle')", {}),
    *[
        (
            f"p2_compression_{name}",
            f"compression='{name}'",
            f"echo.apply_async(({'abc' * 20!r},), compression='{name}')",
            {},
        )
        for name in ("zlib", "bzip2", "lzma")
    ],
    (
        "p2_global_keyprefix",
        "broker_transport_options global_keyprefix='myapp:'",
        "add.apply_async((2, 3))",
        {"broker_transport_options": {"global_keyprefix": "myapp:"}},
    ),
    ("p1_args", "task_protocol=1, positional args", "add.apply_async((2, 3))", PROTO1),
    (
        "p1_kwargs_eta_expires",
        "task_protocol=1, kwargs with aware eta and expires",
        "add.apply_async(kwargs={'x': 2, 'y': 3},"
        " eta=datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc),"
        " expires=datetime(2031, 2, 3, 4, 5, 6, tzinfo=timezone.utc))",
        PROTO1,
    ),
    ("p1_link", "task_protocol=1 with link and link_error", "add.apply_async((2, 3), link=mul.s(4),"
     " link_error=on_error.s())", PROTO1),
]


class PrivateRedis:
    """A redis-server on a free loopback port with no persistence, killed by stop()."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="celeriac-capture-")
        self.port = _free_port()
        if self.port == 6379:
            raise RuntimeError("refusing to use port 6379")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = self.client(0)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server on port {self.port} did not start")
                time.sleep(0.05)

    def url(self, db):
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, db):
        return redis.Redis(host="127.0.0.1", port=self.port, db=db)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def versions(server):
    return {
        "celery_version": celery.__version__,
        "kombu_version": kombu.__version__,
        "redis_py_version": redis.__version__,
        "python_version": platform.python_version(),
        "redis_server_version": server.client(0).info("server")["redis_version"],
    }


def list_elements(client):
    """Every element of every list in the DB, per key (sorted), in the order a worker pops them."""
    out = []
    for key in sorted(client.scan_iter(count=1000)):
        if client.type(key) != b"list":
            continue
        for raw in reversed(client.lrange(key, 0, -1)):
            out.append((key.decode("utf-8"), raw.decode("utf-8")))
    return out


def expected_view(channel, raw):
    """Decode one stored list element exactly as a Celery worker would, as kombu-JSON data."""
    envelope = kombu_json.loads(raw)
    message = channel.Message(envelope, channel=channel, accept=ACCEPT_ALL)
    if message.errors:
        raise RuntimeError(f"kombu could not prepare the message: {message.errors}")
    headers = message.headers
    properties = message.properties
    refused = message.content_type == PICKLE
    view = {
        "protocol": None,
        "content_type": message.content_type,
        "content_encoding": message.content_encoding,
        "compression": headers.get("compression"),
        "refused": refused,
        "headers": headers,
        "properties": properties,
    }
    if "task" in headers:
        view["protocol"] = 2
        fields = headers
        if not refused:
            payload = message.decode()
            if isinstance(payload, dict) and "args" in payload:
                (args, kwargs, embed), fields, _, _ = hybrid_to_proto2(message, payload)
            else:
                args, kwargs, embed = payload
            view.update(args=args, kwargs=kwargs, embed=embed)
    else:
        view["protocol"] = 1
        fields = {}
        if not refused:
            payload = message.decode()
            if not (isinstance(payload, dict) and "task" in payload):
                raise RuntimeError("neither protocol 2 headers nor a protocol 1 body")
            (args, kwargs, embed), fields, _, _ = proto1_to_proto2(message, payload)
            view.update(args=args, kwargs=kwargs, embed=embed)
    for name in ("task", "id", "eta", "expires", "retries"):
        view[name] = fields.get(name)
    view["priority"] = properties.get("priority")
    for name in ("root_id", "parent_id", "group", "group_index", "timelimit", "shadow",
                 "ignore_result"):
        view[name] = fields.get(name)
    return json.loads(kombu_json.dumps(view))


def producer_namespace(app):
    from datetime import date, datetime, timedelta, timezone
    from datetime import time as dtime
    from decimal import Decimal
    from uuid import UUID

    from celery import chain, chord, group, signature

    ns = {
        "app": app, "chain": chain, "chord": chord, "group": group, "signature": signature,
        "date": date, "datetime": datetime, "timedelta": timedelta, "timezone": timezone,
        "dtime": dtime, "Decimal": Decimal, "UUID": UUID,
    }
    for name, task in app.tasks.items():
        if name.startswith("tasks."):
            ns[name.removeprefix("tasks.")] = task
    return ns


def capture_task_case(server, name, description, code, conf):
    server.client(0).flushall()
    app = make_app(server.url(0), server.url(1), **conf)
    try:
        exec(code, producer_namespace(app))  # noqa: S102 — our own case code, above
        with app.connection_for_read() as conn:
            channel = conn.default_channel
            messages = [
                {"key": key, "raw": raw, "expected": expected_view(channel, raw)}
                for key, raw in list_elements(server.client(0))
            ]
    finally:
        app.close()
    if not messages:
        raise RuntimeError(f"{name}: the producer left no message in Redis")
    return {
        "case": name,
        "celery_version": celery.__version__,
        "kombu_version": kombu.__version__,
        "description": description,
        "producer_call": code,
        "messages": messages,
    }


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, indent=1, ensure_ascii=False) + "\n")


def run_task_cases(server, out_dir, only):
    index = []
    for name, description, code, conf in TASK_CASES:
        if only and name not in only:
            continue
        fixture = capture_task_case(server, name, description, code, conf)
        write_json(os.path.join(out_dir, f"{name}.json"), fixture)
        index.append({"case": name, "description": description,
                      "messages": len(fixture["messages"])})
        print(f"  {name}: {len(fixture['messages'])} message(s)")
    return index


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(HERE, "fixtures"),
                        help="fixtures root (default: proto-fixtures/fixtures)")
    parser.add_argument("--skip-results", action="store_true",
                        help="only task messages: do not run a worker for the result cases")
    parser.add_argument("cases", nargs="*",
                        help="only these cases (default: all; INDEX.json is then left as is)")
    args = parser.parse_args()
    only = set(args.cases)

    server = PrivateRedis()
    try:
        out_dir = os.path.join(args.out, f"celery-{celery.__version__}")
        print(f"celery {celery.__version__} / kombu {kombu.__version__} on port {server.port}")
        if not only:
            clear_json(out_dir)
        index = run_task_cases(server, out_dir, only)
        if not only:
            write_json(os.path.join(out_dir, "INDEX.json"), {**versions(server), "cases": index})
        if not args.skip_results:
            from capture_results import run_result_cases

            run_result_cases(server, os.path.join(out_dir, "results"), versions(server), only)
    finally:
        server.stop()


def clear_json(folder):
    """Remove the *.json files of a folder (a full run rewrites it)."""
    for entry in os.listdir(folder) if os.path.isdir(folder) else []:
        if entry.endswith(".json"):
            os.remove(os.path.join(folder, entry))


if __name__ == "__main__":
    main()
