"""deploy/kubernetes: every manifest valid against Kubernetes' own schemas, and consistent with the image.

Schemas: `kubernetes-validate` (dev dependency), strict (unknown fields are errors), for the oldest
and the newest Kubernetes release we support. The kustomizations are rendered with `kubectl
kustomize` (kustomize built into kubectl, no cluster involved), so what is checked is what
`kubectl apply -k` would send.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import utils as kubernetes_schemas

from speaches.config import Settings
from speaches.config_docs import setting_env_names
from speaches.metrics import INFERENCE_QUEUE_DEPTH
from speaches.models.sources import BUNDLED_PIPER_VOICES, BUNDLED_WHISPER_MODELS
from tests.containers.test_container_files import env_values, final_stage, parse_dockerfile
from tests.helpers import REPO_ROOT

KUBERNETES = REPO_ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_schemas.latest_version())
"""1.30: the oldest release still maintained by the big clouds when this was written."""
QUEUE_DEPTH_COMPONENT = KUBERNETES / "components" / "queue-depth"


def load_documents(text: str) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(text) if document]


def schema_errors(resource: dict[str, Any]) -> list[str]:
    errors = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_schemas.validate(resource, version, strict=True)
        except kubernetes_schemas.ValidationError as error:
            where = "/".join(str(part) for part in error.path)
            errors.append(f"{resource['kind']}/{resource['metadata']['name']} on {version}: {where}: {error.message}")
        except kubernetes_schemas.SchemaNotFoundError as error:
            errors.append(error.message)
    return errors


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.skip("kubectl (for its built-in kustomize) is not installed")
    return found


@functools.cache
def render(kustomization_dir: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(kustomization_dir)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {kustomization_dir}:\n{result.stderr}"
    return load_documents(result.stdout)


def render_with_queue_depth(overlay: Path, tmp_path: Path) -> list[dict[str, Any]]:
    """What an operator's own kustomization gets from the overlay plus the queue-depth component."""
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [os.path.relpath(overlay, tmp_path)],
                "components": [os.path.relpath(QUEUE_DEPTH_COMPONENT, tmp_path)],
            }
        )
    )
    return render(tmp_path)


