"""ParqEx metric families, built fresh for every scrape from the accounts' sync snapshots."""

from __future__ import annotations

from collections.abc import Sequence

from exporter.collectors.common import add_if, add_state, device_labels, gauge, source_families
from exporter.exposition import Family, escape
from exporter.models.parqex import KNOWN_DOOR_STATES, Door, Sync
from exporter.outcome import Outcome

DEVICE = ["account", "device_id"]
DOOR = ["account", "device_id", "door_id"]


def families(outcomes: Sequence[Outcome], now: float) -> tuple[list[Family], list[Outcome]]:
    """The ParqEx families, and the accounts whose families crashed (see `add_accounts`)."""
    f = _Families()

    def add(outcome: Outcome) -> None:
        assert isinstance(outcome.snapshot, Sync)
        f.add(outcome.account, outcome.snapshot, now)

    return source_families("parqex", outcomes, f.all(), add)


class _Families:
    def __init__(self) -> None:
        self.device_info = gauge(
            "parqex_device_info",
            "ParqEx controller identity, always 1 (blackbox_code, software_version, "
            "owner = owner_first_name owner_last_name).",
            [*DEVICE, "blackbox_code", "software_version", "owner"],
        )
        self.device_active = gauge(
            "parqex_device_active", "1 if the controller is active (active).", DEVICE
        )
        self.device_registered = gauge(
            "parqex_device_registered", "1 if the controller is registered (registered).", DEVICE
        )
        self.device_bluetooth = gauge(
            "parqex_device_bluetooth_onboard",
            "1 if the controller has bluetooth on board (bluetooth_onboard).",
            DEVICE,
        )
        self.last_contact = gauge(
            "parqex_device_last_contact_timestamp_seconds",
            "Unix time the controller last called the cloud (last_contact).",
            DEVICE,
        )
        self.last_contact_age = gauge(
            "parqex_device_last_contact_age_seconds",
            "Seconds since the controller last called the cloud, at scrape time "
            "(now - last_contact).",
            DEVICE,
        )
        self.alert_threshold = gauge(
            "parqex_device_door_open_alert_threshold_seconds",
            "Seconds a door may stay open before the controller's own alert "
            "(time_before_door_open_alert).",
            DEVICE,
        )
        self.entities = gauge(
            "parqex_device_entities_controlled",
            "Number of entities the controller can control (number_of_entities_controlled).",
            DEVICE,
        )
        self.door_info = gauge(
            "parqex_door_info",
            "ParqEx door identity, always 1 (name, entity_number, user_relationship).",
            [*DOOR, "name", "entity_number", "user_relationship"],
        )
        self.door_open = gauge(
            "parqex_door_open",
            "1 if the door is OPEN, 0 if CLOSED; absent for any other state (state).",
            DOOR,
        )
        self.door_state = gauge(
            "parqex_door_state",
            "1 for the door's current state, 0 for the other documented ones (state); an "
            "undocumented state appears as its own value.",
            [*DOOR, "state"],
        )
        self.door_active = gauge("parqex_door_active", "1 if the door is active (active).", DOOR)
        self.auto_close = gauge(
            "parqex_door_auto_close_enabled",
            "1 if the door closes itself (door_auto_close_enabled).",
            DOOR,
        )
        self.auto_close_delay = gauge(
            "parqex_door_auto_close_delay_seconds",
            "Seconds after which the door closes itself (door_auto_close_delay).",
            DOOR,
        )
        self.last_toggled = gauge(
            "parqex_door_last_toggled_timestamp_seconds",
            "Unix time the door last opened or closed (last_toggled).",
            DOOR,
        )
        self.sensor = gauge(
            "parqex_door_bluetooth_sensor",
            "1 if the door has a bluetooth door sensor (bluetooth_sensor).",
            DOOR,
        )
        self.battery = gauge(
            "parqex_door_sensor_battery_ratio",
            "Charge of the door's bluetooth sensor battery, 0..1 (bluetooth_sensor_battery_level "
            "/ 100); only for doors that have a sensor, since the API reports 0 for the others.",
            DOOR,
        )

    def add(self, account: str, sync: Sync, now: float) -> None:
        for device in sync.devices:
            labels = device_labels(account, device.id)
            self.device_info.add(
                [
                    account,
                    device.id,
                    device.blackbox_code or "",
                    device.software_version or "",
                    device.owner or "",
                ],
                1.0,
            )
            add_if(self.device_active, labels, device.active)
            add_if(self.device_registered, labels, device.registered)
            add_if(self.device_bluetooth, labels, device.bluetooth_onboard)
            add_if(self.last_contact, labels, device.last_contact)
            if device.last_contact is not None:
                self.last_contact_age.add_rendered(labels, now - device.last_contact)
            add_if(self.alert_threshold, labels, device.door_open_alert_threshold_seconds)
            add_if(self.entities, labels, device.entities_controlled)
            for door in device.doors:
                self._add_door(f'{labels},door_id="{escape(door.id)}"', door)

    def _add_door(self, labels: str, door: Door) -> None:
        """`labels` is the door's rendered account/device_id/door_id set, shared by all below."""
        entity = "" if door.entity_number is None else str(door.entity_number)
        self.door_info.add_rendered(
            # entity_number, name and user_relationship sort after door_id, in this order
            f'{labels},entity_number="{entity}",name="{escape(door.name or "")}",'
            f'user_relationship="{escape(door.user_relationship or "")}"',
            1.0,
        )
        if door.state in KNOWN_DOOR_STATES:
            self.door_open.add_rendered(labels, 1.0 if door.state == "OPEN" else 0.0)
        add_state(self.door_state, labels, KNOWN_DOOR_STATES, door.state)
        add_if(self.door_active, labels, door.active)
        add_if(self.auto_close, labels, door.auto_close_enabled)
        add_if(self.auto_close_delay, labels, door.auto_close_delay_seconds)
        add_if(self.last_toggled, labels, door.last_toggled)
        add_if(self.sensor, labels, door.bluetooth_sensor)
        if door.bluetooth_sensor and door.battery_level is not None:
            self.battery.add_rendered(labels, door.battery_level / 100.0)

    def all(self) -> list[Family]:
        return list(vars(self).values())
