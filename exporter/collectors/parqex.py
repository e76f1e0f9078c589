"""ParqEx metric families, built fresh for every scrape from the accounts' sync snapshots."""

from __future__ import annotations

from collections.abc import Sequence

from exporter.collectors.common import (
    add_states,
    add_values,
    device_labels,
    gauge,
    source_families,
)
from exporter.exposition import Family, escape
from exporter.models.parqex import KNOWN_DOOR_STATES, Sync
from exporter.outcome import Outcome

DEVICE = ["account", "device_id"]
DOOR = ["account", "device_id", "door_id"]


def families(
    outcomes: Sequence[Outcome], now: float, *, deflated: bool = False
) -> tuple[list[Family], list[Outcome]]:
    """The ParqEx families, and the accounts whose families crashed (see `add_accounts`).

    `deflated`: the sample lines are compressed as they are written (for a gzip answer).
    """
    f = _Families()
    for family in f.all():
        family.deflated = deflated

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
        """Write the account's samples, one family at a time.

        Each family is one pass over the devices or doors, its lines generated and written a few
        thousand at a time as UTF-8 chunks (see `exposition.Family.add_lines`): a scrape of
        30,000 doors makes no per-sample objects that outlive a chunk. Label strings are
        rendered once per device and per door.
        """
        devices = sync.devices
        device_labels_ = [device_labels(account, device.id) for device in devices]
        doors = [door for device in devices for door in device.doors]
        door_labels = [
            f'{labels},door_id="{escape(door.id)}"'
            for labels, device in zip(device_labels_, devices, strict=True)
            for door in device.doors
        ]
        account_label = escape(account)
        self.device_info.add_lines(
            # labels sorted by name: blackbox_code comes between account and device_id
            f'{self.device_info.name}{{account="{account_label}",blackbox_code="'
            f'{escape(device.blackbox_code or "")}",device_id="{escape(device.id)}",'
            f'owner="{escape(device.owner or "")}",'
            f'software_version="{escape(device.software_version or "")}"}} 1.0\n'
            for device in devices
        )
        add_values(self.device_active, device_labels_, (d.active for d in devices))
        add_values(self.device_registered, device_labels_, (d.registered for d in devices))
        add_values(self.device_bluetooth, device_labels_, (d.bluetooth_onboard for d in devices))
        contacts = [d.last_contact for d in devices]
        add_values(self.last_contact, device_labels_, contacts)
        add_values(
            self.last_contact_age,
            device_labels_,
            (None if contact is None else now - contact for contact in contacts),
        )
        add_values(
            self.alert_threshold,
            device_labels_,
            (d.door_open_alert_threshold_seconds for d in devices),
        )
        add_values(self.entities, device_labels_, (d.entities_controlled for d in devices))
        # entity_number, name and user_relationship sort after door_id, in this order
        self.door_info.add_lines(
            (
                f"{self.door_info.name}{{{labels},entity_number="
                f'"{"" if door.entity_number is None else door.entity_number}",'
                f'name="{escape(door.name or "")}",'
                f'user_relationship="{escape(door.user_relationship or "")}"}} 1.0\n'
                for labels, door in zip(door_labels, doors, strict=True)
            )
        )
        states = [door.state for door in doors]
        add_values(
            self.door_open,
            door_labels,
            (
                (1.0 if state == "OPEN" else 0.0) if state in KNOWN_DOOR_STATES else None
                for state in states
            ),
        )
        add_states(self.door_state, door_labels, KNOWN_DOOR_STATES, states)
        add_values(self.door_active, door_labels, (door.active for door in doors))
        add_values(self.auto_close, door_labels, (door.auto_close_enabled for door in doors))
        add_values(
            self.auto_close_delay, door_labels, (door.auto_close_delay_seconds for door in doors)
        )
        add_values(self.last_toggled, door_labels, (door.last_toggled for door in doors))
        add_values(self.sensor, door_labels, (door.bluetooth_sensor for door in doors))
        add_values(
            self.battery,
            door_labels,
            (
                door.battery_level / 100.0
                if door.bluetooth_sensor and door.battery_level is not None
                else None
                for door in doors
            ),
        )

    def all(self) -> list[Family]:
        return list(vars(self).values())
