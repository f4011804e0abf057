"""The Python side of the demo: a plain Celery producer, as a Django project would have.

Sends tasks by name to the celeriac demo worker and prints what AsyncResult.get() returns.
"""
import os
import time

from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded

app = Celery("demo", broker=os.environ["CELERY_BROKER_URL"], backend=os.environ["CELERY_RESULT_BACKEND"])


def show(label, value):
    print(f"  {label:<42} -> {value!r}")


print("Python Celery producer -> celeriac:")
show("demo.add(2, 3)", app.send_task("demo.add", args=(2, 3)).get(timeout=10))
show("demo.add(a=2**70, b=1)", app.send_task("demo.add", kwargs={"a": 2**70, "b": 1}).get(timeout=10))
show("demo.add(1.5, b=2.25)", app.send_task("demo.add", args=(1.5,), kwargs={"b": 2.25}).get(timeout=10))
try:
    app.send_task("demo.add", args=(1,)).get(timeout=10)
except TypeError as e:
    show("demo.add(1) raised", e)
show("demo.echo({'héllo': [1, 2**70, None]})",
     app.send_task("demo.echo", args=({"héllo": [1, 2**70, None]},)).get(timeout=10))
try:
    app.send_task("demo.fail", args=("bad ticket id", 42)).get(timeout=10)
except ValueError as e:
    show("demo.fail('bad ticket id', 42) raised", repr(e))
start = time.time()
results = [app.send_task("demo.sleep", args=(500,)) for _ in range(8)]
values = [r.get(timeout=20) for r in results]
show("8 x demo.sleep(500) on 4 slots", f"{values} in {time.time() - start:.1f}s")
try:
    app.send_task("demo.sleep", args=(4000,), soft_time_limit=1).get(timeout=10)
except SoftTimeLimitExceeded as e:
    show("demo.sleep(4000, soft_time_limit=1) raised", e)
show("demo.primes(20000) (a process task)", app.send_task("demo.primes", args=(20000,)).get(timeout=30))
try:
    app.send_task("demo.primes", args=(10**12,), time_limit=1).get(timeout=30)
except Exception as e:
    show("demo.primes(10**12, time_limit=1) raised", e)
r = app.send_task("demo.add", args=(40, 2), countdown=1)
show("demo.add(40, 2) with countdown=1", r.get(timeout=10))

start = time.time()
first = app.send_task("demo.get_ticket", args=(1,)).get(timeout=10)
miss_ms = (time.time() - start) * 1000
start = time.time()
second = app.send_task("demo.get_ticket", kwargs={"ticket_id": 1}).get(timeout=10)
hit_ms = (time.time() - start) * 1000
show("demo.get_ticket(1) (from the database)", f"{first} in {miss_ms:.1f} ms")
show("demo.get_ticket(ticket_id=1) (cache hit)", f"{second} in {hit_ms:.1f} ms")
show("demo.get_ticket(999)", app.send_task("demo.get_ticket", args=(999,)).get(timeout=10))
show("demo.customer_tickets(1)", app.send_task("demo.customer_tickets", args=(1,)).get(timeout=10))
start = time.time()
customer = app.send_task("demo.get_customer", args=(2,)).get(timeout=10)
show("demo.get_customer(2) (warmed by celeriac warm)", f"{customer} in {(time.time() - start) * 1000:.1f} ms")
