"""LPUSH 1000 hostile elements straight into the queue `celery` (and a copy of each into the list
`hostile:sent`, which no worker reads): garbage, broken envelopes, bad fields, refused content,
unknown tasks, deep nesting (100k levels) in JSON/msgpack/YAML bodies and in the envelope,
YAML alias bombs, decompression bombs in every codec celeriac reads, oversized elements.

Usage: python hostile_messages.py <max_message_bytes>. Prints how many of each kind were sent.
"""
import base64
import bz2
import json
import lzma
import os
import random
import sys
import uuid
import zlib
from collections import Counter

import brotli
import msgpack
import redis
import zstandard

LIMIT = int(sys.argv[1])
TOTAL = 1000
r = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"])
rng = random.Random(9)
sent = Counter()


def envelope(i, body, content_type="application/json", headers=None, properties=None,
             body_is_bytes=True):
    """A kombu envelope around `body`, base64-encoded unless body_is_bytes is False."""
    task_id = f"hostile-{i}"
    h = {"lang": "py", "task": "t.add", "id": task_id, "root_id": task_id, "parent_id": None,
         "group": None, "retries": 0, "eta": None, "expires": None}
    h.update(headers or {})
    p = {"correlation_id": task_id, "reply_to": "x", "delivery_mode": 2,
         "delivery_info": {"exchange": "", "routing_key": "celery"}, "priority": 0,
         "body_encoding": "base64", "delivery_tag": str(uuid.uuid4())}
    p.update(properties or {})
    return json.dumps({
        "body": base64.b64encode(body).decode() if body_is_bytes else body,
        "content-encoding": "utf-8" if content_type == "application/json" else "binary",
        "content-type": content_type, "headers": h, "properties": p,
    }).encode()


def good_body(i):
    return json.dumps([[i, 1], {}, {"callbacks": None, "errbacks": None, "chain": None,
                                    "chord": None}]).encode()


DEPTH = 100_000
BOMB = 64 << 20  # bytes once decompressed, far above the limit
zeros = bytes(BOMB)
bombs = {
    "application/x-gzip": zlib.compress(zeros, 9),
    "application/x-bz2": bz2.compress(zeros, 9),
    "application/x-lzma": lzma.compress(zeros),
    "application/x-brotli": brotli.compress(zeros, quality=5),
    "application/zstd": zstandard.ZstdCompressor(level=3).compress(zeros),
}


def garbage(i):
    return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))) + f"#{i}".encode()


def not_envelopes(i):
    return rng.choice([
        json.dumps([i, "list"]).encode(),
        json.dumps(i).encode(),
        json.dumps({"body": "e30=", "headers": {"n": i}}).encode(),
        json.dumps({"properties": {"delivery_tag": ""}, "n": i}).encode(),
        json.dumps({"properties": {"delivery_tag": i}, "n": i}).encode(),
        b'{"properties": {"delivery_tag": "t' + str(i).encode() + b'"}, "x": "\\ud800"}',
    ])


def bad_fields(i):
    body = good_body(i)
    return rng.choice([
        envelope(i, "", body_is_bytes=False, properties={"body_encoding": "base64"})
        .replace(b'"body": ""', b'"body": "!!!not base64 %d!!!"' % i),
        envelope(i, b"not json at all %d" % i),
        envelope(i, body, properties={"body_encoding": "rot13"}),
        envelope(i, body, headers={"compression": "application/x-snappy"}),
        envelope(i, body, headers={"task": 12345}),
        envelope(i, body, headers={"id": ["not", "a", "string"]}),
        envelope(i, body, headers={"eta": "tomorrow-ish"}),
        envelope(i, body, headers={"expires": {"when": "never"}}),
        envelope(i, body, headers={"retries": "many"}),
        envelope(i, json.dumps({"args": "not a list", "n": i}).encode(),
                 headers={"task": None, "id": None}),
        envelope(i, json.dumps([[i], "kwargs not a dict", {}]).encode()),
        envelope(i, body, content_type="application/x-unknown"),
        envelope(i, body, content_type="application/x-python-serialize"),
        envelope(i, b"\x80\x04\x95" + bytes([i % 256]) * 8,
                 content_type="application/x-python-serialize"),
        envelope(i, body, headers={"task": f"nobody.knows.{i}"}),
    ])


def deep(i):
    kind = i % 5
    if kind == 0:  # JSON body nested 100k deep
        return envelope(i, b"[" * DEPTH + b"]" * DEPTH)
    if kind == 1:  # nested inside the args of a valid-looking body
        return envelope(i, b'[[' + b"[" * DEPTH + b"]" * DEPTH + b'], {}, {}]')
    if kind == 2:  # msgpack: 100k nested one-element arrays
        return envelope(i, b"\x91" * DEPTH + b"\xc0", content_type="application/x-msgpack")
    if kind == 3:  # YAML flow sequences 100k deep
        return envelope(i, b"[" * DEPTH + b"]" * DEPTH, content_type="application/x-yaml")
    # the envelope itself nested 100k deep (Redis's JSON parser must refuse it, not the worker)
    return (b'{"n": %d, "properties": {"delivery_tag": "deep-%d"}, "headers": ' % (i, i)
            + b"[" * DEPTH + b"]" * DEPTH + b"}")


def yaml_bomb(i):
    lines = [b'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    prev = b"a"
    for n in range(ord("b"), ord("j")):
        name = bytes([n])
        lines.append(name + b": &" + name + b" [" + b",".join([b"*" + prev] * 9) + b"]")
        prev = name
    lines.append(b"n: %d" % i)
    return envelope(i, b"\n".join(lines), content_type="application/x-yaml")


def bomb(i):
    method = list(bombs)[i % len(bombs)]
    return envelope(i, bombs[method], headers={"compression": method})


def oversized(i):
    pad = "x" * (LIMIT + 1024)
    return envelope(i, json.dumps([[pad, i], {}, {}]).encode())


plan = [("garbage", garbage, 150), ("not an envelope", not_envelopes, 150),
        ("bad field or content", bad_fields, 380), ("nested 100k deep", deep, 150),
        ("YAML alias bomb", yaml_bomb, 50), ("decompression bomb", bomb, 100),
        ("oversized", oversized, 20)]
assert sum(n for _, _, n in plan) == TOTAL
i = 0
pipe = r.pipeline(transaction=False)
for name, make, n in plan:
    for _ in range(n):
        element = make(i)
        pipe.lpush("celery", element)
        pipe.rpush("hostile:sent", element)
        sent[name] += 1
        i += 1
    pipe.execute()
print(json.dumps(sent))
