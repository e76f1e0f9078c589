"""The CPU floor for one scrape: the work no exporter can avoid, timed in its own process.

It fetches nothing: `run.py` saves the simulator's sync answer once, gzipped as it comes over
the wire to a client asking `Accept-Encoding: gzip` (as the exporter does), and runs

    python bench/floor.py SYNC.json.gz --account NAME --iterations K

Each iteration is the work of a gzip scrape, as Prometheus asks for one: gunzip the answer
(zlib), `json.loads` it (the stdlib json, as the exporter), write one `name{labels} value` line
per sample with the metric names and label sets of the exporter's parqex_device_* and
parqex_door_* families, and gzip the text with compresslevel=1, the level the exporter uses
for /metrics. Then, for the identity figure (a scrape asking for plain text), the same without
the gunzip and the gzip. No validation, no escaping, no HELP/TYPE lines, no HTTP.

Prints JSON: the number of samples written, the answer's size gzipped and not, the CPU
seconds (time.process_time) of each iteration of both kinds (they alternate, so a change in
the machine's load hits both alike) and the process's peak RSS. With `--memory` it prints
instead what each step of a gzip scrape holds when nothing is streamed (`memory_steps`).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DOOR_STATES = ("OPEN", "CLOSED")
GZIP_LEVEL = 1  # the exporter's level for /metrics (exporter/scrape.py)


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


def _lines(body: bytes, account: str) -> list[str]:
    now = time.time()
    return [
        line
        for device in json.loads(body)["devices"]
        for line in _device_lines(account, device, now)
    ]


def _text(lines: list[str]) -> bytes:
    """The lines as text with a final newline, without copying the text more than once."""
    lines.append("")
    text = "\n".join(lines)
    lines.clear()
    return text.encode()


def render(body: bytes, account: str) -> tuple[bytes, int]:
    """Parse the sync answer and write its samples; the text and the number of samples."""
    lines = _lines(body, account)
    samples = len(lines)
    return _text(lines), samples


def gzip_scrape(wire: bytes, account: str) -> tuple[bytes, int]:
    """A gzip scrape's work: gunzip the answer, render it, gzip the text; body and samples."""
    text, samples = render(zlib.decompress(wire, wbits=31), account)
    return gzip.compress(text, compresslevel=GZIP_LEVEL), samples


def measure(wire: bytes, account: str, iterations: int) -> dict[str, Any]:
    """CPU seconds of `iterations` gzip scrapes and as many identity ones, alternating.

    Also the process's peak RSS: what holding the answer, its parse and the text at once
    costs, with nothing streamed (the identity iteration's decompressed answer is made before
    its clock starts and dropped after it).
    """
    gzip_cpu: list[float] = []
    identity_cpu: list[float] = []
    samples = identity_samples = 0
    for _ in range(iterations):
        start = time.process_time()
        _, samples = gzip_scrape(wire, account)
        gzip_cpu.append(time.process_time() - start)
        body = zlib.decompress(wire, wbits=31)
        start = time.process_time()
        _, identity_samples = render(body, account)
        identity_cpu.append(time.process_time() - start)
        answer_bytes = len(body)
        del body
    assert samples == identity_samples
    return {
        "samples": samples,
        "answer_bytes": answer_bytes,
        "gzip_bytes": len(wire),
        "gzip_cpu_seconds": gzip_cpu,
        "identity_cpu_seconds": identity_cpu,
        "peak_rss_bytes": status_bytes("VmHWM"),
    }


def memory_steps(wire: bytes, account: str) -> dict[str, int]:
    """What each step of a gzip scrape holds when nothing is streamed, in bytes.

    Every result is kept until the end, as a scrape that streams nothing would at its peak.
    Strings and bytes are measured exactly (sys.getsizeof); the parsed JSON and the list of
    lines, object graphs, as the RSS they add, so this must run in a fresh process.
    """
    sizes = {"gzipped answer": sys.getsizeof(wire)}
    body = zlib.decompress(wire, wbits=31)
    sizes["gunzipped answer"] = sys.getsizeof(body)
    before = status_bytes("VmRSS")
    devices = json.loads(body)["devices"]
    after = status_bytes("VmRSS")
    sizes["json.loads"], before = after - before, after
    now = time.time()
    lines = [line for device in devices for line in _device_lines(account, device, now)]
    sizes["sample lines (list of str)"] = status_bytes("VmRSS") - before
    lines.append("")
    text = "\n".join(lines)
    sizes["text (str)"] = sys.getsizeof(text)
    data = text.encode()
    sizes["text (UTF-8 bytes)"] = sys.getsizeof(data)
    sizes["gzipped text"] = sys.getsizeof(gzip.compress(data, compresslevel=GZIP_LEVEL))
    return sizes


def status_bytes(key: str) -> int:
    """This process's VmRSS or VmHWM (peak RSS) from /proc/self/status, in bytes.

    Not ru_maxrss for the peak: that survives exec, so it would be the peak of run.py, which
    forked this process.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sync_file", type=Path, help="a saved ParqEx sync answer, gzipped")
    parser.add_argument("--account", default="bench", help="the account label value")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument(
        "--memory", action="store_true", help="print memory_steps instead (no timing)"
    )
    args = parser.parse_args()
    wire = args.sync_file.read_bytes()
    if args.memory:
        print(json.dumps(memory_steps(wire, args.account)))
    else:
        print(json.dumps(measure(wire, args.account, args.iterations)))


if __name__ == "__main__":
    main()
