"""One scrape: pick the time budget, collect every account, render the exposition."""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric

from exporter.collectors import lametric, own, parqex
from exporter.engine import Engine

# Health metrics describe this very scrape, even when the data comes from the cache.
LIVE_SUFFIXES = ("_up", "_scrape_duration_seconds", "_last_success_timestamp_seconds")


class Scraper:
    """Renders `/metrics`; process, platform and GC metrics come from prometheus-client."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self._clock = clock
        # A registry of our own, not the global one: tests can run many exporters in one process.
        self._process = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self._process)
        PlatformCollector(registry=self._process)
        GCCollector(registry=self._process)

    def budget(self, scrape_timeout_header: str | None) -> float:
        """Seconds each account may take: Prometheus's timeout minus an offset, capped by config.

        Like blackbox_exporter, the offset leaves time to render and send the answer; a header
        smaller than the offset is used whole rather than turned into nothing.
        """
        collection = self.engine.config.collection
        cap = collection.timeout_seconds
        try:
            header = float(scrape_timeout_header) if scrape_timeout_header else 0.0
        except ValueError:
            header = 0.0
        if not header > 0:  # also rejects NaN
            return cap
        wanted = header - collection.timeout_offset_seconds
        return min(cap, wanted if wanted > 0 else header)

    def families(self, budget: float) -> Iterable[Metric]:
        outcomes = self.engine.collect(budget)
        now = self._clock()
        yield from self._process.collect()
        yield from own.families(self.engine, budget)
        cache = self.engine.config.collection.cache_seconds
        for family in (*parqex.families(outcomes, now), *lametric.families(outcomes, now)):
            if cache > 0 and not family.name.endswith(LIVE_SUFFIXES):
                # the Prometheus guidelines ask exporters to say when values may be old
                family.documentation += f" Served from a cache up to {cache:g}s old."
            yield family

    def render(
        self, *, accept: str | None, accept_encoding: str | None, timeout_header: str | None
    ) -> tuple[bytes, dict[str, str]]:
        """The body and headers of a `/metrics` answer, in the format and encoding asked for."""
        encoder, content_type = choose_encoder(accept or "")
        body = encoder(_Families(list(self.families(self.budget(timeout_header)))))
        headers = {"Content-Type": content_type}
        if "gzip" in (accept_encoding or "").lower():
            body = gzip.compress(body, compresslevel=6)
            headers["Content-Encoding"] = "gzip"
        return body, headers


class _Families:
    """The smallest registry-like object the encoders accept: something with `collect()`."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families
