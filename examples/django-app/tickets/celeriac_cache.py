"""Invalidate celeriac's read-through cache from Python.

celeriac keeps a value under `<prefix><version>:<key>` in Redis (L2) and in each worker's memory
(L1). To invalidate a key another process does what celeriac's own `Cache::invalidate` does:

    DEL <prefix><version>:<key> lease:<prefix><version>:<key>     # value and fill lease
    PUBLISH <prefix>invalidate "key:<prefix><version>:<key>"        # every worker evicts its L1

and for a prefix, every key matching `<prefix><version>:<p>*` (SCAN, never KEYS) and
`PUBLISH <prefix>invalidate "prefix:<prefix><version>:<p>"`. Deleting the lease stops a load that
started before the change from writing its stale value afterwards.

Usage: `invalidate("ticket:42")`, `invalidate_prefix("customer:7:")`.
"""
import redis
from django.conf import settings

_client = None


def _redis():
    global _client
    if _client is None:
        _client = redis.Redis.from_url(settings.CELERIAC_CACHE_REDIS_URL)
    return _client


def _full(key):
    return f"{settings.CELERIAC_CACHE_PREFIX}{settings.CELERIAC_CACHE_VERSION}:{key}"


def _channel():
    return f"{settings.CELERIAC_CACHE_PREFIX}invalidate"


def invalidate(key):
    """Forget one rendered key (e.g. "ticket:42") in Redis and in every worker's memory."""
    full = _full(key)
    r = _redis()
    r.delete(full, f"lease:{full}")
    r.publish(_channel(), f"key:{full}")


def invalidate_prefix(prefix):
    """Forget every key starting with `prefix` (e.g. "customer:7:")."""
    full = _full(prefix)
    r = _redis()
    for pattern in (_escape(full) + "*", "lease:" + _escape(full) + "*"):
        batch = []
        for k in r.scan_iter(match=pattern, count=500):
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
