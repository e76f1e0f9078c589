"""Config reload (SIGHUP, POST /-/reload): a new engine for a good config, the old one kept
for a bad one.

The engine hands over what outlives it (its counters through `Engine.successor`, the back-off
of accounts that stay through `Engine.take_backoff`); the Scraper swaps it in together with the
new reload status, in one step; the engine it replaced is retired in a thread of its own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from exporter import config
from exporter.engine import Engine
from exporter.outcome import ReloadStatus
from exporter.scrape import Scraper

log = logging.getLogger("exporter")


class Reloader:
    """Re-reads the config file and swaps a new Engine into the Scraper (SIGHUP, /-/reload).

    A config that does not load is rejected with its one-line problems and the old one keeps
    serving. A good one gets a new, started Engine that shares the process-lifetime counters, and
    the 429/5xx back-off of accounts that stay; the old Engine is closed in the background once
    no scrape uses it any more. Reloads run one at a time; one that waits more than
    WAIT_SECONDS for another gives up, so `POST /-/reload` always answers. No failure of a reload,
    not even MemoryError, gets out of it: the process and the old configuration stay.
    """

    WAIT_SECONDS = 10.0

    def __init__(
        self, scraper: Scraper, config_file: str | None, clock: Callable[[], float] = time.time
    ) -> None:
        self.scraper = scraper
        self.config_file = config_file
        self._clock = clock
        self._lock = threading.Lock()
        self.retiring: list[threading.Thread] = []  # for tests: join them to see old engines go
        self._stopped = False

    def stop(self) -> None:
        """At shutdown: a reload still running must not start another engine."""
        self._stopped = True

    def reload(self) -> list[str]:
        """Reload now; the problems that stopped it, or [] when the new config is serving."""
        if not self._lock.acquire(timeout=self.WAIT_SECONDS):
            problem = "another reload is still running; try again in a moment"
            log.error("config reload refused", extra={"problem": problem})
            return [problem]
        try:
            if self.config_file is None:
                log.info("reload requested; nothing to re-read in --demo mode")
                return []
            try:
                problems = self._reload(self.config_file)
            except Exception as exc:  # MemoryError and bugs of ours: the old config stays
                log.error("config reload crashed; please report this", exc_info=True)
                problems = [
                    f"{self.config_file}: the reload failed ({type(exc).__name__}); "
                    "still serving the previous configuration"
                ]
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
        finally:
            self._lock.release()

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
        new = old.successor(loaded.config)  # the same counters, so no _total series restarts
        try:
            new.start()
        except Exception as exc:  # a bug of ours, or a file that changed since load() read it
            log.error("could not start collection with the new configuration", exc_info=True)
            new.close()
            return [f"{path}: cannot start collection ({type(exc).__name__}: {exc})"]
        if self._stopped:  # shutting down: the old engine is being closed; do not start anew
            new.close()
            return [f"{path}: not reloaded, the exporter is shutting down"]
        new.take_backoff(old)
        self.scraper.replace_engine(new, ReloadStatus(True, self._clock()))
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
            old.drain()
        except Exception:
            log.debug("waiting for the previous engine's fetches failed", exc_info=True)
        try:
            old.close()
        except Exception:
            log.warning("closing the previous engine failed", exc_info=True)
        with self._lock:  # not while a reload builds workers on the same counters
            self.scraper.engine.forget_gone_accounts()
