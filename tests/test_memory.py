"""Memory reporting (bench/procs.py, bench/memory.py, the soak's shared share) and the supervisor's
shared status (gateway/edge/supervisor.py): behaviour, never a figure."""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import time

from bench import memory as bench_memory
from bench import report
from bench import weigh as bench_weigh
from bench.model import Consumer
from bench.procs import memory, tree
from bench.soak import fitted_growth
from gateway.config import parse_config
from gateway.edge.shared_status import SharedStatus


def _read_in_spawned(status: SharedStatus, out) -> None:  # in a spawned child
    out.put(status.read())


def test_the_status_reaches_a_spawned_worker_without_a_lock():
    """Rolling restarts spawn their workers: the status made for forked ones must reach them too."""
    status = SharedStatus()
    status.publish({"generation": 3, "pids": [1, 2]})
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    child = context.Process(target=_read_in_spawned, args=(status, out))
    child.start()
    try:
        assert out.get(timeout=60) == {"generation": 3, "pids": [1, 2]}
    finally:
        child.join(60)


def test_a_read_waits_while_the_status_is_being_written():
    status = SharedStatus()
    status.publish({"generation": 1})
    status.sequence.value += 1  # a write in progress (odd)
    status.data.raw = b'{"genera'.ljust(SharedStatus.SIZE, b"\0")  # half written
    read: list = []
    reader = threading.Thread(target=lambda: read.append(status.read()))
    reader.start()
    time.sleep(0.05)
    assert not read, "read a half-written status"
    status.data.raw = b'{"generation":2}'.ljust(SharedStatus.SIZE, b"\0")
    status.sequence.value += 1
    reader.join(10)
    assert read == [{"generation": 2}]


def test_memory_per_process_with_roles():
    child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(30,))
    child.start()
    try:
        roots = [os.getpid()]
        measured = memory(tree(roots), roots)
        roles = {p["pid"]: p["role"] for p in measured["per_process"]}
        assert roles[os.getpid()] == "supervisor" and roles[child.pid] == "worker"
        for p in measured["per_process"]:
            assert 0 < p["uss"] <= p["pss"] <= p["rss"]
        assert 0 < measured["shared"] < 1  # the fork shares its parent's pages
        assert measured["pss"] == sum(p["pss"] for p in measured["per_process"])
        table = report.process_table(measured)
        assert "supervisor" in table and "worker" in table and table.splitlines()[-1].startswith("all")
    finally:
        child.kill()
        child.join()


def test_the_memory_bench_measures_the_shipped_config_with_its_consumers():
    consumers = Consumer.many(3)
    text = bench_memory.default_config(consumers)
    config = parse_config(text.encode())  # still a valid config: the shipped one plus the bench's consumers
    assert {c.name for c in consumers} <= set(config.consumers)
    assert text.startswith((bench_memory.ROOT / "config.toml").read_text())


def test_the_memory_summary_compares_each_repeat_with_its_own_peers():
    def record(name: str, repeat: int, pss: float) -> dict:
        measured = {"rss": pss, "pss": pss, "uss": pss / 2, "shared": 0.5}
        return {"name": name, "repeat": repeat, "error": None, "start_s": 1.0, "idle": measured, "after": measured}

    records = [record("stackgate", 0, 100), record("a-flask", 0, 100), record("a-django", 0, 100),
               record("stackgate", 1, 150), record("a-flask", 1, 100), record("a-django", 1, 200)]
    summary = bench_memory.summarize(records)
    assert summary["share_idle"] == (0.5 + 0.5) / 2 and summary["share_idle_max"] == 0.5
    assert "target <= 50 %: meets" in bench_memory.render(summary, [])


def test_the_weighing_loads_each_part_in_an_interpreter_of_its_own(tmp_path, capsys):
    """``python -m bench.weigh``: the floor under the memory figures, one fresh interpreter per row."""
    out = tmp_path / "weigh.json"
    assert bench_weigh.main(["--json", str(out)]) == 0
    rows = {row["case"]: row for row in json.loads(out.read_text())}
    alone, flask, django = rows["python alone"], rows["the Flask stack (a gunicorn worker's imports)"], rows["the Django stack and its URLconf"]
    everything = rows["the gateway and both stacks (the supervisor at its fork)"]
    assert alone["modules"] < flask["modules"] < everything["modules"] and django["modules"] < everything["modules"]
    for row in rows.values():
        assert 0 < row["anon"] < row["rss"] and 0 < row["pss"] <= row["rss"]
    assert everything["anon"] > max(row["anon"] for case, row in rows.items() if row is not everything)
    assert "the supervisor at its fork" in capsys.readouterr().out


def test_a_falling_shared_share_is_seen_by_the_soak_fit():
    samples = [(t, 0.6 - 0.01 * t) for t in range(10)]
    assert fitted_growth(samples) < -0.1
    assert abs(fitted_growth([(t, 0.6) for t in range(10)])) < 1e-9


def test_a_config_without_an_http_backend_never_loads_httpx():
    """The supervisor preloads what the workers import: httpx only for a config with an http backend."""
    import subprocess
    import sys

    code = (
        "import sys; from gateway.config import load_config; from gateway.app import create_app; "
        "create_app(load_config(sys.argv[1])); print('httpx' in sys.modules)"
    )
    from tests.services import ROOT

    result = subprocess.run([sys.executable, "-c", code, str(ROOT / "config.toml")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_a_config_without_redis_never_loads_redis_py():
    """Neither the throttle's memory storage nor anything else of the default config loads redis-py
    (which in turn loads OpenTelemetry's SDK where it is installed): the workers inherit what the supervisor imports."""
    import subprocess
    import sys

    code = (
        "import sys; from gateway.config import load_config; from gateway.app import create_app; "
        "create_app(load_config(sys.argv[1])); print('redis' in sys.modules, 'opentelemetry' in sys.modules)"
    )
    from tests.services import ROOT

    result = subprocess.run([sys.executable, "-c", code, str(ROOT / "config.toml")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False False"


def test_a_stacks_wsgi_module_does_not_import_the_gateway():
    """The demo stacks apply their embedded schema through ``gateway.migrations``; that must not pull in
    the gateway itself (``import gateway`` loads its names lazily), or nginx -> gunicorn in bench/ carries it."""
    import subprocess
    import sys

    code = "import sys; import backends.flask_site.wsgi; print('gateway.app' in sys.modules, 'gateway.config' in sys.modules)"
    from tests.services import ROOT

    env = {k: v for k, v in __import__("os").environ.items() if k != "DATABASE_URL"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False False"
