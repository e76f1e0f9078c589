"""What one scrape learnt, as plain data: the collectors build metric families from it.

The engine produces these values and the collectors read them; neither imports the other, so
a collector can be tested with hand-made outcomes and counters, and the engine can change
without touching a metric.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from exporter.config import SourceName
from exporter.sources import Snapshot

AccountKey = tuple[SourceName, str]  # (source, account name)
CounterKey = tuple[str, str, str]  # (source, account, reason or field)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one scrape learnt about one account."""

    source: SourceName
    account: str
    snapshot: Snapshot | None  # None when the collection failed
    reason: str | None  # one of REASONS when it failed, or "internal" for a bug of ours
    duration_seconds: float
    last_success: float | None  # wall-clock time of the newest successful fetch, if any

    @property
    def ok(self) -> bool:
        return self.snapshot is not None


@dataclass(frozen=True)
class Counters:
    """The engine's process-lifetime counters and back-off, read once for one scrape."""

    errors: Mapping[CounterKey, int]  # failed collections by (source, account, reason)
    parse_errors: Mapping[CounterKey, int]  # skipped fields by (source, account, field)
    # (source, account, Unix time before which its cloud is not called), in config order;
    # 0.0 when the account is not backing off
    backoff_until: tuple[tuple[SourceName, str, float], ...]

    def with_crashes(self, crashed: Iterable[Outcome]) -> Counters:
        """These counters plus one "internal" error for each account whose metrics crashed."""
        errors = Counter(self.errors)
        for outcome in crashed:
            errors[(outcome.source, outcome.account, "internal")] += 1
        return Counters(errors, self.parse_errors, self.backoff_until)


@dataclass(frozen=True)
class ReloadStatus:
    """The outcome of the last config (re)load, exported like Prometheus's own."""

    successful: bool
    last_success: float  # Unix time of the last successful load, start-up included
