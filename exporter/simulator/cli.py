"""``python -m exporter.simulator``: run the simulated clouds as a standalone process.

Used by the demo, system tests and benchmarks, which read the one ``listening on URL`` line
from stdout and stop the process with SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable, Sequence

from exporter.simulator.cloud import SimulatedCloud
from exporter.simulator.control import (
    add_generated_lametric_account,
    add_generated_parqex_account,
)


class _Stop(Exception):
    """Raised by the signal handler to leave the serving loop."""


def _listen_address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m exporter.simulator",
        description="Serve simulated ParqEx and LaMetric clouds on loopback.",
    )
    parser.add_argument("--listen", type=_listen_address, default=("127.0.0.1", 0))
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per request")
    parser.add_argument(
        "--latency-max",
        type=float,
        metavar="SECONDS",
        help="draw each request's delay uniformly between --latency and this",
    )
    parser.add_argument("--parqex-accounts", type=int, default=0, metavar="N")
    parser.add_argument("--lametric-accounts", type=int, default=0, metavar="N")
    parser.add_argument("--devices", type=int, default=5, help="devices per generated account")
    parser.add_argument("--doors", type=int, default=3, help="doors per generated controller")
    parser.add_argument("--live", action="store_true", help="report last_contact as now")
    args = parser.parse_args(argv)
    if args.latency < 0 or (args.latency_max is not None and args.latency_max < args.latency):
        parser.error("--latency must be >= 0 and --latency-max >= --latency")
    return args


def _build_cloud(args: argparse.Namespace) -> SimulatedCloud:
    cloud = SimulatedCloud(live=args.live)
    for i in range(args.parqex_accounts):
        add_generated_parqex_account(cloud, f"parqex-token-{i}", args.devices, args.doors)
    for i in range(args.lametric_accounts):
        add_generated_lametric_account(cloud, f"lametric-token-{i}", args.devices)
    if args.latency > 0 or args.latency_max:
        cloud.set_latency(args.latency, max_seconds=args.latency_max)
    return cloud


def _wait_for_signal(on_ready: Callable[[], None]) -> None:
    """Block until SIGTERM or SIGINT. Raising from the handler avoids re-entering a lock."""

    def stop(signum: int, frame: object) -> None:
        raise _Stop

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        on_ready()
        while True:
            time.sleep(3600)
    except _Stop:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until signalled: 0 after a clean stop, 2 for a non-loopback address."""
    args = _parse_args(argv)
    cloud = _build_cloud(args)
    host, port = args.listen
    try:
        url = cloud.start(host, port)
    except ValueError as exc:
        print(f"simulator: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"simulator: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    try:
        _wait_for_signal(lambda: print(f"listening on {url}", flush=True))
    finally:
        cloud.stop()
    return 0
