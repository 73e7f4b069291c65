"""The Helm chart (deploy/helm/litho): `make chart`'s check, run by `make test`.

Each values set (the defaults and every file under ``ci/``) is linted,
checked against ``values.schema.json``, rendered offline by Helm's own SDK
and validated against Kubernetes' strict schemas (``deploy/chart_check.py``);
these tests then read the rendered objects for what a platform team relies
on, and prove that a bad values file fails with a message naming the field.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from deploy import chart_check
from deploy.chart_check import ChartError, Rendered
from litho.config import BaseServiceSettings, load
from litho.service import Endpoints, ServiceSpec
from services import _registry
from services.gateway._settings import GatewaySettings
from services.renderer._fonts_check import SCRIPTS

ROOT = Path(__file__).resolve().parents[2]
LABELS = ("name", "instance", "component", "version", "managed-by", "part-of")
SELECTOR = {"app.kubernetes.io/name", "app.kubernetes.io/instance",
            "app.kubernetes.io/component"}
GRPC_SERVICES = [s for s in _registry.SERVICES if s.grpc_service]


@pytest.fixture(scope="module")
def rendered() -> dict[str, Rendered]:
    """Every values set, checked the way `make chart` checks it, by name."""
    return {Path(r.source).stem if r.source.endswith(".yaml") else r.source: r
            for r in chart_check.check()}


def deployment(r: Rendered, component: str) -> dict[str, Any]:
    return r.find("Deployment", f"litho-{component}")


def container(r: Rendered, component: str) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment(r, component)["spec"]["template"]["spec"][
        "containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(r: Rendered, component: str) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(r, component).get("env", [])}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "values.yaml"
    path.write_text(text)
    return path


def pod_environ(r: Rendered, component: str) -> dict[str, str]:
    """The environment a component's container starts with: the ConfigMap,
    its own variables, and a stand-in for each required Secret key (an
    optional one is absent)."""
    environ = dict(r.find("ConfigMap", "litho")["data"])
    for entry in env_of(r, component).values():
        if "value" in entry:
            environ[entry["name"]] = entry["value"]
        elif not entry["valueFrom"]["secretKeyRef"]["optional"]:
            environ[entry["name"]] = "s" * 64
    environ["LITHO_DOCSTORE_URL"] = "mongodb://litho:pw@mongo:27017/"
    return environ


def load_in(environ: dict[str, str], spec: ServiceSpec,
            monkeypatch: pytest.MonkeyPatch) -> BaseServiceSettings:
    """A service's settings as it loads them from ``environ`` alone."""
    for name in [n for n in os.environ if n.startswith(("LITHO_", "OTEL_"))]:
        monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    return load(_registry.app(spec).settings)


def readme_section(title: str) -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def test_defaults_and_every_ci_file_render_to_valid_manifests(
        rendered: dict[str, Rendered]) -> None:
    assert set(rendered) == {"default values", "default-values", "production-values",
                             "minimal-values", "secure-values"}
    for result in rendered.values():
        kinds = {obj["kind"] for obj in result.objects}
        assert {"Deployment", "Service", "ConfigMap"} <= kinds, result.source


def test_one_component_per_registered_service(rendered: dict[str, Rendered]) -> None:
    names = {s.name for s in _registry.SERVICES}
    for result in rendered.values():
        deployments = {d["metadata"]["labels"]["app.kubernetes.io/component"]
                       for d in result.of_kind("Deployment")}
        assert deployments == names, result.source
        for spec in _registry.SERVICES:
            assert container(result, spec.name)["args"] == [spec.module]


