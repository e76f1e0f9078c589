"""Collection across accounts: concurrency, deadlines, single-flight, error accounting.

All network I/O runs on one asyncio loop in a background thread that owns the httpx clients, so
connections are pooled across scrapes. HTTP handler threads call `Engine.collect(budget)`, which
waits at most `budget` seconds and always returns one `Outcome` per account, and
`Engine.counters()` for the counters to export with them.

What outlives an engine across a config reload (the counters, the back-off of accounts that
stay) is handed over through `successor` and `take_backoff`; exporter.reload drives them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import threading
import time
import zoneinfo
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import httpx

from exporter.auth import TokenSource, token_source
from exporter.backoff import Backoff
from exporter.clients.http import REASONS, UpstreamError, new_client, tls_context
from exporter.clients.lametric import LametricClient
from exporter.clients.parqex import ParqexClient
from exporter.config import CollectionConfig, Config, SourceName
from exporter.outcome import AccountKey, Counters, Outcome
from exporter.sources import Snapshot, fetch_lametric, fetch_parqex, undocumented_states

log = logging.getLogger(__name__)

Fetch = Callable[[str], Awaitable[Snapshot]]


class UnknownTarget(LookupError):
    """A probe named no configured account, or an ambiguous one."""


@dataclass(slots=True)
class _Flight:
    """One upstream fetch that every concurrent scrape of the account shares."""

    task: asyncio.Task[Snapshot]
    started: float
    timeout_counted: bool = False


@dataclass(slots=True)
class Stats:
    """Process-lifetime counters, exported as `_total` metrics; a reload carries them over."""

    errors: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    parse_errors: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    logged_once: set[tuple[str, ...]] = field(default_factory=set)

    def forget_all_but(self, keep: set[AccountKey]) -> None:
        """Drop what is counted for accounts no longer configured: their series end."""
        for counter in (self.errors, self.parse_errors):
            for key in [key for key in counter if key[:2] not in keep]:
                del counter[key]
        self.logged_once -= {key for key in self.logged_once if key[:2] not in keep}


def _mark_retrieved(task: asyncio.Task[Snapshot]) -> None:
    if not task.cancelled():
        task.exception()


class AccountWorker:
    """Fetches one account; concurrent callers share a fetch in flight instead of starting one."""

    def __init__(
        self,
        source: SourceName,
        name: str,
        tokens: TokenSource,
        fetch: Fetch,
        stats: Stats,
        policy: CollectionConfig,
        fetch_deadline: float,
    ) -> None:
        self.source = source
        self.name = name
        self.tokens = tokens
        self._fetch = fetch
        self._stats = stats
        self._fetch_timeout = fetch_deadline  # a fetch outlives the scrapes that gave up on it
        self._cache_seconds = policy.cache_seconds
        self.backoff = Backoff(policy.backoff_base_seconds, policy.backoff_max_seconds)
        self._flight: _Flight | None = None
        self._cached: tuple[float, Snapshot] | None = None  # (monotonic time, snapshot)
        self._last_success: float | None = None
        self._last_failure: tuple[object, ...] | None = None
        for reason in REASONS:  # zero from the start, so rate() and increase() work
            stats.errors[(source, name, reason)] += 0

    async def collect(self, budget: float) -> Outcome:
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < self._cache_seconds:
            return self._outcome(self._cached[1], None, 0.0)
        flight = self._flight
        if flight is None or flight.task.done():
            if skip := self.backoff.active(now):
                return self._outcome(None, skip, 0.0)  # the cloud asked us to wait
            task = asyncio.create_task(self._run())
            # Its failure is counted and logged in _run; when every waiter gave up before it
            # ended, nobody else looks at it, and asyncio would log it again as unretrieved.
            task.add_done_callback(_mark_retrieved)
            task.add_done_callback(self._landed)
            flight = self._flight = _Flight(task, now)
        try:
            snapshot = await asyncio.wait_for(asyncio.shield(flight.task), budget)
        except TimeoutError:
            if not flight.timeout_counted:
                flight.timeout_counted = True
                self._failed(UpstreamError("timeout", f"no answer within {budget:.2f}s"))
            return self._outcome(None, "timeout", time.monotonic() - flight.started)
        except UpstreamError as error:
            return self._outcome(None, error.reason, time.monotonic() - flight.started)
        return self._outcome(snapshot, None, time.monotonic() - flight.started)

    def _landed(self, task: asyncio.Task[Snapshot]) -> None:
        """Forget a finished fetch: its waiters hold it already, and its result (a snapshot of
        the whole fleet) must not stay in memory until the next scrape."""
        if self._flight is not None and self._flight.task is task:
            self._flight = None

    async def _run(self) -> Snapshot:
        try:
            async with asyncio.timeout(self._fetch_timeout):
                snapshot = await self._fetch_with_token()
        except TimeoutError:
            error = UpstreamError("timeout", f"no answer within {self._fetch_timeout:g}s")
            if not (self._flight and self._flight.timeout_counted):  # a waiter counted it already
                self._failed(error)
            raise error from None
        except UpstreamError as error:
            self._failed(error)
            raise
        except Exception as exc:
            # A bug of ours must cost this account's metrics, not the whole scrape.
            self._stats.errors[(self.source, self.name, "internal")] += 1
            log.error(
                "collection crashed; please report this",
                exc_info=True,
                extra={"source": self.source, "account": self.name},
            )
            raise UpstreamError("internal", f"{type(exc).__name__} while collecting") from None
        self._succeeded(snapshot)
        return snapshot

    async def _fetch_with_token(self) -> Snapshot:
        """Fetch once; after a 401/403, once more if the token source has a fresh token."""
        token = await self.tokens.token()
        try:
            return await self._fetch(token.reveal())
        except UpstreamError as error:
            if error.reason != "auth" or not await self.tokens.rejected(token):
                raise
        return await self._fetch((await self.tokens.token()).reveal())

    def _outcome(self, snapshot: Snapshot | None, reason: str | None, took: float) -> Outcome:
        return Outcome(self.source, self.name, snapshot, reason, took, self._last_success)

    def _failed(self, error: UpstreamError) -> None:
        self.backoff.failed(error, time.monotonic(), time.time())
        self._stats.errors[(self.source, self.name, error.reason)] += 1
        signature = (error.reason, error.status, error.message)
        level = logging.WARNING if signature != self._last_failure else logging.DEBUG
        self._last_failure = signature
        log.log(
            level,
            "collection failed",
            extra={
                "source": self.source,
                "account": self.name,
                "reason": error.reason,
                "status": error.status,
                "error": error.message,
            },
        )

    def _succeeded(self, snapshot: Snapshot) -> None:
        self._last_success = time.time()
        if self._cache_seconds > 0:
            self._cached = (time.monotonic(), snapshot)
        # else nothing keeps the snapshot once its scrapes are answered: a fleet of 30,000
        # doors is tens of MiB that would otherwise stay between scrapes for nothing
        self.backoff.succeeded()
        if self._last_failure is not None:
            log.info("collection recovered", extra={"source": self.source, "account": self.name})
            self._last_failure = None
        for problem in snapshot.problems:
            self._stats.parse_errors[(self.source, self.name, problem.field)] += 1
            self._once(
                ("field", problem.field, problem.reason),
                "skipped a malformed field from the API",
                field=problem.field,
                reason=problem.reason,
            )
        for state in undocumented_states(snapshot):
            self._once(
                ("state", state),
                "the API sent an undocumented state; exported as its own state value",
                state=state,
            )

    def _once(self, key: tuple[str, ...], message: str, **fields: object) -> None:
        full_key = (self.source, self.name, *key)
        if full_key not in self._stats.logged_once:
            self._stats.logged_once.add(full_key)
            log.warning(message, extra={"source": self.source, "account": self.name, **fields})


class Engine:
    """Owns the event loop thread, the per-source HTTP clients and one worker per account."""

    HEARTBEAT_SECONDS = 1.0  # how often the loop proves it runs; see stalled_seconds

    def __init__(self, config: Config, stats: Stats | None = None) -> None:
        self.config = config
        self.stats = stats if stats is not None else Stats()  # a reload carries them over
        # collection.timeout_seconds, in its two meanings inside the engine: how long one
        # upstream fetch may run in all, and the HTTP client's timeout for each of its phases
        self.fetch_deadline = config.collection.timeout_seconds
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="collector", daemon=True
        )
        self._close_lock = threading.Lock()
        self._clients: list[httpx.AsyncClient] = []
        self._tls: ssl.SSLContext | None = None  # one for all clients; built with them
        self.workers: list[AccountWorker] = []
        self._beat = time.monotonic()  # last time the loop ran a heartbeat (see stalled_seconds)

    def start(self) -> None:
        self._thread.start()
        self._loop.call_soon_threadsafe(self._heartbeat)
        asyncio.run_coroutine_threadsafe(self._build(), self._loop).result()

    def _heartbeat(self) -> None:
        self._beat = time.monotonic()
        self._loop.call_later(self.HEARTBEAT_SECONDS, self._heartbeat)

    def stalled_seconds(self) -> float:
        """Seconds since the event loop last ran its heartbeat: 0-1 when it is well.

        Every fetch runs on this loop, so a loop stuck in a blocking call (a bug, a read of a
        file that never ends) hangs every scrape; `/-/healthy` fails on it so that an
        orchestrator restarts the process.
        """
        return max(0.0, time.monotonic() - self._beat - self.HEARTBEAT_SECONDS)

    async def _build(self) -> None:
        config = self.config
        self._tls = tls_context()
        self.workers = [
            AccountWorker(
                source,
                account.name,
                token_source(account, source, config.base_url(source), self._client),
                self._fetcher(source),
                self.stats,
                config.collection,
                self.fetch_deadline,
            )
            for source, account in config.accounts()
        ]

    def _fetcher(self, source: SourceName) -> Fetch:
        """The account's own client (see new_client) and the source's way to fetch with it."""
        config = self.config
        limit = config.collection.max_response_bytes
        if source == "parqex":
            assert config.parqex is not None
            parqex = ParqexClient(
                self._client(),
                config.parqex.base_url,
                zone=zoneinfo.ZoneInfo(config.parqex.timezone),
                max_bytes=limit,
            )
            return functools.partial(fetch_parqex, parqex)
        lametric = LametricClient(self._client(), config.base_url("lametric"), max_bytes=limit)
        return functools.partial(fetch_lametric, lametric)

    def _client(self) -> httpx.AsyncClient:
        client = new_client(timeout=self.fetch_deadline, tls=self._tls)
        self._clients.append(client)
        return client

    def collect(self, budget: float, only: AccountKey | None = None) -> list[Outcome]:
        """Collect every account (or `only` one) concurrently, within about `budget` seconds."""
        workers = [w for w in self.workers if only is None or (w.source, w.name) == only]
        future = asyncio.run_coroutine_threadsafe(self._collect_all(budget, workers), self._loop)
        return future.result()

    async def _collect_all(self, budget: float, workers: list[AccountWorker]) -> list[Outcome]:
        return list(await asyncio.gather(*(w.collect(budget) for w in workers)))

    def counters(self, only: AccountKey | None = None) -> Counters:
        """The error counters and back-off of every account (or `only` one), as of now."""

        def wanted(source: str, account: str) -> bool:
            return only is None or (source, account) == only

        now = time.time()
        backoff = []
        for worker in self.workers:
            if wanted(worker.source, worker.name):
                until = worker.backoff.until_wall
                backoff.append((worker.source, worker.name, until if until > now else 0.0))
        return Counters(
            errors={k: n for k, n in self.stats.errors.items() if wanted(*k[:2])},
            parse_errors={k: n for k, n in self.stats.parse_errors.items() if wanted(*k[:2])},
            backoff_until=tuple(backoff),
        )

    def count_crashes(self, crashed: Iterable[Outcome]) -> None:
        """Count accounts whose metrics could not be built: a bug of ours, counted as one."""
        for outcome in crashed:
            self.stats.errors[(outcome.source, outcome.account, "internal")] += 1

    def successor(self, config: Config) -> Engine:
        """A new engine (not started) for `config` that counts on this one's counters."""
        return Engine(config, stats=self.stats)

    def take_backoff(self, old: Engine) -> None:
        """A reload must not call a cloud that asked us to wait: keep the back-off of every
        account of `old` that stays, with the same source and base URL. Call after `start`."""
        previous = {
            (worker.source, worker.name): worker
            for worker in old.workers
            if old.config.base_url(worker.source) == self.config.base_url(worker.source)
        }
        for worker in self.workers:
            if (same := previous.get((worker.source, worker.name))) is not None:
                worker.backoff = same.backoff

    def forget_gone_accounts(self) -> None:
        """Drop the counters of accounts this engine's config no longer has (after a reload)."""
        self.stats.forget_all_but({(source, a.name) for source, a in self.config.accounts()})

    def find(self, target: str, source: str | None) -> AccountKey:
        """The account a `/probe?target=...&source=...` means; UnknownTarget says why not.

        Every refusal lists the configured accounts, so the 400 shows what would have worked.
        """
        known = "; known: " + (", ".join(f"{w.source}/{w.name}" for w in self.workers) or "none")
        if not target:
            raise UnknownTarget(
                f"target parameter is missing; use /probe?target=<account>&source=<source>{known}"
            )
        matches = [
            (w.source, w.name)
            for w in self.workers
            if w.name == target and (source is None or w.source == source)
        ]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise UnknownTarget(
                f"account {target!r} exists in {' and '.join(s for s, _ in matches)}; "
                f"add &source=parqex or &source=lametric{known}"
            )
        raise UnknownTarget(f"no account {target!r}{f' in {source}' if source else ''}{known}")

    def drain(self) -> None:
        """Wait for fetches no scrape waits for any more (after a reload): each ends within
        the fetch deadline, so this waits at most that long, plus a second.

        A scrape that timed out leaves its fetch running for the next scrape to share; closing
        the clients under it would turn it into a `connect` error in the carried-over counters.
        """
        timeout = self.fetch_deadline + 1

        async def wait() -> None:
            current = asyncio.current_task()
            others = {task for task in asyncio.all_tasks() if task is not current}
            if others:
                done, _ = await asyncio.wait(others, timeout=timeout)
                for task in done:  # already counted and logged; nobody will ask for the result
                    if not task.cancelled():
                        task.exception()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(wait(), self._loop).result(timeout + 5)

    def close(self) -> None:
        """Stop collecting: finish token refreshes in flight, cancel the rest, close sockets,
        then close the event loop (its selector and self-pipe are descriptors: left to the
        garbage collector, hundreds of reloads pile them up). Safe to call more than once."""
        with self._close_lock:
            if self._loop.is_closed():
                return
            if self._thread.is_alive():
                try:
                    asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(30)
                finally:
                    self._loop.call_soon_threadsafe(self._loop.stop)
                    self._thread.join(timeout=5)
            if not self._loop.is_running():
                self._loop.close()

    async def _shutdown(self) -> None:
        # A refresh cut short after the cloud rotated the refresh token but before the new one
        # reached its file would lock the account out: let refreshes finish first.
        settles = [
            asyncio.create_task(settle())
            for w in self.workers
            if (settle := getattr(w.tokens, "settle", None))
        ]
        if settles:
            await asyncio.wait(settles, timeout=20)
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for client in self._clients:
            await client.aclose()
