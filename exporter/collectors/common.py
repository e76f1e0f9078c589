"""Helpers shared by the per-source collectors."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from prometheus_client.core import GaugeMetricFamily

from exporter.engine import Outcome


def gauge(name: str, doc: str, labels: Sequence[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def add_if(family: GaugeMetricFamily, labels: list[str], value: float | bool | None) -> None:
    """Add a sample only for a value the API actually sent: an absent field has no series."""
    if value is not None:
        family.add_metric(labels, float(value))


def add_state(
    family: GaugeMetricFamily, labels: list[str], known: Iterable[str], current: str | None
) -> None:
    """One series per known state (1 for the current, 0 otherwise), plus an unknown current one."""
    if current is None:
        return
    for state in known:
        family.add_metric([*labels, state], 1.0 if state == current else 0.0)
    if current not in known:
        family.add_metric([*labels, current], 1.0)


def health_families(source: str, outcomes: Sequence[Outcome]) -> list[GaugeMetricFamily]:
    """`<source>_up`, `_scrape_duration_seconds` and `_last_success_timestamp_seconds`."""
    up = gauge(
        f"{source}_up",
        f"1 if this scrape collected the {source} account successfully, 0 if it failed "
        "(device_cloud_exporter_upstream_errors_total says why).",
        ["account"],
    )
    duration = gauge(
        f"{source}_scrape_duration_seconds",
        f"Seconds the {source} account's collection took in this scrape.",
        ["account"],
    )
    success = gauge(
        f"{source}_last_success_timestamp_seconds",
        f"Unix time of the newest successful collection of the {source} account.",
        ["account"],
    )
    for outcome in outcomes:
        up.add_metric([outcome.account], 1.0 if outcome.ok else 0.0)
        duration.add_metric([outcome.account], outcome.duration_seconds)
        add_if(success, [outcome.account], outcome.last_success)
    return [up, duration, success]
