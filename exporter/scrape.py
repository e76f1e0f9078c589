"""One scrape, in four steps: pick the time budget, collect, build the families, render.

`Scraper.render` runs them in that order (`pick_budget`, `collect`, `build_families`,
`encode`); each is a function of plain values that a test can call alone. Around them the
Scraper keeps what concerns scrapes running at the same time: identical concurrent scrapes
share one render, and an engine replaced by a reload keeps serving the scrapes that began on it.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from exporter import deflate, exposition, negotiate
from exporter.collectors import lametric, own, parqex
from exporter.config import CollectionConfig
from exporter.engine import Engine
from exporter.exposition import Family
from exporter.outcome import AccountKey, Counters, Outcome, ReloadStatus

log = logging.getLogger(__name__)

# Health metrics describe this very scrape, even when the data comes from the cache.
LIVE_SUFFIXES = ("_up", "_scrape_duration_seconds", "_last_success_timestamp_seconds")


@dataclass
class _SharedRender:
    """One render that every concurrent scrape asking for the same answer waits for."""

    done: threading.Event = field(default_factory=threading.Event)
    followers: int = 0  # scrapes waiting for it besides the one rendering
    answer: tuple[bytes, dict[str, str]] | None = None
    error: BaseException | None = None


@dataclass(frozen=True)
class Collected:
    """What the collection step hands to the build step."""

    outcomes: list[Outcome]  # one per account collected
    counters: Counters  # the engine's counters and back-off, read after collecting
    now: float  # wall-clock time the collection ended: the "age" metrics count from it


@dataclass(frozen=True)
class Built:
    """The families of one answer, and the accounts whose metrics crashed while building."""

    families: list[Family]
    crashed: list[Outcome]


def pick_budget(collection: CollectionConfig, scrape_timeout_header: str | None) -> float:
    """Seconds each account may take: Prometheus's timeout minus an offset, capped by config.

    Like blackbox_exporter, the offset leaves time to render and send the answer; a header
    smaller than the offset is used whole rather than turned into nothing.
    """
    cap = collection.timeout_seconds  # its meaning here: the most a scrape waits for an account
    try:
        header = float(scrape_timeout_header) if scrape_timeout_header else 0.0
    except ValueError:
        header = 0.0
    if not header > 0:  # also rejects NaN
        return cap
    wanted = header - collection.timeout_offset_seconds
    return min(cap, wanted if wanted > 0 else header)


def collect(
    engine: Engine,
    budget: float,
    target: AccountKey | None = None,
    clock: Callable[[], float] = time.time,
) -> Collected:
    """Collect every account (or the `target` of a /probe) within about `budget` seconds."""
    outcomes = engine.collect(budget, target)
    now = clock()
    return Collected(outcomes, engine.counters(target), now)


def build_families(
    budget: float,
    collected: Collected | None,
    *,
    probe: bool = False,
    reload_status: ReloadStatus | None = None,
    cache_seconds: float = 0.0,
    deflated: bool = False,
) -> Built:
    """The families of `/metrics` (probe False) or of a `/probe` answer, in exposition order.

    `deflated` (for a gzip answer) has the big families compress their lines as they are
    written (see `exporter.deflate`).

    `collected` None builds the exporter's own metrics only (`metrics_include_accounts:
    false`). The process metrics are not among them: prometheus-client renders those itself.
    A bug of ours building an account's metrics costs that account (see
    `collectors.common.add_accounts`) and counts as an "internal" error in this very answer.
    """
    families: list[Family] = []
    if probe:
        families.append(own.timeout_family(budget))
    else:
        families += own.families(budget)
        if reload_status is not None:
            families += own.reload_families(reload_status)
    if collected is None:
        return Built(families, [])
    built: list[Family] = []
    crashed: list[Outcome] = []
    for collector in (parqex, lametric):
        source_families, source_crashed = collector.families(
            collected.outcomes, collected.now, deflated=deflated
        )
        built += source_families
        crashed += source_crashed
    families += own.account_families(collected.counters.with_crashes(crashed))
    for family in built:
        if cache_seconds > 0 and not family.name.endswith(LIVE_SUFFIXES):
            # the Prometheus guidelines ask exporters to say when values may be old
            family.documentation += f" Served from a cache up to {cache_seconds:g}s old."
        families.append(family)
    return Built(families, crashed)


def encode(
    families: Iterable[Family],
    *,
    content_type: str,
    gzipped: bool,
    process: CollectorRegistry | None,
) -> tuple[bytes, dict[str, str]]:
    """The body and headers: our families after the `process` registry's metrics, if any.

    With gzip, families built `deflated` hand over their chunks compressed already; the rest
    is compressed piece by piece. The body is never held both plain and compressed.
    """
    openmetrics = content_type == negotiate.OPENMETRICS
    encoder = generate_openmetrics if openmetrics else generate_latest
    head = encoder(process) if process is not None else b""
    eof = (b"# EOF\n",) if openmetrics else ()  # one `# EOF`, at the very end
    headers = {"Content-Type": content_type}
    head = head.removesuffix(b"# EOF\n")
    if not gzipped:
        return b"".join(itertools.chain((head,), exposition.parts(families, openmetrics), eof)), (
            headers
        )
    pieces = itertools.chain((head,), exposition.pieces(families, openmetrics), eof)
    headers["Content-Encoding"] = "gzip"
    return deflate.gzip_stream(pieces), headers


