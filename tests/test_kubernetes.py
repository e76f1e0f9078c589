"""The Kubernetes manifests in deploy/kubernetes/ match the Kubernetes OpenAPI schemas, fit
together, and carry a config that the exporter's own loader accepts.

The schemas (kubernetes-validate, strict: unknown fields are errors) check every field's name,
type and nesting; the tests below them check what a schema cannot: names, that the pieces refer
to each other correctly, the security settings, resources, probes and the config itself.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from exporter import config

K8S = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes"
CONFIG_FILE = "/etc/device-cloud-exporter/config.yaml"
PORT = 9862
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")  # as exporter.config expands them
DNS_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# Kinds that have no Kubernetes OpenAPI schema: a CRD (prometheus-operator) and kustomize's file.
NO_SCHEMA = {
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "Kustomization": "kustomize.config.k8s.io/v1beta1",
}
# deploy/kubernetes/README.md claims 1.25 and later: the oldest and the newest schemas that
# kubernetes-validate ships within that range.
OLDEST_SUPPORTED = "1.25"
FILES = {
    "deployment.yaml",
    "service.yaml",
    "configmap.yaml",
    "secret.example.yaml",
    "servicemonitor.yaml",
    "kustomization.yaml",
}


def load_documents() -> list[tuple[str, dict[str, Any]]]:
    """(file name, document) for every YAML document under deploy/kubernetes/."""
    documents = []
    for path in sorted(K8S.glob("**/*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if document is not None:
                documents.append((path.name, document))
    return documents


DOCUMENTS = load_documents()


def only(kind: str) -> dict[str, Any]:
    found = [document for _, document in DOCUMENTS if document.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container() -> dict[str, Any]:
    containers = only("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "expected one container in the Deployment"
    return containers[0]


def container_port(port: int | str) -> int:
    """A probe's or targetPort's port, by number or by the container port's name."""
    if isinstance(port, int):
        return port
    named = {p.get("name"): p["containerPort"] for p in container().get("ports", [])}
    assert port in named, f"no container port named {port!r}"
    return named[port]


def config_text() -> str:
    return only("ConfigMap")["data"]["config.yaml"]


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", duration)
    assert match, f"unexpected duration {duration!r}"
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1)


