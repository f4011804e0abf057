"""The Python side of the benchmark: the same `demo.add` and `demo.sleep` tasks celeriac's demo
worker registers."""
import json
import os
import time

from celery import Celery

app = Celery("bench", broker=os.environ["CELERY_BROKER_URL"], backend=os.environ["CELERY_RESULT_BACKEND"])
app.conf.worker_prefetch_multiplier = 4
# `sqs.py`: the same transport options as celeriac reads them.
app.conf.broker_transport_options = json.loads(os.environ.get("CELERY_BROKER_TRANSPORT_OPTIONS", "{}"))


@app.task(name="demo.add")
def add(a, b):
    return a + b


@app.task(name="demo.sleep")
def sleep(ms):
    time.sleep(ms / 1000)
    return ms


# `mixed.py`: results name the worker that ran the task (both sides read CELERY_RESULT_EXTENDED).
app.conf.result_extended = os.environ.get("CELERY_RESULT_EXTENDED", "").lower() == "true"


# `drain.py --signed`: Celery's auth serializer, from the same CELERY_* variables as celeriac.
if os.environ.get("CELERY_SECURITY_KEY"):
    app.conf.update(
        task_serializer="auth",
        result_serializer="auth",
        accept_content=["auth"],
        security_key=os.environ["CELERY_SECURITY_KEY"],
        security_certificate=os.environ["CELERY_SECURITY_CERTIFICATE"],
        security_cert_store=os.environ["CELERY_SECURITY_CERT_STORE"],
    )
    app.setup_security()
