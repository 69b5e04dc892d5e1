"""What the Docker image runs, run as the image runs it (there is no Docker daemon here).

The Dockerfile's ENV, COPY'd config and CMD are read from the file itself; the
image's paths become folders under tmp_path. The one difference from
`docker run -p 8000:8000`: STACKGATE_PORT is a free port. The image serves on
0.0.0.0 and the test reaches it through 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.bootstrap_support import DEMO_KEYS, DJANGO_KEYS, Proc, assert_names_each_key, clean_env, insecure
from tests.services import ROOT, free_port
from tests.users import USERS, User, consumers_toml

BIN = str(Path(sys.executable).parent)


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending += (" " if pending else "") + line.rstrip("\\").strip()
        if not line.endswith("\\"):
            name, _, args = pending.partition(" ")
            out.append((name.upper(), args.strip()))
            pending = ""
    return out


class Image:
    """The image's file system under ``root``, its environment, its CMD and HEALTHCHECK."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env: dict[str, str] = {}
        self.workdir = root
        self.copies: list[tuple[Path, str]] = []  # folders of the source tree, and where the image has them
        for name, args in instructions():
            if name == "ENV":
                for pair in shlex.split(args):
                    key, _, value = pair.partition("=")
                    self.env[key] = str(root) + value if value.startswith("/") else value
            elif name == "WORKDIR":
                self.workdir = root / args.lstrip("/")
            elif name == "COPY" and not args.startswith("--"):
                *sources, dest = args.split()
                if sources == ["config.toml"]:
                    self.config_path = root / dest.lstrip("/")
                elif len(sources) == 1 and (ROOT / sources[0]).is_dir():  # COPY backends ./backends
                    self.copies.append((ROOT / sources[0], dest))
            elif name == "CMD":
                self.cmd = json.loads(args)
            elif name == "HEALTHCHECK":
                self.healthcheck = json.loads(args.split(" CMD ", 1)[1])
        self.workdir.mkdir(parents=True, exist_ok=True)
        for source, dest in self.copies:
            (self.workdir / dest).resolve().symlink_to(source, target_is_directory=True)
        (root / "data").mkdir(exist_ok=True)
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_bytes((ROOT / "config.toml").read_bytes())  # COPY config.toml ...
        self.port = free_port()

    def process(self, log: Path, **env: str) -> Proc:
        environ = clean_env(**{**self.env, **env, "STACKGATE_PORT": str(self.port)})
        environ["PATH"] = BIN + os.pathsep + environ.get("PATH", "")  # `stackgate` and `python` as installed in the image
        return Proc(list(self.cmd), environ, log, cwd=self.workdir, port=self.port)


def test_the_dockerfile_is_read_as_expected(tmp_path):
    image = Image(tmp_path)
    assert image.cmd[:2] == ["stackgate", "run"]
    assert image.env["STACKGATE_HOST"] == "0.0.0.0"
    assert image.env["STACKGATE_CONFIG"] == str(image.config_path)
    assert image.env["STACKGATE_DATA_DIR"] == str(tmp_path / "data")


def test_the_image_refuses_to_serve_the_demo_config(tmp_path):
    image = Image(tmp_path)
    proc = image.process(tmp_path / "image.log").launch()
    assert proc.wait_exit() == 3, proc.log()
    lines = proc.bootstrap_lines()
    assert_names_each_key(insecure(lines, "error"), DEMO_KEYS + DJANGO_KEYS, proc.log())
    assert any(line["message"].startswith(f"refusing to serve on 0.0.0.0:{image.port}") for line in lines), proc.log()
    proc.json_lines()  # every line it wrote is JSON
    assert '"stackgate.access"' not in proc.log()


def production_config(users) -> str:
    """The shipped config with its demo consumers replaced; secrets stay in the environment."""
    text = (ROOT / "config.toml").read_text()
    text = re.sub(r"^\[consumers\.[^\]]+\]\n(?:(?!\[).*\n)*", "", text, flags=re.MULTILINE)
    assert re.search(r"^allowed_hosts = ", text, flags=re.MULTILINE), "the shipped [gateway] has a host allow-list"
    return text + consumers_toml(users)


def replace_file(path: Path, text: str) -> None:
    """Write as editors and ConfigMaps do: a new file renamed over the old one."""
    fresh = path.with_name(path.name + ".new")
    fresh.write_text(text)
    os.replace(fresh, path)


def test_the_image_serves_a_mounted_config_with_secrets_from_the_environment(tmp_path):
    image = Image(tmp_path)
    mounted = image.config_path.parent  # -v "$PWD/deploy:/etc/stackgate:ro"
    replace_file(image.config_path, production_config(USERS.values()))
    secrets_env = {
        "STACKGATE_JWT_SECRET": secrets.token_urlsafe(48),
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
    }
    proc = image.process(tmp_path / "image.log", **secrets_env).launch()
    try:
        proc.wait_healthy()
        alice = USERS["alice"].headers()
        with httpx.Client(base_url=proc.url, timeout=10) as client:
            assert client.get("/v1/todos", headers=alice).status_code == 200
            assert client.get("/v2/todos", headers=alice).status_code == 200
            demo = client.get("/v1/todos", headers={"X-API-Key": "sgk_BjlsISJWJWt6sMBgjX-ty-q3R05j0-qpufoYZk4wf_0"})
            assert demo.status_code == 401
            assert client.get("/admin/login/").status_code == 200

            health = subprocess.run(image.healthcheck, env=proc.env, cwd=image.workdir, capture_output=True, text=True, timeout=30)
            assert health.returncode == 0, health.stderr

            # Hot reload through the mounted folder: a new consumer's key starts working.
            carol = User("carol", ("user",))
            replace_file(mounted / "config.toml", production_config([*USERS.values(), carol]))
            deadline = time.monotonic() + 60
            while client.get("/v1/todos", headers=carol.headers()).status_code != 200:
                assert time.monotonic() < deadline, "the edited config was never applied:\n" + proc.log()
                time.sleep(0.2)
    finally:
        proc.stop()
    assert not [line for line in proc.bootstrap_lines() if line["level"] in ("warning", "error")], proc.log()
    proc.json_lines()


@pytest.mark.parametrize("missing", ["DJANGO_SECRET_KEY"])
def test_the_image_refuses_django_defaults(tmp_path, missing):
    image = Image(tmp_path)
    replace_file(image.config_path, production_config(USERS.values()))
    env = {"STACKGATE_JWT_SECRET": secrets.token_urlsafe(48), "DJANGO_SECRET_KEY": secrets.token_urlsafe(50), "DJANGO_ALLOWED_HOSTS": "127.0.0.1"}
    del env[missing]
    proc = image.process(tmp_path / "image.log", **env).launch()
    assert proc.wait_exit() == 3, proc.log()
    errors = insecure(proc.bootstrap_lines(), "error")
    assert len(errors) == 1 and f" {missing.removeprefix('DJANGO_')}: " in errors[0], proc.log()
