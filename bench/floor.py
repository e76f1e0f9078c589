"""The CPU floor for one scrape: parse a ParqEx sync answer and write its samples as text.

It fetches nothing: `run.py` saves the simulator's sync answer to a file once and runs

    python bench/floor.py SYNC.json --account NAME --iterations K

which prints JSON: the number of samples written and the CPU seconds (time.process_time) of each
iteration. Each iteration does what no exporter can avoid: `json.loads` on the same bytes (the
same library as the exporter) and one `name{labels} value` line per sample, with the metric
names and label sets of the exporter's parqex_device_* and parqex_door_* families. No
validation, no escaping, no HELP/TYPE lines, no HTTP, no compression.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DOOR_STATES = ("OPEN", "CLOSED")


def _timestamp(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def _device_lines(account: str, device: dict[str, Any], now: float) -> Iterator[str]:
    labels = f'account="{account}",device_id="{device["id"]}"'
    owner = f"{device['owner_first_name']} {device['owner_last_name']}"
    yield (
        f'parqex_device_info{{{labels},blackbox_code="{device["blackbox_code"]}",'
        f'software_version="{device["software_version"]}",owner="{owner}"}} 1.0'
    )
    last_contact = _timestamp(device["last_contact"])
    yield f"parqex_device_active{{{labels}}} {float(device['active'])}"
    yield f"parqex_device_registered{{{labels}}} {float(device['registered'])}"
    yield f"parqex_device_bluetooth_onboard{{{labels}}} {float(device['bluetooth_onboard'])}"
    yield f"parqex_device_last_contact_timestamp_seconds{{{labels}}} {last_contact}"
    yield f"parqex_device_last_contact_age_seconds{{{labels}}} {now - last_contact}"
    alert = float(device["time_before_door_open_alert"])
    yield f"parqex_device_door_open_alert_threshold_seconds{{{labels}}} {alert}"
    entities = float(device["number_of_entities_controlled"])
    yield f"parqex_device_entities_controlled{{{labels}}} {entities}"
    for door in device["doors"]:
        yield from _door_lines(labels, door)


def _door_lines(device_labels: str, door: dict[str, Any]) -> Iterator[str]:
    labels = f'{device_labels},door_id="{door["id"]}"'
    yield (
        f'parqex_door_info{{{labels},name="{door["name"]}",'
        f'entity_number="{door["entity_number"]}",'
        f'user_relationship="{door["user_relationship"]}"}} 1.0'
    )
    state = door["state"]
    yield f"parqex_door_open{{{labels}}} {float(state == 'OPEN')}"
    for known in DOOR_STATES:
        yield f'parqex_door_state{{{labels},state="{known}"}} {float(known == state)}'
    yield f"parqex_door_active{{{labels}}} {float(door['active'])}"
    yield f"parqex_door_auto_close_enabled{{{labels}}} {float(door['door_auto_close_enabled'])}"
    delay = float(door["door_auto_close_delay"])
    yield f"parqex_door_auto_close_delay_seconds{{{labels}}} {delay}"
    toggled = _timestamp(door["last_toggled"])
    yield f"parqex_door_last_toggled_timestamp_seconds{{{labels}}} {toggled}"
    yield f"parqex_door_bluetooth_sensor{{{labels}}} {float(door['bluetooth_sensor'])}"
    if door["bluetooth_sensor"]:
        battery = door["bluetooth_sensor_battery_level"] / 100.0
        yield f"parqex_door_sensor_battery_ratio{{{labels}}} {battery}"


def render(body: bytes, account: str) -> tuple[bytes, int]:
    """Parse the sync answer and write its samples; the text and the number of samples."""
    now = time.time()
    lines = [
        line
        for device in json.loads(body)["devices"]
        for line in _device_lines(account, device, now)
    ]
    return ("\n".join(lines) + "\n").encode(), len(lines)


def measure(body: bytes, account: str, iterations: int) -> dict[str, Any]:
    """CPU seconds of each of `iterations` renders, measured in this process."""
    cpu: list[float] = []
    samples = 0
    for _ in range(iterations):
        start = time.process_time()
        _, samples = render(body, account)
        cpu.append(time.process_time() - start)
    return {"samples": samples, "cpu_seconds": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sync_file", type=Path, help="a saved ParqEx sync answer")
    parser.add_argument("--account", default="bench", help="the account label value")
    parser.add_argument("--iterations", type=int, default=10)
    args = parser.parse_args()
    result = measure(args.sync_file.read_bytes(), args.account, args.iterations)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
