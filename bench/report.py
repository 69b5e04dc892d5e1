"""From raw runs to medians, ratios and the printed tables.

A cell is one (workload, concurrency, stack, configuration). Its figure is
the median over repeats of the runs without errors; runs with errors are
counted and shown with ``!``, never mixed in silently (when every run of a
cell has errors, the median is of those, and still flagged).
"""

from __future__ import annotations

import statistics
from typing import Iterable, Optional

from bench.configs import BARE_MOUNT, BASELINE, CHAIN_COST_PAIRS, CONFIGS
from bench.model import NOISY_PCT, SPLIT, WORKLOADS

MiB = 2**20


def _median(values: Iterable[float]) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(runs: list[dict], targets: list[dict]) -> dict:
    cells: dict[tuple, list[dict]] = {}
    for run in runs:
        cells.setdefault((run["workload"], run["concurrency"], run["stack"], run["config"]), []).append(run)
    summary = []
    for (workload, concurrency, stack, config), group in cells.items():
        clean = [r for r in group if not r["flagged"]]
        used = clean or group
        summary.append({
            "workload": workload,
            "concurrency": concurrency,
            "stack": stack,
            "config": config,
            "runs": len(group),
            "flagged_runs": len(group) - len(clean),
            "rps": _median(r["rps"] for r in used),
            "rps_min": min(r["rps"] for r in used),
            "rps_max": max(r["rps"] for r in used),
            "p50_ms": _median(r["latency_ms"].get("p50") for r in used),
            "p99_ms": _median(r["latency_ms"].get("p99") for r in used),
            "cpu_us_per_request": _median(r.get("cpu_us_per_request") for r in used),
            "others_cpu_pct": _median(r.get("others_cpu_pct") for r in group),
            "non_2xx": sum(r["non_2xx"] for r in group),
            "socket_errors": sum(r["socket_errors"] for r in group),
        })
    mix = split_mix(targets)
    index = {(c["workload"], c["concurrency"], c["stack"], c["config"]): c for c in summary}
    for cell in summary:
        cell["vs_a"] = _ratio(cell, index, BASELINE, mix)
    chain = []
    for cell in summary:
        bare = CHAIN_COST_PAIRS.get(cell["config"])
        if bare:
            ratio = _ratio(cell, index, bare, mix)
            mount = _ratio(cell, index, BARE_MOUNT, mix)
            bare_cpu = _bare_cpu(cell, index, bare, mix)
            chain.append({
                "workload": cell["workload"], "concurrency": cell["concurrency"], "stack": cell["stack"],
                "config": cell["config"], "against": bare, "rps": cell["rps"],
                "chain_cost": None if ratio is None else 1 - ratio,
                "mount_cost": None if mount is None else 1 - mount,
                "cpu_us_per_request": cell["cpu_us_per_request"],
                "bare_cpu_us_per_request": bare_cpu,
                "cpu_cost": cell["cpu_us_per_request"] / bare_cpu - 1 if bare_cpu and cell["cpu_us_per_request"] else None,
            })
    return {"cells": summary, "memory": memory(targets), "chain_cost": chain, "split_mix": mix}


def split_mix(targets: list[dict]) -> dict[str, dict[str, float]]:
    """Per split configuration, the measured share of each backend (from X-Served-By on the probes)."""
    out: dict[str, dict[str, float]] = {}
    for target in targets:
        served = target.get("served_by")
        if target["stack"] == "split" and served:
            total = sum(served.values())
            out.setdefault(target["config"], {k: v / total for k, v in sorted(served.items())})
    return out


def _ratio(cell: dict, index: dict, against: str, mix: dict) -> Optional[float]:
    """cell / the ``against`` configuration on the same workload; for a split, against the same mix of stacks."""
    key = (cell["workload"], cell["concurrency"])
    if cell["stack"] == "split":
        shares = mix.get(cell["config"]) or {k: v / sum(SPLIT.values()) for k, v in SPLIT.items()}
        base = mixed_rps({s: (index.get((*key, s, against)) or {}).get("rps") for s in shares}, shares)
    else:
        base = (index.get((*key, cell["stack"], against)) or {}).get("rps")
    if not base or not cell["rps"] or cell["stack"] == "none":
        return None
    return cell["rps"] / base


