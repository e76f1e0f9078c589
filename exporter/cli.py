"""Command line: flags in the Prometheus style, start-up, `--config.check` and `--demo`."""

from __future__ import annotations

import argparse
import logging
import platform
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from exporter import __version__, config, logs
from exporter.engine import Engine
from exporter.scrape import Scraper
from exporter.server import ExporterServer, ListenAddressError, parse_listen_address

log = logging.getLogger("exporter")

DEMO_TOKENS = {"parqex": "demo-parqex-token", "lametric": "demo-lametric-token"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="device-cloud-exporter",
        description="Prometheus exporter for ParqEx controllers and LaMetric clocks.",
    )
    parser.add_argument(
        "--config.file", dest="config_file", default="config.yaml", metavar="PATH",
        help="configuration file (default: config.yaml)",
    )  # fmt: skip
    parser.add_argument(
        "--web.listen-address", dest="listen", default=":9862", metavar="HOST:PORT",
        help="address to serve on (default: :9862, every interface)",
    )  # fmt: skip
    parser.add_argument(
        "--log.level", dest="log_level", default="info", choices=list(logs.LEVELS),
        help="only log messages at this level or above (default: info)",
    )  # fmt: skip
    parser.add_argument(
        "--log.format", dest="log_format", default="logfmt", choices=["logfmt", "json"],
        help="log line format (default: logfmt)",
    )  # fmt: skip
    parser.add_argument(
        "--config.check", dest="config_check", action="store_true",
        help="validate the configuration, print what would be scraped, and exit",
    )  # fmt: skip
    parser.add_argument(
        "--demo", action="store_true",
        help="serve metrics from a built-in simulated cloud; no account or config needed",
    )  # fmt: skip
    parser.add_argument(
        "--version", action="version",
        version=f"device-cloud-exporter {__version__} (python {platform.python_version()})",
    )  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup(args.log_level, args.log_format)
    if args.config_check:
        return check_config(args.config_file)
    try:
        address = parse_listen_address(args.listen)
    except ListenAddressError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    simulator = None
    if args.demo:
        simulator, cfg = start_demo()
    else:
        try:
            loaded = config.load(args.config_file)
        except config.ConfigError as exc:
            _print_problems(exc.problems)
            return 1
        for warning in loaded.warnings:
            log.warning(warning)
        cfg = loaded.config
    try:
        return serve(cfg, address)
    finally:
        if simulator is not None:
            simulator.stop()


def check_config(path: str) -> int:
    try:
        loaded = config.load(path)
    except config.ConfigError as exc:
        _print_problems(exc.problems)
        return 1
    cfg = loaded.config
    print(f"{path}: OK")
    for source, account in cfg.accounts():
        credential = (
            "token (from the config)"
            if account.token is not None
            else f"token_file {account.token_file}"
        )
        print(f"  {source} account {account.name!r}: {cfg.base_url(source)} with {credential}")
    collection = cfg.collection
    print(
        f"  collection: timeout {collection.timeout_seconds:g}s, "
        f"offset {collection.timeout_offset_seconds:g}s, "
        f"max response {collection.max_response_bytes} bytes"
    )
    for warning in loaded.warnings:
        print(f"  warning: {warning}")
    return 0


def start_demo() -> tuple[Any, config.Config]:
    """Start the simulated cloud on a free loopback port and a config with one account each."""
    from exporter.simulator import SimulatedCloud  # only the demo needs it

    simulator = SimulatedCloud(
        parqex_token=DEMO_TOKENS["parqex"], lametric_token=DEMO_TOKENS["lametric"], live=True
    )
    url = simulator.start("127.0.0.1", 0)
    log.info("demo mode: serving a simulated cloud", extra={"url": url})
    cfg = config.Config.model_validate(
        {
            source: {"base_url": url, "accounts": [{"name": "demo", "token": token}]}
            for source, token in DEMO_TOKENS.items()
        }
    )
    return simulator, cfg


def serve(cfg: config.Config, address: tuple[str, int]) -> int:
    engine = Engine(cfg)
    try:
        server = ExporterServer(address, Scraper(engine))
    except OSError as exc:
        print(
            f"error: cannot listen on {address[0] or '*'}:{address[1]} ({exc.strerror}); "
            "fix: free the port or pass --web.listen-address HOST:PORT",
            file=sys.stderr,
        )
        return 1
    engine.start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server.serve_in_thread()
    accounts = sum(1 for _ in cfg.accounts())
    log.info(
        "listening",
        extra={"url": f"{server.url}/metrics", "accounts": accounts, "version": __version__},
    )
    print(f"Serving metrics on {server.url}/metrics", file=sys.stderr, flush=True)
    stop.wait()
    log.info("shutting down")
    server.shutdown()
    server.server_close()
    engine.close()
    return 0


def _print_problems(problems: list[str]) -> None:
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
