"""The benchmark harness' pure parts: wrk output, generated configs, the arithmetic of the report.

Nothing here starts a server or times anything.
"""

import json
import os
import subprocess
import tomllib

import pytest

from bench import report, stackgate, wrk
from bench.cli import build_parser
from bench.configs import CONFIGS, nginx_config, nginx_binary, stacks_of
from bench.model import SPLIT, STACKS, WORKLOADS, Consumer
from bench.procs import memory, tree
from gateway.config import parse_config

# Captured from wrk 4.1.0 (Debian) against the ceiling app; the second one answered 404s,
# with a socket-error line as wrk prints it.
WRK_TEXT = """\
Running 1s test @ http://127.0.0.1:18555/ceiling/todos/1
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     6.10ms    7.76ms  52.50ms   88.30%
    Req/Sec     1.99k   744.63     3.25k    70.00%
  Latency Distribution
     50%    2.55ms
     75%    7.35ms
     90%   16.03ms
     99%   37.20ms
  3979 requests in 1.01s, 1.19MB read
Requests/sec:   3951.96
Transfer/sec:      1.18MB
"""

WRK_TEXT_ERRORS = """\
Running 1s test @ http://127.0.0.1:18555/ceiling/nope
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.67ms    5.18ms  48.15ms   93.73%
    Req/Sec     5.37k     1.73k    7.19k    85.00%
  Latency Distribution
     50%    1.20ms
     75%    1.79ms
     90%    4.01ms
     99%   30.84ms
  10708 requests in 1.00s, 1.52MB read
  Socket errors: connect 0, read 12, write 0, timeout 3
  Non-2xx or 3xx responses: 10708
Requests/sec:  10672.56
Transfer/sec:      1.52MB
"""

WRK_LUA = WRK_TEXT + (
    'BENCH_JSON {"requests": 7562, "duration_us": 1007994, "bytes": 2366906, '
    '"errors": {"connect": 0, "read": 0, "write": 0, "status": 4, "timeout": 0}, '
    '"latency_us": {"mean": 2318.6, "stdev": 1641.8, "max": 16831, "p50": 1758, "p90": 4026, "p99": 9336}}\n'
)


def test_parse_wrk_text_report():
    result = wrk.parse(WRK_TEXT)
    assert result["requests"] == 3979
    assert result["duration_s"] == pytest.approx(1.01)
    assert result["rps"] == pytest.approx(3979 / 1.01)
    assert result["latency_ms"]["p50"] == pytest.approx(2.55)
    assert result["latency_ms"]["p99"] == pytest.approx(37.20)
    assert result["latency_ms"]["max"] == pytest.approx(52.50)
    assert result["non_2xx"] == 0 and result["socket_errors"] == 0
    assert result["source"] == "text"


def test_parse_wrk_text_counts_errors():
    result = wrk.parse(WRK_TEXT_ERRORS)
    assert result["non_2xx"] == 10708
    assert result["errors"]["read"] == 12 and result["errors"]["timeout"] == 3
    assert result["socket_errors"] == 15


def test_parse_prefers_the_lua_summary():
    result = wrk.parse(WRK_LUA)
    assert result["source"] == "lua"
    assert result["requests"] == 7562
    assert result["rps"] == pytest.approx(7562 / 1.007994)
    assert result["latency_ms"]["p50"] == pytest.approx(1.758)
    assert result["latency_ms"]["p99"] == pytest.approx(9.336)
    assert result["non_2xx"] == 4


def test_parse_without_a_summary_fails_loudly():
    with pytest.raises(ValueError, match="no wrk summary"):
        wrk.parse("unable to connect to 127.0.0.1:1 Connection refused\n")


@pytest.mark.parametrize("text, micros", [("850.00us", 850), ("2.55ms", 2550), ("1.01s", 1_010_000), ("1.50m", 90_000_000)])
def test_wrk_durations(text, micros):
    assert wrk._us(text) == pytest.approx(micros)


def test_lua_script_cycles_through_every_request():
    text = wrk.script([("/v1/todos/1", ()), ("/v1/todos/2", (("X-API-Key", "sgb_abc-DEF_1"),))])
    assert '{path = "/v1/todos/1", headers = {}},' in text
    assert '{path = "/v1/todos/2", headers = {["X-API-Key"] = "sgb_abc-DEF_1"}},' in text
    assert "index = index % count + 1" in text
    assert wrk.MARK in text


@pytest.mark.parametrize("bad", ['/v1/"x', "/v1/\\x", "/v1/\n"])
def test_lua_script_refuses_strings_it_cannot_quote(bad):
    with pytest.raises(ValueError):
        wrk.script([(bad, ())])


@pytest.mark.parametrize("stack", list(STACKS))
def test_bare_config_is_accepted_by_the_gateway(stack):
    config = parse_config(stackgate.bare_config(STACKS[stack]).encode(), "bench.toml", {})
    (route,) = config.routes
    assert route.prefix == STACKS[stack].prefix
    assert route.backend == stack
    assert list(config.backends) == [stack]


def test_chain_config_uses_the_policy_keys():
    consumers = Consumer.many(3)
    text = stackgate.chain_config([STACKS["django"], STACKS["flask"]], "/api", consumers, "redis://127.0.0.1:1/0", split=dict(SPLIT))
    data = tomllib.loads(text)
    assert data["consumers"]["bench-001"] == {"roles": ["user"], "api_keys": [f"sha256:{consumers[1].key_hash}"]}
    assert data["throttle"] == {"storage": "redis://127.0.0.1:1/0", "policies": {"bench": {"rates": ["100000000/minute"]}}}
    (route,) = data["routes"]
    assert route == {
        "name": "bench", "prefix": "/api", "auth": "required", "roles": ["user"], "throttle": "bench",
        "split": {"django": 90, "flask": 10},
    }
    pinned = tomllib.loads(stackgate.chain_config([STACKS["flask"]], "/v1", consumers, "memory://"))
    assert pinned["routes"][0]["backend"] == "flask" and "split" not in pinned["routes"][0]
    assert list(pinned["backends"]) == ["flask"]


