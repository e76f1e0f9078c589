"""Row "LaMetric devices": how many devices are in each state, and every device by name."""

from __future__ import annotations

from typing import Any

from grafana.panels import (
    DEV,
    Builder,
    Gap,
    lametric_named,
    override,
    stat,
    steps,
    table,
    target,
    value_map,
)


def add(b: Builder, t: dict[str, Any]) -> None:
    gap = Gap.of(t)
    b.row("LaMetric devices")
    b.add(
        stat(
            "LaMetric devices by state",
            "How many LaMetric devices are in each state." + gap.note,
            [
                target(
                    "sum by (state) (\n"
                    + gap.current("lametric", lambda r: r.metric("lametric_device_state"))
                    + "\n)",
                    "A",
                    legend="{{state}}",
                    instant=True,
                )
            ],
            text_mode="value_and_name",
            thresholds=steps((None, "blue")),
            no_value=gap.no_data,
        ),
        w=8,
        h=6,
    )
    b.add(
        table(
            "LaMetric devices",
            "Every LaMetric device with its state and when it was created and last updated.",
            [
                lametric_named(f"(lametric_device_state{{{DEV}}} == 1)"),
                lametric_named(f"lametric_device_created_timestamp_seconds{{{DEV}}} * 1000"),
                lametric_named(f"lametric_device_updated_timestamp_seconds{{{DEV}}} * 1000"),
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
