"""The Celery app of the end-to-end tests: producer side, result reader and a fellow Python worker.

Configured from the same environment variables as celeriac (CELERY_BROKER_URL, ...). Defines the
`t.*` tasks celeriac's test worker registers, so a Python worker can serve the same queue.
"""
import json
import os
import time

import redis
from celery import Celery

app = Celery("celeriac_tests")
app.conf.update(
    broker_url=os.environ["CELERY_BROKER_URL"],
    result_backend=os.environ.get("CELERY_RESULT_BACKEND", os.environ["CELERY_BROKER_URL"]),
    broker_transport_options=json.loads(os.environ.get("CELERY_BROKER_TRANSPORT_OPTIONS", "{}")),
    task_acks_late=os.environ.get("CELERY_TASK_ACKS_LATE", "false").lower() in ("1", "true", "yes"),
    worker_prefetch_multiplier=int(os.environ.get("CELERY_WORKER_PREFETCH_MULTIPLIER", "1")),
    result_extended=True,
)


def _env_or_file(name):
    """An environment variable, or the content of the file its `_FILE` form names."""
    if os.environ.get(name + "_FILE"):
        with open(os.environ[name + "_FILE"]) as f:
            return f.read().strip()
    return os.environ.get(name)


# Message signing (Celery's auth serializer) from the same CELERY_* variables as celeriac.
if os.environ.get("CELERY_SECURITY_KEY"):
    app.conf.update(
        task_serializer=os.environ.get("CELERY_TASK_SERIALIZER", "auth"),
        result_serializer=os.environ.get("CELERY_RESULT_SERIALIZER", "json"),
        event_serializer=os.environ.get("CELERY_EVENT_SERIALIZER", "json"),
        accept_content=os.environ.get("CELERY_ACCEPT_CONTENT", "auth").split(","),
        security_key=os.environ["CELERY_SECURITY_KEY"],
        security_key_password=_env_or_file("CELERY_SECURITY_KEY_PASSWORD"),
        security_certificate=os.environ["CELERY_SECURITY_CERTIFICATE"],
        security_cert_store=os.environ["CELERY_SECURITY_CERT_STORE"],
    )
    app.setup_security()


@app.task(name="t.add")
def add(a, b):
    return a + b


@app.task(name="t.sleep")
def sleep(ms):
    time.sleep(ms / 1000)
    return ms


@app.task(name="t.echo")
def echo(v):
    return v


@app.task(name="t.whoami", bind=True)
def whoami(self):
    return {"id": self.request.id, "retries": self.request.retries,
            "queue": self.request.delivery_info.get("routing_key"), "hostname": self.request.hostname}


@app.task(name="t.mark", bind=True)
def mark(self, ms):
    """Count this execution in the hash `marks` (same as celeriac's test worker), then sleep."""
    app.backend.client.hincrby("marks", self.request.id, 1)
    time.sleep(ms / 1000)
    return ms


@app.task(name="t.mul")
def mul(a, b):
    return a * b


@app.task(name="t.tsum")
def tsum(xs):
    return sum(xs)


@app.task(name="t.fail")
def fail(m):
    raise ValueError(m)


@app.task(name="t.tally", bind=True)
def tally(self, xs):
    """A chord body: count this execution in `marks`, return the sum."""
    app.backend.client.hincrby("marks", self.request.id, 1)
    return sum(xs)


@app.task(name="t.record")
def record(*args):
    """An errback: append the arguments to the list `records`."""
    app.backend.client.rpush("records", json.dumps(list(args)))


# Chaos: executions are counted in the Redis of CELERIAC_TEST_TALLY_URL (default: the backend's),
# the same way celeriac's test worker counts them.
_tally = None


def _tally_client():
    global _tally
    if _tally is None:
        url = os.environ.get("CELERIAC_TEST_TALLY_URL")
        _tally = redis.Redis.from_url(url) if url else app.backend.client
    return _tally


def _tally_start(request):
    pipe = _tally_client().pipeline()
    pipe.hincrby("execs", request.id, 1)
    pipe.rpush(f"runs:{request.id}", request.hostname)
    pipe.sadd(f"running:{request.hostname}", request.id)
    pipe.execute()


def _tally_end(request):
    pipe = _tally_client().pipeline()
    pipe.smove(f"running:{request.hostname}", f"finished:{request.hostname}", request.id)
    pipe.hincrby("ends", request.id, 1)
    pipe.execute()


@app.task(name="t.chaos", bind=True)
def chaos(self, ms, retry_once):
    """Record the run, sleep, and ask for one retry on the first run when `retry_once`."""
    _tally_start(self.request)
    time.sleep(ms / 1000)
    _tally_end(self.request)
    if retry_once and self.request.retries == 0:
        raise self.retry(countdown=1, exc=ConnectionError("retry once"))
    return ms


@app.task(name="t.chaos_sum", bind=True)
def chaos_sum(self, xs):
    """A recorded chord body."""
    _tally_start(self.request)
    _tally_end(self.request)
    return sum(xs)
