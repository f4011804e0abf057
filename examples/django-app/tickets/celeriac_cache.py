"""Invalidate celeriac's read-through cache from Python.

celeriac keeps a value under `<prefix><version>:k2:{<key>}` in Redis (L2) and in each worker's
memory (L1); `<key>` is the task's key template rendered in the task's namespace (`render`
below). To invalidate a key another process does what celeriac's own `Cache::invalidate` does:

    DEL <prefix><version>:k2:{<key>} <prefix><version>:k2:lease:{<key>}   # value and fill lease
    PUBLISH <prefix>invalidate "key:<prefix><version>:k2:{<key>}"          # every worker evicts its L1

and for a prefix, every key matching `<prefix><version>:k2:{<p>*` and
`<prefix><version>:k2:lease:{<p>*` (SCAN, never KEYS), then
`PUBLISH <prefix>invalidate "prefix:<prefix><version>:k2:{<p>"`. Deleting the lease stops a
load that started before the change from writing its stale value afterwards.

Usage: `invalidate(render("tickets.get_ticket", "ticket:{ticket_id}", ticket_id=42))`,
`invalidate_prefix(render("customers.orders", "customer:{customer_id}:", customer_id=7))`.
"""
import json
import re

import redis
from django.conf import settings

_client = None


def _redis():
    global _client
    if _client is None:
        _client = redis.Redis.from_url(settings.CELERIAC_CACHE_REDIS_URL)
    return _client


def _base():
    return f"{settings.CELERIAC_CACHE_PREFIX}{settings.CELERIAC_CACHE_VERSION}:k2:"


def _channel():
    return f"{settings.CELERIAC_CACHE_PREFIX}invalidate"


def _escape_key(text):
    """celeriac's key escaping: % " ( ) : { } and control characters as %XX."""
    return "".join(
        f"%{ord(c):02X}" if c in '%"():{}' or ord(c) < 0x20 or ord(c) == 0x7F else c
        for c in text
    )


def _field(value):
    if isinstance(value, str):
        return '"' + _escape_key(value) + '"'
    # Integers, booleans and None as JSON (what the worker received from Celery).
    return "(" + _escape_key(json.dumps(value, separators=(",", ":"))) + ")"


def render(namespace, template, **values):
    """The rendered key of `template` (a `[[tasks]] key`) for `values`, in `namespace` (the task
    name, or its `key_namespace`), exactly as the worker renders it."""
    def field(m):
        if m.group(0) == "{{":
            return "{"
        if m.group(0) == "}}":
            return "}"
        return _field(values[m.group(1)])

    return _escape_key(namespace) + ":" + re.sub(r"\{\{|\}\}|\{(\w+)\}", field, template)


def invalidate(key):
    """Forget one rendered key (see `render`) in Redis and in every worker's memory."""
    full = _base() + "{" + key + "}"
    r = _redis()
    r.delete(full, _base() + "lease:{" + key + "}")
    r.publish(_channel(), f"key:{full}")


def invalidate_prefix(prefix):
    """Forget every rendered key starting with `prefix`."""
    full = _base() + "{" + prefix
    r = _redis()
    for start in (full, _base() + "lease:{" + prefix):
        batch = []
        for k in r.scan_iter(match=_escape(start) + "*", count=500):
            batch.append(k)
            if len(batch) == 500:
                r.delete(*batch)
                batch = []
        if batch:
            r.delete(*batch)
    r.publish(_channel(), f"prefix:{full}")


def _escape(text):
    """Escape SCAN MATCH's glob characters."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
