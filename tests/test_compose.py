"""docker-compose.yml matches the Compose specification and the example configs it mounts.

The schema (the Compose specification's JSON schema, as vendored by check-jsonschema) checks
keys and types; the tests after it check what a schema cannot: that every mounted file exists,
and that every host:port one service's config names is a service of this file listening there.
scripts/test-image brings the exporter service up with podman-compose.
"""

from __future__ import annotations

import importlib.resources
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from exporter import cli

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def compose_schema() -> dict[str, Any]:
    vendored = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads((vendored / "compose-spec.json").read_text(encoding="utf-8"))


def schema_errors(document: Any) -> list[str]:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [
        f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def mounts(service: str) -> dict[str, Path]:
    """Container path -> host path for the service's bind mounts (./host:/container[:ro])."""
    found = {}
    for volume in SERVICES[service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            found[target] = (ROOT / source).resolve()
    return found


def host_file(service: str, container_path: str) -> Path:
    """The repository file a service sees at container_path through its bind mounts."""
    for target, source in sorted(mounts(service).items(), key=lambda m: -len(m[0])):
        if container_path == target:
            return source
        if container_path.startswith(target.rstrip("/") + "/"):
            return source / container_path[len(target.rstrip("/")) + 1 :]
    raise AssertionError(f"{service}: nothing mounted at {container_path}")


def flag(service: str, name: str) -> str:
    for arg in SERVICES[service].get("command", []):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{service}: no {name}= in its command")


def container_ports(service: str) -> set[int]:
    """The container side of every published port ("127.0.0.1:9090:9090" -> 9090)."""
    return {int(str(port).rsplit(":", 1)[-1]) for port in SERVICES[service].get("ports", [])}


def assert_served(host_port: str, where: str) -> None:
    """host:port, named in an example config, is a compose service listening on that port."""
    host, _, port = host_port.partition(":")
    assert host in SERVICES, f"{where}: {host!r} is not a service of docker-compose.yml"
    listening = container_ports(host) | LISTENS_WITHOUT_PUBLISHING.get(host, set())
    assert int(port) in listening, f"{where}: {host} listens on {sorted(listening)}, not {port}"


def webhook_port() -> int:
    """The port in the webhook service's inline server: HTTPServer(("0.0.0.0", PORT), ...)."""
    script = "\n".join(SERVICES["webhook"]["command"])
    match = re.search(r"HTTPServer\(\(\"0\.0\.0\.0\", (\d+)\)", script)
    assert match, "the webhook service's script has no HTTPServer((host, port))"
    return int(match.group(1))


LISTENS_WITHOUT_PUBLISHING = {"webhook": {webhook_port()}}


def test_the_compose_file_matches_the_compose_specification() -> None:
    assert schema_errors(COMPOSE) == []


@pytest.mark.parametrize(
    "breakage",
    [
        lambda c: c["services"]["exporter"].update(comand=["--demo"]),  # a misspelt key
        lambda c: c["services"]["exporter"].update(restart=["always"]),  # a list for a string
    ],
    ids=["unknown-key", "wrong-type"],
)
def test_the_schema_check_rejects_a_broken_compose_file(breakage: Any) -> None:
    """Guards the test above against validating nothing."""
    broken = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    breakage(broken)
    assert schema_errors(broken)


@pytest.mark.parametrize("service", sorted(s for s in SERVICES if mounts(s)))
def test_every_mounted_file_exists(service: str) -> None:
    for target, source in mounts(service).items():
        assert source.exists(), f"{service}: {source} (mounted at {target}) does not exist"


def test_prometheus_and_alertmanager_read_the_mounted_example_configs() -> None:
    prometheus = host_file("prometheus", flag("prometheus", "--config.file"))
    assert prometheus == ROOT / "prometheus" / "prometheus.yml"
    alertmanager = host_file("alertmanager", flag("alertmanager", "--config.file"))
    assert alertmanager == ROOT / "prometheus" / "alertmanager.yml"
    rules = yaml.safe_load(prometheus.read_text(encoding="utf-8"))["rule_files"]
    for rule_file in rules:
        assert (prometheus.parent / rule_file).is_file(), f"rule file {rule_file} not mounted"


def test_prometheus_scrapes_the_exporter_and_alerts_through_alertmanager() -> None:
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "device-cloud-exporter")
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    assert targets == ["exporter:9862"]
    assert_served(targets[0], "prometheus.yml scrape target")
    # The exporter listens on its default address in the image: the compose port must be it.
    default_port = int(cli.build_parser().get_default("listen").rsplit(":", 1)[1])
    assert container_ports("exporter") == {default_port}
    for manager in config["alerting"]["alertmanagers"]:
        for group in manager["static_configs"]:
            for target in group["targets"]:
                assert_served(target, "prometheus.yml alertmanager")


def test_alertmanager_delivers_to_the_webhook_service() -> None:
    config = yaml.safe_load((ROOT / "prometheus" / "alertmanager.yml").read_text(encoding="utf-8"))
    urls = [
        hook["url"]
        for receiver in config["receivers"]
        for hook in receiver.get("webhook_configs", [])
    ]
    assert urls, "alertmanager.yml has no webhook receiver"
    for url in urls:
        assert_served(urlsplit(url).netloc, "alertmanager.yml webhook url")


def test_grafana_reads_the_provisioned_datasource_and_dashboard() -> None:
    provisioning = host_file("grafana", "/etc/grafana/provisioning")
    datasources = yaml.safe_load(
        (provisioning / "datasources" / "prometheus.yml").read_text(encoding="utf-8")
    )["datasources"]
    for datasource in datasources:
        assert_served(urlsplit(datasource["url"]).netloc, "grafana datasource url")
    providers = yaml.safe_load(
        (provisioning / "dashboards" / "device-cloud.yml").read_text(encoding="utf-8")
    )["providers"]
    for provider in providers:
        assert host_file("grafana", provider["options"]["path"]).is_dir()
    home = SERVICES["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert host_file("grafana", home).is_file(), f"grafana home dashboard {home} not mounted"
