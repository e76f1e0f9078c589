"""The exporter as a user starts it with `--web.config.file`: HTTPS, basic auth, client
certificates, rotation without a restart, and Prometheus itself scraping it that way.

Certificates are made by trustme (a throwaway CA; IP SAN 127.0.0.1), everything is on loopback.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import bcrypt
import httpx
import pytest
import trustme
from cryptography import x509

from exporter.simulator import SimulatedCloud
from tests.processes import ExporterProcess, start_exporter
from tests.support import config_yaml, value
from tests.system.conftest import PrometheusAPI, wait_until

pytestmark = pytest.mark.system

USER, PASSWORD = "prometheus", "s3cret scrape password"
TLS = "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n"


def users(**passwords: str) -> str:
    lines = [
        f"  {name}: '{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(4)).decode()}'"
        for name, pw in passwords.items()
    ]
    return "basic_auth_users:\n" + "\n".join(lines) + "\n"


def replace(path: Path, data: str | bytes) -> None:
    """A new version renamed over the old one, as rotation tools (certbot, Kubernetes) do."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def serial(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def trusting(ca: trustme.CA) -> ssl.SSLContext:
    """A client context that trusts the test CA (and only it)."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
def pki(tmp_path: Path, ca: trustme.CA) -> Path:
    leaf = ca.issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    return tmp_path


@pytest.fixture
def run(pki: Path, cloud: SimulatedCloud) -> Iterator[Callable[[str], ExporterProcess]]:
    """run(web_config_text) -> a started exporter serving one ParqEx account of the simulator."""
    started: list[ExporterProcess] = []

    def start(web: str) -> ExporterProcess:
        (pki / "web.yml").write_text(web)
        (pki / "config.yaml").write_text(
            config_yaml(parqex=[{"name": "home", "token": "demo-parqex-token"}], base_url=cloud.url)
        )
        process = start_exporter(
            ["--config.file", str(pki / "config.yaml"), "--web.config.file", str(pki / "web.yml")]
        )
        started.append(process)
        return process

    yield start
    for process in started:
        assert process.stop() == 0, process.log


def served_serial(url: str, context: ssl.SSLContext) -> int:
    """The serial number of the certificate a new connection is served."""
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    with (
        socket.create_connection((parts.hostname, parts.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=parts.hostname) as tls,
    ):
        return int(tls.getpeercert()["serialNumber"], 16)


def log_lines(process: ExporterProcess, needle: str) -> list[str]:
    return [line for line in process.log.splitlines() if needle in line]


def test_https_with_basic_auth(run: Callable[[str], ExporterProcess], trusting: ssl.SSLContext):
    exporter = run(TLS + users(**{USER: PASSWORD}))
    assert exporter.url.startswith("https://127.0.0.1:")
    ok = httpx.get(f"{exporter.url}/metrics", verify=trusting, auth=(USER, PASSWORD))
    assert ok.status_code == 200
    assert value(ok.text, "parqex_up", account="home") == 1
    assert value(ok.text, "device_cloud_exporter_config_last_reload_successful") == 1
    for auth in [None, (USER, "wrong"), ("nobody", PASSWORD), (USER.upper(), PASSWORD)]:
        for path in ["/metrics", "/", "/nope"]:
            refused = httpx.get(f"{exporter.url}{path}", verify=trusting, auth=auth)
            assert refused.status_code == 401, (path, auth)
            assert refused.headers["www-authenticate"] == 'Basic realm="device-cloud-exporter"'
            assert "parqex_up" not in refused.text
        assert httpx.post(f"{exporter.url}/-/reload", verify=trusting, auth=auth).status_code == 401
    healthy = httpx.get(f"{exporter.url}/-/healthy", verify=trusting)
    assert healthy.status_code == 200 and healthy.text == "Healthy\n"
    landing = httpx.get(f"{exporter.url}/", verify=trusting, auth=(USER, PASSWORD))
    assert landing.status_code == 200 and 'href="metrics"' in landing.text
    assert PASSWORD not in exporter.log


def test_plain_http_to_the_tls_port_gets_no_metrics(
    run: Callable[[str], ExporterProcess], trusting: ssl.SSLContext
) -> None:
    exporter = run(TLS)
    plain = httpx.get(exporter.url.replace("https://", "http://") + "/metrics")
    # like a Go server: a 400 that says what went wrong, then the connection is closed
    assert plain.status_code == 400
    assert plain.text == "Client sent an HTTP request to an HTTPS server.\n"
    with pytest.raises(httpx.ConnectError):  # and a client that does not trust the CA refuses
        httpx.get(f"{exporter.url}/metrics")
    assert httpx.get(f"{exporter.url}/metrics", verify=trusting).status_code == 200


def test_client_certificates_are_required_and_verified(
    run: Callable[[str], ExporterProcess], ca: trustme.CA, trusting: ssl.SSLContext
) -> None:
    exporter = run(
        TLS + "  client_ca_file: ca.pem\n  client_auth_type: RequireAndVerifyClientCert\n"
    )
    with pytest.raises(httpx.TransportError):  # no certificate
        httpx.get(f"{exporter.url}/metrics", verify=trusting)
    stranger = ssl.create_default_context()
    ca.configure_trust(stranger)
    trustme.CA().issue_cert("client@elsewhere.test").configure_cert(stranger)
    with pytest.raises(httpx.TransportError):  # a certificate from another CA
        httpx.get(f"{exporter.url}/metrics", verify=stranger)
    ca.issue_cert("prometheus@example.test").configure_cert(trusting)
    signed = httpx.get(f"{exporter.url}/metrics", verify=trusting)
    assert signed.status_code == 200 and value(signed.text, "parqex_up", account="home") == 1


def test_a_rotated_certificate_is_served_without_a_restart(
    run: Callable[[str], ExporterProcess], pki: Path, ca: trustme.CA, trusting: ssl.SSLContext
) -> None:
    exporter = run(TLS)
    old = serial((pki / "cert.pem").read_bytes())
    assert served_serial(exporter.url, trusting) == old
    with httpx.Client(verify=trusting) as kept_alive:
        assert kept_alive.get(f"{exporter.url}/metrics").status_code == 200
        leaf = ca.issue_cert("127.0.0.1")
        new = serial(leaf.cert_chain_pems[0].bytes())
        assert new != old
        replace(pki / "key.pem", leaf.private_key_pem.bytes())  # key first: a moment of mismatch
        replace(pki / "cert.pem", leaf.cert_chain_pems[0].bytes())
        wait_until(lambda: served_serial(exporter.url, trusting) == new, 10, "the new certificate")
        # a connection made before the rotation keeps working
        assert kept_alive.get(f"{exporter.url}/metrics").status_code == 200
    assert exporter.process.poll() is None  # the same process: no restart
    wait_until(lambda: log_lines(exporter, 'msg="web config reloaded"'), 5, "a reload log line")


def test_a_bad_new_web_config_keeps_the_old_one_serving(
    run: Callable[[str], ExporterProcess], pki: Path, trusting: ssl.SSLContext
) -> None:
    exporter = run(TLS + users(alice="alice password"))
    alice = ("alice", "alice password")
    assert httpx.get(f"{exporter.url}/metrics", verify=trusting, auth=alice).status_code == 200
    replace(pki / "web.yml", TLS + "  cert_fil: typo.pem\n" + users(bob="bob password"))
    for _ in range(5):  # new connections and requests keep the last good version
        response = httpx.get(f"{exporter.url}/metrics", verify=trusting, auth=alice)
        assert response.status_code == 200
    failed = wait_until(
        lambda: log_lines(exporter, "web config not reloaded"), 5, "the rejection in the log"
    )
    assert len(failed) == 1, exporter.log  # logged once, not once per request
    assert "tls_server_config.cert_fil: unknown key (did you mean 'cert_file'?)" in failed[0]
    assert "level=error" in failed[0]
    # fixed, with a rotated user list: picked up without a restart
    replace(pki / "web.yml", TLS + users(bob="bob password"))
    bob = ("bob", "bob password")
    wait_until(
        lambda: httpx.get(f"{exporter.url}/metrics", verify=trusting, auth=bob).status_code == 200,
        10,
        "bob to be let in",
    )
    assert httpx.get(f"{exporter.url}/metrics", verify=trusting, auth=alice).status_code == 401


def test_a_stalled_handshake_does_not_block_other_clients(
    run: Callable[[str], ExporterProcess], trusting: ssl.SSLContext
) -> None:
    exporter = run(TLS)
    parts = urlsplit(exporter.url)
    address = (parts.hostname, parts.port)
    silent = socket.create_connection(address)  # connects, never says a word
    half = socket.create_connection(address)
    half.sendall(b"\x16\x03\x01\x02\x00")  # a TLS record header promising 512 bytes, then nothing
    try:
        started = time.monotonic()
        for _ in range(3):
            assert httpx.get(f"{exporter.url}/-/healthy", verify=trusting, timeout=5).is_success
        assert time.monotonic() - started < 3  # not after the 10 s handshake timeout
    finally:
        silent.close()
        half.close()


def test_prometheus_scrapes_over_tls_with_basic_auth_and_a_client_certificate(
    run: Callable[[str], ExporterProcess],
    ca: trustme.CA,
    prometheus_factory: Callable[..., PrometheusAPI],
) -> None:
    """Go's TLS client and Prometheus's basic auth against this server: the real thing."""
    exporter = run(
        TLS
        + "  client_ca_file: ca.pem\n  client_auth_type: RequireAndVerifyClientCert\n"
        + users(**{USER: PASSWORD})
    )
    client = ca.issue_cert("prometheus@example.test")
    target = urlsplit(exporter.url).netloc

    def job(name: str, password: str) -> dict[str, Any]:
        return {
            "job_name": name,
            "scheme": "https",
            "tls_config": {
                "ca_file": "ca.pem",
                "cert_file": "client.pem",
                "key_file": "client-key.pem",
            },
            "basic_auth": {"username": USER, "password": password},
            "static_configs": [{"targets": [target]}],
        }

    prometheus = prometheus_factory(
        {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [job("right", PASSWORD), job("wrong-password", "not it")],
        },
        {
            "ca.pem": ca.cert_pem.bytes().decode(),
            "client.pem": client.cert_chain_pems[0].bytes().decode(),
            "client-key.pem": client.private_key_pem.bytes().decode(),
        },
    )
    wait_until(
        lambda: prometheus.query('parqex_up{job="right",account="home"} == 1'),
        30,
        "Prometheus to scrape the exporter over HTTPS",
    )
    (up,) = prometheus.query('up{job="right"}')
    assert up["value"][1] == "1"
    (wrong,) = wait_until(
        lambda: [
            t
            for t in prometheus.targets()
            if t["labels"]["job"] == "wrong-password" and t.get("lastError")
        ],
        30,
        "the scrape with the wrong password to fail",
    )
    assert "401" in wrong["lastError"]
    assert not prometheus.query('parqex_up{job="wrong-password"}')
