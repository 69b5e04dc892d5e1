"""``python -m bench.memory``: the memory of ``stackgate run --workers 2`` against two nginx -> gunicorn -w2 deployments.

Starts, in interleaved repeats, Stackgate with the shipped ``config.toml``
(plus the benchmark's consumers, so that a load gets past its auth and
throttle) and the two deployments it replaces (configuration ``a`` of
``bench/run`` for Flask and for Django); measures each process tree idle and
after a short wrk load (item and list requests), and prints RSS, PSS and USS
per process, the shared share of each tree, the time to serving, and
Stackgate's tree PSS against the sum of the two deployments' (the issue's
target: at most 50 %). A few minutes at most.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

from bench import install, procs, report, wrk
from bench.configs import HEALTH, WORKERS, Context, build_a, free_port
from bench.model import ANONYMOUS, ROOT, STACKS, WORKLOADS, Consumer, ProcSpec, Ready, Target
from bench.seed import prepare

MiB = 2**20
TARGET_SHARE = 0.5
"""The issue's target: Stackgate's tree at most this share of the two deployments' summed PSS."""
_SERVER_ENV_DROP = ("DATABASE_URL", "SCRIPT_NAME", "STACKGATE_CONFIG", "STACKGATE_LOG_LEVEL", "PROMETHEUS_MULTIPROC_DIR", "DJANGO_DEBUG")


def default_config(consumers: Sequence[Consumer], source: Path = ROOT / "config.toml") -> str:
    """The shipped config, with the benchmark's consumers appended (roles as its own users)."""
    lines = [source.read_text(), ""]
    for consumer in consumers:
        lines += [f"[consumers.{consumer.name}]", 'roles = ["user"]', f'api_keys = ["sha256:{consumer.key_hash}"]', ""]
    return "\n".join(lines)


def stackgate_target(ctx: Context, folder: Path, workers: int, source: Path) -> Target:
    path = folder / "stackgate.toml"
    path.write_text(default_config(ctx.consumers, source))
    port = free_port()
    spec = ProcSpec(
        "stackgate",
        [ctx.python, "-m", "gateway", "run", "--config", str(path), "--port", str(port), "--workers", str(workers)],
        dict(ctx.env),
        Ready(port, HEALTH),
    )
    return Target("stackgate", "both", [spec], port, "", ctx.keyed(), {"stackgate": path})


def requests_of(target: Target) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    """Item and list requests; for Stackgate, on both stacks' prefixes."""
    prefixes = [s.prefix for s in STACKS.values()] if target.config == "stackgate" else [target.prefix]
    out = []
    for prefix in prefixes:
        for workload in WORKLOADS.values():
            out += [(workload.path(prefix, c.todo_id), c.headers) for c in target.clients]
    return out


def measure(target: Target, folder: Path, settle: float, load: int, concurrency: int, log) -> dict:
    group = procs.Group(folder)
    record: dict = {"name": _name(target), "error": None}
    try:
        started = time.monotonic()
        for proc in target.procs:
            group.start(proc)
        record["start_s"] = time.monotonic() - started
        time.sleep(settle)
        roots = group.roots()
        record["idle"] = procs.memory(procs.tree(roots), roots)
        if load:
            script = folder / "load.lua"
            script.write_text(wrk.script(requests_of(target)))
            result = wrk.run(target.url, script, 2, concurrency, load)
            record["load"] = {k: result.get(k) for k in ("requests", "rps", "non_2xx", "socket_errors")}
            roots = group.roots()
            record["after"] = procs.memory(procs.tree(roots), roots)
        if not group.alive():
            record["error"] = "a server process exited"
    except (procs.StartError, RuntimeError, OSError) as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        group.stop()
    log(f"  {record['name']}: start {record.get('start_s', 0):.2f} s, PSS idle {_mib(record.get('idle'))} MiB, "
        f"after {_mib(record.get('after'))} MiB" + (f"  !! {record['error']}" if record["error"] else "")
        + (f", {record['load']['rps']:.0f} req/s, {record['load']['non_2xx']} non-2xx" if record.get("load") else ""))
    return record


def _name(target: Target) -> str:
    return "stackgate" if target.config == "stackgate" else f"{target.config}-{target.stack}"


def _mib(measured: Optional[dict]) -> str:
    return "-" if not measured else f"{measured['pss'] / MiB:.0f}"


