"""Migrate and seed the benchmark's database: ``count`` todos for each owner.

Run as ``python -m bench.seed OWNER...`` with ``STACKGATE_DATA_DIR`` set; it
prints ``{"owner": [ids...]}`` as JSON. The schema is applied by
``python -m gateway migrate``, the rows are written with Django's ORM, so
both stacks read them as they read their own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from bench.model import PAGE_SIZE, ROOT


def seed(owners: list[str], count: int) -> dict[str, list[int]]:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backends.django_site.settings")
    import django

    django.setup()
    from backends.django_site.todos.models import Todo

    ids: dict[str, list[int]] = {}
    for owner in owners:
        rows = Todo.objects.bulk_create(Todo(title=f"Benchmark todo {i + 1} of {owner}", owner=owner) for i in range(count))
        ids[owner] = [row.id for row in rows]
    return ids


def prepare(python: str, env: dict[str, str], owners: list[str], count: int = PAGE_SIZE) -> dict[str, list[int]]:
    """Migrate the database named by ``env`` and seed it, each in a child process."""
    subprocess.run([python, "-m", "gateway", "migrate", "--verbosity", "0"], cwd=ROOT, env=env, check=True, timeout=300)
    result = subprocess.run(
        [python, "-m", "bench.seed", "--count", str(count), *owners],
        cwd=ROOT, env=env, check=True, timeout=300, capture_output=True, text=True,
    )
    return {owner: list(ids) for owner, ids in json.loads(result.stdout.strip().splitlines()[-1]).items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=PAGE_SIZE)
    parser.add_argument("owners", nargs="+")
    args = parser.parse_args()
    if not os.environ.get("STACKGATE_DATA_DIR") or os.environ.get("DATABASE_URL"):
        print("bench.seed writes only to a STACKGATE_DATA_DIR database (and no DATABASE_URL)", file=sys.stderr)
        return 2
    assert Path(os.environ["STACKGATE_DATA_DIR"]).is_dir()
    print(json.dumps(seed(args.owners, args.count)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
