"""LaMetric `/api/v2/users/me` and `/api/v2/users/me/devices` answers as typed values.

A device's `api_key` opens its local API and no metric needs it: it is never read, so nothing
holds it and nothing has to mask it. The user's e-mail is personal data nobody graphs and is not
kept either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from exporter.models.fields import Problem, Reader, unique

T = TypeVar("T")

KNOWN_DEVICE_STATES: tuple[str, ...] = ("new", "configured", "banned")


@dataclass(frozen=True, slots=True)
class User:
    id: str | None
    name: str | None
    apps_count: float | None
    private_device_count: float | None
    private_apps_count: float | None


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    name: str | None
    state: str | None  # lower-cased; may be a state the document does not list
    serial_number: str | None
    mac: str | None
    wifi_ssid: str | None
    ipv4_internal: str | None
    created_at: float | None
    updated_at: float | None


@dataclass(frozen=True, slots=True)
class Parsed(Generic[T]):
    value: T
    problems: tuple[Problem, ...]


def parse_user(body: Any) -> Parsed[User | None]:
    problems: list[Problem] = []
    if not isinstance(body, dict):
        return Parsed(None, (Problem("user", "wrong_type"),))
    r = Reader(body, "user", problems)
    user = User(
        id=r.ident("id"),
        name=r.text("name"),
        apps_count=r.number("apps_count", low=0),
        private_device_count=r.number("private_device_count", low=0),
        private_apps_count=r.number("private_apps_count", low=0),
    )
    return Parsed(user, tuple(problems))


def parse_devices(body: Any) -> Parsed[tuple[Device, ...]]:
    problems: list[Problem] = []
    if not isinstance(body, list):
        return Parsed((), (Problem("devices", "wrong_type"),))
    if not all(isinstance(item, dict) for item in body):
        problems.append(Problem("devices", "wrong_type"))
    devices = unique(
        (_device(item, problems) for item in body if isinstance(item, dict)), "device", problems
    )
    return Parsed(devices, tuple(problems))


def _device(raw: dict[str, Any], problems: list[Problem]) -> Device | None:
    r = Reader(raw, "device", problems)
    device_id = r.ident("id")
    if device_id is None:
        return None
    return Device(
        id=device_id,
        name=r.text("name"),
        state=r.state("state", str.lower),
        serial_number=r.text("serial_number"),
        mac=r.text("mac"),
        wifi_ssid=r.text("wifi_ssid"),
        ipv4_internal=r.text("ipv4_internal"),
        created_at=r.timestamp("created_at"),
        updated_at=r.timestamp("updated_at"),
    )