def _median(values) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(records: list[dict]) -> dict:
    """Per target: median start and tree PSS/RSS/USS idle and after; and Stackgate against the two deployments."""
    names: dict[str, list[dict]] = {}
    for r in records:
        if not r["error"]:
            names.setdefault(r["name"], []).append(r)
    rows = {}
    for name, group in names.items():
        row = {"runs": len(group), "start_s": _median(r.get("start_s") for r in group)}
        for phase in ("idle", "after"):
            for key in ("rss", "pss", "uss", "shared"):
                row[f"{key}_{phase}"] = _median(r[phase][key] for r in group if r.get(phase))
        rows[name] = row
    out: dict = {"targets": rows}
    peers = [f"a-{stack}" for stack in STACKS]
    if "stackgate" in rows and all(p in rows for p in peers):
        for phase in ("idle", "after"):
            # Per repeat, Stackgate against the two deployments of the same repeat; then the median.
            by_repeat: dict[int, dict[str, float]] = {}
            for r in records:
                if not r["error"] and r.get(phase):
                    by_repeat.setdefault(r["repeat"], {})[r["name"]] = r[phase]["pss"]
            shares = [v["stackgate"] / sum(v[p] for p in peers) for v in by_repeat.values() if "stackgate" in v and all(p in v for p in peers)]
            out[f"share_{phase}"] = _median(shares)
            out[f"share_{phase}_max"] = max(shares) if shares else None
            out[f"peers_pss_{phase}"] = sum(rows[p][f"pss_{phase}"] or 0 for p in peers)
    return out


def render(summary: dict, last: list[dict]) -> str:
    out = []
    for record in last:
        for phase in ("idle", "after"):
            if record.get(phase):
                out.append(f"== {record['name']}, {phase} ==")
                out.append(report.process_table(record[phase]))
                out.append("")
    rows = []
    for name, row in summary["targets"].items():
        rows.append([name, str(row["runs"]), *(report._mib(row[f"{k}_{p}"]) for p in ("idle", "after") for k in ("rss", "pss", "uss")),
                     report._pct(row["shared_after"]), report._fmt(row["start_s"], ".2f")])
    out.append("== whole process trees, medians over the repeats (MiB; shared: the part of the PSS in shared pages) ==")
    out.append(report.table(["target", "runs", "RSS idle", "PSS idle", "USS idle", "RSS after", "PSS after", "USS after",
                             "shared", "start s"], rows, right=set(range(1, 10))))
    out.append("")
    for phase in ("idle", "after"):
        share = summary.get(f"share_{phase}")
        if share is not None:
            verdict = "meets" if summary[f"share_{phase}_max"] <= TARGET_SHARE else "misses"
            out.append(f"stackgate / (a-flask + a-django) PSS, {phase}: median {100 * share:.0f} %, worst {100 * summary[f'share_{phase}_max']:.0f} % "
                       f"(of {summary[f'peers_pss_{phase}'] / MiB:.0f} MiB; target <= {100 * TARGET_SHARE:.0f} %: {verdict})")
    return "\n".join(out).rstrip() + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (default 3)")
    parser.add_argument("--load", type=int, default=5, help="seconds of wrk load before the 'after' figures (default 5; 0: idle only)")
    parser.add_argument("--concurrency", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--settle", type=float, default=1.0, help="idle seconds after start before the idle figures (default 1)")
    parser.add_argument("--workers", type=int, default=WORKERS, help=f"stackgate run --workers (default {WORKERS})")
    parser.add_argument("--config", type=Path, default=ROOT / "config.toml", help="the Stackgate config to measure (default: the shipped one)")
    parser.add_argument("--only", choices=["stackgate", "peers"], help="measure only Stackgate, or only the two deployments")
    parser.add_argument("--consumers", type=int, default=100, help="API keys the load rotates through (default 100: under the shipped rates)")
    parser.add_argument("--json", type=Path, help="also write the records and the summary there")
    parser.add_argument("--no-install", action="store_true", help="do not apt-get/pip install what is missing")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: (_ for _ in ()).throw(SystemExit(128 + signum)))
    if not args.no_install:
        install.ensure()
    workdir = Path(tempfile.mkdtemp(prefix="stackgate-bench-memory-"))
    records: list[dict] = []
    try:
        data = workdir / "data"
        data.mkdir()
        env = {k: v for k, v in os.environ.items() if k not in _SERVER_ENV_DROP}
        env["STACKGATE_DATA_DIR"] = str(data)
        consumers = Consumer.many(args.consumers)
        owners = prepare(sys.executable, env, [ANONYMOUS, *(c.name for c in consumers)])
        ctx = Context(python=sys.executable, env=env, owners=owners, consumers=consumers)
        print(f"command: {' '.join([sys.executable, '-m', 'bench.memory', *(argv if argv is not None else sys.argv[1:])])}")
        for repeat in range(args.repeats):
            print(f"repeat {repeat + 1}/{args.repeats}")
            builders = []
            if args.only != "peers":
                builders.append(lambda folder: stackgate_target(ctx, folder, args.workers, args.config))
            if args.only != "stackgate":
                builders += [lambda folder, stack=stack: build_a(ctx, stack, folder) for stack in STACKS]
            for number, build in enumerate(builders):
                folder = workdir / f"r{repeat}-{number}"
                folder.mkdir()
                record = measure(build(folder), folder, args.settle, args.load, args.concurrency, print)
                record["repeat"] = repeat
                records.append(record)
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    summary = summarize(records)
    last = [r for r in records if r["repeat"] == max(r["repeat"] for r in records)] if records else []
    print()
    print(render(summary, last), end="")
    if args.json:
        args.json.write_text(json.dumps({"records": records, "summary": summary}, indent=1, default=str) + "\n")
    return 1 if any(r["error"] for r in records) else 0


if __name__ == "__main__":
    raise SystemExit(main())
