"""Chaos-run producer: sends its share of the task mix with real Celery and writes a manifest.

usage: produce.py TOTAL SEED MANIFEST [QUERY_ITEMS]

Each manifest line is `<task id> <kind> <expected result as JSON>`; kinds: plain, eta, retry,
part (chord header member), body (chord body), query (declarative query task on Postgres,
queue `rust`, served by celeriac only). A chord body's line is followed by
`<body id> chord <its parts' ids as a JSON list>`. Lines are written only after the send returned.
"""
import json
import random
import sys

from celery import chord

from celery_app import app, chaos, chaos_sum

total, seed, manifest = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
query_items = int(sys.argv[4]) if len(sys.argv) > 4 else 0
rng = random.Random(seed)
sent = 0
with open(manifest, "w") as out, app.producer_or_acquire() as producer:
    def record(task_id, kind, expected):
        out.write(f"{task_id} {kind} {json.dumps(expected)}\n")

    while sent < total:
        roll = rng.random()
        ms = int(rng.expovariate(1 / 8))
        priority = rng.randint(0, 9)
        if roll < 0.01 and total - sent >= 6:
            parts = [rng.randint(0, 20) for _ in range(5)]
            res = chord([chaos.s(p, False) for p in parts], chaos_sum.s()).apply_async()
            for child, p in zip(res.parent.results, parts):
                record(child.id, "part", p)
            record(res.id, "body", sum(parts))
            record(res.id, "chord", [child.id for child in res.parent.results])
            sent += 6
            continue
        if roll < 0.06 and query_items:
            item = rng.randint(1, query_items)
            r = app.send_task("chaos.get_item", args=(item,), queue="rust", priority=priority,
                              producer=producer)
            record(r.id, "query", {"id": item, "name": f"item {item}"})
        elif roll < 0.16:
            r = app.send_task("t.chaos", args=(ms, False), countdown=rng.uniform(1, 6),
                              priority=priority, producer=producer)
            record(r.id, "eta", ms)
        elif roll < 0.21:
            r = app.send_task("t.chaos", args=(ms, True), priority=priority, producer=producer)
            record(r.id, "retry", ms)
        else:
            r = app.send_task("t.chaos", args=(ms, False), priority=priority, producer=producer)
            record(r.id, "plain", ms)
        sent += 1
        if sent % 1000 == 0:
            out.flush()
print(sent)
