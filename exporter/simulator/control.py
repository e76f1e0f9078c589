"""The ``/_sim/`` control API: steer a simulator running in another process over HTTP.

Benchmarks and a person poking at ``--demo`` use it to toggle doors, add accounts, inject
faults and read traffic statistics. It needs no token, which is one reason the simulator only
listens on loopback, and it is never delayed, failed or recorded.

It steers any `Steerable`: the simulated cloud imports this module to serve ``/_sim/``, so this
module names the cloud's methods it calls instead of importing the cloud back.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from typing import Any, Protocol

from exporter.simulator import data
from exporter.simulator.server import Response, json_response


class Steerable(Protocol):
    """What the control API changes or reads in a simulated cloud (see SimulatedCloud)."""

    def add_parqex_account(
        self, token: str, devices: list[dict[str, Any]] | None = None
    ) -> None: ...

    def add_lametric_account(
        self,
        token: str,
        user: dict[str, Any] | None = None,
        devices: list[dict[str, Any]] | None = None,
    ) -> None: ...

    # set_door and fail take many keyword options, all fed from untyped JSON here: named as
    # callables, not restated parameter by parameter
    @property
    def set_door(self) -> Callable[..., None]: ...

    def set_parqex_device(self, device_id: str, **fields: Any) -> None: ...

    def set_lametric_device(self, device_id: int, **fields: Any) -> None: ...

    def set_latency(
        self, seconds: float, path_prefix: str = "/", max_seconds: float | None = None
    ) -> None: ...

    @property
    def fail(self) -> Callable[..., None]: ...

    def clear_faults(self) -> None: ...

    def stats(self) -> dict[str, Any]: ...

    def reset_stats(self) -> None: ...


_Payload = dict[str, Any]
_OK = {"ok": True}


def add_generated_parqex_account(
    cloud: Steerable, token: str, n_devices: int, doors_per_device: int = 3
) -> None:
    """A generated fleet seeded by the token, so generated accounts never share ids."""
    devices = data.generate_parqex_devices(n_devices, doors_per_device, _seed(token))
    cloud.add_parqex_account(token, devices)


def add_generated_lametric_account(cloud: Steerable, token: str, n_devices: int) -> None:
    """A generated user and fleet seeded by the token, so generated accounts never share ids."""
    user = data.generate_lametric_user(n_devices, _seed(token))
    cloud.add_lametric_account(token, user, data.generate_lametric_devices(n_devices, _seed(token)))


def _seed(token: str) -> int:
    return zlib.crc32(token.encode())


def _required(payload: _Payload, name: str) -> Any:
    if name not in payload:
        raise ValueError(f"missing field {name!r}")
    return payload[name]


def _door(cloud: Steerable, p: _Payload) -> _Payload:
    fields = {k: p.get(k) for k in ("state", "battery", "last_toggled", "bluetooth_sensor")}
    cloud.set_door(_required(p, "door_id"), **fields)
    return _OK


def _parqex_device(cloud: Steerable, p: _Payload) -> _Payload:
    fields = {k: v for k, v in p.items() if k != "device_id"}
    cloud.set_parqex_device(_required(p, "device_id"), **fields)
    return _OK


def _lametric_device(cloud: Steerable, p: _Payload) -> _Payload:
    fields = {k: v for k, v in p.items() if k != "device_id"}
    cloud.set_lametric_device(int(_required(p, "device_id")), **fields)
    return _OK


def _latency(cloud: Steerable, p: _Payload) -> _Payload:
    high = p.get("max_seconds")
    cloud.set_latency(
        float(_required(p, "seconds")),
        p.get("path_prefix", "/"),
        None if high is None else float(high),
    )
    return _OK


def _fail(cloud: Steerable, p: _Payload) -> _Payload:
    cloud.fail(
        _required(p, "path_prefix"),
        int(_required(p, "status")),
        p.get("body"),
        headers=p.get("headers"),
        times=p.get("times"),
        content_type=p.get("content_type", "application/json"),
    )
    return _OK


def _clear_faults(cloud: Steerable, p: _Payload) -> _Payload:
    cloud.clear_faults()
    return _OK


def _parqex_account(cloud: Steerable, p: _Payload) -> _Payload:
    token, n_devices = _required(p, "token"), int(_required(p, "devices"))
    add_generated_parqex_account(cloud, token, n_devices, int(p.get("doors_per_device", 3)))
    return {"ok": True, "token": token, "devices": n_devices}


def _lametric_account(cloud: Steerable, p: _Payload) -> _Payload:
    token, n_devices = _required(p, "token"), int(_required(p, "devices"))
    add_generated_lametric_account(cloud, token, n_devices)
    return {"ok": True, "token": token, "devices": n_devices}


def _stats(cloud: Steerable, p: _Payload) -> _Payload:
    return cloud.stats()


def _reset_stats(cloud: Steerable, p: _Payload) -> _Payload:
    cloud.reset_stats()
    return _OK


_ENDPOINTS: dict[tuple[str, str], Callable[[Steerable, _Payload], _Payload]] = {
    ("POST", "/_sim/door"): _door,
    ("POST", "/_sim/parqex_device"): _parqex_device,
    ("POST", "/_sim/lametric_device"): _lametric_device,
    ("POST", "/_sim/latency"): _latency,
    ("POST", "/_sim/fail"): _fail,
    ("POST", "/_sim/clear_faults"): _clear_faults,
    ("POST", "/_sim/parqex_account"): _parqex_account,
    ("POST", "/_sim/lametric_account"): _lametric_account,
    ("GET", "/_sim/stats"): _stats,
    ("POST", "/_sim/reset_stats"): _reset_stats,
}


def serve_control(cloud: Steerable, method: str, path: str, body: bytes) -> Response:
    """Run one control request: 400 for a malformed one, 404 for an unknown id or endpoint."""
    endpoint = _ENDPOINTS.get((method, path))
    if endpoint is None:
        return json_response({"message": f"unknown control endpoint {method} {path}"}, 404)
    try:
        payload = json.loads(body) if body.strip() else {}
        if not isinstance(payload, dict):
            raise ValueError("the body must be a JSON object")
        return json_response(endpoint(cloud, payload))
    except KeyError as exc:
        return json_response({"message": f"unknown id {exc.args[0]!r}"}, 404)
    except (ValueError, TypeError) as exc:
        return json_response({"message": str(exc)}, 400)
