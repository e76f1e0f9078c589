"""No secret ever leaves the process: run every failure mode with sentinel secrets, grep all output.

Sentinels: the access tokens of working and failing accounts (inline and in token files), and the
LaMetric device `api_key`. Everything the process writes (log lines at debug level, in both log
formats, every /metrics answer, `--config.check`) must be free of them.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.simulator import SimulatedCloud
from tests.processes import start_exporter

pytestmark = pytest.mark.system

PARQEX_TOKEN = "SENTINEL-parqex-token-9f1c"
LAMETRIC_TOKEN = "SENTINEL-lametric-token-77ab"
FILE_TOKEN = "SENTINEL-file-token-c0de"
BAD_TOKEN = "SENTINEL-rejected-token-dead"
API_KEY = "SENTINEL-api-key-5eed"
SENTINELS = (PARQEX_TOKEN, LAMETRIC_TOKEN, FILE_TOKEN, BAD_TOKEN, API_KEY)
SYNC = "/oauth/v1/endpoints/sync"


@pytest.fixture
def cloud() -> Iterator[SimulatedCloud]:
    with SimulatedCloud(parqex_token=None, lametric_token=None) as sim:
        sim.add_parqex_account(PARQEX_TOKEN)
        sim.add_parqex_account(FILE_TOKEN)
        devices = copy.deepcopy(
            json.loads(
                (Path(__file__).parents[1] / "fixtures" / "lametric_devices.json").read_text()
            )
        )
        devices[0]["api_key"] = API_KEY
        sim.add_lametric_account(LAMETRIC_TOKEN, devices=devices)
        yield sim


def write_config(tmp_path: Path, cloud: SimulatedCloud) -> tuple[Path, Path]:
    token_file = tmp_path / "token"
    token_file.write_text(FILE_TOKEN + "\n")
    token_file.chmod(0o600)
    path = tmp_path / "config.yaml"
    path.write_text(
        f"parqex:\n  base_url: {cloud.url}\n  accounts:\n"
        "    - {name: inline, token: '${DCE_PARQEX}'}\n"
        f"    - {{name: filed, token_file: {token_file}}}\n"
        f"    - {{name: rejected, token: {BAD_TOKEN}}}\n"
        f"lametric:\n  base_url: {cloud.url}\n  accounts:\n"
        "    - {name: clock, token: '${DCE_LAMETRIC}'}\n"
        # the last account points at a closed port: connection refused
        "collection: {timeout_seconds: 2, backoff_base_seconds: 0.1, backoff_max_seconds: 0.2}\n"
    )
    return path, token_file


def failure_modes(cloud: SimulatedCloud, token_file: Path) -> Iterator[str]:
    """Each step leaves the cloud in another failure mode; the caller scrapes after each."""
    yield "healthy"
    cloud.fail(SYNC, 401, {"message": f"Invalid Access Token {PARQEX_TOKEN} {FILE_TOKEN}"})
    yield "401 that echoes the token"
    cloud.clear_faults()
    cloud.fail(
        SYNC, 500, f"<html><title>Oops {PARQEX_TOKEN}</title></html>", content_type="text/html"
    )
    yield "500 HTML page that echoes the token"
    cloud.clear_faults()
    cloud.fail(
        "/api/v2/users/me",
        429,
        {"errors": [{"message": f"slow down {LAMETRIC_TOKEN}"}]},
        headers={"Retry-After": "1"},
    )
    yield "429 that echoes the token"
    cloud.clear_faults()
    cloud.respond_raw(SYNC, b"not json " + PARQEX_TOKEN.encode(), content_type="text/plain")
    yield "non-JSON body with the token"
    cloud.clear_faults()
    cloud.set_latency(3.0, SYNC)
    yield "timeout"
    cloud.clear_faults()
    token_file.unlink()
    yield "token file gone"
    token_file.write_text("")
    yield "token file empty"


@pytest.mark.parametrize("log_format", ["logfmt", "json"])
def test_no_secret_in_logs_or_metrics_across_failure_modes(
    cloud: SimulatedCloud, tmp_path: Path, log_format: str
) -> None:
    config, token_file = write_config(tmp_path, cloud)
    env = {"DCE_PARQEX": PARQEX_TOKEN, "DCE_LAMETRIC": LAMETRIC_TOKEN}
    exporter = start_exporter(
        ["--config.file", str(config), "--log.level", "debug", "--log.format", log_format], env=env
    )
    bodies = []
    try:
        for mode in failure_modes(cloud, token_file):
            response = exporter.scrape(**{"X-Prometheus-Scrape-Timeout-Seconds": "2"})
            assert response.status_code == 200, mode
            bodies.append(response.text)
    finally:
        exporter.stop()
    everything = exporter.log + "".join(bodies)
    leaked = [s for s in SENTINELS if s in everything]
    assert not leaked, f"leaked: {leaked}"
    # and the failures really happened, so the check above saw them
    for reason in ("auth", "http_5xx", "rate_limited", "decode", "timeout", "token"):
        assert f'reason="{reason}"' in everything or f"reason={reason}" in exporter.log, reason
    assert 'lametric_device_info{account="clock"' in bodies[0]


def test_config_check_prints_no_secret(tmp_path: Path, cloud: SimulatedCloud) -> None:
    config, _ = write_config(tmp_path, cloud)
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--config.check", "--config.file", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"DCE_PARQEX": PARQEX_TOKEN, "DCE_LAMETRIC": LAMETRIC_TOKEN, "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert not [s for s in SENTINELS if s in result.stdout + result.stderr]
