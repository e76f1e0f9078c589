"""Device data for the simulated clouds: the packaged seed documents and generated fleets.

Generated data is reproducible (a function of its arguments only) so that a failing test or a
benchmark can be rerun against exactly the same fleet.
"""

from __future__ import annotations

import json
import random
import string
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # how ParqEx writes timestamps: UTC, no zone
_GENERATED_EPOCH = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)  # "now" for generated timestamps


def format_time(value: datetime | str) -> str:
    """ParqEx timestamp text; strings pass through and naive datetimes are taken as UTC."""
    if isinstance(value, str):
        return value
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime(_TIME_FORMAT)


def now_text() -> str:
    return format_time(datetime.now(UTC))


def load_seed(name: str) -> Any:
    """A fresh copy of a packaged example document from the API docs (callers mutate it)."""
    return json.loads((resources.files("exporter") / "simdata" / name).read_text("utf-8"))


def _unique_hex_ids(rng: random.Random, count: int) -> list[str]:
    ids: dict[str, None] = {}
    while len(ids) < count:
        ids.setdefault(f"{rng.getrandbits(128):032x}", None)
    return list(ids)


def _random_time(rng: random.Random, max_age: timedelta) -> str:
    age = rng.uniform(0, max_age.total_seconds())
    return format_time(_GENERATED_EPOCH - timedelta(seconds=age))


def _door(rng: random.Random, door_id: str, entity_number: int) -> dict[str, Any]:
    has_sensor = rng.random() < 0.5
    auto_close = rng.random() < 0.2
    return {
        "entity_number": entity_number,
        "door_auto_close_delay": rng.choice([300, 900, 3600]) if auto_close else 0,
        "bluetooth_sensor_mac_address": f"{rng.getrandbits(48):012x}" if has_sensor else "0" * 12,
        "name": rng.choice(["Garage", "Gate", "Side Door", "Barn", "Workshop", "Carport"]),
        "active": rng.random() < 0.95,
        "bluetooth_sensor_battery_level": rng.randint(5, 100) if has_sensor else 0,
        "sensor": rng.random() < 0.3,
        "door_auto_close_enabled": auto_close,
        "last_toggled": _random_time(rng, timedelta(days=30)),
        "user_relationship": rng.choice(["Owner", "Owner", "Has Access"]),
        "image": "",
        "light": rng.random() < 0.1,
        "bluetooth_sensor": has_sensor,
        "state": rng.choices(["CLOSED", "OPEN"], weights=[85, 15])[0],
        "id": door_id,
    }


def _parqex_device(rng: random.Random, device_id: str, door_ids: list[str]) -> dict[str, Any]:
    return {
        "active": rng.random() < 0.95,
        "number_of_entities_controlled": len(door_ids),
        "owner_last_name": rng.choice(["Smith", "Garcia", "Nguyen", "Okafor", "Schmidt"]),
        "registered": rng.random() < 0.97,
        "bluetooth_onboard": rng.random() < 0.5,
        "last_contact": _random_time(rng, timedelta(minutes=10)),
        "bluetooth_mac_address": f"{rng.getrandbits(48):012x}",
        "owner_first_name": rng.choice(["Alex", "Maria", "Linh", "Chidi", "Jonas"]),
        "time_before_door_open_alert": rng.choice([300, 900, 1800]),
        "blackbox_code": f"{rng.choice('23')}0000c2a{rng.getrandbits(32):08x}",
        "doors": [_door(rng, door_id, n) for n, door_id in enumerate(door_ids, start=1)],
        "id": device_id,
        "software_version": rng.choice(["0", "1.4.2", "1.5.0"]),
    }


def generate_parqex_devices(
    n_devices: int, doors_per_device: int = 3, seed: int = 0
) -> list[dict[str, Any]]:
    """Controllers with every field of the seed document and ids unique within the fleet."""
    rng = random.Random(seed)
    ids = _unique_hex_ids(rng, n_devices * (1 + doors_per_device))
    device_ids, door_ids = ids[:n_devices], ids[n_devices:]
    return [
        _parqex_device(rng, device_id, door_ids[i * doors_per_device : (i + 1) * doors_per_device])
        for i, device_id in enumerate(device_ids)
    ]


def _lametric_device(rng: random.Random, device_id: int, n: int) -> dict[str, Any]:
    created = _GENERATED_EPOCH - timedelta(seconds=rng.uniform(86_400, 5 * 365 * 86_400))
    updated = created + (_GENERATED_EPOCH - created) * rng.random()
    letters = "".join(rng.choices(string.ascii_uppercase, k=2))
    return {
        "id": device_id,
        "name": f"LaMetric {n}",
        "state": rng.choices(["configured", "new", "banned"], weights=[90, 8, 2])[0],
        "serial_number": f"SA{rng.randrange(10**12):012d}W00{letters}{rng.randrange(10)}",
        "api_key": f"{rng.getrandbits(256):064x}",
        "ipv4_internal": f"192.168.{rng.randrange(256)}.{rng.randrange(2, 255)}",
        "mac": ":".join(f"{b:02X}" for b in [0x58, 0x63, 0x56, *rng.randbytes(3)]),
        "wifi_ssid": rng.choice(["homewifi", "office", "workshop-2g", "guest"]),
        "created_at": created.isoformat(timespec="seconds"),
        "updated_at": updated.isoformat(timespec="seconds"),
    }


def generate_lametric_devices(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Clocks with every field of the seed document and integer ids unique within the fleet."""
    rng = random.Random(seed)
    ids = rng.sample(range(1_000, 1_000_000_000), n)
    return [_lametric_device(rng, device_id, i) for i, device_id in enumerate(ids, start=1)]


def generate_lametric_user(n_devices: int, seed: int = 0) -> dict[str, Any]:
    """A user whose device count matches the generated fleet it owns."""
    user_id = random.Random(seed).randrange(2, 10**7)
    return {
        "id": user_id,
        "email": f"user{user_id}@example.com",
        "name": f"Simulated User {user_id}",
        "apps_count": 0,
        "private_device_count": n_devices,
        "private_apps_count": 0,
    }
