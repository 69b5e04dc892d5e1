"""The ``[server]`` table: validated with the file, overridden by the environment, shown, never hot-applied."""

from __future__ import annotations

import os

import pytest

from gateway.app import create_app
from gateway.config import load_config, parse_config
from gateway.edge import settings
from tests.test_cli import stackgate
from tests.test_config import VALID, problems

OVERRIDES = ("STACKGATE_MAX_HEADER_BYTES", "STACKGATE_HEADER_TIMEOUT", "STACKGATE_BODY_TIMEOUT")


def server(text: str = "", environ=None) -> settings.ServerSettings:
    return parse_config((text + VALID).encode(), "c.toml", environ or {}).server


def test_defaults():
    assert server().model_dump() == {
        "max_header_bytes": 32768,
        "header_timeout": 10.0,
        "body_timeout": 30.0,
        "keep_alive_timeout": 5.0,
        "graceful_timeout": 30.0,
    }


def test_values_from_the_file():
    got = server('[server]\nmax_header_bytes = "2KiB"\nheader_timeout = 2.5\nbody_timeout = 4\nkeep_alive_timeout = 1\n')
    assert (got.max_header_bytes, got.header_timeout, got.body_timeout, got.keep_alive_timeout) == (2048, 2.5, 4.0, 1.0)


SECONDS = "must be a positive number of seconds, such as 10 or 2.5"
SIZE = 'must be a size of at least 1024 bytes, such as 32768 or "32KiB"'


@pytest.mark.parametrize(
    "table, expected",
    [
        ("max_header_bytes = 100", f"c.toml: server.max_header_bytes: {SIZE}"),
        ('max_header_bytes = "lots"', f"c.toml: server.max_header_bytes: {SIZE}"),
        ("header_timeout = 0", f"c.toml: server.header_timeout: {SECONDS}"),
        ("body_timeout = -1", f"c.toml: server.body_timeout: {SECONDS}"),
        ('keep_alive_timeout = "soon"', f"c.toml: server.keep_alive_timeout: {SECONDS}"),
        ("graceful_timeout = inf", f"c.toml: server.graceful_timeout: {SECONDS}"),
        ("header_timeout = true", f"c.toml: server.header_timeout: {SECONDS}"),
        ("header_timout = 3", 'c.toml: server.header_timout: unknown key; did you mean "header_timeout"? (line 2)'),
    ],
    ids=["small-size", "not-a-size", "zero", "negative", "text", "infinite", "bool", "typo"],
)
def test_bad_values(table, expected):
    assert problems(f"[server]\n{table}\n" + VALID) == [expected]


def test_not_a_table():
    assert problems("server = 3\n" + VALID) == ["c.toml: server: must be a table"]


def test_environment_wins_over_the_file():
    environ = {"STACKGATE_MAX_HEADER_BYTES": "64KiB", "STACKGATE_HEADER_TIMEOUT": "1.5", "STACKGATE_BODY_TIMEOUT": ""}
    got = server("[server]\nmax_header_bytes = 4096\nheader_timeout = 20\nbody_timeout = 7\n", environ)
    assert (got.max_header_bytes, got.header_timeout, got.body_timeout) == (65536, 1.5, 7.0)  # empty: not set


def test_bad_environment_value_names_the_variable():
    found = problems("[server]\nheader_timeout = 3\n" + VALID, {"STACKGATE_HEADER_TIMEOUT": "ten", "STACKGATE_MAX_HEADER_BYTES": "1"})
    assert found == [
        f'c.toml: server.max_header_bytes: STACKGATE_MAX_HEADER_BYTES="1" (environment) {SIZE}',
        f'c.toml: server.header_timeout: STACKGATE_HEADER_TIMEOUT="ten" (environment) {SECONDS}',
    ]


def test_without_a_config_the_process_uses_defaults_and_environment(monkeypatch):
    monkeypatch.setattr(settings, "_CURRENT", None)
    monkeypatch.setenv("STACKGATE_BODY_TIMEOUT", "3")
    assert settings.current().body_timeout == 3.0
    monkeypatch.setattr(settings, "_CURRENT", None)
    monkeypatch.setenv("STACKGATE_BODY_TIMEOUT", "x")
    with pytest.raises(ValueError, match=r'^server.body_timeout: STACKGATE_BODY_TIMEOUT="x" \(environment\) must be'):
        settings.current()


def test_check_reports_a_bad_value(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[server]\nheader_timeout = 0\nmax_header_bytes = 10\n" + VALID)
    env = {k: v for k, v in os.environ.items() if k not in OVERRIDES}
    result = stackgate("check", "--no-import", str(path), env=env)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"{path}: server.max_header_bytes: {SIZE}", f"{path}: server.header_timeout: {SECONDS}"]


def test_check_reports_a_bad_environment_override(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(VALID)
    env = {**os.environ, "STACKGATE_BODY_TIMEOUT": "30s"}
    result = stackgate("check", "--no-import", str(path), env=env)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f'{path}: server.body_timeout: STACKGATE_BODY_TIMEOUT="30s" (environment) {SECONDS}']


def test_routes_shows_the_table_and_which_variable_set_a_value(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[server]\nmax_header_bytes = 4096\nheader_timeout = 2\n" + VALID)
    env = {**{k: v for k, v in os.environ.items() if k not in OVERRIDES}, "STACKGATE_BODY_TIMEOUT": "7"}
    result = stackgate("routes", str(path), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == (
        "server: max_header_bytes=4096 header_timeout=2s body_timeout=7s ($STACKGATE_BODY_TIMEOUT) "
        "keep_alive_timeout=5s graceful_timeout=30s"
    )


@pytest.fixture
def watched(tmp_path, monkeypatch):
    for name in OVERRIDES:
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "config.toml"
    path.write_text("[server]\nheader_timeout = 2\n" + VALID)
    return create_app(load_config(path), watch=True), path


def test_status_shows_the_table(watched):
    app, _ = watched
    assert app.status()["server"]["header_timeout"] == 2.0
    assert app.status()["server"]["max_header_bytes"] == 32768


@pytest.mark.parametrize("edit", ["[server]\nheader_timeout = 3\n", "[server]\nheader_timeout = 2\nkeep_alive_timeout = 9\n"])
def test_a_changed_server_table_needs_a_restart(watched, edit):
    app, path = watched
    before = app.state
    path.write_text(edit + VALID)
    result = app.reloader.reload()
    assert result["ok"] is False and result["message"] == "not applied: these changes need a restart"
    key, old, new = ("header_timeout", 2, 3) if "= 3" in edit else ("keep_alive_timeout", 5, 9)
    assert result["problems"] == [f"{path.resolve()}: server.{key}: changed ({old} -> {new}); {settings.RESTART}"]
    assert app.state is before


def test_an_unchanged_server_table_reloads(watched):
    app, path = watched
    path.write_text("[server]\nheader_timeout = 2.0\n" + VALID.replace('prefix = "/v1"', 'prefix = "/v2"'))
    assert app.reloader.reload()["message"] == "applied"
