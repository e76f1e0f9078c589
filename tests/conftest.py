"""Fixtures shared by the test modules."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from exporter.engine import Engine
from exporter.scrape import Scraper
from tests.support import make_config


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
