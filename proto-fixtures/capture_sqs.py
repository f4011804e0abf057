"""Capture what real Celery/kombu leaves in Amazon SQS, for celeriac's SQS transport tests.

Starts moto's SQS emulator (server mode, a free loopback port), makes a Celery app on
`sqs://testing:testing@127.0.0.1:<port>` (transport options `region`, `is_secure: False`), runs
each producer call, then receives every message of the queue with boto3 (raw, as SQS holds it)
and records it beside kombu's own view of it: the text kombu's SQS channel decodes from the body
(`_decode_python_message_body`), the payload its `_message_to_python` builds, and the
`kombu.Message` Celery's worker gets (headers, properties, delivery_info, decoded body).

Writes `fixtures/sqs/celery-<version>/<case>.json` and `INDEX.json`. Run with the test venv
(tests/requirements.txt has celery[sqs] and moto[server]):
`.venv-test/bin/python proto-fixtures/capture_sqs.py`.
"""

import json
import os
import platform
import socket
import subprocess
import sys
import time

import boto3
import celery
import kombu
import moto
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps

from capture import write_json
from capture_app import make_app

HERE = os.path.dirname(os.path.abspath(__file__))

# (case, description, transport options beyond the base ones, app settings, SQS queue name, producer call)
CASES = [
    ("args_positional", "add.delay(2, 3) on the default queue", {}, {}, "celery",
     "add.delay(2, 3)"),
    ("kwargs_countdown", "kwargs and a countdown (Celery holds the ETA in the worker)", {}, {},
     "celery", "add.apply_async(kwargs={'x': 1, 'y': 2 ** 70}, countdown=60)"),
    ("queue_name_prefix", "queue_name_prefix 'myapp-': the SQS queue is myapp-celery",
     {"queue_name_prefix": "myapp-"}, {}, "myapp-celery", "add.delay(4, 5)"),
    ("queue_dots", "a queue named jobs.high: SQS names replace '.' with '-'", {}, {},
     "jobs-high", "add.apply_async((6, 7), queue='jobs.high')"),
    ("fifo_queue", "a FIFO queue jobs.fifo (MessageGroupId 'default', a fresh deduplication id)",
     {}, {}, "jobs.fifo", "add.apply_async((8, 9), queue='jobs.fifo')"),
    ("no_base64", "sqs_base64_encoding False: the JSON envelope as the body",
     {"sqs_base64_encoding": False}, {}, "celery", "add.delay(10, 11)"),
    ("chain", "a chain (the next signature rides in the body's embed)", {}, {}, "celery",
     "(add.s(1, 2) | mul.s(3)).delay()"),
    ("unicode_priority", "non-ASCII arguments and a priority", {}, {}, "celery",
     "echo.apply_async(('héllo ☃',), priority=3)"),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("moto server did not start")


def sqs_client(port):
    return boto3.client(
        "sqs", region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )


def receive_all(client, url):
    got = []
    while True:
        resp = client.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
            MessageSystemAttributeNames=["All"], MessageAttributeNames=["All"],
        )
        msgs = resp.get("Messages", [])
        if not msgs:
            return got
        got.extend(msgs)


def kombu_view(app, queue, raw_message, url):
    """What a Celery worker on kombu's SQS channel makes of one received message."""
    with app.connection_for_read() as conn:
        ch = conn.default_channel
        text = bytes_to_str(ch._decode_python_message_body(raw_message["Body"]))
        payload = ch._message_to_python(dict(raw_message), queue, url)
        message = ch.Message(payload, channel=ch)
        delivery_info = dict(message.delivery_info)
        sqs_message = delivery_info.pop("sqs_message")
        return {
            "decoded_text": text,
            "payload_keys": sorted(payload.keys()),
            "delivery_info": delivery_info,
            "sqs_message_keys": sorted(sqs_message.keys()),
            "delivery_tag_is_receipt_handle": message.delivery_tag == raw_message["ReceiptHandle"],
            "headers": message.headers,
            "properties": {k: v for k, v in message.properties.items() if k != "delivery_info"},
            "content_type": message.content_type,
            "content_encoding": message.content_encoding,
            "body": json.loads(dumps(message.decode())),
        }


def capture_case(port, case, description, options, settings, sqs_name, call):
    client = sqs_client(port)
    transport_options = {"region": "us-east-1", "is_secure": False, **options}
    app = make_app(
        f"sqs://testing:testing@127.0.0.1:{port}", "cache+memory://",
        broker_transport_options=transport_options, **settings,
    )
    scope = {name.split(".")[-1]: task for name, task in app.tasks.items()
             if name.startswith("tasks.")}
    exec(call, scope)
    url = client.get_queue_url(QueueName=sqs_name)["QueueUrl"]
    received = receive_all(client, url)
    messages = []
    for m in received:
        celery_queue = m.get("MessageAttributes", {})
        messages.append({
            "sqs_queue": sqs_name,
            "raw": m["Body"],
            "group_id": m.get("Attributes", {}).get("MessageGroupId"),
            "has_deduplication_id": "MessageDeduplicationId" in m.get("Attributes", {}),
            "message_attributes": celery_queue,
            "expected": kombu_view(app, sqs_name, m, url),
        })
        # Each case receives (and deletes) everything it sent: the next starts from empty queues.
        client.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return {
        "case": case, "celery_version": celery.__version__, "kombu_version": kombu.__version__,
        "description": description, "transport_options": transport_options,
        "producer_call": call, "messages": messages,
    }


def main():
    out = os.path.join(HERE, "fixtures", "sqs", f"celery-{celery.__version__}")
    os.makedirs(out, exist_ok=True)
    proc, port = start_moto()
    try:
        index = []
        for case, description, options, settings, sqs_name, call in CASES:
            data = capture_case(port, case, description, options, settings, sqs_name, call)
            write_json(os.path.join(out, f"{case}.json"), data)
            index.append({"case": case, "description": description,
                          "messages": len(data["messages"])})
            print(f"{case}: {len(data['messages'])} message(s)")
        write_json(os.path.join(out, "INDEX.json"), {
            "celery_version": celery.__version__, "kombu_version": kombu.__version__,
            "boto3_version": boto3.__version__, "moto_version": moto.__version__,
            "python_version": platform.python_version(), "cases": index,
        })
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    main()
