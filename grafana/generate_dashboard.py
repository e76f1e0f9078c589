#!/usr/bin/env python3
"""Generate grafana/dashboards/device-cloud.json (the dashboard users import).

Plain Python dictionaries, no Grafana SDK: the JSON model (schemaVersion 39) is written out
explicitly, so what you read here is what Grafana gets. Colour thresholds come from
prometheus/thresholds.yml, the same file the alerts are generated from.

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
    from prometheus.promql import Reading, bridged, door_open_expr
    from prometheus.thresholds import duration_seconds, run_generator
except ModuleNotFoundError as error:  # run as a file, not as a module of the repository
    if not (error.name or "").startswith("prometheus"):
        raise
    raise SystemExit("run from the repository root: python -m grafana.generate_dashboard") from None

HERE = Path(__file__).resolve().parent
DASHBOARD_FILE = HERE / "dashboards" / "device-cloud.json"

UID = "device-cloud-exporter"
TITLE = "Device Cloud"
TAGS = ["device-cloud-exporter", "parqex", "lametric", "iot"]
DS = {"type": "prometheus", "uid": "${datasource}"}

# Label filters used by every per-device query.
ACC = 'account=~"$account"'
DEV = 'account=~"$account", device_id=~"$device"'
DOOR_KEY = "account, device_id, door_id"
DEVICE_KEY = "account, device_id"


def door_named(expr: str) -> str:
    """Attach the door's human name (and drop the metric name) to a per-door expression."""
    return f"{expr}\n* on ({DOOR_KEY}) group_left (name)\n  parqex_door_info{{{DEV}}}"


def controller_named(expr: str) -> str:
    return (
        f"{expr}\n* on ({DEVICE_KEY}) group_left (owner, blackbox_code, software_version)\n"
        f"  parqex_device_info{{{DEV}}}"
    )


def lametric_named(expr: str) -> str:
    return (
        f"{expr}\n* on ({DEVICE_KEY}) group_left (name, serial_number, wifi_ssid)\n"
        f"  lametric_device_info{{{DEV}}}"
    )


# Both per-account collection gauges as one vector with a `source` label.
ACCOUNT_UP = (
    f'label_replace(parqex_up{{{ACC}}}, "source", "parqex", "", "")\n'
    f'or\nlabel_replace(lametric_up{{{ACC}}}, "source", "lametric", "", "")'
)


