"""Row "Doors": every door by name, its state now and over time, and its sensor battery."""

from __future__ import annotations

from typing import Any

from grafana.panels import (
    DEV,
    DOOR_KEY,
    Builder,
    battery_steps,
    door_named,
    override,
    state_timeline,
    table,
    target,
    timeseries,
    value_map,
)


def add(b: Builder, t: dict[str, Any]) -> None:
    b.row("Doors")
    open_seconds = (
        f"(time() - (parqex_door_last_toggled_timestamp_seconds{{{DEV}}} > 0))\n"
        f"* on ({DOOR_KEY}) parqex_door_open{{{DEV}}}"
    )
    # Only doors with a bluetooth sensor: the others have no battery to show.
    battery = door_named(
        f"(\n  parqex_door_sensor_battery_ratio{{{DEV}}}\n"
        f"  and on ({DOOR_KEY}) (parqex_door_bluetooth_sensor{{{DEV}}} == 1)\n)"
    )
    b.add(
        table(
            "Doors",
            "Every ParqEx door with its state, how long it has been open, its sensor battery "
            "and when it was last opened or closed.",
            [
                door_named(f"(parqex_door_state{{{DEV}}} == 1)"),
                door_named(f"({open_seconds})"),
                battery,
                door_named(f"parqex_door_last_toggled_timestamp_seconds{{{DEV}}} * 1000"),
                door_named(f"parqex_door_auto_close_enabled{{{DEV}}}"),
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
                    thresholds=battery_steps(t),
                    custom__cellOptions={"type": "color-background", "mode": "basic"},
                ),
                override("Last toggled", unit="dateTimeFromNow"),
                override(
                    "Auto-close", mappings=value_map({"0": ("off", "text"), "1": ("on", "blue")})
                ),
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
            value_map({"0": ("CLOSED", "green"), "1": ("OPEN", "red")}),
        ),
        w=24,
        h=8,
    )
    b.add(
        timeseries(
            "Door sensor battery",
            "Battery of each door's bluetooth sensor; dashed lines are the alert thresholds.",
            [target(battery, "A", legend="{{name}}")],
            unit="percentunit",
            thresholds=battery_steps(t),
            min_=0,
            max_=1,
        ),
        w=24,
        h=8,
    )
