"""ParqEx `/oauth/v1/endpoints/sync` answers as typed values.

Field names follow the ParqEx "Get User Devices" document. `image`, `light` and `sensor` are
deprecated upstream and not read. Timestamps carry no zone; `parqex.timezone` from the config
applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

from exporter.models.fields import Problem, Reader, unique

KNOWN_DOOR_STATES: tuple[str, ...] = ("OPEN", "CLOSED")


@dataclass(frozen=True, slots=True)
class Door:
    id: str
    name: str | None
    entity_number: int | None
    user_relationship: str | None
    state: str | None  # upper-cased; may be a state the document does not list
    active: bool | None
    auto_close_enabled: bool | None
    auto_close_delay_seconds: float | None
    last_toggled: float | None  # seconds since the epoch
    bluetooth_sensor: bool | None
    battery_level: float | None  # 0..100, as sent; meaningful only with a bluetooth sensor


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    blackbox_code: str | None
    software_version: str | None
    owner: str | None  # "first last"
    active: bool | None
    registered: bool | None
    bluetooth_onboard: bool | None
    last_contact: float | None
    door_open_alert_threshold_seconds: float | None
    entities_controlled: float | None
    doors: tuple[Door, ...]


@dataclass(frozen=True, slots=True)
class Sync:
    devices: tuple[Device, ...]
    problems: tuple[Problem, ...]


def parse_sync(body: Any, zone: tzinfo) -> Sync:
    """Turn a decoded sync body into devices; never raises on content, only skips and records."""
    problems: list[Problem] = []
    if not isinstance(body, dict):
        problems.append(Problem("sync", "wrong_type"))
        return Sync((), tuple(problems))
    top = Reader(body, "sync", problems)
    devices = unique(
        (_device(raw, zone, problems) for raw in top.objects("devices")), "device", problems
    )
    return Sync(devices, tuple(problems))


def _device(raw: dict[str, Any], zone: tzinfo, problems: list[Problem]) -> Device | None:
    r = Reader(raw, "device", problems)
    device_id = r.ident("id")
    if device_id is None:
        return None  # without an id there is no series to put the rest on
    first, last = r.optional_text("owner_first_name"), r.optional_text("owner_last_name")
    owner = " ".join(p for p in (first, last) if p and p.strip()) or None
    return Device(
        id=device_id,
        blackbox_code=r.text("blackbox_code"),
        software_version=_version(r),
        owner=owner,
        active=r.flag("active"),
        registered=r.flag("registered"),
        bluetooth_onboard=r.flag("bluetooth_onboard"),
        last_contact=r.timestamp("last_contact", zone),
        door_open_alert_threshold_seconds=r.number("time_before_door_open_alert", low=0),
        entities_controlled=r.number("number_of_entities_controlled", low=0),
        doors=unique((_door(d, zone, problems) for d in r.objects("doors")), "door", problems),
    )


def _version(r: Reader) -> str | None:
    # documented as a string ("0"); a bare number is the same version, not a broken field.
    return r.ident("software_version")


def _door(raw: dict[str, Any], zone: tzinfo, problems: list[Problem]) -> Door | None:
    r = Reader(raw, "door", problems)
    door_id = r.ident("id")
    if door_id is None:
        return None
    return Door(
        id=door_id,
        name=r.text("name"),
        entity_number=r.integer("entity_number", low=0),
        user_relationship=r.text("user_relationship"),
        state=r.state("state", str.upper),
        active=r.flag("active"),
        auto_close_enabled=r.flag("door_auto_close_enabled"),
        auto_close_delay_seconds=r.number("door_auto_close_delay", low=0),
        last_toggled=r.timestamp("last_toggled", zone),
        bluetooth_sensor=r.flag("bluetooth_sensor"),
        battery_level=r.number("bluetooth_sensor_battery_level", low=0, high=100),
    )
