"""Command line: flags in the Prometheus style, start-up, `--config.check`, `--demo`.

Reloading the configuration (SIGHUP, POST /-/reload) is exporter.reload's; this module only
wires it to the signal and the server.
"""

from __future__ import annotations

import argparse
import errno
import logging
import platform
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from exporter import __version__, config, logs, memory, webconfig
from exporter.engine import Engine
from exporter.outcome import ReloadStatus
from exporter.reload import Reloader
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
        "--web.config.file", dest="web_config_file", default="", metavar="PATH",
        help="TLS and basic auth, in the Prometheus exporter-toolkit format; re-read when it "
        "changes (default: none, plain HTTP)",
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
        return check_config(args.config_file, args.web_config_file)
    try:
        address = parse_listen_address(args.listen)
    except ListenAddressError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    web = None
    if args.web_config_file:
        try:
            web = webconfig.WebConfigWatcher(args.web_config_file)
        except webconfig.WebConfigError as exc:
            _print_problems(exc.problems)
            return 1
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
        return serve(cfg, address, web=web, config_file=None if args.demo else args.config_file)
    finally:
        if simulator is not None:
            simulator.stop()


def check_config(path: str, web_path: str = "") -> int:
    try:
        loaded = config.load(path)
    except config.ConfigError as exc:
        _print_problems(exc.problems)
        return 1
    if web_path:
        try:
            web = webconfig.load(web_path)
        except webconfig.WebConfigError as exc:
            _print_problems(exc.problems)
            return 1
        print(f"{web_path}: OK ({web.describe()})")
    cfg = loaded.config
    print(f"{path}: OK")
    for source, account in cfg.accounts():
        if account.token is not None:
            credential = "token (from the config)"
        elif account.token_file is not None:
            credential = f"token_file {account.token_file}"
        else:
            assert account.oauth2 is not None
            credential = f"oauth2 refresh_token_file {account.oauth2.refresh_token_file}"
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


def _bind_fix(exc: OSError, host: str) -> str:
    """The hint for a listen address that could not be opened, by what went wrong."""
    if isinstance(exc, socket.gaierror):
        return f"{host!r} is not a name this host can resolve; use an IP address"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"no network interface of this host has the address {host}; use one it has"
    if exc.errno == errno.EACCES:
        return "ports below 1024 need privileges; use a higher port"
    return "free the port or pass --web.listen-address HOST:PORT"


def serve(
    cfg: config.Config,
    address: tuple[str, int],
    *,
    web: webconfig.WebConfigWatcher | None = None,
    config_file: str | None = None,
) -> int:
    """Serve until SIGINT or SIGTERM; SIGHUP re-reads `config_file` (None: nothing to re-read)."""
    memory.big_blocks_on_their_own()
    engine = Engine(cfg)
    scraper = Scraper(engine, reload_status=ReloadStatus(True, time.time()))
    reloader = Reloader(scraper, config_file)
    try:
        server = ExporterServer(address, scraper, web=web, reload=reloader.reload_for_http)
    except OSError as exc:
        print(
            f"error: cannot listen on {address[0] or '*'}:{address[1]} ({exc.strerror}); "
            f"fix: {_bind_fix(exc, address[0])}",
            file=sys.stderr,
        )
        return 1
    engine.start()
    stopping = threading.Event()
    hangups = threading.Event()

    def on_stop(*_: object) -> None:
        stopping.set()
        hangups.set()  # lets the "sighup" thread end

    def on_hangup(*_: object) -> None:
        hangups.set()  # the reload runs in the "sighup" thread, not in the signal handler

    def reload_on_hangup() -> None:
        # Its own thread: a reload in progress never delays SIGTERM, and SIGHUPs sent during
        # one coalesce into one more reload.
        while True:
            hangups.wait()
            hangups.clear()
            if stopping.is_set():
                return
            log.info("SIGHUP received: reloading the configuration")
            reloader.reload()

    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGHUP, on_hangup)
    threading.Thread(target=reload_on_hangup, name="sighup", daemon=True).start()
    server.serve_in_thread()
    accounts = sum(1 for _ in cfg.accounts())
    log.info(
        "listening",
        extra={"url": f"{server.url}/metrics", "accounts": accounts, "version": __version__},
    )
    if web is not None:
        current = web.current()
        log.info("web config loaded", extra={"file": web.path, "serving": current.describe()})
        if current.users and current.tls is None:
            log.warning(
                "basic auth without TLS sends passwords in clear text; fix: add "
                "tls_server_config to the web config",
                extra={"file": web.path},
            )
    if not logs.json_lines():  # a plain line for people; it would break a JSON log stream
        print(f"Serving metrics on {server.url}/metrics", file=sys.stderr, flush=True)
    while not stopping.wait(3600):
        pass
    log.info("shutting down")
    reloader.stop()
    server.shutdown()
    server.server_close()
    try:
        scraper.engine.close()
    except Exception:  # a wedged collection must not keep the process from ending
        log.error("collection did not stop cleanly", exc_info=True)
    return 0


def _print_problems(problems: list[str]) -> None:
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
