"""Write the rule groups of every PrometheusRule in a rendered manifest to
OUT_DIR/<name>.rules.yaml, the file format promtool reads."""

import os
import sys

import yaml


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: split-rules.py RENDERED.yaml OUT_DIR", file=sys.stderr)
        return 2
    rendered, out_dir = sys.argv[1], sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    with open(rendered, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    rules = [d for d in docs if d.get("kind") == "PrometheusRule"]
    if not rules:
        print(f"{rendered}: no PrometheusRule", file=sys.stderr)
        return 1
    for rule in rules:
        path = os.path.join(out_dir, f"{rule['metadata']['name']}.rules.yaml")
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump({"groups": rule["spec"]["groups"]}, f, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
