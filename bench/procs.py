"""Servers as process groups: start, wait until serving, measure memory and CPU, stop.

Every process starts in its own session so that one ``killpg`` stops it with
all its workers; ``stop_all`` (run on exit and on SIGINT/SIGTERM) stops
whatever is still alive.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from bench.model import ROOT, ProcSpec, Ready

_LIVE: set["Group"] = set()
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


class StartError(RuntimeError):
    pass


def http_get(port: int, path: str, headers: tuple[tuple[str, str], ...] = (), timeout: float = 5.0) -> tuple[int, dict, bytes]:
    """(status, lower-cased headers, body) of one GET on loopback; never raises on an HTTP status."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=dict(headers))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def _ready(ready: Ready) -> bool:
    try:
        if ready.path is None:
            with socket.create_connection(("127.0.0.1", ready.port), timeout=0.5):
                return True
        status, _, _ = http_get(ready.port, ready.path, ready.headers, timeout=2.0)
        return status == 200
    except OSError:
        return False


class Group:
    """The processes of one target, started in order and stopped in reverse."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.procs: list[tuple[ProcSpec, subprocess.Popen]] = []

    def start(self, spec: ProcSpec, timeout: float = 60.0) -> None:
        _LIVE.add(self)
        log = open(self.folder / f"{spec.name}.log", "ab")
        try:
            proc = subprocess.Popen(
                spec.argv, cwd=ROOT, env=spec.env or None, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        finally:
            log.close()
        self.procs.append((spec, proc))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StartError(f"{spec.name} exited with status {proc.returncode}:\n{self.log_tail(spec.name)}")
            if _ready(spec.ready):
                return
            time.sleep(0.05)
        raise StartError(f"{spec.name} was not serving on port {spec.ready.port} after {timeout:g} s:\n{self.log_tail(spec.name)}")

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.folder / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def roots(self) -> list[int]:
        return [proc.pid for _, proc in self.procs if proc.poll() is None]

    def alive(self) -> bool:
        return all(proc.poll() is None for _, proc in self.procs)

    def stop(self, timeout: float = 10.0) -> None:
        for _, proc in reversed(self.procs):
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for _, proc in reversed(self.procs):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(proc, signal.SIGKILL)  # stragglers of the group, or the leader itself
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        _LIVE.discard(self)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_all() -> None:
    for group in list(_LIVE):
        group.stop(timeout=5.0)


# --- /proc ------------------------------------------------------------------------


def _stat_fields(pid: int) -> Optional[list[str]]:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # fields from 3 (state) on


def tree(roots: list[int]) -> list[int]:
    """The roots and all their descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def process_memory(pid: int) -> Optional[dict[str, int]]:
    """RSS, PSS and USS (its private pages) of one process in bytes, from ``smaps_rollup`` (None: gone)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        try:
            rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
        except OSError:
            return None
        return {"rss": rss, "pss": rss, "uss": rss}  # no smaps_rollup (old kernel): all counted as private
    fields = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in ("Rss", "Pss", "Private_Clean", "Private_Dirty"):
            fields[name] = int(rest.split()[0]) * 1024
    return {"rss": fields.get("Rss", 0), "pss": fields.get("Pss", 0),
            "uss": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def role(pid: int, roots: list[int]) -> str:
    """What a process of a served tree is: ``supervisor`` (a root with children), ``worker``,
    ``resource tracker``, ``shadow``, ``process`` (a root alone), or ``child``."""
    cmdline = _cmdline(pid)
    if "resource_tracker" in cmdline:
        return "resource tracker"
    if "gateway.shadow" in cmdline:
        return "shadow"
    if cmdline.startswith("nginx"):
        return "nginx master" if "master" in cmdline else "nginx worker"
    if pid in roots:
        return "supervisor" if len(tree([pid])) > 1 else "process"
    fields = _stat_fields(pid)
    return "worker" if fields and int(fields[1]) in roots else "child"


def memory(pids: list[int], roots: Optional[list[int]] = None) -> dict:
    """Summed RSS, PSS and USS in bytes, and each process's (with its ``role`` when ``roots`` is given).

    PSS shares each page among the processes that map it, so the PSS of a whole tree
    counts every page once; USS is what each process alone holds (what killing it would
    free). ``shared`` is the part of the tree's PSS in pages shared between processes:
    what forking from a loaded parent saves, and what copy-on-write erodes over time.
    """
    rss = pss = uss = 0
    per_process = []
    for pid in pids:
        measured = process_memory(pid)
        if measured is None:
            continue
        rss += measured["rss"]
        pss += measured["pss"]
        uss += measured["uss"]
        per_process.append({"pid": pid, "role": role(pid, roots) if roots is not None else None, **measured})
    return {"rss": rss, "pss": pss, "uss": uss, "shared": (pss - uss) / pss if pss else None,
            "processes": len(pids), "per_process": per_process}


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far."""
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields:
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / _CLK_TCK


def cpu_by_pid() -> dict[int, int]:
    """CPU ticks (user + system) of every process on the machine."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields:
                out[int(entry)] = int(fields[11]) + int(fields[12])
    return out


def others_cpu_seconds(before: dict[int, int], after: dict[int, int], ours: set[int]) -> float:
    """CPU used between two ``cpu_by_pid`` snapshots by processes that are not ours: the noise."""
    ticks = sum(t - before.get(pid, 0) for pid, t in after.items() if pid not in ours)
    return max(ticks, 0) / _CLK_TCK


def json_body(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        return None
