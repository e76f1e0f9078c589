"""Row "At a glance": the first questions, one number each, coloured as the alerts decide.

The device stats read what the alerts read: live values, or during a gap in collection the
last collected ones for up to collection_grace; older than that they say so (`Gap`).
"""

from __future__ import annotations

from typing import Any

from grafana.panels import ACCOUNT_UP, DOOR_KEY, Builder, Gap, battery_steps, stat, steps, target
from prometheus.promql import door_open_expr


def add(b: Builder, t: dict[str, Any]) -> None:
    low, critical = float(t["battery_low_ratio"]), float(t["battery_critical_ratio"])
    max_age = int(t["controller_last_contact_max_age_seconds"])
    gap = Gap.of(t)
    no_data, gap_note = gap.no_data, gap.note
    b.row("At a glance")
    doors_open = gap.current("parqex", lambda r: r.metric("parqex_door_open"))
    doors_too_long = gap.current("parqex", lambda r: door_open_expr(r, None))
    stats = [
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
                    f"count(\n{doors_too_long}\n)\nor\n0 * sum(\n{doors_open}\n)",
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
                    + gap.current(
                        "parqex",
                        lambda r: (
                            f"{r.metric('parqex_door_sensor_battery_ratio')}\n"
                            f"and on ({DOOR_KEY}) ({r.metric('parqex_door_bluetooth_sensor')} == 1)"
                        ),
                    )
                    + "\n)",
                    "A",
                    instant=True,
                )
            ],
            unit="percentunit",
            thresholds=battery_steps(t),
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
                    + gap.current(
                        "parqex",
                        lambda r: (
                            f"{r.metric('parqex_device_last_contact_age_seconds')} > bool {max_age}"
                        ),
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
                    + gap.current(
                        "lametric", lambda r: r.metric("lametric_device_state", 'state="banned"')
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
    for panel in stats:
        b.add(panel, w=4, h=4)
