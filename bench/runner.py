"""Plan the targets, then start, probe, drive and stop each one, repeat after repeat."""

from __future__ import annotations

import os
import resource
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from bench import stackgate, wrk
from bench.configs import CONFIGS, ConfigSpec, Context, stacks_of
from bench.install import have
from bench.model import NOISY_PCT, PAGE_SIZE, WORKLOADS, Target
from bench.procs import Group, StartError, cpu_by_pid, cpu_seconds, http_get, json_body, memory, others_cpu_seconds, tree

START_OVERHEAD_S = 3.0
"""A guess at start + probe + stop per target, for the time estimate only."""


@dataclass
class Options:
    configs: list[str]
    stacks: list[str]
    workloads: list[str]
    concurrency: list[int]
    threads: int
    duration: int
    warmup: int
    repeats: int
    consumers: int
    settle: float
    wait_quiet: float = 0.0
    """Up to this many seconds before each run, wait for other processes to calm down."""


class ProbeError(RuntimeError):
    pass


@dataclass
class Planned:
    spec: ConfigSpec
    stack: str


class Runner:
    def __init__(
        self, options: Options, ctx: Context, workdir: Path, log: Callable[[str], None] = print, keep: bool = False
    ) -> None:
        self.options = options
        self.keep = keep
        self.ctx = ctx
        self.workdir = workdir
        self.log = log
        self.plan: list[Planned] = []
        self.skipped: list[dict] = []
        self.notes: list[str] = []
        self.targets: list[dict] = []
        self.runs: list[dict] = []

    # --- planning -------------------------------------------------------------------

    def make_plan(self) -> None:
        folder = self.workdir / "check"
        folder.mkdir(exist_ok=True)
        for config_id in self.options.configs:
            spec = CONFIGS[config_id]
            for stack in stacks_of(spec, self.options.stacks):
                reason = self._unavailable(spec, stack, folder)
                if reason:
                    self.skipped.append({"config": spec.id, "stack": stack, "title": spec.title, "reason": reason})
                    self.log(f"skip {spec.id} ({stack}): {reason.splitlines()[0]}")
                else:
                    self.plan.append(Planned(spec, stack))

    def _unavailable(self, spec: ConfigSpec, stack: str, folder: Path) -> Optional[str]:
        if spec.id == "a" and not have("nginx"):
            return "nginx is not installed"
        if spec.id in ("e", "ep") and not have("redis-server"):
            return "redis-server is not installed"
        if not spec.stackgate:
            return None
        problems = self._check(spec, stack, folder)
        if problems and spec.id == "d0" and self.ctx.bare_explicit_auth and _only_about(problems, "auth"):
            # The gateway does not know the key yet: a route without it has no auth either.
            self.ctx.bare_explicit_auth = False
            problems = self._check(spec, stack, folder)
            if not problems:
                self.notes.append('d0: this gateway does not know the route key `auth`; the bare route is written without it')
        if problems:
            return "`stackgate check` refuses the generated config:\n" + problems
        return None

    def _check(self, spec: ConfigSpec, stack: str, folder: Path) -> Optional[str]:
        sub = folder / f"{spec.id}-{stack}"
        sub.mkdir(exist_ok=True)
        target = spec.build(self.ctx, stack, sub)
        return stackgate.check(target.files["stackgate"], self.ctx.python)

    def estimate_s(self) -> float:
        o = self.options
        cells = len(o.workloads) * len(o.concurrency)
        per_target = START_OVERHEAD_S + o.settle + o.warmup + cells * (o.duration + 0.5 + (0.5 if o.wait_quiet else 0))
        return o.repeats * len(self.plan) * per_target

    # --- running --------------------------------------------------------------------

    def run(self) -> None:
        total = self.options.repeats * len(self.plan)
        done = 0
        for repeat in range(self.options.repeats):
            for planned in self.plan:
                done += 1
                self.log(f"[{done}/{total}] repeat {repeat + 1}: {planned.spec.id} ({planned.stack}) {planned.spec.title}")
                self.run_target(planned, repeat)

    def run_target(self, planned: Planned, repeat: int) -> None:
        spec, stack, o = planned.spec, planned.stack, self.options
        folder = self.workdir / f"r{repeat + 1}-{spec.id}-{stack}"
        folder.mkdir()
        target = spec.build(self.ctx, stack, folder)
        record: dict = {"config": spec.id, "stack": stack, "repeat": repeat, "ok": False, "error": None}
        self.targets.append(record)
        group = Group(folder)
        try:
            started = time.monotonic()
            for proc in target.procs:
                group.start(proc)
            record["start_s"] = time.monotonic() - started
            record.update(self.probe(target))
            time.sleep(o.settle)
            record["memory_idle"] = memory(tree(group.roots()), group.roots())
            if o.warmup:
                self._wrk(target, folder, WORKLOADS[o.workloads[0]], max(o.concurrency), o.warmup)
            for name in o.workloads:
                for concurrency in o.concurrency:
                    self.runs.append(self.measure(target, group, folder, name, concurrency, repeat))
            record["memory_after"] = memory(tree(group.roots()), group.roots())
            record["ok"] = group.alive()
            if not record["ok"]:
                record["error"] = "a server process exited during the run:\n" + _tails(group, target)
        except (StartError, ProbeError, RuntimeError, OSError) as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"
            self.log(f"  FAILED: {record['error']}")
        finally:
            stopping = time.monotonic()
            group.stop()
            record["stop_s"] = time.monotonic() - stopping
            if not self.keep and not record["error"]:
                shutil.rmtree(folder, ignore_errors=True)  # the access logs add up over a full run

    def probe(self, target: Target) -> dict:
        """One request per workload must answer 200 with the expected body; for a split, tally who served."""
        sizes = {}
        for name in self.options.workloads:
            (path, headers), client = target.requests(WORKLOADS[name])[0], target.clients[0]
            status, _, body = http_get(target.port, path, headers)
            data = json_body(body)
            if status != 200:
                raise ProbeError(f"GET {path} answered {status}: {body[:300]!r}")
            if name == "item" and not (isinstance(data, dict) and data.get("id") == client.todo_id):
                raise ProbeError(f"GET {path}: not todo {client.todo_id}: {body[:300]!r}")
            if name == "list" and not (isinstance(data, dict) and len(data.get("results") or ()) == PAGE_SIZE):
                raise ProbeError(f"GET {path}: not a {PAGE_SIZE}-item page: {body[:300]!r}")
            sizes[name] = len(body)
        result: dict = {"body_bytes": sizes}
        if target.stack == "split":
            served: Counter = Counter()
            for path, headers in target.requests(WORKLOADS["item"]):
                status, response_headers, body = http_get(target.port, path, headers)
                if status != 200:
                    raise ProbeError(f"GET {path} answered {status}: {body[:300]!r}")
                served[response_headers.get("x-served-by", "unknown")] += 1
            result["served_by"] = dict(served)
        return result

    def _wrk(self, target: Target, folder: Path, workload, concurrency: int, duration: int) -> dict:
        script = folder / f"{workload.name}.lua"
        if not script.exists():
            script.write_text(wrk.script(target.requests(workload)))
        return wrk.run(target.url, script, self.options.threads, concurrency, duration)

    def measure(self, target: Target, group: Group, folder: Path, name: str, concurrency: int, repeat: int) -> dict:
        pids = tree(group.roots())
        waited = self._wait_quiet({*pids, os.getpid()})
        load = os.getloadavg()[0]
        everyone = cpu_by_pid()
        wrk_before = _children_cpu()
        cpu_before = cpu_seconds(pids)
        result = self._wrk(target, folder, WORKLOADS[name], concurrency, self.options.duration)
        cpu = cpu_seconds(pids) - cpu_before
        wrk_cpu = _children_cpu() - wrk_before  # wrk is the only child that ended meanwhile
        others = others_cpu_seconds(everyone, cpu_by_pid(), {*pids, os.getpid()})
        capacity = result["duration_s"] * (os.cpu_count() or 1)
        flags = []
        if result["non_2xx"]:
            flags.append(f"{result['non_2xx']} non-2xx/3xx responses")
        if result["socket_errors"]:
            flags.append("socket errors " + ", ".join(f"{k} {v}" for k, v in result["errors"].items() if k != "status" and v))
        if not result["requests"]:
            flags.append("no request completed")
        if not group.alive():
            flags.append("a server process exited")
        run = {
            "config": target.config, "stack": target.stack, "workload": name, "concurrency": concurrency,
            "threads": self.options.threads, "repeat": repeat, **result,
            "server_cpu_s": cpu,
            "wrk_cpu_s": wrk_cpu,
            "others_cpu_s": others,
            "others_cpu_pct": 100 * others / capacity if capacity else None,
            "cpu_us_per_request": 1e6 * cpu / result["requests"] if result["requests"] else None,
            "loadavg_1m_before": load, "waited_for_quiet_s": waited, "flagged": bool(flags), "flags": flags,
        }
        mark = f"  !! {'; '.join(flags)}" if flags else ""
        self.log(f"  {name:4} c={concurrency:<3} {result['rps']:8.0f} req/s  p50 {result['latency_ms'].get('p50', 0):6.1f} ms"
                 f"  p99 {result['latency_ms'].get('p99', 0):6.1f} ms  others {run['others_cpu_pct']:4.0f}% cpu{mark}")
        return run


    def _wait_quiet(self, ours: set[int], sample: float = 0.5) -> float:
        """Seconds spent waiting until others use less than NOISY_PCT of the machine (at most ``wait_quiet``)."""
        if not self.options.wait_quiet:
            return 0.0
        began = time.monotonic()
        while True:
            before = cpu_by_pid()
            time.sleep(sample)
            busy = 100 * others_cpu_seconds(before, cpu_by_pid(), ours) / (sample * (os.cpu_count() or 1))
            waited = time.monotonic() - began
            if busy < NOISY_PCT or waited >= self.options.wait_quiet:
                return waited


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _only_about(problems: str, key: str) -> bool:
    lines = [line for line in problems.splitlines() if line.strip()]
    return bool(lines) and all(f".{key}:" in line or line.startswith(f"{key}:") for line in lines)


def _tails(group: Group, target: Target) -> str:
    return "\n".join(f"--- {p.name}\n{group.log_tail(p.name)}" for p in target.procs)
