"""The exporter's own metrics: build, error counters, and the budget of this scrape."""

from __future__ import annotations

import platform
from collections.abc import Mapping

from exporter import __version__
from exporter.exposition import Family
from exporter.outcome import CounterKey, Counters, ReloadStatus


def families(budget: float) -> list[Family]:
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


def account_families(counters: Counters) -> list[Family]:
    """Per-account counters and back-off, of the accounts `counters` holds."""
    errors = _counter(
        "device_cloud_exporter_upstream_errors",
        "Failed upstream collections by source, account and reason (timeout, connect, auth, "
        "rate_limited, http_4xx, http_5xx, decode, too_large, token; internal for a bug of ours).",
        "reason",
        counters.errors,
    )
    parse_errors = _counter(
        "device_cloud_exporter_parse_errors",
        "Fields skipped because the API sent them missing, null, or malformed, by source, "
        "account and field (object.key).",
        "field",
        counters.parse_errors,
    )
    backoff = Family(
        "device_cloud_exporter_backoff_until_timestamp_seconds",
        "Unix time before which the account's cloud is not called again, after a 429 "
        "(Retry-After) or repeated 5xx answers; 0 when not backing off.",
        ["source", "account"],
    )
    for source, account, until in counters.backoff_until:
        backoff.add([source, account], until)
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


def _counter(name: str, documentation: str, label: str, counts: Mapping[CounterKey, int]) -> Family:
    """A per-account counter family: labels source, account and `label`, in key order."""
    family = Family(name, documentation, ["source", "account", label], kind="counter")
    for key, count in sorted(counts.items()):
        family.add(key, count)
    return family


def _single(name: str, documentation: str, value: float) -> Family:
    family = Family(name, documentation)
    family.add_rendered("", value)
    return family
