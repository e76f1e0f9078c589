"""Command line: flags in the Prometheus style, start-up, reload, `--config.check`, `--demo`."""

from __future__ import annotations

import argparse
import logging
import platform
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from exporter import __version__, config, logs, webconfig
from exporter.engine import Engine
from exporter.scrape import ReloadStatus, Scraper
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


def serve(
    cfg: config.Config,
    address: tuple[str, int],
    *,
    web: webconfig.WebConfigWatcher | None = None,
    config_file: str | None = None,
) -> int:
    """Serve until SIGINT or SIGTERM; SIGHUP re-reads `config_file` (None: nothing to re-read)."""
    engine = Engine(cfg)
    scraper = Scraper(engine, reload_status=ReloadStatus(True, time.time()))
    reloader = Reloader(scraper, config_file)
    try:
        server = ExporterServer(address, scraper, web=web, reload=reloader.reload_for_http)
    except OSError as exc:
        print(
            f"error: cannot listen on {address[0] or '*'}:{address[1]} ({exc.strerror}); "
            "fix: free the port or pass --web.listen-address HOST:PORT",
            file=sys.stderr,
        )
        return 1
    engine.start()
    wake = threading.Event()
    stopping = threading.Event()
    hangups = threading.Event()

    def on_stop(*_: object) -> None:
        stopping.set()
        wake.set()

    def on_hangup(*_: object) -> None:
        hangups.set()  # the reload runs in the main loop below, not in the signal handler
        wake.set()

    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGHUP, on_hangup)
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
    while not stopping.is_set():
        wake.wait()
        wake.clear()
        if hangups.is_set() and not stopping.is_set():
            hangups.clear()
            log.info("SIGHUP received: reloading the configuration")
            reloader.reload()
    log.info("shutting down")
    server.shutdown()
    server.server_close()
    scraper.engine.close()
    return 0


class Reloader:
    """Re-reads the config file and swaps a new Engine into the Scraper (SIGHUP, /-/reload).

    A config that does not load is rejected with its one-line problems and the old one keeps
    serving. A good one gets a new, started Engine that shares the process-lifetime counters, and
    the 429/5xx back-off of accounts that stay; the old Engine is closed in the background once
    no scrape uses it any more. Reloads run one at a time.
    """

    def __init__(
        self, scraper: Scraper, config_file: str | None, clock: Callable[[], float] = time.time
    ) -> None:
        self.scraper = scraper
        self.config_file = config_file
        self._clock = clock
        self._lock = threading.Lock()
        self.retiring: list[threading.Thread] = []  # for tests: join them to see old engines go

    def reload(self) -> list[str]:
        """Reload now; the problems that stopped it, or [] when the new config is serving."""
        with self._lock:
            if self.config_file is None:
                log.info("reload requested; nothing to re-read in --demo mode")
                return []
            problems = self._reload(self.config_file)
            if problems:
                status = self.scraper.reload_status
                last = status.last_success if status else self._clock()
                self.scraper.reload_status = ReloadStatus(False, last)
                for problem in problems:
                    log.error(
                        "config reload failed; still serving the previous configuration",
                        extra={"problem": problem},
                    )
            return problems

    def reload_for_http(self) -> tuple[bool, list[str]]:
        """What POST /-/reload answers: success and a line to say so, or the problems."""
        problems = self.reload()
        if problems:
            return False, problems
        if self.config_file is None:
            return True, ["nothing to reload in --demo mode"]
        return True, [f"reloaded {self.config_file}"]

    def _reload(self, path: str) -> list[str]:
        try:
            loaded = config.load(path)
        except config.ConfigError as exc:
            return exc.problems
        for warning in loaded.warnings:
            log.warning(warning)
        old = self.scraper.engine
        new = Engine(loaded.config, stats=old.stats)
        try:
            new.start()
        except Exception as exc:  # a bug of ours, or a file that changed since load() read it
            log.error("could not start collection with the new configuration", exc_info=True)
            new.close()
            return [f"{path}: cannot start collection ({type(exc).__name__}: {exc})"]
        _carry_backoff(old, new)
        # before the swap: a scrape of the new engine must not report the old reload time
        self.scraper.reload_status = ReloadStatus(True, self._clock())
        self.scraper.replace_engine(new)
        accounts = sum(1 for _ in loaded.config.accounts())
        log.info("configuration reloaded", extra={"file": path, "accounts": accounts})
        retire = threading.Thread(target=self._retire, args=(old,), name="retire", daemon=True)
        self.retiring = [thread for thread in self.retiring if thread.is_alive()] + [retire]
        retire.start()
        return []

    def _retire(self, old: Engine) -> None:
        """Close `old` once no scrape uses it, then forget counters of accounts that went away."""
        self.scraper.wait_idle(old)  # every collection returns within its budget
        try:
            old.drain(old.config.collection.timeout_seconds + 1)
        except Exception:
            log.debug("waiting for the previous engine's fetches failed", exc_info=True)
        try:
            old.close()
        except Exception:
            log.warning("closing the previous engine failed", exc_info=True)
        with self._lock:  # not while a reload builds workers on the same counters
            current = self.scraper.engine
            keep = {(source, account.name) for source, account in current.config.accounts()}
            stats = current.stats
            for counter in (stats.errors, stats.parse_errors):
                for key in [key for key in counter if key[:2] not in keep]:
                    del counter[key]
            stats.logged_once -= {key for key in stats.logged_once if key[:2] not in keep}


def _carry_backoff(old: Engine, new: Engine) -> None:
    """A reload must not call a cloud that asked us to wait: keep the back-off of every account
    that stays, with the same source and base URL."""
    previous = {
        (worker.source, worker.name): worker
        for worker in old.workers
        if old.config.base_url(worker.source) == new.config.base_url(worker.source)
    }
    for worker in new.workers:
        if (same := previous.get((worker.source, worker.name))) is not None:
            worker.backoff = same.backoff


def _print_problems(problems: list[str]) -> None:
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
