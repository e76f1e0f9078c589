"""The simulation itself: accounts, tokens, device state, faults and traffic statistics.

Everything lives in memory behind one lock shared by the HTTP handler threads and test code.
The two cloud APIs are served from here; the ``/_sim/`` control API is in
:mod:`exporter.simulator.control`.
"""

from __future__ import annotations

import copy
import functools
import json
import random
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl

from exporter.simulator import control, data
from exporter.simulator.server import (
    LoopbackServer,
    RecordedRequest,
    Response,
    json_response,
    loopback_host,
)

_UNAUTHORIZED = {
    "parqex": {"message": "Invalid Access Token"},
    "lametric": {"errors": [{"message": "Unauthorized"}]},
}
_PARQEX_INVALID_GRANT = {"error": "invalid_grant"}
_LAMETRIC_NOT_FOUND = {"errors": [{"message": "Not found"}]}

# method, path, handler name, the cloud whose bearer token is required (None: no token needed)
_ROUTES: list[tuple[str, re.Pattern[str], str, str | None]] = [
    ("GET", re.compile(r"/oauth/v1/endpoints/sync"), "_api_parqex_sync", "parqex"),
    ("GET", re.compile(r"/oauth/v2/endpoints/token/"), "_api_parqex_token", None),
    ("GET", re.compile(r"/api/v2/users/me"), "_api_lametric_user", "lametric"),
    ("GET", re.compile(r"/api/v2/users/me/devices"), "_api_lametric_devices", "lametric"),
    ("GET", re.compile(r"/api/v2/users/me/devices/([^/]+)"), "_api_lametric_device", "lametric"),
    ("POST", re.compile(r"/api/v2/oauth2/token"), "_api_lametric_token", None),
]


@dataclass
class _Fault:
    response: Response
    remaining: int | None  # None: until cleared


@dataclass(frozen=True)
class _Latency:
    """A delay of `low` seconds, or uniformly at random in [low, high] when high > low."""

    low: float
    high: float

    def draw(self, rng: random.Random) -> float:
        return rng.uniform(self.low, self.high) if self.high > self.low else self.low


@dataclass
class _Span:
    """When a request was in flight, as event sequence numbers (so ties cannot happen)."""

    path: str
    token: str | None
    begin: int
    end: int | None = None


@dataclass
class _OAuthClient:
    secret: str
    account: str


@dataclass
class _LametricAccount:
    user: dict[str, Any]
    devices: dict[int, dict[str, Any]]  # insertion order is the order served


def _longest_prefix(table: dict[str, Any], path: str) -> str | None:
    matches = [prefix for prefix in table if path.startswith(prefix)]
    return max(matches, key=len) if matches else None


def _max_overlap(spans: list[_Span]) -> int:
    """Most spans open at once: a sweep over their begin and end events."""
    events = sorted(
        [(s.begin, 1) for s in spans] + [(s.end, -1) for s in spans if s.end is not None]
    )
    current = best = 0
    for _, delta in events:
        current += delta
        best = max(best, current)
    return best


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:  # deliberately odd statuses are welcome here
        return "Simulated failure"


