"""The Python side of the benchmark: the same `demo.add` task celeriac's demo worker registers."""
import os

from celery import Celery

app = Celery("bench", broker=os.environ["CELERY_BROKER_URL"], backend=os.environ["CELERY_RESULT_BACKEND"])
app.conf.worker_prefetch_multiplier = 4


@app.task(name="demo.add")
def add(a, b):
    return a + b
