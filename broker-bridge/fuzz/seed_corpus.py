"""Write the fixtures' raw messages (and the signed one) as the fuzz corpus seed (corpus/decode/,
not committed)."""
import hashlib
import json
import pathlib

here = pathlib.Path(__file__).resolve().parent
fixtures = here.parent.parent / "proto-fixtures" / "fixtures"
out = here / "corpus" / "decode"
out.mkdir(parents=True, exist_ok=True)
n = 0
for path in sorted(fixtures.glob("celery-*/*.json")):
    if path.name == "INDEX.json":
        continue
    for message in json.loads(path.read_text())["messages"]:
        raw = message["raw"].encode()
        (out / hashlib.sha1(raw).hexdigest()).write_bytes(raw)
        n += 1
signed = json.loads((fixtures / "signed" / "task.json").read_text())["raw"].encode()
(out / hashlib.sha1(signed).hexdigest()).write_bytes(signed)
n += 1
print(f"wrote {n} seeds to {out}")
