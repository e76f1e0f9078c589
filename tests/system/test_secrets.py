"""No secret ever leaves the process: run every failure mode with sentinel secrets, grep all output.

Sentinels: the access tokens of working and failing accounts (inline and in token files), the
LaMetric device `api_key`, and the client secret and refresh token of an OAuth2 account whose token
endpoint is a closed loopback port. Everything the process writes (log lines at debug level, in
both log formats, every /metrics answer, `--config.check`) must be free of them. Each failure mode
is proven to have happened by its error counter going up, not by a label that is always there.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.simulator import SimulatedCloud
from tests.processes import ExporterProcess, start_exporter
from tests.support import config_yaml, fixture, value

pytestmark = pytest.mark.system

PARQEX_TOKEN = "SENTINEL-parqex-token-9f1c"
LAMETRIC_TOKEN = "SENTINEL-lametric-token-77ab"
FILE_TOKEN = "SENTINEL-file-token-c0de"
BAD_TOKEN = "SENTINEL-rejected-token-dead"
API_KEY = "SENTINEL-api-key-5eed"
CLIENT_SECRET = "SENTINEL-client-secret-0ff1"
REFRESH_TOKEN = "SENTINEL-refresh-token-b1ad"
SENTINELS = (
    PARQEX_TOKEN,
    LAMETRIC_TOKEN,
    FILE_TOKEN,
    BAD_TOKEN,
    API_KEY,
    CLIENT_SECRET,
    REFRESH_TOKEN,
)
SYNC = "/oauth/v1/endpoints/sync"
ERRORS = "device_cloud_exporter_upstream_errors_total"
Counted = tuple[str, str, str]  # (source, account, reason) of the error counter


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound (nobody else can take it), not listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def cloud(cloud: SimulatedCloud) -> SimulatedCloud:
    """The shared cloud with this module's accounts; a device's api_key is a known secret."""
    cloud.add_parqex_account(PARQEX_TOKEN)
    cloud.add_parqex_account(FILE_TOKEN)
    devices = fixture("lametric_devices.json")
    devices[0]["api_key"] = API_KEY
    cloud.add_lametric_account(LAMETRIC_TOKEN, devices=devices)
    return cloud


def write_config(tmp_path: Path, cloud: SimulatedCloud, closed_port: int) -> tuple[Path, Path]:
    token_file = tmp_path / "token"
    token_file.write_text(FILE_TOKEN + "\n")
    token_file.chmod(0o600)
    refresh_file = tmp_path / "refresh"
    refresh_file.write_text(REFRESH_TOKEN + "\n")
    refresh_file.chmod(0o600)
    path = tmp_path / "config.yaml"
    # base_url is per source, so the account that points at a closed port is an OAuth2 one:
    # connection refused while its secrets are in the query string of the token request
    refused = {
        "client_id": "dce",
        "client_secret": CLIENT_SECRET,
        "refresh_token_file": refresh_file,
        "token_url": f"http://127.0.0.1:{closed_port}/oauth/v2/endpoints/token/",
    }
    path.write_text(
        config_yaml(
            parqex=[
                {"name": "inline", "token": "${DCE_PARQEX}"},
                {"name": "filed", "token_file": token_file},
                {"name": "rejected", "token": BAD_TOKEN},
                {"name": "refused", "oauth2": refused},
            ],
            lametric=[{"name": "clock", "token": "${DCE_LAMETRIC}"}],
            base_url=cloud.url,
            collection={
                "timeout_seconds": 2,
                "backoff_base_seconds": 0.1,
                "backoff_max_seconds": 0.2,
            },
        )
    )
    return path, token_file


def failure_modes(cloud: SimulatedCloud, token_file: Path) -> Iterator[tuple[str, list[Counted]]]:
    """Each step leaves the cloud in another failure mode, with the errors it must cause.

    The caller scrapes after each step until those counters have gone up.
    """
    yield "healthy", [("parqex", "rejected", "auth"), ("parqex", "refused", "token")]
    cloud.fail(SYNC, 401, {"message": f"Invalid Access Token {PARQEX_TOKEN} {FILE_TOKEN}"})
    yield "401 that echoes the token", [("parqex", "inline", "auth"), ("parqex", "filed", "auth")]
    cloud.clear_faults()
    cloud.fail(
        SYNC, 500, f"<html><title>Oops {PARQEX_TOKEN}</title></html>", content_type="text/html"
    )
    yield "500 HTML page that echoes the token", [("parqex", "inline", "http_5xx")]
    cloud.clear_faults()
    cloud.fail(
        "/api/v2/users/me",
        429,
        {"errors": [{"message": f"slow down {LAMETRIC_TOKEN}"}]},
        headers={"Retry-After": "1"},
    )
    yield "429 that echoes the token", [("lametric", "clock", "rate_limited")]
    cloud.clear_faults()
    cloud.respond_raw(SYNC, b"not json " + PARQEX_TOKEN.encode(), content_type="text/plain")
    yield "non-JSON body with the token", [("parqex", "inline", "decode")]
    cloud.clear_faults()
    cloud.set_latency(3.0, SYNC)
    yield "timeout", [("parqex", "inline", "timeout")]
    cloud.clear_faults()
    token_file.unlink()
    yield "token file gone", [("parqex", "filed", "token")]
    token_file.write_text("")
    yield "token file empty", [("parqex", "filed", "token")]
    cloud.stop()  # its port closes, and kept-alive connections are hung up
    yield "cloud gone", [("parqex", "inline", "connect"), ("parqex", "filed", "token")]


def counted(text: str, key: Counted) -> float:
    source, account, reason = key
    return value(text, ERRORS, source=source, account=account, reason=reason) or 0.0


def scrape_until_counted(
    exporter: ExporterProcess, before: str, expected: list[Counted], mode: str
) -> list[str]:
    """Scrape until every expected counter is above its value in `before`; every answer."""
    answers: list[str] = []
    deadline = time.monotonic() + 20  # a fetch left over from the step before may run out first
    while True:
        response = exporter.scrape(**{"X-Prometheus-Scrape-Timeout-Seconds": "2"})
        assert response.status_code == 200, mode
        answers.append(response.text)
        missing = [k for k in expected if not counted(response.text, k) > counted(before, k)]
        if not missing:
            return answers
        assert time.monotonic() < deadline, f"{mode}: never counted {missing}"


@pytest.mark.parametrize("log_format", ["logfmt", "json"])
def test_no_secret_in_logs_or_metrics_across_failure_modes(
    cloud: SimulatedCloud, tmp_path: Path, log_format: str, closed_port: int
) -> None:
    config, token_file = write_config(tmp_path, cloud, closed_port)
    env = {"DCE_PARQEX": PARQEX_TOKEN, "DCE_LAMETRIC": LAMETRIC_TOKEN}
    exporter = start_exporter(
        ["--config.file", str(config), "--log.level", "debug", "--log.format", log_format], env=env
    )
    bodies: list[str] = []
    try:
        for mode, expected in failure_modes(cloud, token_file):
            before = bodies[-1] if bodies else ""
            bodies += scrape_until_counted(exporter, before, expected, mode)
            if mode == "healthy":  # the api_key and the good tokens were in play
                assert 'lametric_device_info{account="clock"' in bodies[0]
                assert value(bodies[0], "parqex_up", account="inline") == 1
                assert value(bodies[0], "parqex_up", account="filed") == 1
    finally:
        exporter.stop()
    everything = exporter.log + "".join(bodies)
    leaked = [s for s in SENTINELS if s in everything]
    assert not leaked, f"leaked: {leaked}"


def test_config_check_prints_no_secret(
    tmp_path: Path, cloud: SimulatedCloud, closed_port: int
) -> None:
    config, _ = write_config(tmp_path, cloud, closed_port)
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--config.check", "--config.file", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"DCE_PARQEX": PARQEX_TOKEN, "DCE_LAMETRIC": LAMETRIC_TOKEN, "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert not [s for s in SENTINELS if s in result.stdout + result.stderr]
