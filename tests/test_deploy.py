"""deploy/: the Kubernetes manifests rendered and validated offline, the compose file against its schema.

``kubectl kustomize`` renders the overlays (kubectl is a client here, no cluster);
``kubernetes-validate`` checks every object against the Kubernetes API's schemas
(strict: an unknown field is an error); the compose file is checked against the
Compose Specification's JSON schema, vendored in deploy/schema/. The configs both
ship are loaded as the gateway loads them, with the secrets the examples give,
and must pass the bootstrap checks that stop a gateway on a public address.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from gateway import bootstrap
from gateway.config import load_config
from tests.services import ROOT

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.32.0"
"""The oldest Kubernetes the manifests are for (the sleep-free preStop, autoscaling/v2, policy/v1 all hold there)."""
KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl (client only: kubectl kustomize) is not installed")


def read_env(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))
    return {key: value for key, value in pairs}


def render(tmp_path: Path, overlay: str) -> list[dict]:
    """``kubectl kustomize`` of a copy of deploy/k8s, with the overlay's secrets.env made from its example."""
    tree = tmp_path / "k8s"
    shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("secrets.env"))
    example = tree / overlay / "secrets.env.example"
    if example.exists():
        shutil.copy(example, tree / overlay / "secrets.env")
    result = subprocess.run([KUBECTL, "kustomize", str(tree / overlay)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(docs: list[dict]) -> dict[str, dict]:
    return {doc["kind"]: doc for doc in docs}


def validate(doc: dict) -> None:
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")


@needs_kubectl
@pytest.mark.parametrize("overlay", ["base", "production"])
def test_rendered_manifests_are_valid_kubernetes_objects(tmp_path, overlay):
    docs = render(tmp_path, overlay)
    kinds = sorted(doc["kind"] for doc in docs)
    expected = ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Job", "PodDisruptionBudget", "Service"]
    if overlay == "production":
        expected = sorted([*expected, "Namespace", "Secret"])
    assert kinds == expected
    for doc in docs:
        validate(doc)


def test_a_wrong_manifest_is_caught():
    """The validation can fail: an unknown field and a wrong type are errors."""
    deployment = yaml.safe_load((K8S / "base" / "deployment.yaml").read_text())
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    deployment = yaml.safe_load((K8S / "base" / "deployment.yaml").read_text())
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@needs_kubectl
def test_production_deployment_serves_as_documented(tmp_path):
    objects = by_kind(render(tmp_path, "production"))
    deployment, secret, config_map = objects["Deployment"], objects["Secret"], objects["ConfigMap"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/_stackgate/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/_stackgate/health"
    env = {e["name"]: e for e in container["env"]}
    assert env["STACKGATE_MIGRATE"]["value"] == "0", "pods never migrate: the Job does"
    for name in ("STACKGATE_JWT_SECRET", "DJANGO_SECRET_KEY", "DATABASE_URL", "REDIS_URL"):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["data"], name
    # Non-root, read-only, and writable only where the gateway writes.
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert {"/tmp", "/data"} <= set(mounts) and all("emptyDir" in volumes[mounts[p]["name"]] for p in ("/tmp", "/data"))
    # The ConfigMap as a folder (a subPath mount never sees an update), at the file the gateway reads.
    config_mount = mounts["/etc/stackgate"]
    assert "subPath" not in config_mount
    assert volumes[config_mount["name"]]["configMap"]["name"] == config_map["metadata"]["name"] == "stackgate-config"
    assert env["STACKGATE_CONFIG"]["value"] == "/etc/stackgate/config.toml" and "config.toml" in config_map["data"]
    # Draining: the preStop pause and the gateway's own graceful timeout both fit in the grace period.
    command = container["command"]
    graceful = int(command[command.index("--graceful-timeout") + 1])
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["terminationGracePeriodSeconds"] >= pause + graceful + 5
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    assert requests["memory"] == "384Mi" and limits["memory"] == "512Mi"
    job = objects["Job"]["spec"]["template"]["spec"]["containers"][0]
    assert job["command"] == ["stackgate", "migrate"]
    assert {e["name"] for e in job["env"]} >= {"DATABASE_URL", "DJANGO_SECRET_KEY"}
    assert objects["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert objects["Service"]["spec"]["selector"].items() <= labels.items()


@pytest.mark.parametrize("config, secrets", [
    (K8S / "base" / "config.toml", K8S / "production" / "secrets.env.example"),
    (DEPLOY / "compose" / "config.toml", DEPLOY / ".env.example"),
])
def test_shipped_configs_load_and_pass_the_bootstrap_checks(config, secrets):
    environ = read_env(secrets)
    environ.setdefault("REDIS_URL", "redis://redis:6379/0")
    loaded = load_config(config, environ=environ)
    assert not loaded.consumers, "no consumer: demo ones least of all"
    assert bootstrap.config_findings(loaded) == []
    assert loaded.throttle.storage == environ["REDIS_URL"]
    assert loaded.gateway.allowed_hosts


def test_configs_refuse_to_load_without_their_secrets():
    from gateway.config import ConfigError

    with pytest.raises(ConfigError) as caught:
        load_config(K8S / "base" / "config.toml", environ={})
    problems = "\n".join(caught.value.problems)
    assert "STACKGATE_JWT_SECRET" in problems and "REDIS_URL" in problems


def compose_schema() -> dict:
    import json

    return json.loads((DEPLOY / "schema" / "compose-spec.json").read_text())


def test_compose_file_is_valid_against_the_compose_spec():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    jsonschema.validate(compose, compose_schema(), cls=jsonschema.Draft7Validator)
    services = compose["services"]
    gateways = [name for name, s in services.items() if s.get("command", [None])[:2] == ["stackgate", "run"]]
    assert len(gateways) == 2
    for name in gateways:
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert services[name]["environment"]["STACKGATE_MIGRATE"] == "0"
    assert services["migrate"]["command"] == ["stackgate", "migrate"]
    assert {"redis", "postgres", "lb"} <= set(services)


def test_a_wrong_compose_file_is_caught():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    compose["services"]["redis"]["restart_policy"] = "always"  # not a service key
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(compose, compose_schema(), cls=jsonschema.Draft7Validator)
