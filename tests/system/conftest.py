"""Reusable fixtures for real-stack system tests: free ports, processes that are always stopped,
Prometheus, Alertmanager, the exporter, and a webhook receiver that records notifications.

Everything listens on 127.0.0.1 only, keeps its data in pytest's temporary directories and is
stopped by a finalizer, also when a test fails. Debian's `prometheus` and
`prometheus-alertmanager` must be installed (scripts/test does it): without them these
fixtures FAIL the test instead of skipping it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INSTALL_HINT = "install Debian's packages: apt-get install -y prometheus prometheus-alertmanager"
T = TypeVar("T")


# --------------------------------------------------------------------------- helpers


def require_binary(name: str) -> str:
    """Path of a required program; a missing one fails the test (it never skips)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found on PATH; {INSTALL_HINT}", pytrace=False)
    return path


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (bind port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    probe: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.1,
) -> T:
    """Call `probe` until it returns something truthy or `timeout` seconds pass.

    Exceptions from the probe count as "not yet"; the last one is reported on timeout.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    last_value: Any = None
    while True:
        try:
            last_value = probe()
            if last_value:
                return last_value
        except Exception as error:  # any failure means "not yet"
            last_error = error
        if time.monotonic() >= deadline:
            detail = f"; last error: {last_error!r}" if last_error else ""
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {what}; last value: {last_value!r}"
                + detail
            )
        time.sleep(interval)


# --------------------------------------------------------------------------- processes


@dataclass
class ManagedProcess:
    """A child process with its output in a log file, stopped by `stop()`."""

    name: str
    argv: list[str]
    log_path: Path
    url: str
    process: subprocess.Popen[bytes] = field(init=False)

    def start(self, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
        log = self.log_path.open("wb")
        try:
            self.process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
                env=env,
                start_new_session=True,  # our own process group: nothing leaks on stop
            )
        finally:
            log.close()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_http_ok(self, path: str, timeout: float = 20.0) -> None:
        """Poll `url + path` until it answers 200; fail early if the process died."""

        def ready() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"exited with status {self.process.returncode}")
            return httpx.get(self.url + path, timeout=1.0).status_code == 200

        try:
            wait_until(ready, timeout, f"{self.name} at {self.url}{path}")
        except (AssertionError, RuntimeError) as error:
            pytest.fail(f"{self.name} did not become ready: {error}\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout)


class ProcessManager:
    """Starts processes in a temporary directory and stops them all (newest first)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: list[ManagedProcess] = []

    def start(
        self,
        name: str,
        argv: list[str],
        url: str,
        ready_path: str,
        cwd: Path | None = None,
        timeout: float = 20.0,
    ) -> ManagedProcess:
        proc = ManagedProcess(name, argv, self.workdir / f"{name}.log", url)
        proc.start(cwd=cwd)
        self.processes.append(proc)
        proc.wait_http_ok(ready_path, timeout)
        return proc

    def stop_all(self) -> None:
        errors = []
        for proc in reversed(self.processes):
            try:
                proc.stop()
            except Exception as error:  # stop the others anyway
                errors.append(f"{proc.name}: {error!r}")
        self.processes.clear()
        assert not errors, errors


@pytest.fixture(scope="module")
def process_manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessManager]:
    manager = ProcessManager(tmp_path_factory.mktemp("processes"))
    try:
        yield manager
    finally:
        manager.stop_all()


# --------------------------------------------------------------------------- prometheus


