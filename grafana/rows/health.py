"""Row "Exporter health": is the exporter up, and is each account's collection succeeding."""

from __future__ import annotations

from typing import Any

from grafana.panels import ACC, Builder, stat, state_timeline, steps, target, timeseries, value_map
from prometheus.thresholds import duration_seconds


def add(b: Builder, t: dict[str, Any]) -> None:
    grace = str(t["collection_grace"])
    b.row("Exporter health")
    b.add(
        stat(
            "Exporter",
            "Prometheus' scrape of device-cloud-exporter (up).",
            [target('up{job=~"$job"}', "A", legend="{{instance}}", instant=True)],
            mappings=value_map({"0": ("DOWN", "red"), "1": ("UP", "green")}),
            thresholds=steps((None, "red"), (1, "green")),
            text_mode="value_and_name",
        ),
        w=6,
        h=6,
    )
    b.add(
        stat(
            "Exporter version",
            "device_cloud_exporter_build_info.",
            [
                target(
                    'device_cloud_exporter_build_info{job=~"$job"}',
                    "A",
                    legend="{{version}} (Python {{python_version}})",
                    instant=True,
                )
            ],
            text_mode="name",
            thresholds=steps((None, "blue")),
        ),
        w=6,
        h=6,
    )
    b.add(
        stat(
            "Time since last successful collection",
            "Per account; collection runs on every scrape. Also while the exporter is down "
            f"(last value within the time range). Orange after {t['account_down_window']}; red "
            f"after {grace} (collection_grace): the alerts and the stats above no longer use "
            "the account's devices.",
            [
                target(
                    "time() - last_over_time(parqex_last_success_timestamp_seconds"
                    f"{{{ACC}}}[$__range])",
                    "A",
                    legend="ParqEx {{account}}",
                    instant=True,
                ),
                target(
                    "time() - last_over_time(lametric_last_success_timestamp_seconds"
                    f"{{{ACC}}}[$__range])",
                    "B",
                    legend="LaMetric {{account}}",
                    instant=True,
                ),
            ],
            unit="s",
            thresholds=steps(
                (None, "green"),
                (duration_seconds(t["account_down_window"]), "orange"),
                (duration_seconds(grace), "red"),
            ),
            text_mode="value_and_name",
        ),
        w=12,
        h=6,
    )
    b.add(
        state_timeline(
            "Account collection",
            "Whether each account's collection succeeded (parqex_up / lametric_up).",
            [
                target(f"parqex_up{{{ACC}}}", "A", legend="ParqEx {{account}}"),
                target(f"lametric_up{{{ACC}}}", "B", legend="LaMetric {{account}}"),
            ],
            value_map({"0": ("failing", "red"), "1": ("ok", "green")}),
        ),
        w=24,
        h=6,
    )
    b.add(
        timeseries(
            "Collection duration",
            "How long collecting each account took (parqex/lametric_scrape_duration_seconds).",
            [
                target(
                    f"parqex_scrape_duration_seconds{{{ACC}}}", "A", legend="ParqEx {{account}}"
                ),
                target(
                    f"lametric_scrape_duration_seconds{{{ACC}}}", "B", legend="LaMetric {{account}}"
                ),
            ],
            unit="s",
            min_=0,
        ),
        w=12,
        h=8,
    )
    b.add(
        timeseries(
            "Upstream errors by reason",
            "Errors talking to the ParqEx/LaMetric clouds, by source and reason.",
            [
                target(
                    "sum by (source, reason) (\n"
                    "  increase(device_cloud_exporter_upstream_errors_total"
                    f"{{{ACC}}}[$__rate_interval])\n)",
                    "A",
                    legend="{{source}} {{reason}}",
                )
            ],
            unit="short",
            min_=0,
            draw="bars",
            legend_calcs=["sum"],
        ),
        w=12,
        h=8,
    )
