"""Latency benchmark at everyday load: the demo worker with its defaults (no -c) and a Python Celery
prefork worker (-c 2), one after the other on the same private Redis, in the same run.

Per worker:
* sparse round trips: N `demo.add` sends one at a time with a pause between sends (250 ms, 600 ms,
  1.1 s), time from `send_task()` to `AsyncResult.get()` returning: p50 / p99;
* burst after idle: the worker idles, then B tasks are sent at once: time from the first send to
  the last stored result;
* idle Redis commands per second: INFO commandstats over an idle window (the benchmark's own
  INFO/CONFIG calls excluded).
Prints a Markdown table. Figures, not a test: run it on an idle machine.

`--breakdown`: afterwards, each worker again with task events on (`-E`), `-n` sends at
`--breakdown-pause` (250 ms), and where each round trip's time goes, p50 / p99 per part: the
`send_task()` call itself; send -> the worker's `task-received` event; `task-received` ->
`task-succeeded`; `task-succeeded` -> `get()` returned; and the same split at the result's
`date_done` (`task-received` -> result stored -> `get()` returned). Every point is a reading of
this machine's wall clock (`time.time()` here, the workers' event timestamps, `date_done`;
microsecond resolution, no skew between them, but separate reads): a part's p50 / p99 is over that
part alone, so parts do not add up to the total's. A Python prefork worker's `task-succeeded`
is sent by its parent after the child has stored the result, so its succeeded -> `get()` can be
below zero. Task events add work to every task, so these totals are not the table's figures.

Small check: `.venv-test/bin/python bench/latency.py -n 5 --idle 2 --burst 20 --burst-idle 1
--breakdown --celeriac target/debug/examples/demo`
"""

import argparse
import datetime
import functools
import os
import sys
import threading
import time

from benchlib import (add_celeriac_arg, bench_app, command_calls, load, now, p50_p99, private_redis, produce,
                      python_worker, round_trips, running, scratch, stored, table, worker_env)

PAUSES = (0.25, 0.6, 1.1)
PARTS = (
    ("send_task() call", "send", "sent"),
    ("send -> task-received", "send", "received"),
    ("task-received -> task-succeeded", "received", "succeeded"),
    ("task-succeeded -> get() returned", "succeeded", "got"),
    ("task-received -> result stored (date_done)", "received", "done"),
    ("result stored -> get() returned", "done", "got"),
    ("send -> get() returned (total, events on)", "send", "got"),
)


def burst(app, r, b):
    t0 = time.perf_counter()
    ids = produce(app, b)
    deadline = time.time() + 300
    while time.time() < deadline:
        if all(v is not None for v in stored(r, ids)):
            return (time.perf_counter() - t0) * 1000
        time.sleep(0.005)
    sys.exit(f"the burst of {b} did not finish")


def run_one(name, cmd, env, r, app, args, log):
    r.flushdb()
    with running(cmd, env, log):
        app.send_task("demo.add", args=(0, 0)).get(timeout=120)  # ready
        row = {"name": name}
        for pause in PAUSES:
            row[pause] = round_trips(app, args.n, pause)
        time.sleep(2)
        r.config_resetstat()
        before = command_calls(r, exclude_own=True)
        time.sleep(args.idle)
        row["idle_cmds"] = (command_calls(r, exclude_own=True) - before) / args.idle
        time.sleep(args.burst_idle)
        row["burst_ms"] = burst(app, r, args.burst)
        return row


class TaskEvents:
    """Task events captured in a thread: {task id: {event type: the worker's timestamp}}. The
    timestamps are kept as sent (not shifted by the receiver's UTC offset handling)."""

    def __init__(self, app):
        self.seen = {}
        self.conn = app.connection()
        self.recv = app.events.Receiver(self.conn, handlers={"*": self.on_event})
        self.recv.event_from_message = functools.partial(self.recv.event_from_message, localize=False)
        self.thread = threading.Thread(target=self.recv.capture, kwargs={"wakeup": False}, daemon=True)
        self.thread.start()

    def on_event(self, event):
        if event["type"] in ("task-received", "task-succeeded"):
            self.seen.setdefault(event["uuid"], {})[event["type"].removeprefix("task-")] = event["timestamp"]

    def wait(self, task_id, kind, timeout):
        deadline = time.time() + timeout
        while kind not in self.seen.get(task_id, {}):
            if time.time() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self):
        self.recv.should_stop = True
        self.thread.join(timeout=10)
        self.conn.release()