def _bare_cpu(cell: dict, index: dict, against: str, mix: dict) -> Optional[float]:
    """Server CPU per request of ``against`` on the same workload; for a split, the mix's average."""
    key = (cell["workload"], cell["concurrency"])
    if cell["stack"] != "split":
        return (index.get((*key, cell["stack"], against)) or {}).get("cpu_us_per_request")
    shares = mix.get(cell["config"]) or {k: v / sum(SPLIT.values()) for k, v in SPLIT.items()}
    cpus = {s: (index.get((*key, s, against)) or {}).get("cpu_us_per_request") for s in shares}
    if any(not cpus[s] for s, share in shares.items() if share):
        return None
    return sum(share * cpus[s] for s, share in shares.items() if share)


def mixed_rps(rps: dict[str, Optional[float]], shares: dict[str, float]) -> Optional[float]:
    """Throughput of a mix, each stack at its own rate: the time per request adds up by share."""
    if any(not rps.get(s) for s, share in shares.items() if share):
        return None
    return 1 / sum(share / rps[s] for s, share in shares.items() if share)


def memory(targets: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for t in targets:
        if t.get("memory_idle"):
            groups.setdefault((t["config"], t["stack"]), []).append(t)
    rows = []
    for (config, stack), group in groups.items():
        rows.append({
            "config": config,
            "stack": stack,
            "processes": max(t["memory_idle"]["processes"] for t in group),
            "rss_idle": _median(t["memory_idle"]["rss"] for t in group),
            "pss_idle": _median(t["memory_idle"].get("pss") for t in group),
            "rss_after": _median(t["memory_after"]["rss"] for t in group if t.get("memory_after")),
            "pss_after": _median(t["memory_after"]["pss"] for t in group if t.get("memory_after")),
            "uss_after": _median(t["memory_after"].get("uss") for t in group if t.get("memory_after")),
            "shared_after": _median(t["memory_after"].get("shared") for t in group if t.get("memory_after")),
            "start_s": _median(t.get("start_s") for t in group),
        })
    return rows


# --- printing -----------------------------------------------------------------------


def _fmt(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _mib(value: Optional[float]) -> str:
    return _fmt(None if value is None else value / MiB, ".0f")


def _pct(value: Optional[float]) -> str:
    return _fmt(None if value is None else 100 * value, ".0f") + ("%" if value is not None else "")


def process_table(measured: dict) -> str:
    """One row per process of a tree (``bench.procs.memory`` with roles): RSS, PSS, USS in MiB."""
    rows = [[p["role"] or "-", str(p["pid"]), _mib(p["rss"]), _mib(p["pss"]), _mib(p["uss"]),
             _pct((p["pss"] - p["uss"]) / p["pss"] if p["pss"] else None)] for p in measured["per_process"]]
    rows.append(["all", str(measured["processes"]), _mib(measured["rss"]), _mib(measured["pss"]), _mib(measured["uss"]),
                 _pct(measured["shared"])])
    return table(["process", "pid", "RSS", "PSS", "USS", "shared"], rows, right={1, 2, 3, 4, 5})


def table(headers: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _order(stack: str, config: str) -> tuple:
    stacks = ["flask", "django", "split", "none"]
    configs = list(CONFIGS)
    return (stacks.index(stack) if stack in stacks else 9, configs.index(config) if config in configs else 99)


def render(summary: dict, skipped: list[dict], notes: list[str]) -> str:
    out = []
    noisy = 0
    cells = summary["cells"]
    keys = sorted({(c["workload"], c["concurrency"]) for c in cells}, key=lambda k: (list(WORKLOADS).index(k[0]), k[1]))
    for workload, concurrency in keys:
        rows = []
        for cell in sorted((c for c in cells if (c["workload"], c["concurrency"]) == (workload, concurrency)),
                           key=lambda c: _order(c["stack"], c["config"])):
            flags = ""
            if cell["flagged_runs"]:
                flags = f"!{cell['flagged_runs']}/{cell['runs']} runs: {cell['non_2xx']} non-2xx, {cell['socket_errors']} socket errors"
            if (cell["others_cpu_pct"] or 0) > NOISY_PCT:
                flags = ("~noisy " + flags).strip()
                noisy += 1
            rows.append([
                cell["stack"], cell["config"], CONFIGS[cell["config"]].title,
                _fmt(cell["rps"], ".0f"), f"{cell['rps_min']:.0f}-{cell['rps_max']:.0f}",
                _fmt(cell["p50_ms"], ".1f"), _fmt(cell["p99_ms"], ".1f"),
                _fmt(cell["cpu_us_per_request"], ".0f"), _fmt(cell["others_cpu_pct"], ".0f"), _fmt(cell["vs_a"], ".2f"), flags,
            ])
        out.append(f"== {WORKLOADS[workload].title}, c={concurrency} ==")
        out.append(table(
            ["stack", "cfg", "configuration", "req/s", "min-max", "p50 ms", "p99 ms", "cpu us/req", "others %", "vs a", "errors"],
            rows, right={3, 4, 5, 6, 7, 8, 9},
        ))
        out.append("")

    if noisy:
        out.append(f"~noisy: {noisy} cells ran while other processes used more than {NOISY_PCT:.0f}% of the machine (column 'others %'); "
                   "compare them with care, or run again on an idle machine")
        out.append("")

    if summary["chain_cost"]:
        rows = []
        for c in sorted(summary["chain_cost"], key=lambda c: (c["workload"], c["concurrency"], *_order(c["stack"], c["config"]))):
            rows.append([c["workload"], str(c["concurrency"]), c["stack"], f"{c['config']} vs {c['against']}",
                         _fmt(c["rps"], ".0f"), _fmt(None if c["chain_cost"] is None else 100 * c["chain_cost"], ".1f"),
                         _fmt(c["cpu_us_per_request"], ".0f"), _fmt(c["bare_cpu_us_per_request"], ".0f"),
                         _fmt(None if c["cpu_cost"] is None else 100 * c["cpu_cost"], "+.1f"),
                         _fmt(None if c.get("mount_cost") is None else 100 * c["mount_cost"], ".1f")])
        out.append("== policy chain cost: 1 - chain/bare req/s, and extra server CPU per request "
                   f"(split rows: against d0 of both stacks in the measured mix); "
                   f"'vs {BARE_MOUNT} %': the same against the bare a2wsgi mount ({BARE_MOUNT}) ==")
        out.append(table(["workload", "c", "stack", "configs", "req/s", "cost %", "cpu us/req", "bare cpu", "cpu +%",
                          f"vs {BARE_MOUNT} %"], rows, right={1, 4, 5, 6, 7, 8, 9}))
        out.append("")

    if summary["split_mix"]:
        out.append("== split: measured share per backend (X-Served-By over all benchmark consumers) ==")
        for config, shares in summary["split_mix"].items():
            out.append(f"{config}: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in shares.items()))
        out.append("")

    if summary["memory"]:
        rows = []
        for m in sorted(summary["memory"], key=lambda m: _order(m["stack"], m["config"])):
            rows.append([m["stack"], m["config"], CONFIGS[m["config"]].title, str(m["processes"]),
                         _mib(m["rss_idle"]), _mib(m.get("pss_idle")), _mib(m["rss_after"]), _mib(m["pss_after"]),
                         _mib(m.get("uss_after")), _pct(m.get("shared_after")), _fmt(m["start_s"], ".1f")])
        out.append("== memory of the whole process tree (MiB; RSS counts pages shared by forked workers once per process, "
                   "PSS splits them, USS: each process's own pages; shared: the part of the PSS in shared pages) ==")
        out.append(table(["stack", "cfg", "configuration", "procs", "RSS idle", "PSS idle", "RSS after", "PSS after",
                          "USS after", "shared", "start s"], rows, right=set(range(3, 11))))
        out.append("")

    if skipped:
        out.append("== skipped ==")
        for s in skipped:
            reason = s["reason"].replace("\n", "\n      ")
            out.append(f"{s['config']} ({s['stack']}): {reason}")
        out.append("")
    for note in notes:
        out.append(f"note: {note}")
    return "\n".join(out).rstrip() + "\n"
