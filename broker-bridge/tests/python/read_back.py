"""Consume task messages with real kombu and read them as a Celery worker does.

Usage: read_back.py REDIS_URL QUEUE COUNT
Prints one JSON line per message (kombu's JSON, so tagged values look as in the fixtures).
"""
import sys

from celery import Celery
from celery.utils.time import maybe_iso8601
from kombu.utils.json import dumps


def main():
    url, queue, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    app = Celery("read_back", broker=url)
    app.conf.accept_content = ["json"]
    with app.connection_for_read() as conn:
        q = conn.SimpleQueue(queue, no_ack=True, serializer="json")
        for _ in range(count):
            message = q.get(timeout=10)
            message.accept = {"application/json"}
            args, kwargs, embed = message.decode()
            h = message.headers
            for key in ("eta", "expires"):
                maybe_iso8601(h.get(key))  # raises on a value a Celery worker would reject
            print(dumps({
                "task": h["task"], "id": h["id"], "args": list(args), "kwargs": kwargs,
                "eta": h.get("eta"), "expires": h.get("expires"), "retries": h.get("retries"),
                "priority": message.properties.get("priority"),
                "root_id": h.get("root_id"), "parent_id": h.get("parent_id"),
                "group": h.get("group"), "group_index": h.get("group_index"),
                "timelimit": h.get("timelimit"), "shadow": h.get("shadow"),
                "ignore_result": h.get("ignore_result"),
                "embed": embed, "headers": h,
                "correlation_id": message.properties.get("correlation_id"),
                "content_type": message.content_type,
            }), flush=True)
        q.close()


if __name__ == "__main__":
    main()