def _lametric_device_id(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() else None


class SimulatedCloud:
    """ParqEx and LaMetric clouds in one loopback HTTP server, with knobs for tests."""

    generate_parqex_devices = staticmethod(data.generate_parqex_devices)
    generate_lametric_devices = staticmethod(data.generate_lametric_devices)

    def __init__(
        self,
        *,
        parqex_token: str | None = "demo-parqex-token",
        lametric_token: str | None = "demo-lametric-token",
        live: bool = False,
    ) -> None:
        self.live = live  # every sync reports ParqEx last_contact as now, so a demo looks alive
        self.token_expires_in = 3600
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._accounts: dict[str, dict[str, Any]] = {"parqex": {}, "lametric": {}}
        self._access: dict[tuple[str, str], str] = {}  # (cloud, access token) -> account
        self._clients: dict[tuple[str, str], _OAuthClient] = {}  # (cloud, client_id)
        self._refresh_tokens: dict[tuple[str, str], str] = {}  # (cloud, token) -> client_id
        # id -> every copy (the same device may be in several accounts)
        self._doors: dict[str, list[dict[str, Any]]] = {}
        self._parqex_devices: dict[str, list[dict[str, Any]]] = {}
        self._lametric_devices: dict[int, list[dict[str, Any]]] = {}
        self._latencies: dict[str, _Latency] = {}
        self._latency_rng = random.Random()  # drawn under self._lock
        self._max_latency_applied = 0.0  # seconds, since the last reset_stats
        self._faults: dict[str, _Fault] = {}
        self._spans: list[_Span] = []
        self._sequence = 0
        # (endpoint, id of the account's data) -> (that data, its answer); see _answer
        self._answers: dict[tuple[str, int], tuple[object, Response]] = {}
        self._server: LoopbackServer | None = None
        self._thread: threading.Thread | None = None
        if parqex_token is not None:
            self.add_parqex_account(parqex_token)
        if lametric_token is not None:
            self.add_lametric_account(lametric_token)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve from a daemon thread (port 0 picks a free port); returns the base URL."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        self._server = LoopbackServer(
            (loopback_host(host), port),
            self._serve,
            functools.partial(control.serve_control, self),
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.01},  # stop() waits up to one poll interval
            name="simulated-cloud",
            daemon=True,
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving and hang up kept-alive connections: a stopped cloud answers nothing."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        server.server_close()
        server.close_connections()
        thread.join()
        self._server = self._thread = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("simulator not started")
        return self._server.url

    def __enter__(self) -> SimulatedCloud:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- accounts and tokens -------------------------------------------------------------

    def add_parqex_account(self, token: str, devices: list[dict[str, Any]] | None = None) -> None:
        """Add an account reachable with `token`; devices are copied (default: the seed)."""
        if devices is None:
            devices = data.load_seed("parqex_sync.json")["devices"]
        devices = copy.deepcopy(devices)
        with self._lock:
            self._new_account("parqex", token, devices)
            for device in devices:
                self._parqex_devices.setdefault(device["id"], []).append(device)
                for door in device.get("doors", []):
                    self._doors.setdefault(door["id"], []).append(door)

    def add_lametric_account(
        self,
        token: str,
        user: dict[str, Any] | None = None,
        devices: list[dict[str, Any]] | None = None,
    ) -> None:
        """Add an account reachable with `token`; user and devices default to the seed.

        The seed user counts the account's devices, as the real users/me does.
        """
        devices = data.load_seed("lametric_devices.json") if devices is None else devices
        if user is None:
            user = data.load_seed("lametric_user.json")
            user["private_device_count"] = len(devices)
        else:
            user = copy.deepcopy(user)
        account = _LametricAccount(user, {d["id"]: d for d in copy.deepcopy(devices)})
        with self._lock:
            self._new_account("lametric", token, account)
            for device in account.devices.values():
                self._lametric_devices.setdefault(device["id"], []).append(device)

    def _new_account(self, cloud: str, token: str, account: Any) -> None:
        if (cloud, token) in self._access:
            raise ValueError(f"{cloud} token {token!r} already has an account")
        self._accounts[cloud][token] = account
        self._access[(cloud, token)] = token

    def add_oauth_client(
        self,
        source: str,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        account_token: str,
    ) -> None:
        """Register a client whose refreshed access tokens reach account_token's account."""
        if source not in self._accounts:
            raise ValueError(f"source must be 'parqex' or 'lametric', not {source!r}")
        with self._lock:
            account = self._access[(source, account_token)]
            self._clients[(source, client_id)] = _OAuthClient(client_secret, account)
            self._refresh_tokens[(source, refresh_token)] = client_id

    def revoke_access_token(self, token: str) -> None:
        """Invalidate an access token of either cloud, as if it had expired."""
        with self._lock:
            removed = [self._access.pop((cloud, token), None) for cloud in self._accounts]
        if not any(removed):
            raise KeyError(token)

    def _refresh(self, cloud: str, params: dict[str, str]) -> dict[str, Any] | None:
        """Rotation: the refresh token used is spent and a new pair is issued."""
        refresh_key = (cloud, params.get("refresh_token", ""))
        client_id = params.get("client_id", "")
        with self._lock:
            client = self._clients.get((cloud, client_id))
            if (
                params.get("grant_type") != "refresh_token"
                or client is None
                or client.secret != params.get("client_secret")
                or self._refresh_tokens.get(refresh_key) != client_id
            ):
                return None
            del self._refresh_tokens[refresh_key]
            access = f"sim-{cloud}-access-{secrets.token_urlsafe(18)}"
            refresh = f"sim-{cloud}-refresh-{secrets.token_urlsafe(18)}"
            self._access[(cloud, access)] = client.account
            self._refresh_tokens[(cloud, refresh)] = client_id
        return {
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": self.token_expires_in,
            "token_type": "Bearer",
        }

    # -- device state --------------------------------------------------------------------

    def set_door(
        self,
        door_id: str,
        *,
        state: str | None = None,
        battery: int | None = None,
        last_toggled: datetime | str | None = None,
        bluetooth_sensor: bool | None = None,
    ) -> None:
        """Change a door in every account; giving a state means it was toggled just now."""
        changes: dict[str, Any] = {}
        if state is not None:
            changes["state"] = state
            last_toggled = datetime.now(UTC) if last_toggled is None else last_toggled
        if battery is not None:
            changes["bluetooth_sensor_battery_level"] = battery
        if bluetooth_sensor is not None:
            changes["bluetooth_sensor"] = bluetooth_sensor
        if last_toggled is not None:
            changes["last_toggled"] = data.format_time(last_toggled)
        self._update(self._doors, door_id, changes)

    def set_parqex_device(self, device_id: str, **fields: Any) -> None:
        """Overwrite raw controller fields; datetimes become ParqEx timestamps."""
        changes = {
            name: data.format_time(value) if isinstance(value, datetime) else value
            for name, value in fields.items()
        }
        self._update(self._parqex_devices, device_id, changes)

    def set_lametric_device(self, device_id: int, **fields: Any) -> None:
        """Overwrite raw clock fields."""
        self._update(self._lametric_devices, device_id, fields)

    def _update(
        self, index: dict[Any, list[dict[str, Any]]], key: Any, changes: dict[str, Any]
    ) -> None:
        with self._lock:
            if key not in index:
                raise KeyError(key)
            for item in index[key]:
                item.update(changes)
            self._answers.clear()

    # -- faults --------------------------------------------------------------------------

    def set_latency(
        self, seconds: float, path_prefix: str = "/", max_seconds: float | None = None
    ) -> None:
        """Delay matching requests; the longest matching prefix decides (0 cancels).

        With `max_seconds`, each request draws its own delay uniformly in [seconds,
        max_seconds]: real clouds do not answer in lockstep, and a client that waits for its
        answers one after another shows only then.
        """
        high = seconds if max_seconds is None else max_seconds
        if not 0 <= seconds <= high:
            raise ValueError(f"latency needs 0 <= seconds <= max_seconds, got {seconds}, {high}")
        with self._lock:
            self._latencies[path_prefix] = _Latency(seconds, high)

    def fail(
        self,
        path_prefix: str,
        status: int,
        body: bytes | str | dict[str, Any] | None = None,
        *,
        headers: dict[str, str] | None = None,
        times: int | None = None,
        content_type: str = "application/json",
    ) -> None:
        """Answer the next `times` matching requests (None: until cleared) with this.

        Without a body, the status phrase is sent as ``{"message": ...}``.
        """
        if body is None:
            body = {"message": _reason(status)}
        if isinstance(body, str):
            body = body.encode()
        elif not isinstance(body, bytes):
            body = json.dumps(body).encode()
        response = Response(status, body, content_type, dict(headers or {}))
        self._add_fault(path_prefix, response, times)

    def respond_raw(
        self,
        path_prefix: str,
        body: bytes,
        *,
        status: int = 200,
        content_type: str = "text/html",
        content_encoding: str | None = None,
        times: int | None = None,
    ) -> None:
        """Send `body` byte for byte: HTML error pages, truncated gzip, gzip bombs..."""
        headers = {"Content-Encoding": content_encoding} if content_encoding else {}
        response = Response(status, body, content_type, headers, verbatim=True)
        self._add_fault(path_prefix, response, times)

    def clear_faults(self) -> None:
        """Remove every failure and every latency."""
        with self._lock:
            self._faults.clear()
            self._latencies.clear()

    def _add_fault(self, path_prefix: str, response: Response, times: int | None) -> None:
        if times is not None and times < 1:
            raise ValueError("times must be at least 1, or None for until cleared")
        with self._lock:
            self._faults[path_prefix] = _Fault(response, times)

    def _take_fault(self, path: str) -> Response | None:
        with self._lock:
            prefix = _longest_prefix(self._faults, path)
            if prefix is None:
                return None
            fault = self._faults[prefix]
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining == 0:
                    del self._faults[prefix]
            return fault.response

    def _latency(self, path: str) -> float:
        """The delay for one request to `path`, drawn now and remembered if the largest yet."""
        with self._lock:
            prefix = _longest_prefix(self._latencies, path)
            delay = self._latencies[prefix].draw(self._latency_rng) if prefix is not None else 0.0
            self._max_latency_applied = max(self._max_latency_applied, delay)
            return delay

    # -- observation ---------------------------------------------------------------------

    def request_count(self, path_prefix: str = "/") -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.path.startswith(path_prefix))

    def max_in_flight(self, path_prefix: str = "/", token: str | None = None) -> int:
        """Most matching requests ever being served at once (latency sleeps included)."""
        with self._lock:
            spans = [
                s
                for s in self._spans
                if s.path.startswith(path_prefix) and (token is None or s.token == token)
            ]
        return _max_overlap(spans)

    def max_latency_applied(self) -> float:
        """The longest delay given to any request since the last reset_stats, in seconds.

        A benchmark with random latencies divides a scrape's wall time by this: the scrape
        cannot end before its slowest answer.
        """
        with self._lock:
            return self._max_latency_applied

    def stats(self) -> dict[str, Any]:
        """Totals per path, as served by ``GET /_sim/stats`` to other processes."""
        with self._lock:
            by_path = Counter(r.path for r in self.requests)
            spans_by_path: dict[str, list[_Span]] = {}
            for span in self._spans:
                spans_by_path.setdefault(span.path, []).append(span)
            max_latency = self._max_latency_applied
        return {
            "requests": by_path.total(),
            "by_path": dict(by_path),
            "max_in_flight": {path: _max_overlap(s) for path, s in spans_by_path.items()},
            "max_latency_applied": max_latency,
        }

    def reset_stats(self) -> None:
        with self._lock:
            self.requests.clear()
            self._spans.clear()
            self._max_latency_applied = 0.0

    # -- the cloud APIs ------------------------------------------------------------------

    @contextmanager
    def _serve(self, request: RecordedRequest) -> Iterator[Response]:
        """Record, wait out any latency (no lock held), then a fault or the real answer."""
        with self._lock:
            self.requests.append(request)
            self._sequence += 1
            span = _Span(request.path, request.token, self._sequence)
            self._spans.append(span)
        try:
            delay = self._latency(request.path)
            if delay > 0:
                time.sleep(delay)
            yield self._take_fault(request.path) or self._route(request)
        finally:
            with self._lock:
                self._sequence += 1
                span.end = self._sequence

    def _route(self, request: RecordedRequest) -> Response:
        for method, pattern, handler, cloud in _ROUTES:
            match = pattern.fullmatch(request.path)
            if match is None or method != request.method:
                continue
            serve: Callable[..., Response] = getattr(self, handler)
            if cloud is None:
                return serve(request)
            account = None
            if request.token is not None:
                with self._lock:
                    name = self._access.get((cloud, request.token))
                    account = self._accounts[cloud].get(name) if name is not None else None
            if account is None:
                return json_response(_UNAUTHORIZED[cloud], 401)
            return serve(account, request, *match.groups())
        return json_response({"message": "Not Found", "path": request.path}, 404)

    def _answer(self, endpoint: str, source: object, payload: Callable[[], Any]) -> Response:
        """`payload()` as a JSON answer, built once and reused until the state changes.

        Serializing and gzipping again on every request made the simulator, not the exporter,
        the bottleneck of benchmarks (a 10,000-device sync costs 0.2 s; hundreds of small
        answers at once cost more than the latency they simulate). Call with self._lock held;
        every state change (_update) forgets all answers. `source` is kept with its answer so
        that its id cannot be reused by another object meanwhile.
        """
        key = (endpoint, id(source))
        cached = self._answers.get(key)
        if cached is None:
            cached = self._answers[key] = (source, json_response(payload()))
        return cached[1]

    def _api_parqex_sync(self, devices: list[dict[str, Any]], request: RecordedRequest) -> Response:
        with self._lock:
            if self.live:  # a different answer every time
                now = data.now_text()
                for device in devices:
                    device["last_contact"] = now
                return json_response({"devices": devices})
            return self._answer("parqex_sync", devices, lambda: {"devices": devices})

    def _api_parqex_token(self, request: RecordedRequest) -> Response:
        tokens = self._refresh("parqex", request.query)
        return json_response(tokens) if tokens else json_response(_PARQEX_INVALID_GRANT, 400)

    def _api_lametric_token(self, request: RecordedRequest) -> Response:
        form = dict(parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))
        tokens = self._refresh("lametric", form)
        return json_response(tokens) if tokens else json_response(_UNAUTHORIZED["lametric"], 401)

    def _api_lametric_user(self, account: _LametricAccount, request: RecordedRequest) -> Response:
        with self._lock:
            return self._answer("lametric_user", account, lambda: account.user)

    def _api_lametric_devices(
        self, account: _LametricAccount, request: RecordedRequest
    ) -> Response:
        with self._lock:
            return self._answer("lametric_devices", account, lambda: list(account.devices.values()))

    def _api_lametric_device(
        self, account: _LametricAccount, request: RecordedRequest, device_id: str
    ) -> Response:
        number = _lametric_device_id(device_id)
        with self._lock:
            device = account.devices.get(number) if number is not None else None
            return json_response(device) if device else json_response(_LAMETRIC_NOT_FOUND, 404)
