"""The real process against files a careless operator swaps in while it runs.

Whatever the state (a FIFO as token_file mid-scrape, a reload of /dev/zero or of an alias bomb),
the exporter keeps serving the accounts it can, answers `POST /-/reload`, and SIGTERM ends it
within 5 s with status 0.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from exporter.simulator import SimulatedCloud
from tests.processes import ExporterProcess, start_exporter
from tests.support import config_yaml, value
from tests.test_operator_files import BILLION_LAUGHS

OK = "device_cloud_exporter_config_last_reload_successful"
ERRORS = "device_cloud_exporter_upstream_errors_total"
STOP_SECONDS = 5


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "pipe"
    os.mkfifo(path)
    yield path
    try:  # a reader stuck in open() (a regression) gets its end of file
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return
    os.close(fd)


@pytest.fixture
def setup(tmp_path: Path, cloud: SimulatedCloud) -> tuple[Path, Path]:
    token = tmp_path / "token"
    token.write_text("demo-parqex-token\n")
    token.chmod(0o600)
    path = tmp_path / "config.yaml"
    path.write_text(
        config_yaml(
            parqex=[
                {"name": "filed", "token_file": token},
                {"name": "inline", "token": "demo-parqex-token"},
            ],
            base_url=cloud.url,
        )
    )
    return path, token


def scrape(exporter: ExporterProcess) -> str:
    response = httpx.get(f"{exporter.url}/metrics", timeout=15)
    assert response.status_code == 200
    return response.text


def stops_cleanly(exporter: ExporterProcess) -> None:
    started = time.monotonic()
    exporter.process.send_signal(signal.SIGTERM)
    try:
        status = exporter.process.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        exporter.process.kill()
        exporter.process.wait()
        raise AssertionError(f"SIGTERM did not end the exporter in {STOP_SECONDS} s") from None
    assert status == 0, exporter.log
    assert time.monotonic() - started < STOP_SECONDS
    assert "Traceback" not in exporter.log, exporter.log


def eventually(probe, what: str, timeout: float = 20):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (result := probe()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return result


@pytest.mark.system
def test_a_fifo_swapped_in_as_token_file_costs_one_account_and_sigterm_still_works(
    setup: tuple[Path, Path], fifo: Path
) -> None:
    path, token = setup
    exporter = start_exporter(["--config.file", str(path)])
    try:
        assert value(scrape(exporter), "parqex_up", account="filed") == 1
        token.unlink()
        token.symlink_to(fifo)
        text = scrape(exporter)
        assert value(text, "parqex_up", account="filed") == 0
        assert value(text, "parqex_up", account="inline") == 1
        assert value(text, ERRORS, source="parqex", account="filed", reason="token") == 1
        assert "not a regular file" in exporter.log
        stops_cleanly(exporter)
    finally:
        exporter.stop()


@pytest.mark.system
@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "alias-bomb"])
def test_a_reload_of_a_hostile_config_keeps_serving_and_sigterm_still_works(
    kind: str, setup: tuple[Path, Path], fifo: Path
) -> None:
    path, _ = setup
    exporter = start_exporter(["--config.file", str(path)])
    try:
        assert value(scrape(exporter), OK) == 1
        path.unlink()
        if kind == "alias-bomb":
            path.write_text(BILLION_LAUGHS)
        else:
            path.symlink_to("/dev/zero" if kind == "dev-zero" else fifo)
        exporter.process.send_signal(signal.SIGHUP)

        def failed_reload() -> str | None:
            text = scrape(exporter)
            return text if value(text, OK) == 0 else None

        text = eventually(failed_reload, "the failed reload")
        assert value(text, "parqex_up", account="inline") == 1  # the old config serves
        answer = httpx.post(f"{exporter.url}/-/reload", timeout=15)
        assert answer.status_code == 500 and str(path) in answer.text
        assert exporter.process.poll() is None
        stops_cleanly(exporter)
    finally:
        exporter.stop()
