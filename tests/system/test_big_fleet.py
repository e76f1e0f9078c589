"""A fleet big enough that a gzip answer is made of chunks deflated apart (exporter.deflate),
scraped by a real Prometheus: its Go gzip reader must take the stream whole, every sample."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from exporter.simulator import SimulatedCloud
from exporter.simulator.data import generate_parqex_devices
from tests.system.conftest import PrometheusAPI, wait_until

pytestmark = pytest.mark.system

DEVICES = 3000  # 9,000 doors: each door family is several chunks of 64 KiB and more


def test_prometheus_ingests_every_sample_of_a_gzip_answer_built_from_deflated_chunks(
    cloud: SimulatedCloud,
    exporter_factory: Callable[[dict[str, Any]], str],
    prometheus_factory: Callable[..., PrometheusAPI],
) -> None:
    cloud.add_parqex_account("big-token", generate_parqex_devices(DEVICES))
    url = exporter_factory(
        {"parqex": {"base_url": cloud.url, "accounts": [{"name": "big", "token": "big-token"}]}}
    )
    plain = httpx.get(f"{url}/metrics", headers={"Accept-Encoding": "identity"}, timeout=30)
    zipped = httpx.get(f"{url}/metrics", headers={"Accept-Encoding": "gzip"}, timeout=30)
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert len(zipped.content) > 1_000_000  # httpx inflated it: several deflated chunks
    door_lines = plain.text.count("\nparqex_door_open{")
    assert door_lines > 8000
    sample_lines = sum(1 for line in plain.text.splitlines() if line and line[0] != "#")
    # Prometheus asks for gzip; `scrape_samples_scraped` counts what its parser took in
    prometheus = prometheus_factory(
        {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [
                {"job_name": "big", "static_configs": [{"targets": [url.removeprefix("http://")]}]}
            ],
        }
    )

    def ingested() -> tuple[float, float, float] | None:
        up = prometheus.query('up{job="big"}')
        scraped = prometheus.query('scrape_samples_scraped{job="big"}')
        doors = prometheus.query('count(parqex_door_open{account="big"})')
        if not up or up[0]["value"][1] != "1" or not scraped or not doors:
            return None
        values = [float(result[0]["value"][1]) for result in (up, scraped, doors)]
        return values[0], values[1], values[2]

    up, scraped, doors = wait_until(ingested, 30, "Prometheus scraped the big fleet successfully")
    # every sample of the answer, not just a readable beginning of it
    assert (up, scraped, doors) == (1.0, sample_lines, door_lines)