def test_services_find_each_other_through_the_registry_variables(
        rendered: dict[str, Rendered]) -> None:
    result = rendered["default values"]
    config = result.find("ConfigMap", "litho")["data"]
    headless = {s["metadata"]["name"]: s for s in result.of_kind("Service")
                if s["spec"].get("clusterIP") == "None"}
    for spec in GRPC_SERVICES:
        port = spec.default_port
        assert config[spec.address_env] == f"0.0.0.0:{port}"
        assert config[spec.target_env] == f"dns:///litho-{spec.name}-headless.litho.svc:{port}"
        service = headless[f"litho-{spec.name}-headless"]
        assert service["spec"]["ports"][0]["port"] == port
        assert service["spec"]["selector"]["app.kubernetes.io/component"] == spec.name
        # Internal callers also get a stable ClusterIP Service.
        cluster_ip = result.find("Service", f"litho-{spec.name}")
        assert cluster_ip["spec"]["type"] == "ClusterIP"
        assert cluster_ip["spec"]["ports"][0]["appProtocol"] == "grpc"
    assert config["LITHO_GATEWAY_HOST"] == "0.0.0.0"
    assert result.find("Service", "litho-gateway")["spec"]["ports"][0]["targetPort"] == "http"


def test_every_service_starts_from_what_the_chart_gives_it(
        rendered: dict[str, Rendered], monkeypatch: pytest.MonkeyPatch) -> None:
    """Each service's settings load from its pod's environment (the ConfigMap,
    its own env, its Secret keys), and its endpoints are the chart's Services."""
    result = rendered["production-values"]
    registry = _registry.registry()
    loaded: dict[str, BaseServiceSettings] = {}
    for spec in _registry.SERVICES:
        environ = pod_environ(result, spec.name)
        settings = load_in(environ, spec, monkeypatch)
        loaded[spec.name] = settings
        assert settings.nats_url == "nats://nats.messaging.svc:4222"
        assert settings.blobstore_location() == "s3://acme-litho/images"
        assert settings.s3.region == "eu-west-1" and settings.s3.path_style is False
        assert settings.production is True
        assert settings.nats_stream_replicas == 3
        assert settings.grpc.tls is False and settings.grpc.health_address == ""
        assert settings.grpc.token is not None  # the Secret's LITHO_GRPC_TOKEN
        endpoints = Endpoints.from_env(spec, registry, environ)
        for callee in spec.calls:
            host = endpoints.targets[callee].removeprefix("dns:///").rsplit(":", 1)[0]
            assert host == f"litho-{callee}-headless.litho.svc"
        if spec.grpc_service:
            assert endpoints.listen == f"0.0.0.0:{spec.default_port}"
    gateway = loaded["gateway"]
    assert isinstance(gateway, GatewaySettings)
    assert (gateway.gateway_host, gateway.gateway_port) == ("0.0.0.0", 8080)
    assert gateway.base_url(8080) == "https://img.example.com"
    assert (gateway.gateway_key_cache_ttl, gateway.gateway_max_keys_per_tenant) == (5, 100)


def test_every_service_starts_under_mutual_tls_and_the_token(
        rendered: dict[str, Rendered], monkeypatch: pytest.MonkeyPatch) -> None:
    """What secure-values gives each pod is a complete LITHO_GRPC_* set (the
    settings' own rules: mutual TLS needs the CA, the certificate and the
    key), naming files inside the mounted Secret."""
    result = rendered["secure-values"]
    for spec in _registry.SERVICES:
        settings = load_in(pod_environ(result, spec.name), spec, monkeypatch)
        grpc = settings.grpc
        assert grpc.tls is True and grpc.tls_client_auth is True, spec.name
        assert (grpc.tls_cert, grpc.tls_key, grpc.tls_ca) == (
            Path("/etc/litho/grpc-tls/tls.crt"), Path("/etc/litho/grpc-tls/tls.key"),
            Path("/etc/litho/grpc-tls/ca.crt"))
        assert grpc.tls_server_name == "litho-grpc.internal"
        assert grpc.token is not None and grpc.previous_token is None
        # Only gRPC servers run the plaintext health-only server.
        assert grpc.health_address == ("0.0.0.0:8086" if spec.grpc_service else ""), spec.name
        assert settings.production is True and settings.nats_stream_replicas == 3
        if isinstance(settings, GatewaySettings):
            assert settings.gateway_key_cache_ttl == 0
            assert settings.gateway_max_keys_per_tenant == 20


