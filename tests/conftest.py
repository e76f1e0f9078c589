"""Fixtures shared by the test modules."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import respx

from exporter import config
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
