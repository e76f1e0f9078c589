"""Panel helpers every dashboard row uses: the grid layout, queries, and the panel types.

Plain dictionaries in Grafana's JSON model (schemaVersion 39), written out explicitly so what
you read here is what Grafana gets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus.promql import Reading, bridged

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


def _panel(
    kind: str,
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    defaults: dict[str, Any],
    options: dict[str, Any],
    overrides: list[dict[str, Any]] | None = None,
    **between: Any,
) -> dict[str, Any]:
    """The envelope every panel kind shares; `between` goes after the targets."""
    return {
        "type": kind,
        "title": title,
        "description": description,
        "targets": targets,
        **between,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": options,
    }


def _given(**settings: Any) -> dict[str, Any]:
    """The settings that were given (not None), in order."""
    return {key: value for key, value in settings.items() if value is not None}


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
    defaults.update(_given(noValue=no_value, decimals=decimals))
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "background",
        "graphMode": "none",
        "justifyMode": "auto",
        "textMode": text_mode,
        "orientation": "auto",
        "showPercentChange": False,
        "wideLayout": True,
    }
    return _panel("stat", title, description, targets, defaults, options)


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
    defaults.update(_given(min=min_, max=max_))
    options = {
        "legend": {
            "displayMode": "table" if legend_calcs else "list",
            "placement": "right" if legend_calcs else "bottom",
            "showLegend": True,
            "calcs": legend_calcs or [],
        },
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return _panel("timeseries", title, description, targets, defaults, options)


def state_timeline(
    title: str, description: str, targets: list[dict[str, Any]], mappings: list[dict[str, Any]]
) -> dict[str, Any]:
    defaults = {
        "color": {"mode": "thresholds"},
        "thresholds": steps((None, "text")),
        "mappings": mappings,
        # A gap in collection stays a gap: no state is drawn across it.
        "custom": {"fillOpacity": 80, "lineWidth": 0, "spanNulls": False},
    }
    options = {
        "mergeValues": True,
        "showValue": "auto",
        "alignValue": "left",
        "rowHeight": 0.9,
        "legend": {"showLegend": False, "displayMode": "list", "placement": "bottom"},
        "tooltip": {"mode": "single", "sort": "none"},
    }
    return _panel("state-timeline", title, description, targets, defaults, options)


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
    queries: list[str],
    columns: dict[str, str],
    overrides: list[dict[str, Any]],
    sort_by: str,
) -> dict[str, Any]:
    """Instant `queries` (refIds A, B, ...) merged into one row per door/device.

    `columns` maps a field of the merged frame (label or `Value #REF`) to its header, in
    display order. Everything else (ids, instance, job) is hidden.
    """
    targets = [
        target(query, chr(ord("A") + i), instant=True, table=True)
        for i, query in enumerate(queries)
    ]
    hidden = ["Time", "__name__", "instance", "job", "device_id", "door_id"]
    hidden += [f"Value #{t['refId']}" for t in targets if f"Value #{t['refId']}" not in columns]
    transformations = [
        {"id": "merge", "options": {}},
        {
            "id": "organize",
            "options": {
                "excludeByName": {name: True for name in hidden if name not in columns},
                "indexByName": {name: i for i, name in enumerate(columns)},
                "renameByName": dict(columns),
            },
        },
    ]
    defaults = {
        "custom": {"align": "auto", "cellOptions": {"type": "auto"}, "filterable": True},
        "color": {"mode": "thresholds"},
        "thresholds": steps((None, "green")),
        "mappings": [],
    }
    options = {
        "showHeader": True,
        "cellHeight": "sm",
        "footer": {"show": False, "reducer": ["sum"], "countRows": False, "fields": ""},
        "sortBy": [{"displayName": sort_by, "desc": False}],
    }
    return _panel(
        "table",
        title,
        description,
        targets,
        defaults,
        options,
        overrides,
        transformations=transformations,
    )


def battery_steps(t: dict[str, Any]) -> dict[str, Any]:
    """Colours of a sensor battery: the two battery alerts' thresholds."""
    low, critical = float(t["battery_low_ratio"]), float(t["battery_critical_ratio"])
    return steps((None, "red"), (critical, "orange"), (low, "green"))


@dataclass(frozen=True)
class Gap:
    """How a device stat reads a gap in collection: as the alerts do (prometheus/promql.py),
    the values of the last successful collection for up to collection_grace, then `no_data`."""

    grace: str

    @classmethod
    def of(cls, t: dict[str, Any]) -> Gap:
        return cls(str(t["collection_grace"]))

    @property
    def no_data(self) -> str:
        return f"no data for {self.grace}"

    @property
    def note(self) -> str:
        """Appended to the description of every stat built with `current`."""
        return (
            f" During a gap in collection: the values of the last successful collection, for up"
            f" to {self.grace} (as the alerts see them); then '{self.no_data}'."
        )

    def current(self, source: str, build: Callable[[Reading], str]) -> str:
        """`build` on the selected devices' live values, or their last collected ones."""
        return bridged(build, source, self.grace, ACC, DEV)