def by_kind(resources: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds: dict[str, dict[str, Any]] = {}
    for resource in resources:
        assert resource["kind"] not in kinds, f"two {resource['kind']}s: this layout expects one of each"
        kinds[resource["kind"]] = resource
    return kinds


def test_every_listed_resource_file_is_valid_on_its_own() -> None:
    checked = 0
    for kustomization in sorted(KUBERNETES.rglob("kustomization.yaml")):
        listed = yaml.safe_load(kustomization.read_text()).get("resources", [])
        for entry in listed:
            path = kustomization.parent / entry
            if path.is_dir():
                continue  # another kustomization, checked in its own turn
            for resource in load_documents(path.read_text()):
                assert not schema_errors(resource), schema_errors(resource)
                checked += 1
    assert checked >= 5


def test_the_schemas_catch_a_broken_manifest() -> None:
    deployment = yaml.safe_load((KUBERNETES / "base" / "deployment.yaml").read_text())
    assert not schema_errors(deployment)
    misspelt = yaml.safe_load((KUBERNETES / "base" / "deployment.yaml").read_text())
    misspelt["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/health"
    assert len(schema_errors(misspelt)) == len(KUBERNETES_VERSIONS), "strict: an unknown field is an error"
    deployment["spec"]["replicas"] = "two"
    assert len(schema_errors(deployment)) == len(KUBERNETES_VERSIONS)


@pytest.mark.parametrize("variant", ["base", "overlays/gpu", "base+queue-depth", "overlays/gpu+queue-depth"])
def test_rendered_kustomizations_are_valid(variant: str, tmp_path: Path) -> None:
    directory, _, component = variant.partition("+")
    resources = (
        render_with_queue_depth(KUBERNETES / directory, tmp_path) if component else render(KUBERNETES / directory)
    )
    assert {resource["kind"] for resource in resources} == {
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PersistentVolumeClaim",
        "Ingress",
    }
    errors = [error for resource in resources for error in schema_errors(resource)]
    assert not errors, "\n".join(errors)


def server_container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_deployment_runs_the_image_as_built() -> None:
    kinds = by_kind(render(KUBERNETES / "base"))
    deployment, pod = kinds["Deployment"], kinds["Deployment"]["spec"]["template"]["spec"]
    container = server_container(deployment)
    image_env = env_values(final_stage(parse_dockerfile(REPO_ROOT / "Dockerfile.cpu")))
    assert container["image"] == "speaches:cpu"

    # Non-root as the image's user, nothing writable but the volumes.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 1000
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert set(mounts) == {image_env["HF_HOME"], "/tmp"}
    claim = volumes[mounts[image_env["HF_HOME"]]]["persistentVolumeClaim"]["claimName"]
    assert claim == kinds["PersistentVolumeClaim"]["metadata"]["name"]

    # Probes on the server's port: traffic once preloaded models are warm, restarts only when hung.
    (port,) = container["ports"]
    assert port["containerPort"] == int(image_env["UVICORN_PORT"])
    assert container["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": port["name"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": port["name"]}
    assert container["resources"]["requests"].keys() >= {"cpu", "memory"}
    assert container["resources"]["limits"]["memory"]

    # SIGTERM comes after the preStop pause; the pod must outlive both it and the server's drain.
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > Settings().shutdown_grace_seconds + pause

    # The key comes from a Secret, and every setting the ConfigMap sets is a real one.
    api_key = next(env for env in container["env"] if env["name"] == "API_KEY")
    assert set(api_key["valueFrom"]["secretKeyRef"]) == {"name", "key"}
    (settings_source,) = container["envFrom"]
    assert settings_source["configMapRef"]["name"] == kinds["ConfigMap"]["metadata"]["name"]
    settings = kinds["ConfigMap"]["data"]
    assert not set(settings) - setting_env_names(), f"not settings: {set(settings) - setting_env_names()}"
    bundled = set(BUNDLED_WHISPER_MODELS) | set(BUNDLED_PIPER_VOICES)
    assert set(settings["PRELOAD_MODELS"].split(",")) <= bundled, "preload only models the image carries"


def test_service_hpa_and_ingress_point_at_the_deployment() -> None:
    kinds = by_kind(render(KUBERNETES / "base"))
    deployment, service, hpa, ingress = (
        kinds[kind] for kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "Ingress")
    )
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    port_names = {port["name"] for port in server_container(deployment)["ports"]}
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] in port_names

    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "speaches"}
    assert [metric["resource"]["name"] for metric in hpa["spec"]["metrics"]] == ["cpu"]

    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": service["metadata"]["name"], "port": {"name": service_port["name"]}}
    annotations = {
        key.removeprefix("nginx.ingress.kubernetes.io/"): v for key, v in ingress["metadata"]["annotations"].items()
    }
    defaults = Settings()
    assert annotations["affinity"] == "cookie"
    assert annotations["proxy-buffering"] == "off", "streamed answers must not wait in the Ingress"
    # An idle live session may stay open this long; nginx must not close it sooner.
    assert int(annotations["proxy-read-timeout"]) >= defaults.live_idle_timeout_seconds
    assert int(annotations["proxy-body-size"].removesuffix("m")) * 2**20 >= defaults.max_upload_bytes


def test_gpu_overlay_asks_for_a_gpu_and_the_cuda_image() -> None:
    kinds = by_kind(render(KUBERNETES / "overlays" / "gpu"))
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    container = server_container(kinds["Deployment"])
    assert container["image"] == "speaches:cuda"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert any(toleration["key"] == "nvidia.com/gpu" for toleration in pod["tolerations"])
    assert kinds["ConfigMap"]["data"]["WHISPER__INFERENCE_DEVICE"] == "cuda"
    # Everything else stays as in the base: probes, security, the Secret.
    base = server_container(by_kind(render(KUBERNETES / "base"))["Deployment"])
    for field in ("readinessProbe", "livenessProbe", "securityContext", "env", "volumeMounts"):
        assert container[field] == base[field]


def test_queue_depth_scaling_reads_the_metric_the_server_exports(tmp_path: Path) -> None:
    hpa = by_kind(render_with_queue_depth(KUBERNETES / "base", tmp_path))["HorizontalPodAutoscaler"]
    (pods_metric,) = [metric["pods"] for metric in hpa["spec"]["metrics"] if metric["type"] == "Pods"]
    exported = INFERENCE_QUEUE_DEPTH._name
    assert pods_metric["metric"]["name"] == exported

    adapter = yaml.safe_load((QUEUE_DEPTH_COMPONENT / "prometheus-adapter-values.yaml").read_text())
    (rule,) = adapter["rules"]["custom"]
    assert rule["name"]["as"] == exported
    assert rule["seriesQuery"].startswith(f"{exported}{{")
    assert f"{exported}{{<<.LabelMatchers>>}}" in rule["metricsQuery"]
