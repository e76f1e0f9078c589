"""Read and check prometheus/thresholds.yml, and the command line both generators share.

The alert rules (prometheus/generate_alerts.py) and the dashboard (grafana/generate_dashboard.py)
read their thresholds through `load_thresholds`, so a bad file is refused the same way for both.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

THRESHOLDS_FILE = Path(__file__).resolve().parent / "thresholds.yml"

_DURATION_RE = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def duration_seconds(text: str) -> float:
    """A Prometheus duration ('1h30m') in seconds."""
    return sum(
        float(n) * _UNIT_SECONDS[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", str(text))
    )


def load_thresholds(path: Path = THRESHOLDS_FILE) -> dict[str, Any]:
    """Read and sanity-check the thresholds file."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping")
    for key, value in data.items():
        is_duration = key.endswith(("_for", "_window", "_grace"))
        if is_duration and not _DURATION_RE.match(str(value)):
            raise ValueError(f"{path}: {key}={value!r} is not a Prometheus duration")
    for key in (
        "battery_low_ratio",
        "battery_critical_ratio",
        "account_down_max_success_ratio",
        "account_flapping_max_success_ratio",
    ):
        if not 0 < float(data[key]) < 1:
            raise ValueError(f"{path}: {key} must be between 0 and 1")
    # Past the grace period the device alerts end: these must already be firing by then.
    grace = duration_seconds(data["collection_grace"])
    for keys in (
        ("account_down_window", "account_down_for"),
        ("exporter_down_for",),
        ("exporter_absent_for",),
    ):
        if sum(duration_seconds(data[key]) for key in keys) >= grace:
            raise ValueError(
                f"{path}: {' + '.join(keys)} must be shorter than collection_grace"
                f" ({data['collection_grace']}), or device alerts end before it fires"
            )
    if float(data["battery_critical_ratio"]) >= float(data["battery_low_ratio"]):
        raise ValueError(f"{path}: battery_critical_ratio must be below battery_low_ratio")
    if float(data["door_open_critical_factor"]) <= 1:
        raise ValueError(f"{path}: door_open_critical_factor must be greater than 1")
    return data


def run_generator(
    argv: list[str] | None,
    *,
    description: str,
    render_text: Callable[[dict[str, Any]], str],
    output: Path,
    script: str,
) -> int:
    """The command line both generators share: write the output, or `--check` it is current."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--thresholds", type=Path, default=THRESHOLDS_FILE)
    parser.add_argument("--output", type=Path, default=output)
    parser.add_argument("--check", action="store_true", help="fail if the output is stale")
    args = parser.parse_args(argv)
    try:
        text = render_text(load_thresholds(args.thresholds))
    except (OSError, ValueError) as exc:  # a user's mistake: one line, no traceback
        print(f"error: {args.thresholds}: {exc}", file=sys.stderr)
        return 1
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date: run {script}", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0
