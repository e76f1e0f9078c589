"""A scrape that sees the reloaded configuration also sees that the reload succeeded."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter import config
from exporter.cli import Reloader
from exporter.engine import Engine
from exporter.scrape import ReloadStatus, Scraper

CONFIG = "parqex:\n  base_url: https://parqex.test\n  accounts:\n    - {{name: {name}, token: t}}\n"


def test_the_reload_status_is_set_before_the_new_engine_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.format(name="home"))
    engine = Engine(config.load(path).config)
    engine.start()
    scraper = Scraper(engine, reload_status=ReloadStatus(True, 1000.0))
    reloader = Reloader(scraper, str(path), clock=lambda: 2000.0)
    seen: list[ReloadStatus | None] = []
    real_replace = scraper.replace_engine

    def replace(new: Engine) -> Engine:
        seen.append(scraper.reload_status)  # what the first scrape of the new engine reports
        return real_replace(new)

    monkeypatch.setattr(scraper, "replace_engine", replace)
    path.write_text(CONFIG.format(name="second"))
    try:
        assert reloader.reload() == []
        assert seen == [ReloadStatus(True, 2000.0)]
        assert scraper.reload_status == ReloadStatus(True, 2000.0)
    finally:
        for thread in reloader.retiring:
            thread.join(10)
        scraper.engine.close()
