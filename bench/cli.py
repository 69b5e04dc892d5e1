"""``bench/run [--quick] [--configs a,b,d] [--stacks flask,django] ...``: the whole benchmark in one command."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

from bench import install, machine, procs, report
from bench.configs import CONFIGS, Context
from bench.model import ANONYMOUS, ROOT, STACKS, WORKLOADS, Consumer
from bench.runner import Options, Runner
from bench.seed import prepare

RESULTS = ROOT / "bench" / "results"
MODES = {
    # name: repeats, duration s, warmup s
    "full": (3, 5, 2),
    "quick": (1, 1, 1),
}
_SERVER_ENV_DROP = ("DATABASE_URL", "SCRIPT_NAME", "STACKGATE_CONFIG", "STACKGATE_LOG_LEVEL", "PROMETHEUS_MULTIPROC_DIR", "DJANGO_DEBUG")


def _csv(choices: Sequence[str]):
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        bad = [item for item in items if item not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {','.join(choices)} (comma-separated), not {text!r}")
        return items

    return parse


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"a comma-separated list of positive numbers such as 16,64, not {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/run",
        description="Stackgate against nginx -> gunicorn on the same cores: start, drive with wrk, stop, in interleaved repeats.",
        epilog="configurations: " + "; ".join(f"{k} = {v.title}" for k, v in CONFIGS.items()),
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 repeat of 1 s per cell (about 3 minutes)")
    parser.add_argument("--configs", type=_csv(list(CONFIGS)), default=list(CONFIGS), help="which configurations (default: all)")
    parser.add_argument("--stacks", type=_csv(list(STACKS)), default=list(STACKS), help="flask,django (default: both)")
    parser.add_argument("--workloads", type=_csv(list(WORKLOADS)), default=list(WORKLOADS), help="item,list (default: both)")
    parser.add_argument("--concurrency", type=_ints, default=[16, 64], help="wrk connections, e.g. 16,64 (default)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--repeats", type=int, help=f"interleaved repeats (default {MODES['full'][0]}, quick {MODES['quick'][0]})")
    parser.add_argument("--duration", type=int, help=f"seconds per wrk run (default {MODES['full'][1]}, quick {MODES['quick'][1]})")
    parser.add_argument("--warmup", type=int, help=f"seconds of unrecorded load after each start (default {MODES['full'][2]}, quick {MODES['quick'][2]})")
    parser.add_argument("--settle", type=float, default=1.0, help="idle seconds after start before the idle RSS (default 1)")
    parser.add_argument("--consumers", type=int, default=100, help="API keys the chain configurations rotate through (default 100)")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="before each run, wait up to this long for other processes to use under 10%% of the machine (default 0: do not wait)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="folder for the JSON results (default bench/results)")
    parser.add_argument("--no-install", action="store_true", help="do not apt-get/pip install what is missing")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (configs, logs, database) and print its path")
    return parser


def _terminate(signum: int, frame) -> None:
    raise SystemExit(128 + signum)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    mode = MODES["quick" if args.quick else "full"]
    options = Options(
        configs=[c for c in CONFIGS if c in args.configs],
        stacks=args.stacks,
        workloads=[w for w in WORKLOADS if w in args.workloads],
        concurrency=args.concurrency,
        threads=args.threads,
        repeats=args.repeats or mode[0],
        duration=args.duration or mode[1],
        warmup=mode[2] if args.warmup is None else args.warmup,
        consumers=args.consumers,
        settle=args.settle,
        wait_quiet=args.wait_quiet,
    )
    command = os.environ.get("BENCH_COMMAND") or shlex.join([sys.executable, "-m", "bench", *(argv if argv is not None else sys.argv[1:])])
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in the background
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)

    if not args.no_install:
        install.ensure()
    started_at = dt.datetime.now(dt.timezone.utc)
    began = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="stackgate-bench-"))
    runner: Optional[Runner] = None
    status = 0
    interrupted = False
    try:
        info = machine.describe()
        print(f"machine: {machine.one_line(info)}")
        print(f"command: {command}")
        data = workdir / "data"
        data.mkdir()
        env = {k: v for k, v in os.environ.items() if k not in _SERVER_ENV_DROP}
        env["STACKGATE_DATA_DIR"] = str(data)
        consumers = Consumer.many(options.consumers)
        print(f"==> seeding {data} ({options.consumers} consumers + anonymous, 20 todos each)")
        owners = prepare(sys.executable, env, [ANONYMOUS, *(c.name for c in consumers)])
        ctx = Context(python=sys.executable, env=env, owners=owners, consumers=consumers)
        runner = Runner(options, ctx, workdir, keep=args.keep)
        runner.make_plan()
        print(f"==> {len(runner.plan)} targets x {options.repeats} repeats x {len(options.workloads) * len(options.concurrency)} cells "
              f"of {options.duration} s: about {runner.estimate_s() / 60:.0f} min")
        runner.run()
    except KeyboardInterrupt:
        interrupted, status = True, 130
        print("\ninterrupted: stopping the servers; the results so far follow", file=sys.stderr)
    except SystemExit as exc:
        interrupted, status = True, exc.code if isinstance(exc.code, int) else 1
    finally:
        procs.stop_all()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    if runner is None:
        return status or 1
    summary = report.summarize(runner.runs, runner.targets)
    print()
    print(report.render(summary, runner.skipped, runner.notes), end="")
    if interrupted:
        print("interrupted: these are partial results")
    failed = [t for t in runner.targets if t["error"]]
    for t in failed:
        print(f"failed: {t['config']} ({t['stack']}) repeat {t['repeat'] + 1}: {t['error'].splitlines()[0]}")
    results = {
        "command": command,
        "argv": list(argv if argv is not None else sys.argv[1:]),
        "started_at": started_at.isoformat(),
        "elapsed_s": time.monotonic() - began,
        "interrupted": interrupted,
        "options": vars(options),
        "machine": info,
        "configs": {k: {"title": v.title, "scope": v.scope} for k, v in CONFIGS.items()},
        "notes": runner.notes,
        "skipped": runner.skipped,
        "targets": runner.targets,
        "runs": runner.runs,
        "summary": summary,
    }
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / f"{started_at.strftime('%Y%m%dT%H%M%SZ')}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"results: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} ({(time.monotonic() - began) / 60:.1f} min)")
    return status
