"""Row "ParqEx controllers": when each controller last reached the cloud, and its state."""

from __future__ import annotations

from typing import Any

from grafana.panels import (
    DEV,
    Builder,
    controller_named,
    override,
    steps,
    table,
    target,
    timeseries,
    value_map,
)


def add(b: Builder, t: dict[str, Any]) -> None:
    max_age = int(t["controller_last_contact_max_age_seconds"])
    yes_no = value_map({"0": ("no", "red"), "1": ("yes", "green")})
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
                controller_named(f"parqex_device_active{{{DEV}}}"),
                controller_named(f"parqex_device_registered{{{DEV}}}"),
                controller_named(f"parqex_device_last_contact_age_seconds{{{DEV}}}"),
                controller_named(f"parqex_device_door_open_alert_threshold_seconds{{{DEV}}}"),
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
