"""Write seeds for the worker's fuzz targets (corpus/config/, corpus/bind_call/; not committed).

config: each TOML file of the repository's examples, NUL, environment lines (a few realistic
ones, with passwords the target checks are never shown). bind_call: key template NUL SQL NUL
`[args, kwargs]` from the examples' query tasks.
"""
import hashlib
import json
import pathlib

here = pathlib.Path(__file__).resolve().parent
root = here.parent.parent
env_sets = [
    "",
    "CELERY_BROKER_URL=redis://:fuzz-s3cret@redis:6379/0\nCELERY_TASK_ACKS_LATE=true\n",
    "CELERY_RESULT_BACKEND=rediss://u:fuzz-s3cret@h:6380/1?ssl_cert_reqs=required\n"
    "CELERY_BROKER_TRANSPORT_OPTIONS={\"visibility_timeout\": 60, \"password\": \"fuzz-s3cret\"}\n"
    "CELERY_WORKER_CONCURRENCY=4\nCELERY_ACCEPT_CONTENT=json,msgpack\n",
    "CELERY_TASK_SERIALIZER=auth\nCELERY_ACCEPT_CONTENT=auth\nCELERY_SECURITY_KEY=/k.pem\n"
    "CELERY_SECURITY_KEY_PASSWORD=fuzz-s3cret\nCELERY_SECURITY_CERT_STORE=/certs/*.pem\n"
    "CELERY_SECURITY_DIGEST=sha512\n",
    "CELERIAC_SOURCE_MAIN_URL=postgres://app:fuzz-s3cret@db/app?sslmode=verify-full\n"
    "CELERIAC_MAX_MESSAGE_BYTES=1048576\nCELERY_TASK_DEFAULT_RATE_LIMIT=10/s\n",
]
tomls = [p.read_text() for p in sorted(root.glob("**/*.toml"))
         if "target" not in p.parts and p.name not in ("Cargo.toml", "rustfmt.toml")]
tomls.append('broker_url = "redis://:fuzz-s3cret@h/0"\n[celeriac]\nmetrics_port = 9100\n')


def write(target, data):
    out = here / "corpus" / target
    out.mkdir(parents=True, exist_ok=True)
    (out / hashlib.sha1(data).hexdigest()).write_bytes(data)


n = 0
for t in tomls:
    for env in env_sets:
        write("config", (t + "\0" + env).encode())
        n += 1
calls = [
    ("ticket:{ticket_id}", "SELECT id, title FROM tickets WHERE id = :ticket_id", [[7], {}]),
    ("ticket:{ticket_id}", "SELECT id FROM t WHERE id = :ticket_id", [[], {"ticket_id": "1 OR 1=1"}]),
    ("customer:{customer_id}:tickets:{status}",
     "SELECT * FROM t WHERE customer_id = :customer_id AND status = :status -- :x\n AND ':y' = ':y'",
     [[3, "open"], {}]),
    ("k:{a}", "SELECT :a::int, :a, \"col:b\", [x:c] /* :d */", [[None], {}]),
]
for key, sql, call in calls:
    write("bind_call", f"{key}\0{sql}\0{json.dumps(call)}".encode())
    n += 1
print(f"wrote {n} seeds under {here / 'corpus'}")