def quantity(value: str | int) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(m|Ki|Mi|Gi)?", str(value))
    assert match, f"unexpected resource quantity {value!r}"
    scale = {None: 1, "m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}[match.group(2)]
    return float(match.group(1)) * scale


def test_every_manifest_file_is_there() -> None:
    assert {path.name for path in K8S.glob("*.yaml")} == FILES


def schema_versions() -> list[str]:
    shipped = sorted(
        {v.rsplit(".", 1)[0] for v in kubernetes_validate.utils.all_versions()},
        key=lambda v: tuple(map(int, v.split("."))),
    )
    assert OLDEST_SUPPORTED in shipped, f"kubernetes-validate no longer has {OLDEST_SUPPORTED}"
    return [OLDEST_SUPPORTED, shipped[-1]]


SCHEMA_DOCUMENTS = [(f, d) for f, d in DOCUMENTS if d.get("kind") not in NO_SCHEMA]


@pytest.mark.parametrize("version", schema_versions())
@pytest.mark.parametrize(
    ("file", "document"),
    SCHEMA_DOCUMENTS,
    ids=[f"{f}:{d.get('kind')}" for f, d in SCHEMA_DOCUMENTS],
)
def test_every_document_matches_the_kubernetes_schema(
    file: str, document: dict, version: str
) -> None:
    try:
        kubernetes_validate.validate(document, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{file}: Kubernetes {version}: {path}: {exc.message}")
    except kubernetes_validate.SchemaNotFoundError:
        kind = f"{document.get('apiVersion')} {document.get('kind')}"
        pytest.fail(f"{file}: Kubernetes {version} has no {kind}")


@pytest.mark.parametrize(
    "broken",
    [
        ("readOnlyRootFileSystem", True),  # a misspelt field: strict mode rejects it
        ("runAsUser", "10001"),  # a string where the schema wants an integer
    ],
)
def test_the_schema_check_rejects_a_broken_deployment(broken: tuple[str, Any]) -> None:
    """Guards the test above against validating nothing."""
    deployment = yaml.safe_load((K8S / "deployment.yaml").read_text(encoding="utf-8"))
    key, value = broken
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"][key] = value
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, OLDEST_SUPPORTED, strict=True)


@pytest.mark.parametrize(
    ("file", "document"), DOCUMENTS, ids=[f"{f}:{d.get('kind')}" for f, d in DOCUMENTS]
)
def test_every_document_has_a_valid_name(file: str, document: dict) -> None:
    # Object names are checked by the API server, not by the OpenAPI schema.
    name = (document.get("metadata") or {}).get("name")
    assert isinstance(name, str) and DNS_NAME.fullmatch(name), f"{file}: bad name {name!r}"


@pytest.mark.parametrize("kind", sorted(NO_SCHEMA))
def test_the_kinds_without_a_schema_have_their_api_version(kind: str) -> None:
    assert only(kind).get("apiVersion") == NO_SCHEMA[kind]


def test_kustomization_lists_every_manifest_but_the_example_secret() -> None:
    resources = only("Kustomization")["resources"]
    assert sorted(resources) == sorted(FILES - {"kustomization.yaml", "secret.example.yaml"})


def test_the_image_is_pinned_to_a_version() -> None:
    image = container()["image"]
    assert re.fullmatch(r"[^:@]+:\d+\.\d+\.\d+", image), image


def test_deployment_runs_at_least_two_replicas() -> None:
    assert only("Deployment")["spec"]["replicas"] >= 2


def test_the_container_runs_unprivileged() -> None:
    pod = only("Deployment")["spec"]["template"]["spec"].get("securityContext", {})
    own = container().get("securityContext", {})

    def effective(key: str) -> Any:  # the container's setting wins over the pod's
        return own.get(key, pod.get(key))

    assert effective("runAsNonRoot") is True
    assert effective("runAsUser") == 10001
    assert (effective("seccompProfile") or {}).get("type") == "RuntimeDefault"
    assert own.get("readOnlyRootFilesystem") is True
    assert own.get("allowPrivilegeEscalation") is False
    assert own.get("privileged", False) is False
    assert own.get("capabilities", {}).get("drop") == ["ALL"]
    assert not own.get("capabilities", {}).get("add")


def test_resources_have_requests_within_limits() -> None:
    resources = container()["resources"]
    for name in ("cpu", "memory"):
        request = quantity(resources["requests"][name])
        limit = quantity(resources["limits"][name])
        assert 0 < request <= limit, f"{name}: request {request} limit {limit}"


@pytest.mark.parametrize("probe", ["livenessProbe", "readinessProbe"])
def test_probes_ask_healthy_on_the_metrics_port(probe: str) -> None:
    get = container()[probe]["httpGet"]
    assert get["path"] == "/-/healthy"
    assert container_port(get["port"]) == PORT


def test_the_config_is_mounted_where_the_config_file_flag_points() -> None:
    args = container()["args"]
    assert f"--config.file={CONFIG_FILE}" in args
    spec = only("Deployment")["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    configmap = only("ConfigMap")
    keys = list(configmap["data"])
    paths = []
    for mount in container()["volumeMounts"]:
        source = volumes[mount["name"]].get("configMap")
        if source is None or source["name"] != configmap["metadata"]["name"]:
            continue
        if "subPath" in mount:  # a single file mounted at mountPath
            paths.append((mount["mountPath"], mount["subPath"]))
        else:
            items = source.get("items") or [{"key": key, "path": key} for key in keys]
            paths += [(f"{mount['mountPath']}/{item['path']}", item["key"]) for item in items]
    assert (CONFIG_FILE, "config.yaml") in paths


def test_every_env_var_in_the_config_comes_from_the_secret() -> None:
    referenced = set(ENV_REF.findall(config_text()))
    assert referenced, "the config should take its tokens from the environment"
    secret = only("Secret")
    env = {entry["name"]: entry for entry in container().get("env", [])}
    for var in sorted(referenced):
        assert var in env, f"${{{var}}} is used in the config but not set in the Deployment"
        ref = env[var].get("valueFrom", {}).get("secretKeyRef", {})
        assert ref.get("name") == secret["metadata"]["name"], f"{var} is not from the Secret"
        assert ref.get("key") in secret["stringData"], f"{var}: no key {ref.get('key')!r}"


def test_the_service_selects_the_pods() -> None:
    deployment = only("Deployment")["spec"]
    labels = deployment["template"]["metadata"]["labels"]
    for selector in (only("Service")["spec"]["selector"], deployment["selector"]["matchLabels"]):
        assert selector, "an empty selector selects everything"
        assert selector.items() <= labels.items(), f"{selector} does not match {labels}"


def test_the_service_exposes_the_metrics_port() -> None:
    ports = {port["name"]: port for port in only("Service")["spec"]["ports"]}
    assert ports["metrics"]["port"] == PORT
    assert container_port(ports["metrics"]["targetPort"]) == PORT


def test_the_service_monitor_selects_the_service_and_names_its_port() -> None:
    monitor = only("ServiceMonitor")["spec"]
    service = only("Service")
    selector = monitor["selector"]["matchLabels"]
    assert selector, "an empty selector selects every Service"
    assert selector.items() <= service["metadata"]["labels"].items()
    port_names = {port["name"] for port in service["spec"]["ports"]}
    assert monitor["endpoints"], "no endpoint to scrape"
    for endpoint in monitor["endpoints"]:
        assert endpoint["port"] in port_names
        assert endpoint["interval"] == "60s"
        assert endpoint["scrapeTimeout"] == "30s"


def test_the_config_validates_with_the_exporters_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ENV_REF.findall(config_text()):
        monkeypatch.setenv(var, f"value-of-{var}")
    loaded = config.parse(config_text(), "configmap.yaml: config.yaml")
    accounts = list(loaded.config.accounts())
    assert accounts, "the config has no account"
    tokens = {account.token.get_secret_value() for _, account in accounts if account.token}
    assert tokens == {f"value-of-{var}" for var in ENV_REF.findall(config_text())}
    assert loaded.warnings == []


def test_the_config_fails_without_the_secrets_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ENV_REF.findall(config_text()):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(config.ConfigError, match=r"environment variable \w+ is not set"):
        config.parse(config_text(), "configmap.yaml: config.yaml")


def test_collection_ends_within_the_scrape_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ENV_REF.findall(config_text()):
        monkeypatch.setenv(var, "x")
    collection = config.parse(config_text()).config.collection
    for endpoint in only("ServiceMonitor")["spec"]["endpoints"]:
        budget = seconds(endpoint["scrapeTimeout"]) - collection.timeout_offset_seconds
        assert collection.timeout_seconds <= budget
        assert seconds(endpoint["scrapeTimeout"]) <= seconds(endpoint["interval"])