def date_done(app, r, task_id):
    meta = app.backend.decode(r.get(f"celery-task-meta-{task_id}"))
    d = datetime.datetime.fromisoformat(meta["date_done"])
    return (d if d.tzinfo else d.replace(tzinfo=datetime.timezone.utc)).timestamp()


def breakdown(name, cmd, env, r, app, args, log):
    """`args.n` round trips to `cmd` (task events on), `args.breakdown_pause` apart: {part: (p50, p99)} in ms."""
    r.flushdb()
    events = TaskEvents(app)
    try:
        with running(cmd, env, log):
            app.send_task("demo.add", args=(0, 0)).get(timeout=120)  # ready
            deadline = time.time() + 60
            while True:  # the receiver is subscribed once a probe's task-received reaches it
                probe = app.send_task("demo.add", args=(0, 0))
                probe.get(timeout=30)
                if events.wait(probe.id, "received", 2):
                    break
                if time.time() > deadline:
                    sys.exit(f"{name}: no task events in 60 s")
            points = []
            for i in range(args.n):
                t = {"send": time.time()}
                res = app.send_task("demo.add", args=(i, 1))
                t["sent"] = time.time()
                got = res.get(timeout=30)
                t["got"] = time.time()
                if got != i + 1:
                    sys.exit(f"demo.add({i}, 1) returned {got!r}")
                t["id"] = res.id
                points.append(t)
                time.sleep(args.breakdown_pause)
            for t in points:
                if events.wait(t["id"], "succeeded", 10):
                    t.update(events.seen[t["id"]], done=date_done(app, r, t["id"]))
    finally:
        events.close()
    whole = [t for t in points if "received" in t and "succeeded" in t]
    if not whole:
        sys.exit(f"{name}: no round trip has both task events")
    parts = {label: p50_p99([(t[b] - t[a]) * 1000 for t in whole]) for label, a, b in PARTS}
    return {"name": name, "parts": parts, "counted": len(whole)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=100, help="sends per pause")
    ap.add_argument("--idle", type=float, default=60, help="seconds of the idle-commands window")
    ap.add_argument("--burst", type=int, default=1000, help="tasks sent at once after idling")
    ap.add_argument("--burst-idle", type=float, default=10, help="seconds idle before the burst")
    add_celeriac_arg(ap)
    ap.add_argument("--breakdown", action="store_true",
                    help="then, each worker with task events on: where a round trip's time goes")
    ap.add_argument("--breakdown-pause", type=float, default=0.25, help="seconds between sends in the breakdown")
    args = ap.parse_args()

    with scratch() as tmp, private_redis(tmp) as (url, r, _):
        env = worker_env(url)
        app = bench_app()
        log = open(os.path.join(tmp, "workers.log"), "w")
        workers = [("celeriac (demo worker, defaults)", [args.celeriac]),
                   ("Python Celery prefork (-c 2)", python_worker("prefork", ["-c", "2"]))]
        rows = [run_one(name, cmd, env, r, app, args, log) for name, cmd in workers]
        split = [breakdown(name, cmd + ["-E"], env, r, app, args, log) for name, cmd in workers] if args.breakdown else []
        print(f"{now()}, {os.cpu_count()} cores, "
              f"load average {load()}; {args.n} sends per pause, "
              f"burst of {args.burst} after {args.burst_idle:g} s idle, idle window {args.idle:g} s\n")
        table(["worker"] + [f"{int(p * 1000)} ms pause p50 / p99 (ms)" for p in PAUSES]
              + ["burst after idle (ms)", "idle Redis cmds/s"],
              [[row["name"]] + [f"{row[p][0]:.1f} / {row[p][1]:.1f}" for p in PAUSES]
               + [f"{row['burst_ms']:.0f}", f"{row['idle_cmds']:.2f}"] for row in rows])
        if split:
            print(f"\nBreakdown: each worker again with task events on (-E), {args.n} sends "
                  f"{args.breakdown_pause * 1000:g} ms apart; points read from this machine's wall clock (here, the "
                  f"worker's event timestamps, the result's date_done); each part's p50 / p99 over that part alone\n")
            table(["worker", "part", "p50 (ms)", "p99 (ms)", "round trips"],
                  [[row["name"], label, f"{row['parts'][label][0]:.2f}", f"{row['parts'][label][1]:.2f}",
                    str(row["counted"])] for row in split for label, _, _ in PARTS], left=2)


if __name__ == "__main__":
    main()
