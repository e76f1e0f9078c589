"""The exporter's own metrics: build, error counters, and the budget of this scrape."""

from __future__ import annotations

import platform
import time
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter import __version__
from exporter.engine import AccountKey, Engine

if TYPE_CHECKING:
    from exporter.scrape import ReloadStatus


def families(engine: Engine, budget: float) -> list[Metric]:
    """Metrics of the exporter process itself: in /metrics, never in a /probe answer."""
    build = GaugeMetricFamily(
        "device_cloud_exporter_build_info",
        "Version of the exporter and of the Python running it, always 1.",
        labels=["version", "python_version"],
    )
    build.add_metric([__version__, platform.python_version()], 1.0)
    return [build, timeout_family(budget)]


def timeout_family(budget: float) -> Metric:
    return GaugeMetricFamily(
        "device_cloud_exporter_scrape_timeout_seconds",
        "Time budget this scrape gave each account's collection (from "
        "X-Prometheus-Scrape-Timeout-Seconds minus the offset, capped by the config).",
        value=budget,
    )


def account_families(engine: Engine, only: AccountKey | None = None) -> list[Metric]:
    """Per-account counters and back-off, for every account or `only` one (a /probe)."""

    def wanted(source: str, account: str) -> bool:
        return only is None or (source, account) == only

    errors = CounterMetricFamily(
        "device_cloud_exporter_upstream_errors",
        "Failed upstream collections by source, account and reason (timeout, connect, auth, "
        "rate_limited, http_4xx, http_5xx, decode, too_large, token).",
        labels=["source", "account", "reason"],
    )
    for key, count in sorted(engine.stats.errors.items()):
        if wanted(*key[:2]):
            errors.add_metric(list(key), count)
    parse_errors = CounterMetricFamily(
        "device_cloud_exporter_parse_errors",
        "Fields skipped because the API sent them missing, null, or malformed, by source, "
        "account and field (object.key).",
        labels=["source", "account", "field"],
    )
    for key, count in sorted(engine.stats.parse_errors.items()):
        if wanted(*key[:2]):
            parse_errors.add_metric(list(key), count)
    backoff = GaugeMetricFamily(
        "device_cloud_exporter_backoff_until_timestamp_seconds",
        "Unix time before which the account's cloud is not called again, after a 429 "
        "(Retry-After) or repeated 5xx answers; 0 when not backing off.",
        labels=["source", "account"],
    )
    now = time.time()
    for worker in engine.workers:
        if not wanted(worker.source, worker.name):
            continue
        until = worker.backoff.until_wall
        backoff.add_metric([worker.source, worker.name], until if until > now else 0.0)
    return [errors, parse_errors, backoff]


def reload_families(status: ReloadStatus) -> list[Metric]:
    """Whether the last config reload worked, under the names Prometheus uses for its own."""
    successful = GaugeMetricFamily(
        "device_cloud_exporter_config_last_reload_successful",
        "1 if the last configuration (re)load succeeded (SIGHUP or POST /-/reload), 0 if it "
        "failed and the previous configuration is still in use.",
        value=1.0 if status.successful else 0.0,
    )
    timestamp = GaugeMetricFamily(
        "device_cloud_exporter_config_last_reload_success_timestamp_seconds",
        "Unix time of the last successful configuration load, start-up included.",
        value=status.last_success,
    )
    return [successful, timestamp]
