"""The exporter started as a user starts it, against the simulated cloud, scraped over HTTP."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from exporter.simulator import SimulatedCloud
from tests.processes import ExporterProcess, start_exporter
from tests.support import config_yaml, samples, value

pytestmark = pytest.mark.system

# Every metric the exporter promises (issue 2's list); a rename must fail here.
CONTRACT = {
    "parqex_device_info": {"account", "device_id", "blackbox_code", "software_version", "owner"},
    "parqex_device_active": {"account", "device_id"},
    "parqex_device_registered": {"account", "device_id"},
    "parqex_device_bluetooth_onboard": {"account", "device_id"},
    "parqex_device_last_contact_timestamp_seconds": {"account", "device_id"},
    "parqex_device_last_contact_age_seconds": {"account", "device_id"},
    "parqex_device_door_open_alert_threshold_seconds": {"account", "device_id"},
    "parqex_device_entities_controlled": {"account", "device_id"},
    "parqex_door_info": {
        "account",
        "device_id",
        "door_id",
        "name",
        "entity_number",
        "user_relationship",
    },
    "parqex_door_open": {"account", "device_id", "door_id"},
    "parqex_door_state": {"account", "device_id", "door_id", "state"},
    "parqex_door_active": {"account", "device_id", "door_id"},
    "parqex_door_auto_close_enabled": {"account", "device_id", "door_id"},
    "parqex_door_auto_close_delay_seconds": {"account", "device_id", "door_id"},
    "parqex_door_last_toggled_timestamp_seconds": {"account", "device_id", "door_id"},
    "parqex_door_bluetooth_sensor": {"account", "device_id", "door_id"},
    "parqex_door_sensor_battery_ratio": {"account", "device_id", "door_id"},
    "lametric_user_info": {"account", "user_id", "name"},
    "lametric_user_devices": {"account"},
    "lametric_user_apps": {"account"},
    "lametric_user_private_apps": {"account"},
    "lametric_device_info": {
        "account",
        "device_id",
        "name",
        "serial_number",
        "mac",
        "wifi_ssid",
        "ipv4_internal",
    },
    "lametric_device_state": {"account", "device_id", "state"},
    "lametric_device_created_timestamp_seconds": {"account", "device_id"},
    "lametric_device_updated_timestamp_seconds": {"account", "device_id"},
    "parqex_up": {"account"},
    "lametric_up": {"account"},
    "parqex_scrape_duration_seconds": {"account"},
    "lametric_scrape_duration_seconds": {"account"},
    "parqex_last_success_timestamp_seconds": {"account"},
    "lametric_last_success_timestamp_seconds": {"account"},
    "device_cloud_exporter_build_info": {"version", "python_version"},
    "device_cloud_exporter_upstream_errors_total": {"source", "account", "reason"},
    "device_cloud_exporter_scrape_timeout_seconds": set(),
    "process_resident_memory_bytes": set(),
    "process_cpu_seconds_total": set(),
}


def assert_contract(text: str) -> None:
    seen: dict[str, set[str]] = {}
    for name, labels in samples(text):
        seen.setdefault(name, set()).update(k for k, _ in labels)
    missing = sorted(set(CONTRACT) - set(seen))
    assert not missing, f"missing metrics: {missing}"
    wrong = {n: seen[n] for n in CONTRACT if seen[n] != CONTRACT[n]}
    assert not wrong, f"unexpected label sets: {wrong}"


@pytest.fixture
def exporter(cloud: SimulatedCloud, tmp_path: Path) -> Iterator[ExporterProcess]:
    path = tmp_path / "config.yaml"
    path.write_text(
        config_yaml(
            parqex=[
                {"name": "home", "token": "demo-parqex-token"},
                {"name": "broken", "token": "wrong-token"},
            ],
            lametric=[{"name": "home", "token": "${DCE_LAMETRIC}"}],
            base_url=cloud.url,
        )
    )
    process = start_exporter(
        ["--config.file", str(path)], env={"DCE_LAMETRIC": "demo-lametric-token"}
    )
    yield process
    assert process.stop() == 0, process.log


def test_scrape_over_http_has_every_metric_and_isolates_a_broken_account(
    exporter: ExporterProcess, cloud: SimulatedCloud
) -> None:
    response = exporter.scrape()
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = response.text
    assert_contract(text)
    assert value(text, "parqex_up", account="home") == 1
    assert value(text, "parqex_up", account="broken") == 0
    assert value(text, "lametric_up", account="home") == 1
    auth = "device_cloud_exporter_upstream_errors_total"
    assert value(text, auth, source="parqex", account="broken", reason="auth") == 1
    assert "wrong-token" not in exporter.log and "demo-parqex-token" not in exporter.log
    assert "HTTP 401" in exporter.log and "Invalid Access Token" in exporter.log
    # the headers the ParqEx document asks for reach the cloud, to both clouds
    request = next(r for r in cloud.requests if r.path == "/api/v2/users/me")
    assert request.headers["accept"] == "application/json"
    assert request.headers["accept-encoding"] == "gzip"
    assert request.headers["accept-charset"] == "utf-8"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("device-cloud-exporter/")


def test_state_changes_in_the_cloud_show_in_the_next_scrape(
    exporter: ExporterProcess, cloud: SimulatedCloud
) -> None:
    door = {
        "account": "home",
        "device_id": "35ff0e08ac8eb84ca097a894541ba049",
        "door_id": "a42308f43dbfaa8b1960a20ac4317b05",
    }
    assert value(exporter.scrape().text, "parqex_door_open", **door) == 1
    cloud.set_door(door["door_id"], state="CLOSED", battery=12)
    cloud.set_lametric_device(18, state="banned")
    text = exporter.scrape().text
    assert value(text, "parqex_door_open", **door) == 0
    assert value(text, "parqex_door_state", **door, state="CLOSED") == 1
    assert value(text, "parqex_door_sensor_battery_ratio", **door) == pytest.approx(0.12)
    banned = {"account": "home", "device_id": "18", "state": "banned"}
    assert value(text, "lametric_device_state", **banned) == 1


def test_connections_are_reused_between_scrapes(
    exporter: ExporterProcess, cloud: SimulatedCloud
) -> None:
    for _ in range(3):
        exporter.scrape()
    peers = {r.client_port for r in cloud.requests if r.path == "/oauth/v1/endpoints/sync"}
    # one pooled client: the account's three syncs (plus the broken account's) reuse sockets
    assert len(peers) <= 2


def test_http_endpoints(exporter: ExporterProcess) -> None:
    landing = httpx.get(exporter.url + "/")
    assert landing.status_code == 200 and 'href="metrics"' in landing.text
    assert httpx.get(exporter.url + "/-/healthy").text == "Healthy\n"
    assert httpx.get(exporter.url + "/nope").status_code == 404
    packed = exporter.scrape(**{"Accept-Encoding": "gzip"})
    assert packed.headers["content-encoding"] == "gzip"
    om = exporter.scrape(Accept="application/openmetrics-text; version=1.0.0")
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.endswith("# EOF\n")
    timed = exporter.scrape(**{"X-Prometheus-Scrape-Timeout-Seconds": "3"})
    assert value(timed.text, "device_cloud_exporter_scrape_timeout_seconds") == 2.5


def test_promtool_accepts_a_real_scrape(exporter: ExporterProcess, tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: scripts/test installs Debian's prometheus package"
    text = exporter.scrape().text
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""


def test_demo_mode_serves_every_metric_without_an_account(tmp_path: Path) -> None:
    demo = start_exporter(["--demo"], cwd=tmp_path)  # no config.yaml there: --demo needs none
    try:
        text = demo.scrape().text
        assert_contract(text)
        assert value(text, "parqex_up", account="demo") == 1
        assert value(text, "lametric_up", account="demo") == 1
        age = "parqex_device_last_contact_age_seconds"
        assert value(text, age, account="demo", device_id="9d9e5e0e093a06d5f16e1116d108d0c7") < 60
    finally:
        assert demo.stop() == 0, demo.log


def test_start_up_calls_no_cloud(cloud: SimulatedCloud, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        config_yaml(parqex=[{"name": "home", "token": "demo-parqex-token"}], base_url=cloud.url)
    )
    process = start_exporter(["--config.file", str(path)])
    try:
        assert httpx.get(process.url + "/-/healthy").status_code == 200
        assert cloud.request_count() == 0  # nothing is collected before the first scrape
        assert value(process.scrape().text, "parqex_up", account="home") == 1
        assert cloud.request_count() == 1
    finally:
        assert process.stop() == 0, process.log
