"""The exporter's own metrics: build, error counters, and the budget of this scrape."""

from __future__ import annotations

import platform
import time
from typing import TYPE_CHECKING

from exporter import __version__
from exporter.engine import AccountKey, Engine
from exporter.exposition import Family

if TYPE_CHECKING:
    from exporter.scrape import ReloadStatus


def families(engine: Engine, budget: float) -> list[Family]:
    """Metrics of the exporter process itself: in /metrics, never in a /probe answer."""
    build = Family(
        "device_cloud_exporter_build_info",
        "Version of the exporter and of the Python running it, always 1.",
        ["version", "python_version"],
    )
    build.add([__version__, platform.python_version()], 1.0)
    return [build, timeout_family(budget)]


def timeout_family(budget: float) -> Family:
    return _single(
        "device_cloud_exporter_scrape_timeout_seconds",
        "Time budget this scrape gave each account's collection (from "
        "X-Prometheus-Scrape-Timeout-Seconds minus the offset, capped by the config).",
        budget,
    )


def account_families(engine: Engine, only: AccountKey | None = None) -> list[Family]:
    """Per-account counters and back-off, for every account or `only` one (a /probe)."""

    def wanted(source: str, account: str) -> bool:
        return only is None or (source, account) == only

    errors = Family(
        "device_cloud_exporter_upstream_errors",
        "Failed upstream collections by source, account and reason (timeout, connect, auth, "
        "rate_limited, http_4xx, http_5xx, decode, too_large, token; internal for a bug of ours).",
        ["source", "account", "reason"],
        kind="counter",
    )
    for key, count in sorted(engine.stats.errors.items()):
        if wanted(*key[:2]):
            errors.add(key, count)
    parse_errors = Family(
        "device_cloud_exporter_parse_errors",
        "Fields skipped because the API sent them missing, null, or malformed, by source, "
        "account and field (object.key).",
        ["source", "account", "field"],
        kind="counter",
    )
    for key, count in sorted(engine.stats.parse_errors.items()):
        if wanted(*key[:2]):
            parse_errors.add(key, count)
    backoff = Family(
        "device_cloud_exporter_backoff_until_timestamp_seconds",
        "Unix time before which the account's cloud is not called again, after a 429 "
        "(Retry-After) or repeated 5xx answers; 0 when not backing off.",
        ["source", "account"],
    )
    now = time.time()
    for worker in engine.workers:
        if wanted(worker.source, worker.name):
            until = worker.backoff.until_wall
            backoff.add([worker.source, worker.name], until if until > now else 0.0)
    return [errors, parse_errors, backoff]


def reload_families(status: ReloadStatus) -> list[Family]:
    """Whether the last config reload worked, under the names Prometheus uses for its own."""
    return [
        _single(
            "device_cloud_exporter_config_last_reload_successful",
            "1 if the last configuration (re)load succeeded (SIGHUP or POST /-/reload), 0 if "
            "it failed and the previous configuration is still in use.",
            1.0 if status.successful else 0.0,
        ),
        _single(
            "device_cloud_exporter_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load, start-up included.",
            status.last_success,
        ),
    ]


def _single(name: str, documentation: str, value: float) -> Family:
    family = Family(name, documentation)
    family.add_rendered("", value)
    return family
