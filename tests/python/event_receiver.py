"""Print every Celery event received (one JSON object a line), as Flower's receiver gets them.

Prints LISTENING once its subscription is live (it has seen its own probe event), and for each
event also the task/worker state Celery's `events.State` (what Flower builds on) derives. A batched
`task.multi` message is also printed as `{"batch": [<event types>]}` before its events.
"""
import json
import threading
import time

from celery_app import app

state = app.events.State()
seen_probe = threading.Event()


def on_event(event):
    if event.get("type") == "worker-probe":
        seen_probe.set()
        return
    state.event(event)
    out = {"event": event}
    if event.get("uuid"):
        task = state.tasks.get(event["uuid"])
        if task is not None:
            out["task_state"] = {"state": task.state, "name": task.name, "result": task.result,
                                 "runtime": task.runtime, "exception": task.exception,
                                 "worker": task.worker.hostname if task.worker else None}
    host = event.get("hostname")
    if host in state.workers:
        w = state.workers[host]
        out["worker_alive"] = w.alive
    print(json.dumps(out, default=repr), flush=True)


def capture():
    with app.connection() as conn:
        receiver = app.events.Receiver(conn, handlers={"*": on_event})
        split = receiver._receive

        def receive(body, message):
            # A batched `task.multi` message is a list: note its event types, then let Celery split it.
            if isinstance(body, list):
                print(json.dumps({"batch": [e.get("type") for e in body]}), flush=True)
            split(body, message)

        receiver._receive = receive
        receiver.capture(limit=None, timeout=None, wakeup=False)


threading.Thread(target=capture, daemon=True).start()
with app.events.default_dispatcher() as dispatcher:
    while not seen_probe.wait(0.2):
        dispatcher.send("worker-probe")
print("LISTENING", flush=True)
while True:
    time.sleep(1)
