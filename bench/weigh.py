"""``python -m bench.weigh``: what one interpreter holds once it has imported each part of the shipped config.

Each row is a fresh interpreter that imports what a server process would before
serving (a stack as gunicorn imports its ``wsgi`` module, Django's URLconf
included; the gateway with the shipped config; all of it, as Stackgate's
supervisor holds it when it forks), freezes its heap and reads its own
``/proc/self/smaps_rollup``. Anonymous pages are counted once in any process
tree that holds them, so a tree with one such process weighs at least that much:
the floor under ``bench.memory``'s figures (docs/performance.md#memory).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Optional, Sequence

from bench import report
from bench.model import ROOT, STACKS

_PROBE = r"""
import gc, importlib, json, os, sys
gc.disable()
parts = sys.argv[1].split(",") if sys.argv[1] else []
if "gateway" in parts:
    importlib.import_module("gateway.app")
    from gateway.config import load_config
    load_config(os.path.join(os.getcwd(), "config.toml"))
for spec in sys.argv[2:]:
    module, _, attr = spec.partition(":")
    getattr(importlib.import_module(module), attr)
if "django.apps" in sys.modules and sys.modules["django.apps"].apps.ready:
    from django.urls import get_resolver
    get_resolver().url_patterns
gc.freeze()
fields = {}
with open("/proc/self/smaps_rollup") as f:
    for line in f:
        name, _, rest = line.partition(":")
        if rest.strip().endswith("kB"):
            fields[name] = int(rest.split()[0]) * 1024
print(json.dumps({"modules": len(sys.modules), "rss": fields["Rss"], "pss": fields["Pss"], "anon": fields["Anonymous"]}))
"""

CASES: list[tuple[str, str, list[str]]] = [
    ("python alone", "", []),
    ("the Flask stack (a gunicorn worker's imports)", "", [STACKS["flask"].app]),
    ("the Django stack and its URLconf", "", [STACKS["django"].app]),
    ("both stacks", "", [STACKS["django"].app, STACKS["flask"].app]),
    ("the gateway, shipped config", "gateway", []),
    ("the gateway and both stacks (the supervisor at its fork)", "gateway", [STACKS["django"].app, STACKS["flask"].app]),
]


def weigh(parts: str, apps: list[str], env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE, parts, *apps], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.weigh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=1, help="runs of each row; the median is shown (default 1)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    data = tempfile.mkdtemp(prefix="stackgate-bench-weigh-")
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "SCRIPT_NAME")}
    env.update(STACKGATE_DATA_DIR=data, STACKGATE_MIGRATE="0", PYTHONPATH=str(ROOT))
    rows, records = [], []
    for title, parts, apps in CASES:
        runs = sorted((weigh(parts, apps, env) for _ in range(max(1, args.repeats))), key=lambda r: r["rss"])
        record = dict(runs[len(runs) // 2], case=title)
        records.append(record)
        mib = lambda key: f"{record[key] / 2**20:.1f}"  # noqa: E731
        rows.append([title, str(record["modules"]), mib("rss"), mib("anon"), mib("pss")])
    print(report.table(["one interpreter holding", "modules", "RSS", "anonymous", "PSS"], rows, right={1, 2, 3, 4}))
    print("\nMiB. A process tree that contains the last row holds at least its anonymous pages, once.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