def test_nginx_config(tmp_path):
    text = nginx_config(tmp_path, 8080, 9090)
    assert "worker_processes 2;" in text
    assert "server 127.0.0.1:9090;" in text and "keepalive 32;" in text
    assert "listen 127.0.0.1:8080" in text
    assert f"pid {tmp_path}/nginx.pid;" in text
    if os.path.exists(nginx_binary()):
        conf = tmp_path / "nginx.conf"
        conf.write_text(text)
        result = subprocess.run(
            [nginx_binary(), "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")],
            capture_output=True, text=True, timeout=30,
        )
        assert result.returncode == 0, result.stderr


def test_targets_per_configuration():
    assert stacks_of(CONFIGS["a"], ["flask", "django"]) == ["flask", "django"]
    assert stacks_of(CONFIGS["a"], ["django"]) == ["django"]
    assert stacks_of(CONFIGS["d"], ["flask", "django"]) == ["split"]
    assert stacks_of(CONFIGS["d"], ["flask"]) == []  # a split needs both stacks
    assert stacks_of(CONFIGS["f"], ["flask"]) == ["none"]


def test_workload_paths():
    assert WORKLOADS["item"].path("/v1", 7) == "/v1/todos/7"
    assert WORKLOADS["list"].path("/v2", 7) == "/v2/todos?page_size=20"


def test_cli_filters():
    parser = build_parser()
    args = parser.parse_args(["--quick", "--configs", "a,d0", "--stacks", "flask", "--concurrency", "8,32"])
    assert args.configs == ["a", "d0"] and args.stacks == ["flask"] and args.concurrency == [8, 32]
    with pytest.raises(SystemExit):
        parser.parse_args(["--configs", "a,zz"])


def _run(config, stack, rps, repeat=0, flagged=False, workload="item", concurrency=16, cpu=100.0):
    return {
        "config": config, "stack": stack, "workload": workload, "concurrency": concurrency, "repeat": repeat,
        "rps": rps, "latency_ms": {"p50": 1.0, "p99": 2.0}, "cpu_us_per_request": cpu, "others_cpu_pct": 0.0,
        "non_2xx": 5 if flagged else 0, "socket_errors": 0, "flagged": flagged,
    }


def test_runs_with_errors_are_flagged_not_averaged():
    runs = [_run("a", "flask", 1000), _run("a", "flask", 1100, 1), _run("a", "flask", 9000, 2, flagged=True),
            _run("d0", "flask", 500)]
    summary = report.summarize(runs, [])
    cells = {c["config"]: c for c in summary["cells"]}
    assert cells["a"]["rps"] == pytest.approx(1050)
    assert cells["a"]["flagged_runs"] == 1 and cells["a"]["non_2xx"] == 5
    assert cells["d0"]["vs_a"] == pytest.approx(500 / 1050)
    text = report.render(summary, [], [])
    assert "!1/3 runs: 5 non-2xx" in text


def test_chain_cost_and_split_baseline():
    runs = [_run("a", "flask", 1000), _run("a", "django", 500), _run("d0", "flask", 800, cpu=1000),
            _run("d0", "django", 400, cpu=2000), _run("dp", "django", 300, cpu=2500), _run("d", "split", 350, cpu=2100),
            _run("c", "django", 320), _run("c", "flask", 640)]
    targets = [{"config": "d", "stack": "split", "served_by": {"django": 90, "flask": 10}}]
    summary = report.summarize(runs, targets)
    cost = {c["config"]: c["chain_cost"] for c in summary["chain_cost"]}
    cpu_cost = {c["config"]: c["cpu_cost"] for c in summary["chain_cost"]}
    assert cost["dp"] == pytest.approx(1 - 300 / 400)
    assert cpu_cost["dp"] == pytest.approx(2500 / 2000 - 1)
    assert cpu_cost["d"] == pytest.approx(2100 / (0.9 * 2000 + 0.1 * 1000) - 1)
    bare_mix = 1 / (0.9 / 400 + 0.1 / 800)
    assert cost["d"] == pytest.approx(1 - 350 / bare_mix)
    mount = {c["config"]: c["mount_cost"] for c in summary["chain_cost"]}
    assert mount["dp"] == pytest.approx(1 - 300 / 320)
    assert mount["d"] == pytest.approx(1 - 350 / (1 / (0.9 / 320 + 0.1 / 640)))
    assert "vs c %" in report.render(summary, [], [])
    cells = {(c["config"], c["stack"]): c for c in summary["cells"]}
    assert cells[("d", "split")]["vs_a"] == pytest.approx(350 / (1 / (0.9 / 500 + 0.1 / 1000)))


def test_memory_of_a_process_tree():
    pids = tree([os.getpid()])
    assert os.getpid() in pids
    measured = memory(pids)
    assert measured["rss"] > 0 and measured["processes"] == len(pids)


def test_gateway_cost_runs_every_route_through_the_gateway(capsys):
    from bench import gateway_cost

    assert gateway_cost.main(["--requests", "50", "--warmup", "10"]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert set(result["us_per_request"]) == {"bare", "pinned", "split"}
    assert all(v > 0 for v in result["us_per_request"].values())