class PrometheusAPI:
    """The few HTTP API calls the tests need; every call asserts status success."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = httpx.Client(base_url=url, timeout=10.0)

    def _get(self, path: str, **params: Any) -> Any:
        response = self.client.get(path, params=params)
        body = response.json()
        assert response.status_code == 200 and body.get("status") == "success", (
            f"GET {path} {params}: HTTP {response.status_code}: {body.get('error', body)}"
        )
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self._get("/api/v1/query", query=expr)
        assert data["resultType"] in ("vector", "scalar"), data
        return data["result"] if data["resultType"] == "vector" else [data["result"]]

    def query_range(self, expr: str, seconds: float, step: str = "1s") -> list[dict[str, Any]]:
        end = time.time()
        return self._get(
            "/api/v1/query_range", query=expr, start=end - seconds, end=end, step=step
        )["result"]

    def alerts(self, state: str = "firing") -> list[dict[str, Any]]:
        return [a for a in self._get("/api/v1/alerts")["alerts"] if a["state"] == state]

    def rules(self) -> list[dict[str, Any]]:
        return [rule for group in self._get("/api/v1/rules")["groups"] for rule in group["rules"]]

    def targets(self) -> list[dict[str, Any]]:
        return self._get("/api/v1/targets")["activeTargets"]

    def close(self) -> None:
        self.client.close()


@pytest.fixture(scope="module")
def prometheus_factory(
    process_manager: ProcessManager, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., PrometheusAPI]]:
    """Factory: prometheus_factory(config_dict, {"alerts.yml": text, ...}) -> PrometheusAPI.

    Rule files are written next to the config, so `rule_files` may name them relatively.
    """
    binary = require_binary("prometheus")
    apis: list[PrometheusAPI] = []

    def start(config: dict[str, Any], files: dict[str, str] | None = None) -> PrometheusAPI:
        workdir = tmp_path_factory.mktemp("prometheus")
        for name, text in (files or {}).items():
            (workdir / name).write_text(text, encoding="utf-8")
        config_file = workdir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        port = free_port()
        process_manager.start(
            "prometheus",
            [
                binary,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--rules.alert.resend-delay=1s",
                "--log.level=info",
            ],
            f"http://127.0.0.1:{port}",
            "/-/ready",
            cwd=workdir,
        )
        api = PrometheusAPI(f"http://127.0.0.1:{port}")
        apis.append(api)
        return api

    yield start
    for api in apis:
        api.close()


@pytest.fixture(scope="module")
def alertmanager_factory(
    process_manager: ProcessManager, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[dict[str, Any]], str]:
    """Factory: alertmanager_factory(config_dict) -> base URL. Clustering is disabled."""
    binary = require_binary("prometheus-alertmanager")

    def start(config: dict[str, Any]) -> str:
        workdir = tmp_path_factory.mktemp("alertmanager")
        config_file = workdir / "alertmanager.yml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process_manager.start(
            "alertmanager",
            [
                binary,
                f"--config.file={config_file}",
                f"--storage.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",  # no gossip port on every interface
                "--log.level=info",
            ],
            url,
            "/-/ready",
            cwd=workdir,
        )
        return url

    return start


@pytest.fixture(scope="module")
def exporter_factory(
    process_manager: ProcessManager, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[dict[str, Any]], str]:
    """Factory: exporter_factory(config_dict) -> base URL of `python -m exporter` on loopback."""

    def start(config: dict[str, Any]) -> str:
        workdir = tmp_path_factory.mktemp("exporter")
        config_file = workdir / "config.yaml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process_manager.start(
            "exporter",
            [
                sys.executable,
                "-m",
                "exporter",
                "--config.file",
                str(config_file),
                "--web.listen-address",
                f"127.0.0.1:{port}",
            ],
            url,
            "/-/healthy",
            cwd=ROOT,
        )
        return url

    return start


# --------------------------------------------------------------------------- webhook


class WebhookReceiver:
    """An Alertmanager webhook receiver on loopback that keeps every notification."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                payload = json.loads(self.rfile.read(length) or b"{}")
                with receiver._changed:
                    receiver.notifications.append(payload)
                    receiver._changed.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/alerts"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="webhook", daemon=True
        )
        self._thread.start()

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert of every notification so far, in arrival order."""
        with self._changed:
            return [alert for n in self.notifications for alert in n.get("alerts", [])]

    def wait_for_alert(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> dict[str, Any]:
        """The first alert (old or new) matching `predicate`, waiting up to `timeout` s."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for n in self.notifications:
                    for alert in n.get("alerts", []):
                        if predicate(alert):
                            return alert
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [
                        (a["status"], a["labels"].get("alertname"), a["labels"].get("name"))
                        for n in self.notifications
                        for a in n.get("alerts", [])
                    ]
                    raise AssertionError(
                        f"no webhook notification with {what} within {timeout:g}s; got {seen}"
                    )
                self._changed.wait(remaining)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@pytest.fixture(scope="module")
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    try:
        yield receiver
    finally:
        receiver.stop()
