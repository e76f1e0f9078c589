"""Fixtures shared by the test modules."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import respx
from respx.mocks import HTTPCoreMocker

from exporter import config
from exporter.clients import http
from exporter.clients.transport import AiohttpTransport
from exporter.engine import Engine
from exporter.outcome import ReloadStatus
from exporter.reload import Reloader
from exporter.scrape import Scraper
from exporter.simulator import SimulatedCloud
from tests.support import (
    NOW,
    PARQEX_URL,
    fixture,
    make_config,
    mock_clouds,
    parqex_only,
    two_cloud_config,
)


class _RespxOrAiohttp(httpx.AsyncBaseTransport):
    """The production transport, except while respx mocks: then httpx's own, which respx patches.

    respx intercepts httpcore, below httpx's default transport; a request through aiohttp would
    slip past it to the real network. Chosen per request, so a client built before respx
    starts (an engine in a fixture) is still intercepted.
    """

    def __init__(self, tls: ssl.SSLContext, limits: httpx.Limits) -> None:
        self._real = AiohttpTransport(tls=tls, limits=limits)
        self._mockable = httpx.AsyncHTTPTransport(verify=tls, limits=limits, trust_env=False)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        transport = self._mockable if HTTPCoreMocker.routers else self._real
        return await transport.handle_async_request(request)

    async def aclose(self) -> None:
        await self._mockable.aclose()
        await self._real.aclose()


@pytest.fixture(autouse=True)
def respx_sees_our_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every client new_client makes goes through respx while respx mocks (see above).

    tests/test_transport.py overrides this fixture to test the production transport as it is.
    """
    monkeypatch.setattr(http, "make_transport", _RespxOrAiohttp)


@pytest.fixture
def cloud() -> Iterator[SimulatedCloud]:
    """The simulated clouds on loopback, fresh for each test: the demo accounts
    (demo-parqex-token, demo-lametric-token), reporting ParqEx controllers as alive now.
    A module that needs more accounts extends it (a fixture `cloud(cloud)`)."""
    with SimulatedCloud(live=True) as sim:
        yield sim


@pytest.fixture
def start_scraper() -> Iterator[Callable[[str], Scraper]]:
    """Factory: config text -> a Scraper over a started Engine; every engine closed afterwards."""
    engines: list[Engine] = []

    def start(text: str) -> Scraper:
        engine = Engine(make_config(text))
        engine.start()
        engines.append(engine)
        return Scraper(engine)

    yield start
    for engine in engines:
        engine.close()


@pytest.fixture
def clouds() -> Iterator[respx.Router]:
    """A respx-mocked ParqEx answering every token with the document's example."""
    with respx.mock(assert_all_called=False) as router:
        router.get(f"{PARQEX_URL}/oauth/v1/endpoints/sync").mock(
            return_value=httpx.Response(200, json=fixture("parqex_sync.json"))
        )
        yield router


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Scraper, Reloader, Path]]:
    """A Scraper over accounts home and gone, its Reloader, and its config file."""
    path = tmp_path / "config.yaml"
    path.write_text(parqex_only("home", "gone"))
    engine = Engine(config.load(path).config)
    engine.start()
    scraper = Scraper(engine, reload_status=ReloadStatus(True, 1000.0))
    reloader = Reloader(scraper, str(path), clock=lambda: 2000.0)
    yield scraper, reloader, path
    for thread in reloader.retiring:
        thread.join(10)
        assert not thread.is_alive(), "an old engine was never closed"
    scraper.engine.close()


@pytest.fixture
def scraper() -> Iterator[Scraper]:
    """A Scraper over both mocked clouds (the documents' examples), its clock at NOW."""
    with respx.mock(assert_all_called=False) as router:
        mock_clouds(router)
        engine = Engine(make_config(two_cloud_config()))
        engine.start()
        try:
            yield Scraper(engine, clock=lambda: NOW)
        finally:
            engine.close()