def test_standard_labels_and_minimal_selectors(rendered: dict[str, Rendered]) -> None:
    for result in rendered.values():
        for obj in result.objects:
            labels = obj["metadata"]["labels"]
            for label in LABELS:
                if label == "component" and obj["kind"] in ("ConfigMap", "Secret",
                                                            "ServiceAccount"):
                    continue
                assert f"app.kubernetes.io/{label}" in labels, (result.source, obj["kind"])
            assert labels["app.kubernetes.io/part-of"] == "litho"
        for d in result.of_kind("Deployment"):
            selector = d["spec"]["selector"]["matchLabels"]
            assert set(selector) == SELECTOR
            pod_labels = d["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= pod_labels.items()
        for obj in result.of_kind("Service") + result.of_kind("PodDisruptionBudget"):
            selector = obj["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            assert set(selector) == SELECTOR, obj["metadata"]["name"]


def test_native_grpc_probes_and_the_gateways_livez_and_readyz(
        rendered: dict[str, Rendered]) -> None:
    result = rendered["production-values"]
    for spec in GRPC_SERVICES:
        c = container(result, spec.name)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"] == {"port": spec.default_port}, (spec.name, probe)
        # Without TLS the service port answers probes: no health-only server.
        assert [p["name"] for p in c["ports"]] == ["grpc"]
        assert "LITHO_GRPC_HEALTH_ADDRESS" not in env_of(result, spec.name)
    for result in rendered.values():
        gateway = container(result, "gateway")
        # Ready while the render path is; a binding or webhook outage (which
        # fails /healthz) must not take gateways out of the Service.
        assert gateway["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        # Start-up and liveness ask no backend: slow or failed backends must
        # not restart gateways.
        for probe in ("startupProbe", "livenessProbe"):
            assert gateway[probe]["httpGet"] == {"path": "/livez", "port": "http"}


def test_with_tls_probes_ask_the_plaintext_health_port(rendered: dict[str, Rendered]) -> None:
    """Kubernetes' gRPC probes cannot speak TLS: each gRPC service also
    serves grpc.health.v1 in plaintext on grpc.healthPort, and every probe
    asks there; the port is the pod's only (no Service exposes it)."""
    result = rendered["secure-values"]
    for spec in GRPC_SERVICES:
        c = container(result, spec.name)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"] == {"port": 8086}, (spec.name, probe)
        assert {"name": "grpc-health", "containerPort": 8086, "protocol": "TCP"} in c["ports"]
        assert env_of(result, spec.name)["LITHO_GRPC_HEALTH_ADDRESS"]["value"] == "0.0.0.0:8086"
    for service in result.of_kind("Service"):
        assert all(p["port"] != 8086 for p in service["spec"]["ports"]), service["metadata"]
    gateway = container(result, "gateway")
    assert [p["name"] for p in gateway["ports"]] == ["http"]
    assert "LITHO_GRPC_HEALTH_ADDRESS" not in env_of(result, "gateway")
    moved = chart_check.render({"grpc": {"tls": {"enabled": True, "secretName": "t"},
                                         "healthPort": 9000}}, "moved")
    assert container(moved, "renderer")["livenessProbe"]["grpc"] == {"port": 9000}


def test_the_grpc_tls_secret_is_mounted_read_only_in_every_pod(
        rendered: dict[str, Rendered]) -> None:
    secure = rendered["secure-values"]
    config = secure.find("ConfigMap", "litho")["data"]
    assert config["LITHO_GRPC_TLS"] == "true"
    assert config["LITHO_GRPC_TLS_CLIENT_AUTH"] == "true"
    assert config["LITHO_GRPC_TLS_SERVER_NAME"] == "litho-grpc.internal"
    files = {config[f"LITHO_GRPC_TLS_{n}"] for n in ("CERT", "KEY", "CA")}
    # cert-manager's layout of a kubernetes.io/tls Secret.
    assert files == {f"/etc/litho/grpc-tls/{f}" for f in ("tls.crt", "tls.key", "ca.crt")}
    for d in secure.of_kind("Deployment"):  # the gateway too: it is a client
        pod = d["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
        mount = mounts["/etc/litho/grpc-tls"]
        assert mount["readOnly"] is True
        assert volumes[mount["name"]]["secret"] == {"secretName": "litho-grpc-tls",
                                                    "defaultMode": 0o440}
    for name in ("production-values", "default values"):
        plain = rendered[name]
        config = plain.find("ConfigMap", "litho")["data"]
        assert config["LITHO_GRPC_TLS"] == "false"
        assert not any(k.startswith("LITHO_GRPC_TLS_") for k in config)
        for d in plain.of_kind("Deployment"):
            assert all("secret" not in v for v in d["spec"]["template"]["spec"]["volumes"])


def test_every_pod_carries_the_grpc_token_while_it_is_on(rendered: dict[str, Rendered]) -> None:
    for name in ("production-values", "secure-values"):
        result = rendered[name]
        for spec in _registry.SERVICES:
            env = env_of(result, spec.name)
            token = env["LITHO_GRPC_TOKEN"]["valueFrom"]["secretKeyRef"]
            assert token == {"name": "litho-secrets", "key": "LITHO_GRPC_TOKEN",
                             "optional": False}, spec.name
            previous = env["LITHO_GRPC_PREVIOUS_TOKEN"]["valueFrom"]["secretKeyRef"]
            assert previous["optional"] is True
    own = rendered["default-values"].find("Secret", "litho")["stringData"]
    assert len(own["LITHO_GRPC_TOKEN"]) >= 32
    off = chart_check.render({"production": False, "grpc": {"token": {"enabled": False}}}, "off")
    for spec in _registry.SERVICES:
        assert not any(k.startswith("LITHO_GRPC_") for k in env_of(off, spec.name))
    assert "authenticates no caller" in off.notes
    assert "LITHO_GRPC_TOKEN" not in off.notes
    # The token without TLS crosses the network in clear text: the notes say so.
    assert "clear text" in rendered["default-values"].notes
    assert "clear text" not in rendered["secure-values"].notes


def test_production_mode_is_on_unless_turned_off(rendered: dict[str, Rendered]) -> None:
    for result in rendered.values():
        config = result.find("ConfigMap", "litho")["data"]
        assert config["LITHO_PRODUCTION"] == "true", result.source
        assert "production is off" not in result.notes
    assert rendered["default values"].find("ConfigMap", "litho")["data"][
        "LITHO_NATS_STREAM_REPLICAS"] == "1"
    assert rendered["production-values"].find("ConfigMap", "litho")["data"][
        "LITHO_NATS_STREAM_REPLICAS"] == "3"
    dev = chart_check.render({"production": False,
                              "config": {"blobstoreUrl": "file:///data/blobs"}}, "dev")
    assert dev.find("ConfigMap", "litho")["data"]["LITHO_PRODUCTION"] == "false"
    assert "WARNING: production is off" in dev.notes


def test_non_root_read_only_no_capabilities(rendered: dict[str, Rendered]) -> None:
    for result in rendered.values():
        for d in result.of_kind("Deployment"):
            pod = d["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["runAsUser"] == 10001
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            assert pod["automountServiceAccountToken"] is False
            c = pod["containers"][0]
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            volumes = {v["name"]: v for v in pod["volumes"]}
            assert "emptyDir" in volumes[mounts["/tmp"]]
            assert "resources" in c and c["resources"]["requests"]


def test_the_renderer_gets_a_memory_backed_dev_shm(rendered: dict[str, Rendered]) -> None:
    for result in rendered.values():
        for d in result.of_kind("Deployment"):
            component = d["metadata"]["labels"]["app.kubernetes.io/component"]
            pod = d["spec"]["template"]["spec"]
            mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
            if component != "renderer":
                assert "/dev/shm" not in mounts
                continue
            shm = {v["name"]: v for v in pod["volumes"]}[mounts["/dev/shm"]]
            assert shm["emptyDir"]["medium"] == "Memory"
            assert shm["emptyDir"]["sizeLimit"]
    production = rendered["production-values"]
    volumes = deployment(production, "renderer")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}} in volumes


def test_autoscalers_and_disruption_budgets(rendered: dict[str, Rendered]) -> None:
    production = rendered["production-values"]
    hpas = {h["metadata"]["name"]: h for h in production.of_kind("HorizontalPodAutoscaler")}
    assert set(hpas) == {"litho-gateway", "litho-renderer"}
    for name, hpa in hpas.items():
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                 "name": name}
        # The autoscaler owns the replica count.
        assert "replicas" not in production.find("Deployment", name)["spec"]
    renderer = hpas["litho-renderer"]["spec"]
    assert (renderer["minReplicas"], renderer["maxReplicas"]) == (3, 40)
    assert {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"]
            for m in renderer["metrics"]} == {"cpu": 65, "memory": 80}
    assert production.find("Deployment", "litho-template")["spec"]["replicas"] == 3

    pdbs = {p["metadata"]["name"]: p["spec"] for p in production.of_kind("PodDisruptionBudget")}
    assert set(pdbs) == {f"litho-{s.name}" for s in _registry.SERVICES}
    assert pdbs["litho-gateway"]["minAvailable"] == 2
    assert pdbs["litho-renderer"]["maxUnavailable"] == "25%"
    assert pdbs["litho-binding"]["maxUnavailable"] == 1
    assert all(p["apiVersion"] == "policy/v1" for p in production.of_kind("PodDisruptionBudget"))

    minimal = rendered["minimal-values"]
    assert not minimal.of_kind("HorizontalPodAutoscaler")
    assert not minimal.of_kind("PodDisruptionBudget")
    assert all(d["spec"]["replicas"] == 1 for d in minimal.of_kind("Deployment"))


def test_settings_in_a_config_map_and_secrets_in_a_secret(
        rendered: dict[str, Rendered]) -> None:
    production = rendered["production-values"]
    assert not production.of_kind("Secret")  # existingSecret: the chart writes none
    config = production.find("ConfigMap", "litho")["data"]
    assert config["LITHO_NATS_URL"] == "nats://nats.messaging.svc:4222"
    assert config["LITHO_BLOBSTORE_URL"] == "s3://acme-litho/images"
    assert config["LITHO_S3_REGION"] == "eu-west-1"
    assert config["LITHO_S3_PATH_STYLE"] == "false"
    assert config["LITHO_PUBLIC_URL"] == "https://img.example.com"
    assert config["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability.svc:4318"
    assert config["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert config["LITHO_OUTBOUND_MAX_BYTES"] == "10485760"
    assert config["LITHO_GATEWAY_KEY_CACHE_TTL"] == "5"
    assert config["LITHO_GATEWAY_MAX_KEYS_PER_TENANT"] == "100"
    # Names that look secret but are not: a limit, a duration, a file's path.
    not_secret = {"LITHO_GATEWAY_MAX_KEYS_PER_TENANT", "LITHO_GATEWAY_KEY_CACHE_TTL",
                  "LITHO_GRPC_TLS_KEY"}
    for result in rendered.values():
        config = result.find("ConfigMap", "litho")["data"]
        assert not [k for k in config if re.search(r"KEY|SECRET|PASSWORD|TOKEN", k)
                    and "ID" not in k and k not in not_secret], result.source

    refs = {name: env["valueFrom"]["secretKeyRef"] for name, env in
            env_of(production, "renderer").items() if "valueFrom" in env}
    assert refs["LITHO_DOCSTORE_URL"] == {"name": "litho-secrets", "key": "LITHO_DOCSTORE_URL",
                                          "optional": False}
    assert refs["LITHO_RENDERER_RENDER_ID_SECRET"]["optional"] is False
    assert refs["OTEL_EXPORTER_OTLP_HEADERS"]["optional"] is True
    # Each service reads only its own keys.
    assert "LITHO_RENDERER_RENDER_ID_SECRET" not in env_of(production, "gateway")
    assert "LITHO_BINDING_SECRET_KEY" in env_of(production, "binding")
    assert "LITHO_BINDING_SECRET_KEY" not in env_of(production, "renderer")
    assert "LITHO_EXPERIMENT_HANDLE_KEY" in env_of(production, "experiment")
    assert "LITHO_COPILOT_API_KEY" in env_of(production, "template")

    own = rendered["default-values"].find("Secret", "litho")
    assert own["stringData"]["LITHO_DOCSTORE_URL"].startswith("mongodb://")
    assert "LITHO_COPILOT_API_KEY" not in own["stringData"]  # empty keys are left out
    pod = deployment(rendered["default-values"], "renderer")["spec"]["template"]
    assert set(pod["metadata"]["annotations"]) >= {"checksum/config", "checksum/secret"}


def test_notes_name_what_is_missing(rendered: dict[str, Rendered]) -> None:
    defaults = rendered["default values"].notes
    assert "lacks LITHO_DOCSTORE_URL, LITHO_RENDERER_RENDER_ID_SECRET" in defaults
    assert "LITHO_EXPERIMENT_HANDLE_KEY, LITHO_GRPC_TOKEN." in defaults
    assert "config.publicUrl is empty" in defaults
    assert "port-forward svc/litho-gateway" in defaults
    production = rendered["production-values"].notes
    assert "WARNING" not in production
    assert "https://img.example.com/" in production
    assert "WARNING: the chart's Secret" not in rendered["default-values"].notes


def test_the_ingress_routes_to_the_gateway(rendered: dict[str, Rendered]) -> None:
    ingress = rendered["production-values"].find("Ingress", "litho")["spec"]
    assert ingress["ingressClassName"] == "nginx"
    assert ingress["tls"] == [{"secretName": "img-example-com-tls",
                               "hosts": ["img.example.com"]}]
    backend = ingress["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "litho-gateway", "port": {"name": "http"}}
    assert not rendered["default values"].of_kind("Ingress")
    # Without config.publicUrl, image URLs name the first ingress host.
    derived = chart_check.render({"ingress": {"enabled": True, "tls": [
        {"secretName": "t", "hosts": ["litho.example.com"]}]}}, "derived")
    assert derived.find("ConfigMap", "litho")["data"]["LITHO_PUBLIC_URL"] == (
        "https://litho.example.com")
    assert "LITHO_IMAGE_BASE_URL" not in derived.find("ConfigMap", "litho")["data"]


def test_the_image_base_url_reaches_every_component_the_webhook_service_too() -> None:
    cdn = chart_check.render({"config": {"imageBaseUrl": "https://cdn.example.com/litho"}},
                             "cdn")
    config = cdn.find("ConfigMap", "litho")
    assert config["data"]["LITHO_IMAGE_BASE_URL"] == "https://cdn.example.com/litho"
    # Every pod reads the ConfigMap whole (envFrom): the gateway for its
    # answers, the webhook service for its payloads.
    for name in ("gateway", "webhook"):
        env_from = container(cdn, name)["envFrom"]
        assert {"configMapRef": {"name": "litho"}} in env_from, name


def test_the_image_is_the_dockerfiles_at_the_packages_version(
        rendered: dict[str, Rendered]) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    chart = (chart_check.CHART / "Chart.yaml").read_text()
    assert re.search(rf'^appVersion: "{re.escape(version)}"$', chart, re.M)
    assert container(rendered["default values"], "gateway")["image"] == f"litho:{version}"
    assert container(rendered["production-values"], "renderer")["image"] == (
        "registry.example.com/platform/litho:0.1.0")
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "USER 10001:10001" in dockerfile
    assert "LITHO_CHROMIUM_PATH=/usr/bin/chromium" in dockerfile
    # Every font package the renderer's start-up check asks for is installed.
    install = re.search(r"apt-get install[^\n]*\n([^\n]*)", dockerfile)
    assert install is not None
    for script in SCRIPTS:
        assert script.package in install.group(1).split(), script.package
    assert "chromium" in install.group(1).split()


def test_a_value_of_the_wrong_type_fails_naming_it(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path, "components:\n  renderer:\n    replicas: two\n")
    with pytest.raises(ChartError) as caught:
        chart_check.check([bad])
    message = str(caught.value)
    assert "values.yaml" in message
    assert "/components/renderer/replicas" in message and "want integer" in message
    assert chart_check.main([str(bad)]) == 1
    assert "/components/renderer/replicas" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "named"), [
    ("components:\n  rendrer:\n    replicas: 2\n", "'rendrer' not allowed"),
    ("config:\n  natsURL: nats://x:4222\n", "'natsURL' not allowed"),
    ("components:\n  renderer:\n    resources:\n      limits: {memory: lots}\n",
     "/components/renderer/resources/limits/memory"),
    ("components:\n  gateway:\n    autoscaling: {enabled: 'yes', minReplicas: 1, "
     "maxReplicas: 2, targetCPUUtilizationPercentage: 50}\n",
     "/components/gateway/autoscaling/enabled"),
    ("secrets:\n  values:\n    LITHO_RENDER_ID_SECRET: x\n",
     "'LITHO_RENDER_ID_SECRET' not allowed"),
    ("components:\n  renderer:\n    secretEnv: [LITHO_DOCSTORE_PASSWORD]\n",
     "/components/renderer/secretEnv/0"),
    ("otel:\n  protocol: thrift\n", "/otel/protocol"),
    ("grpc:\n  tls: {enabled: true}\n", "/grpc/tls/secretName"),
    ("grpc:\n  tls: {clientAuth: true}\n", "/grpc/tls/enabled"),
    ("grpc:\n  tls: {enabled: true, secretName: t}\n  healthPort: 50051\n",
     "grpc.healthPort (50051) is components.template.ports.grpc too"),
    ("grpc:\n  token: {enabled: false}\n",
     "production: internal gRPC must authenticate its callers"),
    # Secrets never land in the ConfigMap or a pod spec, and config.env
    # cannot undo the grpc section.
    ("config:\n  env: {LITHO_GRPC_TOKEN: 0123456789abcdef0123456789abcdef}\n",
     "invalid propertyName 'LITHO_GRPC_TOKEN'"),
    ("components:\n  renderer:\n    env: {LITHO_RENDERER_RENDER_ID_SECRET: x}\n",
     "invalid propertyName 'LITHO_RENDERER_RENDER_ID_SECRET'"),
    ("config:\n  env: {LITHO_GRPC_TLS: 'false'}\n", "invalid propertyName 'LITHO_GRPC_TLS'"),
    # TLS alone encrypts but authenticates no caller.
    ("grpc:\n  token: {enabled: false}\n  tls: {enabled: true, secretName: t}\n",
     "production: internal gRPC must authenticate its callers"),
    ("grpc:\n  tokens: {enabled: true}\n", "'tokens' not allowed"),
    ("secrets:\n  values:\n    LITHO_GRPC_TOKEN: too-short\n",
     "/secrets/values/LITHO_GRPC_TOKEN"),
    ("nats:\n  streamReplicas: three\n", "/nats/streamReplicas"),
    ("nats:\n  streamReplicas: 7\n", "/nats/streamReplicas"),
    ("production: 'yes'\n", "/production"),
    ("config:\n  blobstoreUrl: file:///data/blobs\n",
     "production: config.blobstoreUrl is file:///data/blobs"),
    ("secrets:\n  values:\n    LITHO_DOCSTORE_URL: sqlite:////data/litho.db\n",
     "LITHO_DOCSTORE_URL must be a MongoDB URL"),
    ("config:\n  apiKeys: {cacheTtlSeconds: 301}\n", "/config/apiKeys/cacheTtlSeconds"),
    ("config:\n  imageBaseUrl: https://cdn.example.com/?v=1\n", "/config/imageBaseUrl"),
    ("config:\n  apiKeys: {maxPerTenant: 0}\n", "/config/apiKeys/maxPerTenant"),
    ("components:\n  renderer:\n    autoscaling: {minReplicas: 5, maxReplicas: 2}\n",
     "components.renderer.autoscaling: minReplicas (5) is above maxReplicas (2)"),
    ("components:\n  template:\n    pdb: {enabled: true, minAvailable: 1, maxUnavailable: 1}\n",
     "components.template.pdb: set minAvailable or maxUnavailable, not both"),
    ("- a list\n", "must be a mapping"),
    ("config:\n  natsUrl: nats://a:4222\nconfig:\n  logLevel: INFO\n", "'config' appears twice"),
])
def test_typos_and_bad_values_fail(tmp_path: Path, text: str, named: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ChartError, match=re.escape(named)):
        chart_check.check_values(chart_check.load_values(path), str(path))


def test_an_invalid_manifest_fails_validation() -> None:
    """The schema check can fail: a rendered object Kubernetes would refuse."""
    result = chart_check.render(None, "default values")
    broken = result.find("Deployment", "litho-renderer")
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["grpc"]["port"] = "x"
    with pytest.raises(ChartError, match=r"Deployment/litho-renderer: .*livenessProbe\.grpc\.port"):
        chart_check.validate(Rendered("edited", [broken]))


def test_documents_run_together_are_refused() -> None:
    """A template that loses its ``---`` makes one mapping of two objects;
    plain YAML would keep the second's keys and drop the first object."""
    text = ("kind: PodDisruptionBudget\nmetadata:\n  name: a\n"
            "kind: Deployment\nmetadata:\n  name: b\n")
    with pytest.raises(ChartError, match="'kind' appears twice"):
        chart_check.parse_manifests(text, "components.yaml")
    assert len(chart_check.parse_manifests(text.replace("kind: Deployment", "---\nkind: D"),
                                           "components.yaml")) == 2


def test_a_bad_label_value_is_refused() -> None:
    result = chart_check.render(None, "default values")
    broken = result.find("PodDisruptionBudget", "litho-binding")
    broken["metadata"]["labels"]["app.kubernetes.io/component"] = "binding---"
    with pytest.raises(ChartError, match="not a valid label value"):
        chart_check.validate(Rendered("edited", [broken]))


def test_the_readmes_example_values_render(tmp_path: Path) -> None:
    section = readme_section("Deploying on Kubernetes")
    example = re.search(r"```yaml\n(# values-prod\.yaml\n.*?)```", section, re.S)
    assert example is not None
    path = write(tmp_path, example.group(1))
    result = chart_check.check_values(chart_check.load_values(path), str(path))
    assert container(result, "renderer")["image"] == "registry.example.com/litho:0.1.0"
    assert not result.of_kind("Secret")


def test_the_readmes_grpc_security_example_fits_its_certificate(tmp_path: Path) -> None:
    """The values of "Securing internal gRPC" render, and name the Secret,
    the server name and the usages its cert-manager Certificate gives."""
    section = readme_section("Deploying on Kubernetes").split("### Securing internal gRPC", 1)[1]
    example = re.search(r"```yaml\n(# values-grpc\.yaml [^\n]*\n.*?)```", section, re.S)
    manifests = re.search(r"```yaml\n(# grpc-certificate\.yaml [^\n]*\n.*?)```", section, re.S)
    assert example is not None and manifests is not None
    path = write(tmp_path, example.group(1))
    values = chart_check.load_values(path)
    result = chart_check.check_values(values, str(path))
    tls = values["grpc"]["tls"]
    assert tls["enabled"] and tls["clientAuth"] and values["grpc"]["token"]["enabled"]
    certificates = [m for m in chart_check.parse_manifests(manifests.group(1), "README")
                    if m["kind"] == "Certificate" and not m["spec"].get("isCA")]
    assert len(certificates) == 1
    spec = certificates[0]["spec"]
    assert spec["secretName"] == tls["secretName"]
    assert tls["serverName"] in spec["dnsNames"]
    assert {"server auth", "client auth"} <= set(spec["usages"])
    volumes = deployment(result, "template")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "grpc-tls", "secret": {"secretName": spec["secretName"],
                                           "defaultMode": 0o440}} in volumes
