"""Multi-target mode: /probe?target=<account>&source=<source> collects just that account."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
import respx

from exporter.engine import Engine
from exporter.scrape import Scraper
from exporter.server import ExporterServer
from tests.support import (
    LAMETRIC_URL,
    PARQEX_URL,
    config_yaml,
    fixture,
    make_config,
    samples,
    value,
)

SYNC = f"{PARQEX_URL}/oauth/v1/endpoints/sync"
CONFIG = config_yaml(
    parqex=[{"name": "home", "token": "parqex-home"}, {"name": "office", "token": "parqex-office"}],
    lametric=[{"name": "home", "token": "lametric-home"}],
)
# README: a missing, unknown or ambiguous /probe target is a 400 listing the configured accounts.
KNOWN = "parqex/home, parqex/office, lametric/home"


@pytest.fixture
def router() -> Iterator[respx.Router]:
    with respx.mock(assert_all_called=False) as mock:
        mock.get(SYNC).mock(return_value=httpx.Response(200, json=fixture("parqex_sync.json")))
        mock.get(f"{LAMETRIC_URL}/api/v2/users/me").mock(
            return_value=httpx.Response(200, json=fixture("lametric_user.json"))
        )
        mock.get(f"{LAMETRIC_URL}/api/v2/users/me/devices").mock(
            return_value=httpx.Response(200, json=fixture("lametric_devices.json"))
        )
        mock.route(host="127.0.0.1").pass_through()
        yield mock


@pytest.fixture
def serve() -> Iterator[Callable[[str], str]]:
    servers: list[tuple[ExporterServer, Engine]] = []

    def serve(text: str) -> str:
        engine = Engine(make_config(text))
        engine.start()
        server = ExporterServer(("127.0.0.1", 0), Scraper(engine))
        server.serve_in_thread()
        servers.append((server, engine))
        return server.url

    yield serve
    for server, engine in servers:
        server.shutdown()
        server.server_close()
        engine.close()


def accounts_in(text: str) -> set[tuple[str, str]]:
    """(metric prefix, account) of every sample that has an account label."""
    return {
        (name.split("_")[0], dict(labels)["account"])
        for name, labels in samples(text)
        if "account" in dict(labels) and not name.startswith("device_cloud_exporter")
    }


def test_probe_collects_only_the_named_account(
    router: respx.Router, serve: Callable[[str], str]
) -> None:
    url = serve(CONFIG)
    answer = httpx.get(f"{url}/probe", params={"target": "office", "source": "parqex"})
    assert answer.status_code == 200
    text = answer.text
    assert accounts_in(text) == {("parqex", "office")}
    tokens = [
        c.request.headers["Authorization"]
        for c in router.calls
        if c.request.url.host == "parqex.test"
    ]
    assert tokens == ["Bearer parqex-office"]
    assert not any(c.request.url.host == "lametric.test" for c in router.calls)
    errors = [k for k in samples(text) if k[0] == "device_cloud_exporter_upstream_errors_total"]
    assert errors and all(dict(labels)["account"] == "office" for _, labels in errors)
    assert value(text, "device_cloud_exporter_scrape_timeout_seconds") == 10.0
    assert "process_cpu_seconds_total" not in text  # the process is /metrics' business
    assert "device_cloud_exporter_build_info" not in text


def test_probe_source_may_be_left_out_when_the_name_is_unambiguous(
    router: respx.Router, serve: Callable[[str], str]
) -> None:
    url = serve(CONFIG)
    assert accounts_in(httpx.get(f"{url}/probe?target=office").text) == {("parqex", "office")}
    ambiguous = httpx.get(f"{url}/probe?target=home")
    assert ambiguous.status_code == 400
    assert ambiguous.text == (
        "account 'home' exists in parqex and lametric; add &source=parqex or &source=lametric; "
        f"known: {KNOWN}\n"
    )
    lametric = httpx.get(f"{url}/probe?target=home&source=lametric").text
    assert accounts_in(lametric) == {("lametric", "home")}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            "",
            f"target parameter is missing; use /probe?target=<account>&source=<source>; "
            f"known: {KNOWN}\n",
        ),
        ("?source=parqex", "target parameter is missing; use /probe?target=<account>&source=<"),
        ("?target=garage", f"no account 'garage'; known: {KNOWN}\n"),
        ("?target=office&source=lametric", f"no account 'office' in lametric; known: {KNOWN}\n"),
        ("?target=home&source=hue", "source must be parqex or lametric\n"),
    ],
)
def test_bad_probes_get_400_and_call_no_cloud(
    router: respx.Router, serve: Callable[[str], str], query: str, message: str
) -> None:
    answer = httpx.get(f"{serve(CONFIG)}/probe{query}")
    assert answer.status_code == 400
    assert answer.text.startswith(message), answer.text
    assert not [c for c in router.calls if c.request.url.host != "127.0.0.1"]


def test_metrics_without_accounts_for_sharded_setups(
    router: respx.Router, serve: Callable[[str], str]
) -> None:
    url = serve(CONFIG + "collection: {metrics_include_accounts: false}\n")
    text = httpx.get(f"{url}/metrics").text
    assert accounts_in(text) == set()
    assert "device_cloud_exporter_upstream_errors_total" not in text
    assert "device_cloud_exporter_build_info" in text and "process_cpu_seconds_total" in text
    assert not [c for c in router.calls if c.request.url.host != "127.0.0.1"]
    probe = httpx.get(f"{url}/probe?target=home&source=parqex").text
    assert value(probe, "parqex_up", account="home") == 1


def test_metrics_by_default_has_every_account(
    router: respx.Router, serve: Callable[[str], str]
) -> None:
    text = httpx.get(f"{serve(CONFIG)}/metrics").text
    assert accounts_in(text) == {("parqex", "home"), ("parqex", "office"), ("lametric", "home")}