# Scrapes that build and encode an exposition at the same time (see Scraper.__init__).
ENCODING_AT_ONCE = 2


class Scraper:
    """Renders `/metrics`; process, platform and GC metrics come from prometheus-client.

    The engine can be replaced while scrapes run (a config reload): each scrape uses the engine
    it started with, and `wait_idle` tells when an engine that was replaced has no scrape left.
    """

    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], float] = time.time,
        reload_status: ReloadStatus | None = None,
    ) -> None:
        self.engine = engine
        self._clock = clock
        # Set by whoever can reload the config (the command line); None exports no reload metrics.
        self.reload_status = reload_status
        self._in_flight: Counter[Engine] = Counter()
        self._idle = threading.Condition()
        self._renders: dict[tuple[object, ...], _SharedRender] = {}
        self._renders_lock = threading.Lock()
        # Building and encoding are CPU work under the GIL: running more at once gains nothing,
        # and each holds the text and the body of a whole exposition. Two at a time bounds the
        # memory that scrapes asking for different answers can take (see docs/limits.md).
        self._encoding = threading.BoundedSemaphore(ENCODING_AT_ONCE)
        # A registry of our own, not the global one: tests can run many exporters in one process.
        self._process = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self._process)
        PlatformCollector(registry=self._process)
        GCCollector(registry=self._process)

    def budget(self, scrape_timeout_header: str | None, engine: Engine | None = None) -> float:
        """The budget a scrape with this header gets from `engine` (default: the current)."""
        return pick_budget((engine or self.engine).config.collection, scrape_timeout_header)

    def render(
        self,
        *,
        accept: str | None,
        accept_encoding: str | None,
        timeout_header: str | None,
        probe: tuple[str, str | None] | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """The body and headers of a `/metrics` answer, in the format and encoding asked for.

        `probe` is (target, source) of a `/probe`: only that account is collected, and
        UnknownTarget is raised when no configured account matches.

        Scrapes that arrive while an identical one (same format, encoding, target and budget)
        is being rendered wait for it and share its body, so a hundred concurrent scrapes of a
        big fleet hold one body, not a hundred. A body is never kept after its render: the next
        scrape collects afresh.
        """
        content_type = negotiate.content_type(accept)
        gzipped = negotiate.wants_gzip(accept_encoding)
        # after a reload, a scrape never joins the old engine's render
        with self._pinned() as (engine, reload_status):
            budget = pick_budget(engine.config.collection, timeout_header)
            # Budgets a tenth of a second apart share a render (the first one's budget): a
            # client inventing a new timeout header for each request must not get, and make
            # the exporter hold, a body of its own each time.
            key = (engine, content_type, gzipped, probe, math.floor(budget * 10))
            with self._renders_lock:
                shared = self._renders.get(key)
                leader = shared is None
                if shared is None:
                    shared = self._renders[key] = _SharedRender()
                else:
                    shared.followers += 1
            if leader:
                try:
                    shared.answer = self._render(
                        engine, reload_status, content_type, gzipped, budget, probe
                    )
                except BaseException as exc:
                    shared.error = exc
                    raise
                finally:
                    with self._renders_lock:
                        del self._renders[key]
                    shared.done.set()
            else:
                shared.done.wait()
                if shared.error is not None:
                    raise shared.error
        assert shared.answer is not None
        body, headers = shared.answer
        return body, dict(headers)  # the caller may change its headers, not the others'

    def _render(
        self,
        engine: Engine,
        reload_status: ReloadStatus | None,
        content_type: str,
        gzipped: bool,
        budget: float,
        probe: tuple[str, str | None] | None,
    ) -> tuple[bytes, dict[str, str]]:
        """One scrape, step by step (the budget is already part of the shared render's key)."""
        collection = engine.config.collection
        target = engine.find(*probe) if probe is not None else None
        collected = None
        if target is not None or collection.metrics_include_accounts:
            collected = collect(engine, budget, target, self._clock)
        with self._encoding:
            built = build_families(
                budget,
                collected,
                probe=target is not None,
                reload_status=reload_status,
                cache_seconds=collection.cache_seconds,
                deflated=gzipped,
            )
            collected = None  # the parsed fleet is not needed to encode: free it first
            engine.count_crashes(built.crashed)
            process = self._process if target is None else None
            return encode(
                built.families, content_type=content_type, gzipped=gzipped, process=process
            )

    def replace_engine(self, engine: Engine, reload_status: ReloadStatus | None = None) -> Engine:
        """Serve later scrapes from `engine`; returns the engine it replaced.

        `reload_status` is set in the same step: a scrape that shows the new config's accounts
        must not show the previous reload's timestamp.
        """
        with self._idle:
            old, self.engine = self.engine, engine
            if reload_status is not None:
                self.reload_status = reload_status
        return old

    def wait_idle(self, engine: Engine, timeout: float | None = None) -> bool:
        """Wait until no scrape uses `engine`; False if `timeout` seconds passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._in_flight[engine], timeout)

    @contextmanager
    def _pinned(self) -> Iterator[tuple[Engine, ReloadStatus | None]]:
        """The current engine, counted as in use until the block ends, and the reload status
        set with it (see replace_engine)."""
        with self._idle:
            engine = self.engine
            reload_status = self.reload_status
            self._in_flight[engine] += 1
        try:
            yield engine, reload_status
        finally:
            with self._idle:
                self._in_flight[engine] -= 1
                if not self._in_flight[engine]:
                    del self._in_flight[engine]
                    self._idle.notify_all()
