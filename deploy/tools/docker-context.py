"""Check a Dockerfile's build context the way Docker computes it.

Usage: docker-context.py ROOT DOCKERFILE IGNOREFILE [OUT_DIR]

The context is ROOT minus the IGNOREFILE patterns, matched by docker-py's own .dockerignore
matcher (docker.utils.build.exclude_paths). Every source of a COPY/ADD that reads the context
(no --from) must be in it, with at least one file. With OUT_DIR, the files those instructions
copy are written there, laid out as in the context, so later checks can run on exactly what
the build stage sees. Exits 1 (listing what is missing) when a source is not in the context.
"""

import fnmatch
import json
import os
import shlex
import shutil
import sys

from docker.utils.build import exclude_paths


def instructions(dockerfile):
    """(keyword, arguments) of each instruction, continuation lines joined."""
    with open(dockerfile, encoding="utf-8") as f:
        lines = f.read().splitlines()
    joined, current = [], ""
    for line in lines:
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        joined.append(current)
        current = ""
    if current:
        joined.append(current)
    for text in joined:
        keyword, _, rest = text.partition(" ")
        yield keyword.upper(), rest.strip()


def context_sources(dockerfile):
    """The context paths each COPY/ADD without --from reads."""
    for keyword, rest in instructions(dockerfile):
        if keyword not in ("COPY", "ADD"):
            continue
        if rest.startswith("["):
            args = json.loads(rest)
        else:
            args = shlex.split(rest)
        flags = [a for a in args if a.startswith("--")]
        if any(f.startswith("--from=") for f in flags):
            continue
        paths = [a for a in args if not a.startswith("--")]
        for source in paths[:-1]:
            yield os.path.normpath(source)


def main():
    if len(sys.argv) not in (4, 5):
        print(__doc__, file=sys.stderr)
        return 2
    root, dockerfile, ignorefile = sys.argv[1:4]
    out_dir = sys.argv[4] if len(sys.argv) == 5 else None
    with open(ignorefile, encoding="utf-8") as f:
        patterns = [
            line.strip() for line in f if line.strip() and not line.startswith("#")
        ]
    rel_dockerfile = os.path.relpath(dockerfile, root)
    context = exclude_paths(root, patterns, dockerfile=rel_dockerfile)
    files = sorted(p for p in context if os.path.isfile(os.path.join(root, p)))
    missing = []
    copied = set()
    for source in context_sources(dockerfile):
        if source == ".":
            chosen = files
        else:
            chosen = [
                p
                for p in files
                if p == source
                or p.startswith(source + "/")
                or fnmatch.fnmatchcase(p, source)
            ]
        if not chosen:
            missing.append(source)
        copied.update(chosen)
    if missing:
        for source in missing:
            print(
                f"{dockerfile}: COPY source `{source}` is not in the build context "
                f"({ignorefile} leaves it out)",
                file=sys.stderr,
            )
        return 1
    print(f"build context: {len(files)} files, {len(copied)} copied by the build stage")
    if out_dir:
        for rel in copied:
            target = os.path.join(out_dir, rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(os.path.join(root, rel), target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
