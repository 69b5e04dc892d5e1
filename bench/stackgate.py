"""Stackgate configs for the benchmark: the bare route (d0) and the full policy chain (d, e).

The chain's keys are those of the auth, throttle and split policies:
``[consumers.NAME]`` with ``roles`` and ``api_keys = ["sha256:<hex>"]``; on the
route ``auth``, ``roles``, ``throttle`` and either ``split`` or ``backend``;
``[throttle] storage`` and ``[throttle.policies.NAME] rates``. A config that
``stackgate check`` refuses is reported as skipped, with the check's words.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

from bench.model import ROOT, Consumer, Stack

THROTTLE_POLICY = "bench"
THROTTLE_RATE = "100000000/minute"
"""Huge on purpose: the throttle is measured for its cost, never for a refusal."""
ROLE = "user"
ROUTE_NAME = "bench"


def _backends(stacks: Sequence[Stack]) -> list[str]:
    # STACKGATE_BENCH_THREADS=N and STACKGATE_BENCH_OVERLAP_AFTER=S set every backend's `threads` and
    # `overlap_after`, to compare executor settings; default: the config defaults.
    threads = os.environ.get("STACKGATE_BENCH_THREADS")
    overlap = os.environ.get("STACKGATE_BENCH_OVERLAP_AFTER")
    lines = []
    for stack in stacks:
        lines += [f"[backends.{stack.name}]", 'kind = "wsgi"', f'app = "{stack.app}"']
        lines += [f"threads = {int(threads)}"] if threads else []
        lines += [f"overlap_after = {float(overlap)}"] if overlap else []
        lines.append("")
    return lines


def bare_config(stack: Stack, explicit_auth: bool = True) -> str:
    """(d0) one route straight to one backend, no policy: the price of Stackgate itself."""
    lines = _backends([stack])
    lines += ["[[routes]]", f'name = "{ROUTE_NAME}"', f'prefix = "{stack.prefix}"', f'backend = "{stack.name}"']
    if explicit_auth:
        lines.append('auth = "none"')
    return "\n".join(lines) + "\n"


def chain_config(
    stacks: Sequence[Stack],
    prefix: str,
    consumers: Sequence[Consumer],
    storage: str,
    split: Optional[dict[str, int]] = None,
) -> str:
    """(d, e) the full policy chain on one route: API key -> role -> throttle -> split or pinned backend.

    ``split=None`` pins the route to ``stacks[0]`` (``backend = ...``) so that
    each stack's ratio against nginx -> gunicorn means something; otherwise
    the route is split between ``stacks`` with these weights.
    """
    lines = _backends(stacks)
    for consumer in consumers:
        lines += [
            f"[consumers.{consumer.name}]",
            f'roles = ["{ROLE}"]',
            f'api_keys = ["sha256:{consumer.key_hash}"]',
            "",
        ]
    lines += [
        "[throttle]",
        f'storage = "{storage}"',
        "",
        f"[throttle.policies.{THROTTLE_POLICY}]",
        f'rates = ["{THROTTLE_RATE}"]',
        "",
        "[[routes]]",
        f'name = "{ROUTE_NAME}"',
        f'prefix = "{prefix}"',
        'auth = "required"',
        f'roles = ["{ROLE}"]',
        f'throttle = "{THROTTLE_POLICY}"',
    ]
    if split is None:
        lines.append(f'backend = "{stacks[0].name}"')
    else:
        lines.append("split = { " + ", ".join(f"{name} = {weight}" for name, weight in split.items()) + " }")
    return "\n".join(lines) + "\n"


def check(path: Path, python: str = sys.executable) -> Optional[str]:
    """None when ``stackgate check`` accepts the file, else its problems (file name left out)."""
    result = subprocess.run(
        [python, "-m", "gateway", "check", str(path)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    if result.returncode == 0:
        return None
    text = (result.stderr or result.stdout).strip() or f"exit status {result.returncode}"
    return "\n".join(line.replace(f"{path}: ", "", 1) for line in text.splitlines())
