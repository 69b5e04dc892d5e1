"""What the Kubernetes manifests run, run as a pod would run it (there is no cluster here).

The production overlay is rendered; the migration Job's command runs with its
environment, then the Deployment's command with its own (the Secret's keys
given real values: a fresh PostgreSQL database, a private Redis), reading the
ConfigMap's config.toml from a folder laid out as the kubelet lays it out. It
must pass the bootstrap checks on 0.0.0.0 (reached through 127.0.0.1), answer
its probes, serve a todo from the database the Job migrated, and stop within
its grace period.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from pathlib import Path

import httpx
import jwt

from tests.bootstrap_support import Proc, clean_env
from tests.kubelet import KubeletVolume
from tests.services import free_port
from tests.test_deploy import by_kind, needs_kubectl, render

BIN = str(Path(sys.executable).parent)


def pod_env(container: dict, secret_values: dict[str, str], paths: dict[str, str]) -> dict[str, str]:
    """The container's environment: literal values, Secret references resolved, absolute paths moved under tmp."""
    env = {}
    for entry in container["env"]:
        if "value" in entry:
            value = entry["value"]
            for inside, outside in paths.items():
                if value.startswith(inside):
                    value = outside + value[len(inside):]
            env[entry["name"]] = value
        else:
            env[entry["name"]] = secret_values[entry["valueFrom"]["secretKeyRef"]["key"]]
    return env


@needs_kubectl
def test_the_pod_serves_what_the_job_migrated(tmp_path, postgres_database, redis_server):
    objects = by_kind(render(tmp_path, "production"))
    (container,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    (job,) = objects["Job"]["spec"]["template"]["spec"]["containers"]
    config = KubeletVolume(tmp_path / "etc-stackgate")
    config.write(objects["ConfigMap"]["data"])
    (tmp_path / "data").mkdir()
    paths = {"/etc/stackgate": str(config.root), "/data": str(tmp_path / "data")}
    jwt_secret = secrets.token_urlsafe(32)
    values = {"STACKGATE_JWT_SECRET": jwt_secret, "DJANGO_SECRET_KEY": secrets.token_urlsafe(60),
              "DATABASE_URL": postgres_database, "REDIS_URL": redis_server.url}
    path = {
        "PATH": BIN + os.pathsep + os.environ.get("PATH", ""),  # `stackgate` as installed in the image
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),  # the demo stacks, as the image's PYTHONPATH=/app
    }

    migrate = Proc(job["command"], clean_env(**pod_env(job, values, paths), **path), tmp_path / "job.log").launch()
    assert migrate.wait_exit(300) == 0, migrate.log()

    port = free_port()
    env = clean_env(**{**pod_env(container, values, paths), **path, "STACKGATE_PORT": str(port)})
    assert env["STACKGATE_HOST"] == "0.0.0.0" and env["STACKGATE_MIGRATE"] == "0"
    pod = Proc(container["command"], env, tmp_path / "pod.log", port=port).launch()
    try:
        pod.wait_healthy(120)
        for probe in ("readinessProbe", "livenessProbe"):
            url = pod.url + container[probe]["httpGet"]["path"]
            deadline = time.monotonic() + 60
            while httpx.get(url, timeout=10).status_code != 200:
                assert time.monotonic() < deadline, f"{probe} {url}:\n{pod.log()}"
                time.sleep(0.2)
        token = jwt.encode({"sub": "alice", "roles": ["user"], "iss": "stackgate", "aud": "stackgate",
                            "exp": int(time.time()) + 600}, jwt_secret, algorithm="HS256")
        headers = {"Authorization": f"Bearer {token}", "Host": "api.example.com"}
        created = httpx.post(pod.url + "/v2/todos", json={"title": "from the pod"}, headers=headers, timeout=30)
        assert created.status_code == 201, created.text
        read = httpx.get(f"{pod.url}/v1/todos/{created.json()['id']}", headers=headers, timeout=30)
        assert read.status_code == 200 and read.json()["title"] == "from the pod"
        assert httpx.get(pod.url + "/v1/todos", headers={**headers, "Host": "elsewhere.example"}).status_code == 421
    finally:
        started = time.monotonic()
        status = pod.stop(timeout=objects["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])
        print(f"--- pod ---\n{pod.log()[-10000:]}")
    assert status == 0 and time.monotonic() - started < 45
