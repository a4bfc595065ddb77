"""deploy/kubernetes/: valid against the Kubernetes API schemas (kubernetes-validate), and
in agreement with the code: ports, probes, env names, commands, writable paths, secrets.

No cluster runs here; each manifest is read as the API server would read it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from jackpot_grpc.config import Settings
from jackpot_grpc.entrypoints.database_health_probe import LIVENESS
from jackpot_grpc.security.secret_rules import TOO_OPEN
from testkit.deploy_files import assert_parses, stages
from testkit.paths import PROJECT_ROOT

MANIFESTS = PROJECT_ROOT / "deploy" / "kubernetes"
PACKAGE = PROJECT_ROOT / "jackpot_grpc"
# The oldest release these manifests target (native gRPC probes are GA from 1.27) and the
# newest the validator knows.
KUBERNETES_VERSIONS = ("1.28.0", kubernetes_validate.latest_version())
# Custom resources: no schema in kubernetes-validate; parsed and checked below instead.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
# The health service name that ignores the database (the server registers it).
LIVENESS_SERVICE = LIVENESS
# Settings read by code that is on its way (the clients file of issue 12).
PENDING_ENV = {"JACKPOT_CLIENTS_FILE"}


def documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found.append((path.name, doc))
    return found


def kinds(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in documents() if doc["kind"] == kind]


def named(kind: str, name: str) -> dict[str, Any]:
    matches = [doc for doc in kinds(kind) if doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}"
    return matches[0]


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for kind in ("Deployment", "Job"):
        for doc in kinds(kind):
            yield f"{kind}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]


def containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, spec in pod_specs():
        for container in spec["containers"]:
            yield name, container


def plain_env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def container_settings(container: dict[str, Any]) -> Settings:
    return Settings.from_env(plain_env(container))


def the_container(deployment: str) -> dict[str, Any]:
    spec = named("Deployment", deployment)["spec"]["template"]["spec"]
    assert len(spec["containers"]) == 1
    container: dict[str, Any] = spec["containers"][0]
    return container


def port_numbers(container: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports", [])}


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(version: str) -> None:
    checked = 0
    for filename, doc in documents():
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{filename}: {doc['kind']}/{doc['metadata']['name']}: {error.message}")
        checked += 1
    assert checked >= 10


def test_the_manifests_hold_every_required_kind() -> None:
    found = {doc["kind"] for _, doc in documents()}
    assert {
        "Deployment",
        "Service",
        "Job",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "ServiceMonitor",
        "Secret",
    } <= found


def test_server_ports_and_probes_agree_with_the_settings() -> None:
    server = the_container("jackpot")
    settings = container_settings(server)
    ports = port_numbers(server)
    assert ports == {"grpc": settings.grpc.port, "health": settings.health.port}
    assert server["readinessProbe"]["grpc"] == {"port": settings.grpc.port, "service": ""}
    for probe in ("livenessProbe", "startupProbe"):
        assert server[probe]["grpc"] == {"port": settings.grpc.port, "service": LIVENESS_SERVICE}
    assert assert_parses(" ".join(server["args"])).command == "serve"
    assert not assert_parses(" ".join(server["args"])).migrate, "serve must not migrate"


def test_gateway_ports_probes_and_target_agree_with_the_settings() -> None:
    gateway = the_container("jackpot-gateway")
    settings = container_settings(gateway)
    assert port_numbers(gateway) == {"rest": settings.gateway.port}
    assert gateway["readinessProbe"]["httpGet"]["port"] == "rest"
    assert assert_parses(" ".join(gateway["args"])).command == "gateway"
    server = the_container("jackpot")
    target = settings.grpc.target.removeprefix("dns:///")
    host, _, port = target.rpartition(":")
    assert int(port) == container_settings(server).grpc.port
    service = named("Service", host)
    assert service["spec"]["clusterIP"] == "None", "one address per replica to balance over"
    metrics = plain_env(gateway)["JACKPOT_METRICS_URL"]
    assert metrics == f"http://jackpot:{container_settings(server).health.port}/metrics"


def test_the_migration_job_runs_jackpot_migrate() -> None:
    job = named("Job", "jackpot-migrate")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert assert_parses(" ".join(container["args"])).command == "migrate"
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")


def test_every_env_name_is_one_the_code_reads() -> None:
    sources = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py"))
    for where, container in containers():
        for entry in container.get("env", []):
            name = entry["name"]
            if name in PENDING_ENV or name.startswith("OTEL_"):
                continue
            assert f'"{name}"' in sources, f"{where}: the code reads no {name}"


def test_pre_stop_is_sized_to_the_drain_delay() -> None:
    for deployment in ("jackpot", "jackpot-gateway"):
        spec = named("Deployment", deployment)["spec"]["template"]["spec"]
        container = the_container(deployment)
        settings = container_settings(container)
        command = container["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep"
        pre_stop = float(command[1])
        assert pre_stop == settings.process.drain_delay, deployment
        needed = pre_stop + settings.process.drain_delay + settings.process.shutdown_grace
        assert spec["terminationGracePeriodSeconds"] > needed, deployment


def test_pods_run_as_the_image_user_on_a_read_only_root() -> None:
    final = stages()[-1]
    image_user = [rest for name, rest in final if name == "USER"][-1]
    uid, gid = (int(part) for part in image_user.split(":"))
    for where, spec in pod_specs():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, where
        assert (pod["runAsUser"], pod["runAsGroup"]) == (uid, gid), where
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in spec["containers"]:
            ctx = container["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True, where
            assert ctx["allowPrivilegeEscalation"] is False, where
            assert ctx["capabilities"]["drop"] == ["ALL"], where
            assert "limits" in container["resources"] and "requests" in container["resources"]
            mounts = {
                m["mountPath"]: volumes[m["name"]]
                for m in container.get("volumeMounts", [])
                if "emptyDir" in volumes[m["name"]]
            }
            writes = {"/tmp"}
            if "JACKPOT_LOG_DIR" in plain_env(container):
                writes.add(str(container_settings(container).process.log_dir))
            assert writes <= set(mounts), f"{where}: no writable volume for {writes - set(mounts)}"


def test_secret_references_exist_in_the_templates() -> None:
    keys = {
        (doc["metadata"]["name"], key)
        for doc in kinds("Secret")
        for key in doc.get("stringData", {})
    }
    for where, container in containers():
        for entry in container.get("env", []):
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert (ref["name"], ref["key"]) in keys, f"{where}: {ref}"
    server = named("Deployment", "jackpot")["spec"]["template"]["spec"]
    clients_file = Path(plain_env(the_container("jackpot"))["JACKPOT_CLIENTS_FILE"])
    (volume,) = [v for v in server["volumes"] if "secret" in v]
    (mount,) = [m for m in the_container("jackpot")["volumeMounts"] if m["name"] == volume["name"]]
    assert clients_file.parent == Path(mount["mountPath"])
    assert (volume["secret"]["secretName"], clients_file.name) in keys


def test_secret_volumes_are_private_enough_for_the_server() -> None:
    """The server refuses a clients file others may read or its group may write
    (secret_rules.TOO_OPEN); Kubernetes mounts secrets 0644 unless told otherwise."""
    for deployment in kinds("Deployment"):
        for volume in deployment["spec"]["template"]["spec"].get("volumes", []):
            if "secret" in volume:
                mode = volume["secret"].get("defaultMode", 0o644)
                assert not mode & TOO_OPEN, (deployment["metadata"]["name"], oct(mode))


def test_services_budgets_autoscalers_and_policies_point_at_real_pods() -> None:
    deployments = {d["metadata"]["name"]: d for d in kinds("Deployment")}

    def pods(selector: dict[str, str]) -> list[dict[str, Any]]:
        return [
            d
            for d in deployments.values()
            if matches(selector, d["spec"]["template"]["metadata"]["labels"])
        ]

    def port_names(selector: dict[str, str]) -> set[str]:
        return {
            p["name"]
            for d in pods(selector)
            for c in d["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports", [])
        }

    for service in kinds("Service"):
        selector = service["spec"]["selector"]
        assert pods(selector), service["metadata"]["name"]
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names(selector), service["metadata"]["name"]
    for budget in kinds("PodDisruptionBudget"):
        assert pods(budget["spec"]["selector"]["matchLabels"]), budget["metadata"]["name"]
    for scaler in kinds("HorizontalPodAutoscaler"):
        target = deployments[scaler["spec"]["scaleTargetRef"]["name"]]
        assert scaler["spec"]["minReplicas"] <= target["spec"]["replicas"]
        assert scaler["spec"]["minReplicas"] >= 2, "one replica is no replica set"
    for policy in kinds("NetworkPolicy"):
        selector = policy["spec"]["podSelector"]["matchLabels"]
        assert pods(selector), policy["metadata"]["name"]
        for rule in policy["spec"]["ingress"]:
            for port in rule["ports"]:
                assert port["port"] in port_names(selector), policy["metadata"]["name"]


def test_the_service_monitor_scrapes_the_prometheus_endpoint() -> None:
    (monitor,) = kinds("ServiceMonitor")
    services = [
        s
        for s in kinds("Service")
        if matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
    ]
    routes = (PACKAGE / "entrypoints" / "health_http.py").read_text()
    for endpoint in monitor["spec"]["endpoints"]:
        assert any(endpoint["port"] in {p["name"] for p in s["spec"]["ports"]} for s in services)
        assert re.search(rf'add_get\("{re.escape(endpoint["path"])}"', routes)
    # deploy/prometheus/jackpot-alerts.yml reads job="jackpot"
    label = monitor["spec"]["jobLabel"]
    assert {s["metadata"]["labels"][label] for s in services} == {"jackpot"}
