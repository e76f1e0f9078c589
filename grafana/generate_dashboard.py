#!/usr/bin/env python3
"""Generate grafana/dashboards/device-cloud.json (the dashboard users import).

Plain Python dictionaries, no Grafana SDK: the JSON model (schemaVersion 39) is written out
explicitly, so what you read here is what Grafana gets. Colour thresholds come from
prometheus/thresholds.yml, the same file the alerts are generated from. This module holds
the dashboard's frame (variables, settings); each row of panels is a module of grafana/rows/,
built with the helpers of grafana/panels.py.

    python -m grafana.generate_dashboard            # rewrite the JSON (from the repository root)
    python -m grafana.generate_dashboard --check    # exit 1 if the JSON is out of date

Conventions every panel follows (tests/test_rules.py checks them):
- every panel and target uses the `${datasource}` variable;
- doors and devices are shown by the human names of the `_info` metrics (joined with
  `* on(...) group_left(name ...)`), never by their ids;
- queries filter on `$account` and `$device`, whose "All" value is `.*`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    from grafana.panels import ACC, DS, Builder
    from grafana.rows import controllers, doors, health, lametric, overview
    from prometheus.thresholds import run_generator
except ModuleNotFoundError as error:  # run as a file, not as a module of the repository
    if not (error.name or "").startswith(("grafana", "prometheus")):
        raise
    raise SystemExit("run from the repository root: python -m grafana.generate_dashboard") from None

DASHBOARD_FILE = Path(__file__).resolve().parent / "dashboards" / "device-cloud.json"

UID = "device-cloud-exporter"
TITLE = "Device Cloud"
TAGS = ["device-cloud-exporter", "parqex", "lametric", "iot"]

# The rows, top to bottom: each adds its row header and panels to the grid.
ROWS: tuple[Callable[[Builder, dict[str, Any]], None], ...] = (
    overview.add,
    doors.add,
    controllers.add,
    lametric.add,
    health.add,
)


def build_panels(t: dict[str, Any]) -> list[dict[str, Any]]:
    b = Builder()
    for add_row in ROWS:
        add_row(b, t)
    return b.panels


def variables(t: dict[str, Any]) -> list[dict[str, Any]]:
    def query_var(
        name: str, label: str, query: str, regex: str = "", hide: int = 0, multi: bool = True
    ) -> dict[str, Any]:
        current: dict[str, Any] = (
            {"selected": True, "text": ["All"], "value": ["$__all"]} if multi else {}
        )
        return {
            "name": name,
            "label": label,
            "type": "query",
            "datasource": DS,
            "query": query,
            "definition": query,
            "refresh": 2,
            "regex": regex,
            "sort": 1,
            "includeAll": multi,
            "multi": multi,
            "allValue": ".*" if multi else None,
            "current": current,
            "options": [],
            "hide": hide,
            "skipUrlSync": False,
        }

    return [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "regex": "",
            "current": {},
            "options": [],
            "hide": 0,
            "includeAll": False,
            "multi": False,
            "refresh": 1,
            "skipUrlSync": False,
        },
        # The exporter's own scrape job, for `up`; single value so `up` of other jobs never shows.
        query_var(
            "job",
            "Job",
            "label_values(device_cloud_exporter_build_info, job)",
            hide=2,
            multi=False,
        ),
        # Union of both sources: an empty source (no accounts configured) breaks nothing.
        query_var(
            "account",
            "Account",
            'label_values({__name__=~"parqex_up|lametric_up"}, account)',
        ),
        # Shown by human name, keyed by id: ParqEx controllers have no name, so their owner
        # and blackbox code are shown; LaMetric devices by their name.
        query_var(
            "device",
            "Device",
            "query_result(\n"
            f'  label_join(parqex_device_info{{{ACC}}}, "display", " ", "owner", "blackbox_code")\n'
            f'  or label_replace(lametric_device_info{{{ACC}}}, "display", "$1", "name", "(.*)")\n'
            ")",
            regex='/device_id="(?<value>[^"]*)".*display="(?<text>[^"]*)"/',
        ),
    ]


def build_dashboard(t: dict[str, Any]) -> dict[str, Any]:
    return {
        "uid": UID,
        "title": TITLE,
        "description": "ParqEx garage doors and LaMetric clocks from device-cloud-exporter: is "
        "every door shut, every sensor charged, every controller online?",
        "tags": TAGS,
        "id": None,
        "version": 1,
        "schemaVersion": 39,
        "editable": True,
        "graphTooltip": 1,
        "liveNow": False,
        "refresh": "1m",
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "fiscalYearStartMonth": 0,
        "weekStart": "",
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "links": [],
        "templating": {"list": variables(t)},
        "panels": build_panels(t),
    }


def render(thresholds: dict[str, Any]) -> str:
    return json.dumps(build_dashboard(thresholds), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    return run_generator(
        argv,
        description=__doc__.splitlines()[0],
        render_text=render,
        output=DASHBOARD_FILE,
        script="python -m grafana.generate_dashboard",
    )


if __name__ == "__main__":
    raise SystemExit(main())