class Builder:
    """Lays panels out top to bottom on Grafana's 24-column grid and numbers them."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.y = 0
        self.x = 0
        self.row_height = 0
        self.next_id = 1

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "type": "row",
                "id": self._id(),
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1

    def _newline(self) -> None:
        if self.x:
            self.y += self.row_height
        self.x = 0
        self.row_height = 0

    def add(self, panel: dict[str, Any], w: int, h: int) -> None:
        if self.x + w > 24:
            self._newline()
        panel = {
            "type": panel.pop("type"),
            "id": self._id(),
            "title": panel.pop("title"),
            "datasource": DS,
            "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y},
            **panel,
        }
        self.panels.append(panel)
        self.x += w
        self.row_height = max(self.row_height, h)


def target(
    expr: str, ref: str, legend: str = "", instant: bool = False, table: bool = False
) -> dict[str, Any]:
    t: dict[str, Any] = {
        "datasource": DS,
        "refId": ref,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
        "editorMode": "code",
    }
    if table:
        t["format"] = "table"
    return t


def steps(*pairs: tuple[float | None, str]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"value": v, "color": c} for v, c in pairs]}


def stat(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    unit: str = "none",
    thresholds: dict[str, Any] | None = None,
    mappings: list[dict[str, Any]] | None = None,
    text_mode: str = "value",
    decimals: int | None = None,
    no_value: str | None = None,
) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "unit": unit,
        "thresholds": thresholds or steps((None, "green")),
        "mappings": mappings or [],
        "color": {"mode": "thresholds"},
    }
    if no_value is not None:
        defaults["noValue"] = no_value
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "justifyMode": "auto",
            "textMode": text_mode,
            "orientation": "auto",
            "showPercentChange": False,
            "wideLayout": True,
        },
    }


def timeseries(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    unit: str,
    thresholds: dict[str, Any] | None = None,
    min_: float | None = None,
    max_: float | None = None,
    draw: str = "line",
    legend_calcs: list[str] | None = None,
) -> dict[str, Any]:
    custom: dict[str, Any] = {
        "drawStyle": draw,
        "lineWidth": 1,
        "fillOpacity": 10 if draw == "line" else 80,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if draw == "bars" else "none", "group": "A"},
        "thresholdsStyle": {"mode": "dashed" if thresholds else "off"},
    }
    defaults: dict[str, Any] = {
        "unit": unit,
        "custom": custom,
        "color": {"mode": "palette-classic"},
        "thresholds": thresholds or steps((None, "green")),
    }
    if min_ is not None:
        defaults["min"] = min_
    if max_ is not None:
        defaults["max"] = max_
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {
                "displayMode": "table" if legend_calcs else "list",
                "placement": "right" if legend_calcs else "bottom",
                "showLegend": True,
                "calcs": legend_calcs or [],
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def state_timeline(
    title: str, description: str, targets: list[dict[str, Any]], mappings: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "type": "state-timeline",
        "title": title,
        "description": description,
        "targets": targets,
        "fieldConfig": {
            "defaults": {
                "color": {"mode": "thresholds"},
                "thresholds": steps((None, "text")),
                "mappings": mappings,
                # A gap in collection stays a gap: no state is drawn across it.
                "custom": {"fillOpacity": 80, "lineWidth": 0, "spanNulls": False},
            },
            "overrides": [],
        },
        "options": {
            "mergeValues": True,
            "showValue": "auto",
            "alignValue": "left",
            "rowHeight": 0.9,
            "legend": {"showLegend": False, "displayMode": "list", "placement": "bottom"},
            "tooltip": {"mode": "single", "sort": "none"},
        },
    }


def value_map(mapping: dict[str, tuple[str, str]]) -> list[dict[str, Any]]:
    """{"1": ("OPEN", "red")} -> Grafana value mappings."""
    return [
        {
            "type": "value",
            "options": {
                key: {"text": text, "color": color, "index": i}
                for i, (key, (text, color)) in enumerate(mapping.items())
            },
        }
    ]


def override(name: str, **props: Any) -> dict[str, Any]:
    return {
        "matcher": {"id": "byName", "options": name},
        "properties": [{"id": key.replace("__", "."), "value": v} for key, v in props.items()],
    }


def table(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    columns: dict[str, str],
    overrides: list[dict[str, Any]],
    sort_by: str,
) -> dict[str, Any]:
    """Instant table queries merged into one row per door/device.

    `columns` maps a field of the merged frame (label or `Value #REF`) to its header, in
    display order. Everything else (ids, instance, job) is hidden.
    """
    hidden = ["Time", "__name__", "instance", "job", "device_id", "door_id"]
    hidden += [f"Value #{t['refId']}" for t in targets if f"Value #{t['refId']}" not in columns]
    return {
        "type": "table",
        "title": title,
        "description": description,
        "targets": targets,
        "transformations": [
            {"id": "merge", "options": {}},
            {
                "id": "organize",
                "options": {
                    "excludeByName": {name: True for name in hidden if name not in columns},
                    "indexByName": {name: i for i, name in enumerate(columns)},
                    "renameByName": dict(columns),
                },
            },
        ],
        "fieldConfig": {
            "defaults": {
                "custom": {"align": "auto", "cellOptions": {"type": "auto"}, "filterable": True},
                "color": {"mode": "thresholds"},
                "thresholds": steps((None, "green")),
                "mappings": [],
            },
            "overrides": overrides,
        },
        "options": {
            "showHeader": True,
            "cellHeight": "sm",
            "footer": {"show": False, "reducer": ["sum"], "countRows": False, "fields": ""},
            "sortBy": [{"displayName": sort_by, "desc": False}],
        },
    }


def build_panels(t: dict[str, Any]) -> list[dict[str, Any]]:
    low, critical = float(t["battery_low_ratio"]), float(t["battery_critical_ratio"])
    max_age = int(t["controller_last_contact_max_age_seconds"])
    battery_steps = steps((None, "red"), (critical, "orange"), (low, "green"))
    open_map = value_map({"0": ("CLOSED", "green"), "1": ("OPEN", "red")})
    yes_no = value_map({"0": ("no", "red"), "1": ("yes", "green")})
    on_off = value_map({"0": ("off", "text"), "1": ("on", "blue")})
    b = Builder()

    # ---------------------------------------------------------------- overview
    b.row("At a glance")
    # The device stats read what the alerts read: live values, or during a gap in collection
    # the last collected ones for up to collection_grace. Older than that they show no_data.
    grace = str(t["collection_grace"])
    no_data = f"no data for {grace}"
    gap_note = (
        f" During a gap in collection: the values of the last successful collection, for up"
        f" to {grace} (as the alerts see them); then '{no_data}'."
    )

    def parqex_now(build: Callable[[Reading], str]) -> str:
        return bridged(build, "parqex", grace, ACC, DEV)

    doors_open = parqex_now(lambda r: r.metric("parqex_door_open"))
    overview = [
        stat(
            "Doors open",
            "ParqEx doors reported OPEN." + gap_note,
            [target(f"sum(\n{doors_open}\n)", "A", instant=True)],
            thresholds=steps((None, "green"), (1, "orange")),
            no_value=no_data,
        ),
        stat(
            "Doors open too long",
            "Doors open longer than their controller's own door-open alert time "
            "(time_before_door_open_alert): what DeviceCloudDoorOpen alerts on." + gap_note,
            [
                target(
                    f"count(\n{parqex_now(lambda r: door_open_expr(r, None))}\n)\n"
                    f"or\n0 * sum(\n{doors_open}\n)",
                    "A",
                    instant=True,
                )
            ],
            thresholds=steps((None, "green"), (1, "red")),
            no_value=no_data,
        ),
        stat(
            "Lowest sensor battery",
            "Lowest battery among door bluetooth sensors (doors without a sensor are ignored). "
            f"Alerts below {low:.0%} (warning) and {critical:.0%} (critical)." + gap_note,
            [
                target(
                    "min(\n"
                    + parqex_now(
                        lambda r: (
                            f"{r.metric('parqex_door_sensor_battery_ratio')}\n"
                            f"and on ({DOOR_KEY}) ({r.metric('parqex_door_bluetooth_sensor')} == 1)"
                        )
                    )
                    + "\n)",
                    "A",
                    instant=True,
                )
            ],
            unit="percentunit",
            thresholds=battery_steps,
            decimals=0,
            no_value=no_data,
        ),
        stat(
            "Controllers not seen",
            f"ParqEx controllers whose last contact with the cloud is older than {max_age} s."
            + gap_note,
            [
                target(
                    "sum(\n"
                    + parqex_now(
                        lambda r: (
                            f"{r.metric('parqex_device_last_contact_age_seconds')} > bool {max_age}"
                        )
                    )
                    + "\n)",
                    "A",
                    instant=True,
                )
            ],
            thresholds=steps((None, "green"), (1, "orange")),
            no_value=no_data,
        ),
        stat(
            "LaMetric devices banned",
            "LaMetric devices in state banned." + gap_note,
            [
                target(
                    "sum(\n"
                    + bridged(
                        lambda r: r.metric("lametric_device_state", 'state="banned"'),
                        "lametric",
                        grace,
                        ACC,
                        DEV,
                    )
                    + "\n)",
                    "A",
                    instant=True,
                )
            ],
            thresholds=steps((None, "green"), (1, "red")),
            no_value=no_data,
        ),
        stat(
            "Accounts failing",
            "ParqEx and LaMetric accounts whose last collection failed (parqex_up / lametric_up).",
            [target(f"sum(\n  (\n{ACCOUNT_UP}\n  ) == bool 0\n)", "A", instant=True)],
            thresholds=steps((None, "green"), (1, "red")),
            no_value="no accounts scraped",
        ),
    ]
    for panel in overview:
        b.add(panel, w=4, h=4)

    # ---------------------------------------------------------------- doors
    b.row("Doors")
    open_seconds = (
        f"(time() - (parqex_door_last_toggled_timestamp_seconds{{{DEV}}} > 0))\n"
        f"* on ({DOOR_KEY}) parqex_door_open{{{DEV}}}"
    )
    b.add(
        table(
            "Doors",
            "Every ParqEx door with its state, how long it has been open, its sensor battery "
            "and when it was last opened or closed.",
            [
                target(
                    door_named(f"(parqex_door_state{{{DEV}}} == 1)"), "A", instant=True, table=True
                ),
                target(door_named(f"({open_seconds})"), "B", instant=True, table=True),
                target(
                    door_named(
                        f"(\n  parqex_door_sensor_battery_ratio{{{DEV}}}\n"
                        f"  and on ({DOOR_KEY}) (parqex_door_bluetooth_sensor{{{DEV}}} == 1)\n)"
                    ),
                    "C",
                    instant=True,
                    table=True,
                ),
                target(
                    door_named(f"parqex_door_last_toggled_timestamp_seconds{{{DEV}}} * 1000"),
                    "D",
                    instant=True,
                    table=True,
                ),
                target(
                    door_named(f"parqex_door_auto_close_enabled{{{DEV}}}"),
                    "E",
                    instant=True,
                    table=True,
                ),
            ],
            {
                "name": "Door",
                "account": "Account",
                "state": "State",
                "Value #B": "Open for",
                "Value #C": "Sensor battery",
                "Value #D": "Last toggled",
                "Value #E": "Auto-close",
            },
            [
                override(
                    "State",
                    mappings=value_map({"OPEN": ("OPEN", "red"), "CLOSED": ("CLOSED", "green")}),
                    custom__cellOptions={"type": "color-text"},
                ),
                override(
                    "Open for",
                    unit="s",
                    mappings=value_map({"0": ("-", "text")}),
                ),
                override(
                    "Sensor battery",
                    unit="percentunit",
                    decimals=0,
                    thresholds=battery_steps,
                    custom__cellOptions={"type": "color-background", "mode": "basic"},
                ),
                override("Last toggled", unit="dateTimeFromNow"),
                override("Auto-close", mappings=on_off),
            ],
            sort_by="Door",
        ),
        w=24,
        h=8,
    )
    b.add(
        state_timeline(
            "Door state over time",
            "OPEN / CLOSED of every door over the selected time range.",
            [target(door_named(f"parqex_door_open{{{DEV}}}"), "A", legend="{{name}}")],
            open_map,
        ),
        w=24,
        h=8,
    )
    b.add(
        timeseries(
            "Door sensor battery",
            "Battery of each door's bluetooth sensor; dashed lines are the alert thresholds.",
            [
                target(
                    door_named(
                        f"(\n  parqex_door_sensor_battery_ratio{{{DEV}}}\n"
                        f"  and on ({DOOR_KEY}) (parqex_door_bluetooth_sensor{{{DEV}}} == 1)\n)"
                    ),
                    "A",
                    legend="{{name}}",
                )
            ],
            unit="percentunit",
            thresholds=battery_steps,
            min_=0,
            max_=1,
        ),
        w=24,
        h=8,
    )

    # ---------------------------------------------------------------- controllers
    b.row("ParqEx controllers")
    b.add(
        timeseries(
            "Controller last contact age",
            "Seconds since each ParqEx controller last contacted the cloud; the dashed line is "
            "the DeviceCloudControllerNotSeen threshold.",
            [
                target(
                    controller_named(f"parqex_device_last_contact_age_seconds{{{DEV}}}"),
                    "A",
                    legend="{{owner}} ({{blackbox_code}})",
                )
            ],
            unit="s",
            thresholds=steps((None, "green"), (max_age, "red")),
            min_=0,
        ),
        w=12,
        h=8,
    )
    b.add(
        table(
            "Controllers",
            "ParqEx controllers by owner and blackbox code.",
            [
                target(
                    controller_named(f"parqex_device_active{{{DEV}}}"),
                    "A",
                    instant=True,
                    table=True,
                ),
                target(
                    controller_named(f"parqex_device_registered{{{DEV}}}"),
                    "B",
                    instant=True,
                    table=True,
                ),
                target(
                    controller_named(f"parqex_device_last_contact_age_seconds{{{DEV}}}"),
                    "C",
                    instant=True,
                    table=True,
                ),
                target(
                    controller_named(f"parqex_device_door_open_alert_threshold_seconds{{{DEV}}}"),
                    "D",
                    instant=True,
                    table=True,
                ),
            ],
            {
                "owner": "Owner",
                "account": "Account",
                "blackbox_code": "Blackbox",
                "software_version": "Software",
                "Value #A": "Active",
                "Value #B": "Registered",
                "Value #C": "Last contact",
                "Value #D": "Door-open alert after",
            },
            [
                override("Active", mappings=yes_no, custom__cellOptions={"type": "color-text"}),
                override("Registered", mappings=yes_no, custom__cellOptions={"type": "color-text"}),
                override(
                    "Last contact",
                    unit="s",
                    thresholds=steps((None, "green"), (max_age, "red")),
                    custom__cellOptions={"type": "color-text"},
                ),
                override("Door-open alert after", unit="s"),
            ],
            sort_by="Owner",
        ),
        w=12,
        h=8,
    )

    # ---------------------------------------------------------------- lametric
    b.row("LaMetric devices")
    b.add(
        stat(
            "LaMetric devices by state",
            "How many LaMetric devices are in each state." + gap_note,
            [
                target(
                    "sum by (state) (\n"
                    + bridged(
                        lambda r: r.metric("lametric_device_state"), "lametric", grace, ACC, DEV
                    )
                    + "\n)",
                    "A",
                    legend="{{state}}",
                    instant=True,
                )
            ],
            text_mode="value_and_name",
            thresholds=steps((None, "blue")),
            no_value=no_data,
        ),
        w=8,
        h=6,
    )
    b.add(
        table(
            "LaMetric devices",
            "Every LaMetric device with its state and when it was created and last updated.",
            [
                target(
                    lametric_named(f"(lametric_device_state{{{DEV}}} == 1)"),
                    "A",
                    instant=True,
                    table=True,
                ),
                target(
                    lametric_named(f"lametric_device_created_timestamp_seconds{{{DEV}}} * 1000"),
                    "B",
                    instant=True,
                    table=True,
                ),
                target(
                    lametric_named(f"lametric_device_updated_timestamp_seconds{{{DEV}}} * 1000"),
                    "C",
                    instant=True,
                    table=True,
                ),
            ],
            {
                "name": "Device",
                "account": "Account",
                "state": "State",
                "serial_number": "Serial number",
                "wifi_ssid": "Wi-Fi",
                "Value #B": "Created",
                "Value #C": "Updated",
            },
            [
                override(
                    "State",
                    mappings=value_map(
                        {
                            "configured": ("configured", "green"),
                            "new": ("new", "orange"),
                            "banned": ("banned", "red"),
                        }
                    ),
                    custom__cellOptions={"type": "color-text"},
                ),
                override("Created", unit="dateTimeAsIso"),
                override("Updated", unit="dateTimeFromNow"),
            ],
            sort_by="Device",
        ),
        w=16,
        h=6,
    )

    # ---------------------------------------------------------------- health
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
