"""Capture what Celery's `auth` serializer (message signing) writes, for celeriac's signing tests.

Makes a throwaway RSA key and a self-signed certificate (valid for 100 years; test data, never
a real secret), configures a real Celery app with `setup_security()`, and records into
`fixtures/signed/`:

* key.pem (PKCS#8), key-pkcs1.pem, key-encrypted.pem (password `test-password`), cert.pem;
  store/ holds cert.pem and other-cert.pem (a second signer whose key signed nothing here);
* task.json: the Redis list element `echo.apply_async((2, 3), kwargs={"big": 2**70})` leaves,
  and the body Celery's SecureSerializer decodes from it;
* result.json: a result meta signed by the backend's `encode` (what a Python worker with
  `result_serializer="auth"` stores), and what `decode` gives back;
* INDEX.json: versions and the signer id (`"<issuer values> <serial>"`).

Run with the test venv (tests/requirements.txt has cryptography):
`.venv-test/bin/python proto-fixtures/capture_signed.py`.
"""

import datetime
import json
import os
import platform
import sys

import celery
import cryptography
import kombu
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from capture import PrivateRedis, write_json
from capture_app import make_app

HERE = os.path.dirname(os.path.abspath(__file__))


def make_cert(common_name, serial):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "NL"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "celeriac tests"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=36500))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key, key_pem, cert.public_bytes(serialization.Encoding.PEM)


def main():
    out = os.path.join(HERE, "fixtures", "signed")
    os.makedirs(out, exist_ok=True)
    key, key_pem, cert_pem = make_cert("celeriac signing test", 0x1D2C3B4A59687766554433221100FFEE)
    _, _, other_pem = make_cert("celeriac other signer", 4242)
    # The same key as PKCS#1 and as encrypted PKCS#8 (security_key_password "test-password").
    pkcs1_pem = key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption())
    encrypted_pem = key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.BestAvailableEncryption(b"test-password"))
    store = os.path.join(out, "store")
    os.makedirs(store, exist_ok=True)
    for name, data in [("key.pem", key_pem), ("key-pkcs1.pem", pkcs1_pem),
                       ("key-encrypted.pem", encrypted_pem), ("cert.pem", cert_pem)]:
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    for name, data in [("cert.pem", cert_pem), ("other-cert.pem", other_pem)]:
        with open(os.path.join(store, name), "wb") as f:
            f.write(data)

    server = PrivateRedis()
    try:
        app = make_app(
            server.url(0), server.url(1),
            task_serializer="auth", result_serializer="auth", event_serializer="auth",
            accept_content=["auth"], result_accept_content=["auth"],
            security_key=os.path.join(out, "key.pem"),
            security_certificate=os.path.join(out, "cert.pem"),
            security_cert_store=os.path.join(store, "*.pem"),
            security_digest="sha256",
        )
        app.setup_security()
        from celery.security.certificate import Certificate
        from kombu.serialization import loads
        signer_id = Certificate(cert_pem.decode()).get_id()

        app.tasks["tasks.echo"].apply_async((2, 3), kwargs={"big": 2 ** 70}, task_id="signed-1")
        client = server.client(0)
        raw = client.lrange("celery", 0, -1)[0].decode("utf-8")
        envelope = json.loads(raw)
        import base64
        signed_body = base64.b64decode(envelope["body"])
        decoded = loads(signed_body, envelope["content-type"], envelope["content-encoding"],
                        accept=["auth"])
        write_json(os.path.join(out, "task.json"), {
            "producer_call": 'echo.apply_async((2, 3), kwargs={"big": 2 ** 70}, task_id="signed-1")',
            "raw": raw,
            "decoded_body": json.loads(kombu.utils.json.dumps(decoded)),
        })

        backend = app.backend
        meta = {"status": "SUCCESS", "result": 5, "traceback": None, "children": [],
                "date_done": "2026-11-22T08:00:00.000000+00:00", "task_id": "signed-1"}
        stored = backend.encode(meta)
        write_json(os.path.join(out, "result.json"), {
            "stored": stored.decode("utf-8") if isinstance(stored, bytes) else stored,
            "decoded": backend.decode(stored),
        })
        write_json(os.path.join(out, "INDEX.json"), {
            "celery_version": celery.__version__,
            "kombu_version": kombu.__version__,
            "cryptography_version": cryptography.__version__,
            "python_version": platform.python_version(),
            "signer_id": signer_id,
            "digest": "sha256",
        })
    finally:
        server.stop()
    print(f"signed fixtures written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
