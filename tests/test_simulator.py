"""The simulated cloud, exercised over real HTTP on 127.0.0.1 as the exporter would use it."""

from __future__ import annotations

import gzip
import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from exporter.simulator import SimulatedCloud, cli
from exporter.simulator import data as simdata
from tests.support import SIMDATA

PARQEX = {"Authorization": "Bearer demo-parqex-token"}
LAMETRIC = {"Authorization": "Bearer demo-lametric-token"}
SYNC = "/oauth/v1/endpoints/sync"
PARQEX_TOKEN = "/oauth/v2/endpoints/token/"
LAMETRIC_TOKEN = "/api/v2/oauth2/token"
SEED_DOOR = "70fc7ebd63d841d9a9f06ff815be1e7c"
SEED_DEVICE = "9d9e5e0e093a06d5f16e1116d108d0c7"
PARQEX_UNAUTHORIZED = {"message": "Invalid Access Token"}
LAMETRIC_UNAUTHORIZED = {"errors": [{"message": "Unauthorized"}]}


def seed(name: str) -> Any:
    return json.loads((SIMDATA / name).read_text())


def parse_parqex_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def http(base_url: str) -> httpx.Client:
    """Plain HTTP to loopback: no TLS context to build, no proxy taken from the environment."""
    return httpx.Client(base_url=base_url, timeout=5, verify=False, trust_env=False)


@pytest.fixture
def sim() -> Iterator[SimulatedCloud]:
    with SimulatedCloud() as cloud:
        yield cloud


@pytest.fixture
def client(sim: SimulatedCloud) -> Iterator[httpx.Client]:
    with http(sim.url) as loopback:
        yield loopback


def door(client: httpx.Client, door_id: str) -> dict[str, Any]:
    devices = client.get(SYNC, headers=PARQEX).json()["devices"]
    return next(d for device in devices for d in device["doors"] if d["id"] == door_id)


# -- the cloud APIs -------------------------------------------------------------------------


def test_parqex_sync_serves_the_seed_exactly_gzipped(client: httpx.Client) -> None:
    headers = {**PARQEX, "Accept-Encoding": "gzip"}
    with client.stream("GET", SYNC, headers=headers) as response:
        raw = b"".join(response.iter_raw())
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-encoding"] == "gzip"
    assert int(response.headers["content-length"]) == len(raw)
    assert json.loads(gzip.decompress(raw)) == seed("parqex_sync.json")


def test_lametric_serves_the_seed_exactly_without_gzip_unless_asked(client: httpx.Client) -> None:
    headers = {**LAMETRIC, "Accept-Encoding": "identity"}
    user = client.get("/api/v2/users/me", headers=headers)
    devices = client.get("/api/v2/users/me/devices", headers=headers)
    assert user.json() == seed("lametric_user.json")
    assert devices.json() == seed("lametric_devices.json")
    assert "content-encoding" not in devices.headers
    assert int(devices.headers["content-length"]) == len(devices.content)


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", SYNC, PARQEX_UNAUTHORIZED),
        ("GET", "/api/v2/users/me", LAMETRIC_UNAUTHORIZED),
        ("GET", "/api/v2/users/me/devices", LAMETRIC_UNAUTHORIZED),
        ("GET", "/api/v2/users/me/devices/18", LAMETRIC_UNAUTHORIZED),
    ],
)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic ZGVtbzpkZW1v"},
        {"Authorization": "Bearer demo-parqex-token demo-lametric-token"},
    ],
    ids=["missing", "wrong", "not-bearer", "garbled"],
)
def test_every_data_endpoint_checks_the_bearer_token(
    client: httpx.Client, method: str, path: str, expected: dict, headers: dict[str, str]
) -> None:
    response = client.request(method, path, headers=headers, json={"name": "x"})
    assert response.status_code == 401
    assert response.json() == expected


def test_a_token_of_one_cloud_does_not_open_the_other(client: httpx.Client) -> None:
    assert client.get(SYNC, headers=LAMETRIC).status_code == 401
    assert client.get("/api/v2/users/me", headers=PARQEX).status_code == 401


def test_lametric_device_by_id_and_unknown_ids(client: httpx.Client) -> None:
    assert (
        client.get("/api/v2/users/me/devices/18", headers=LAMETRIC).json()
        == seed("lametric_devices.json")[0]
    )
    for unknown in ("19", "abc"):
        response = client.get(f"/api/v2/users/me/devices/{unknown}", headers=LAMETRIC)
        assert response.status_code == 404
        assert response.json() == {"errors": [{"message": "Not found"}]}


def test_unknown_path_is_a_json_404(client: httpx.Client) -> None:
    response = client.get("/oauth/v1/endpoints/nothing", headers=PARQEX)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json()["path"] == "/oauth/v1/endpoints/nothing"


# -- tokens ---------------------------------------------------------------------------------


def parqex_refresh(
    client: httpx.Client, refresh_token: str, secret: str = "s3cret"
) -> httpx.Response:
    params = {
        "client_id": "cid",
        "client_secret": secret,
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
    }
    return client.get(PARQEX_TOKEN, params=params)


def lametric_refresh(
    client: httpx.Client, refresh_token: str, secret: str = "s3cret"
) -> httpx.Response:
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": "cid",
        "client_secret": secret,
    }
    return client.post(LAMETRIC_TOKEN, data=form)


def test_parqex_refresh_tokens_rotate(sim: SimulatedCloud, client: httpx.Client) -> None:
    sim.add_oauth_client("parqex", "cid", "s3cret", "refresh-0", "demo-parqex-token")
    sim.token_expires_in = 60
    first = parqex_refresh(client, "refresh-0")
    assert first.status_code == 200
    tokens = first.json()
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 60
    assert client.get(SYNC, headers=bearer(tokens["access_token"])).json() == seed(
        "parqex_sync.json"
    )
    reused = parqex_refresh(client, "refresh-0")
    assert (reused.status_code, reused.json()) == (400, {"error": "invalid_grant"})
    assert parqex_refresh(client, tokens["refresh_token"], secret="wrong").status_code == 400
    assert parqex_refresh(client, tokens["refresh_token"]).status_code == 200


def test_lametric_refresh_tokens_rotate(sim: SimulatedCloud, client: httpx.Client) -> None:
    sim.add_oauth_client("lametric", "cid", "s3cret", "refresh-0", "demo-lametric-token")
    tokens = lametric_refresh(client, "refresh-0").json()
    assert tokens["expires_in"] == 3600
    user = client.get("/api/v2/users/me", headers=bearer(tokens["access_token"]))
    assert user.json() == seed("lametric_user.json")
    reused = lametric_refresh(client, "refresh-0")
    assert (reused.status_code, reused.json()) == (401, LAMETRIC_UNAUTHORIZED)
    assert lametric_refresh(client, tokens["refresh_token"], secret="wrong").status_code == 401
    assert lametric_refresh(client, tokens["refresh_token"]).status_code == 200


def test_refresh_tokens_of_one_cloud_are_unknown_to_the_other(
    sim: SimulatedCloud, client: httpx.Client
) -> None:
    sim.add_oauth_client("parqex", "cid", "s3cret", "refresh-0", "demo-parqex-token")
    assert lametric_refresh(client, "refresh-0").status_code == 401
    assert parqex_refresh(client, "refresh-0").status_code == 200


def test_revoked_access_token_is_rejected(sim: SimulatedCloud, client: httpx.Client) -> None:
    sim.revoke_access_token("demo-parqex-token")
    assert client.get(SYNC, headers=PARQEX).status_code == 401
    with pytest.raises(KeyError):
        sim.revoke_access_token("never-issued")


# -- state changes --------------------------------------------------------------------------


def test_set_door_without_time_toggles_it_now(sim: SimulatedCloud, client: httpx.Client) -> None:
    sim.set_door(SEED_DOOR, state="CLOSED", battery=42)
    changed = door(client, SEED_DOOR)
    assert changed["state"] == "CLOSED"
    assert changed["bluetooth_sensor_battery_level"] == 42
    age = datetime.now(UTC) - parse_parqex_time(changed["last_toggled"])
    assert timedelta(0) <= age < timedelta(seconds=5)


def test_set_door_writes_datetimes_in_utc(sim: SimulatedCloud, client: httpx.Client) -> None:
    plus_two = timezone(timedelta(hours=2))
    sim.set_door(
        SEED_DOOR, state="OPEN", last_toggled=datetime(2024, 1, 2, 5, 4, 5, tzinfo=plus_two)
    )
    assert door(client, SEED_DOOR)["last_toggled"] == "2024-01-02 03:04:05"
    sim.set_door(SEED_DOOR, bluetooth_sensor=True)
    assert door(client, SEED_DOOR)["last_toggled"] == "2024-01-02 03:04:05"
    assert door(client, SEED_DOOR)["bluetooth_sensor"] is True


def test_set_parqex_device_overwrites_raw_fields(sim: SimulatedCloud, client: httpx.Client) -> None:
    contact = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
    sim.set_parqex_device(SEED_DEVICE, last_contact=contact, active=False, registered=False)
    device = client.get(SYNC, headers=PARQEX).json()["devices"][0]
    assert (device["last_contact"], device["active"], device["registered"]) == (
        "2025-03-04 05:06:07",
        False,
        False,
    )


def test_state_changes_of_unknown_ids_raise_key_error(sim: SimulatedCloud) -> None:
    with pytest.raises(KeyError):
        sim.set_door("0" * 32, state="OPEN")
    with pytest.raises(KeyError):
        sim.set_parqex_device("0" * 32, active=False)
    with pytest.raises(KeyError):
        sim.set_lametric_device(19, name="x")


def test_live_mode_reports_last_contact_as_now() -> None:
    with SimulatedCloud(live=True) as cloud, http(cloud.url) as client:
        devices = client.get(SYNC, headers=PARQEX).json()["devices"]
    for device in devices:
        age = datetime.now(UTC) - parse_parqex_time(device["last_contact"])
        assert timedelta(0) <= age < timedelta(seconds=5)


def test_added_accounts_are_separate(sim: SimulatedCloud, client: httpx.Client) -> None:
    fleet = SimulatedCloud.generate_parqex_devices(4, doors_per_device=2, seed=7)
    sim.add_parqex_account("fleet-token", fleet)
    sim.add_lametric_account("clock-token", devices=SimulatedCloud.generate_lametric_devices(3))
    assert client.get(SYNC, headers=bearer("fleet-token")).json() == {"devices": fleet}
    clocks = client.get("/api/v2/users/me/devices", headers=bearer("clock-token")).json()
    assert len(clocks) == 3
    assert client.get(SYNC, headers=PARQEX).json() == seed("parqex_sync.json")
    with pytest.raises(ValueError):
        sim.add_parqex_account("fleet-token")


# -- faults ---------------------------------------------------------------------------------


def test_latency_delays_matching_requests_only(sim: SimulatedCloud, client: httpx.Client) -> None:
    sim.set_latency(0.2, "/oauth/")
    started = time.perf_counter()
    assert client.get(SYNC, headers=PARQEX).status_code == 200
    assert time.perf_counter() - started >= 0.2
    sim.set_latency(30)  # "/" : control endpoints must still answer at once
    assert client.get("/_sim/stats", timeout=5).status_code == 200


def test_latency_range_draws_each_delay_uniformly_in_it(
    sim: SimulatedCloud, client: httpx.Client
) -> None:
    sim.set_latency(0.01, SYNC, max_seconds=0.04)
    delays = []
    for _ in range(8):
        sim.reset_stats()
        assert sim.max_latency_applied() == 0.0
        started = time.perf_counter()
        assert client.get(SYNC, headers=PARQEX).status_code == 200
        elapsed = time.perf_counter() - started
        delays.append(sim.max_latency_applied())
        assert 0.01 <= delays[-1] <= 0.04
        assert elapsed >= delays[-1]  # the drawn delay was really waited out
    assert len(set(delays)) == len(delays)  # drawn per request, not once
    client.get("/api/v2/users/me", headers=LAMETRIC)
    assert sim.max_latency_applied() == delays[-1]  # other paths stay undelayed


def test_max_latency_applied_is_the_largest_since_the_reset(
    sim: SimulatedCloud, client: httpx.Client
) -> None:
    sim.set_latency(0.05, SYNC)
    sim.set_latency(0.02, "/api/")
    client.get("/api/v2/users/me", headers=LAMETRIC)
    assert sim.max_latency_applied() == 0.02
    client.get(SYNC, headers=PARQEX)
    client.get("/api/v2/users/me", headers=LAMETRIC)
    assert sim.max_latency_applied() == 0.05
    sim.reset_stats()
    assert sim.max_latency_applied() == 0.0


@pytest.mark.parametrize(("seconds", "max_seconds"), [(0.2, 0.1), (-0.1, None)])
def test_latency_range_must_be_ordered(
    sim: SimulatedCloud, seconds: float, max_seconds: float | None
) -> None:
    with pytest.raises(ValueError, match="max_seconds"):
        sim.set_latency(seconds, max_seconds=max_seconds)


def test_fail_once_then_normal(sim: SimulatedCloud, client: httpx.Client) -> None:
    sim.fail(SYNC, 503, {"message": "busy"}, headers={"Retry-After": "7"}, times=1)
    failed = client.get(SYNC, headers=PARQEX)
    assert (failed.status_code, failed.json(), failed.headers["retry-after"]) == (
        503,
        {"message": "busy"},
        "7",
    )
    assert client.get(SYNC, headers=PARQEX).status_code == 200


def test_fail_until_cleared_and_longest_prefix_wins(
    sim: SimulatedCloud, client: httpx.Client
) -> None:
    sim.fail("/", 500)
    sim.fail("/api/v2/users/me/devices", 429, "slow down", content_type="text/plain")
    limited = client.get("/api/v2/users/me/devices", headers=LAMETRIC)
    assert (limited.status_code, limited.text) == (429, "slow down")
    assert client.get(SYNC, headers=PARQEX).json() == {"message": "Internal Server Error"}
    assert client.get(SYNC, headers=PARQEX).status_code == 500
    sim.clear_faults()
    assert client.get(SYNC, headers=PARQEX).status_code == 200


def test_respond_raw_sends_bytes_verbatim(sim: SimulatedCloud, client: httpx.Client) -> None:
    truncated = gzip.compress(json.dumps(seed("parqex_sync.json")).encode())[:50]
    sim.respond_raw(SYNC, truncated, content_type="application/json", content_encoding="gzip")
    headers = {**PARQEX, "Accept-Encoding": "gzip"}
    with client.stream("GET", SYNC, headers=headers) as response:
        raw = b"".join(response.iter_raw())
    assert raw == truncated
    assert response.headers["content-encoding"] == "gzip"
    sim.respond_raw("/api/", b"<html>Bad Gateway</html>", status=502, times=1)
    page = client.get("/api/v2/users/me", headers=LAMETRIC)
    assert (page.status_code, page.headers["content-type"], page.text) == (
        502,
        "text/html",
        "<html>Bad Gateway</html>",
    )


# -- observation ----------------------------------------------------------------------------


def test_requests_are_recorded(sim: SimulatedCloud, client: httpx.Client) -> None:
    client.get(SYNC, headers={**PARQEX, "X-Probe": "1"}, params={"a": "b"})
    client.get("/_sim/stats")
    (recorded,) = sim.requests
    assert (recorded.method, recorded.path, recorded.query) == ("GET", SYNC, {"a": "b"})
    assert (recorded.token, recorded.headers["x-probe"]) == ("demo-parqex-token", "1")
    assert sim.request_count("/oauth/") == 1
    assert sim.request_count("/api/") == 0


def test_max_in_flight_counts_concurrent_requests(sim: SimulatedCloud) -> None:
    sim.set_latency(0.2, SYNC)
    sim.add_parqex_account("other")

    def fetch(token: str) -> int:
        with http(sim.url) as client:  # one connection each, so they can overlap
            return client.get(SYNC, headers=bearer(token)).status_code

    tokens = ["demo-parqex-token"] * 3 + ["other"]
    with ThreadPoolExecutor(len(tokens)) as pool:
        assert list(pool.map(fetch, tokens)) == [200] * 4
    assert sim.max_in_flight() == 4
    assert sim.max_in_flight(SYNC, token="demo-parqex-token") == 3
    assert sim.max_in_flight(SYNC, token="other") == 1
    assert sim.max_in_flight("/api/") == 0
    sim.reset_stats()
    assert (sim.max_in_flight(), sim.request_count(), sim.requests) == (0, 0, [])


def test_sequential_requests_are_never_in_flight_together(
    sim: SimulatedCloud, client: httpx.Client
) -> None:
    for _ in range(5):
        client.get(SYNC, headers=PARQEX)
    assert (sim.request_count(), sim.max_in_flight()) == (5, 1)


def test_answers_follow_state_changes_made_after_they_were_served(
    sim: SimulatedCloud, client: httpx.Client
) -> None:
    """Answers are built once and reused (see SimulatedCloud._answer) until the state changes."""
    gzipped = {**PARQEX, "Accept-Encoding": "gzip"}
    assert door(client, SEED_DOOR)["state"] == "OPEN"
    assert client.get(SYNC, headers=gzipped).headers["content-encoding"] == "gzip"
    sim.set_door(SEED_DOOR, state="CLOSED")
    assert door(client, SEED_DOOR)["state"] == "CLOSED"
    assert (
        json.loads(gzip.decompress(raw_get(client, SYNC, gzipped)))["devices"]
        == (client.get(SYNC, headers=PARQEX).json()["devices"])
    )
    assert client.get("/api/v2/users/me/devices", headers=LAMETRIC).json()[0]["name"] != "x"
    sim.set_lametric_device(18, name="x")
    assert client.get("/api/v2/users/me/devices", headers=LAMETRIC).json()[0]["name"] == "x"


def raw_get(client: httpx.Client, path: str, headers: dict[str, str]) -> bytes:
    """The body as sent, not decompressed."""
    with client.stream("GET", path, headers=headers) as response:
        return b"".join(response.iter_raw())


def exchange(url: str, request: bytes) -> bytes:
    """Send `request` bytes on a fresh connection; everything the server sends until it closes."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        connection.sendall(request)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    return received


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"NONSENSE\r\n\r\n", b"400"),
        (b"GET / SPDY/3\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", b"431"),
        (b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n", b"431"),
    ],
)
def test_malformed_requests_get_an_error_and_the_connection_closed(
    sim: SimulatedCloud, request_bytes: bytes, status: bytes
) -> None:
    answer = exchange(sim.url, request_bytes)
    assert answer.split(b" ", 2)[:2] == [b"HTTP/1.1", status]
    assert sim.requests == []


def test_connection_close_and_headers_as_parsed(sim: SimulatedCloud) -> None:
    request = (
        f"GET {SYNC}?a=1 HTTP/1.1\r\nHost: x\r\nAUTHORIZATION:  Bearer demo-parqex-token \r\n"
        "X-Probe: one\r\nX-Probe: two\r\nConnection: close\r\n\r\n"
    ).encode()
    head, _, body = exchange(sim.url, request).partition(b"\r\n\r\n")  # closed after one
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert json.loads(body) == seed("parqex_sync.json")
    (recorded,) = sim.requests
    assert (recorded.token, recorded.query) == ("demo-parqex-token", {"a": "1"})
    assert recorded.headers["x-probe"] == "two"  # the last one wins


def test_stop_hangs_up_kept_alive_connections(sim: SimulatedCloud, client: httpx.Client) -> None:
    assert client.get(SYNC, headers=PARQEX).status_code == 200
    sim.stop()
    with pytest.raises(httpx.TransportError):
        client.get(SYNC, headers=PARQEX)


# -- control over HTTP ----------------------------------------------------------------------


def test_control_endpoints_change_state(sim: SimulatedCloud, client: httpx.Client) -> None:
    toggled = {"door_id": SEED_DOOR, "state": "CLOSED", "last_toggled": "2024-05-06 07:08:09"}
    assert client.post("/_sim/door", json=toggled).json() == {"ok": True}
    assert door(client, SEED_DOOR)["last_toggled"] == "2024-05-06 07:08:09"
    client.post("/_sim/parqex_device", json={"device_id": SEED_DEVICE, "active": False})
    assert client.get(SYNC, headers=PARQEX).json()["devices"][0]["active"] is False
    client.post("/_sim/lametric_device", json={"device_id": 18, "state": "banned"})
    clock = client.get("/api/v2/users/me/devices/18", headers=LAMETRIC).json()
    assert clock["state"] == "banned"


def test_control_endpoints_create_accounts(client: httpx.Client) -> None:
    created = client.post("/_sim/parqex_account", json={"token": "t", "devices": 3})
    assert created.json() == {"ok": True, "token": "t", "devices": 3}
    devices = client.get(SYNC, headers=bearer("t")).json()["devices"]
    assert [len(d["doors"]) for d in devices] == [3, 3, 3]
    client.post("/_sim/lametric_account", json={"token": "t", "devices": 2})
    clocks = client.get("/api/v2/users/me/devices", headers=bearer("t")).json()
    user = client.get("/api/v2/users/me", headers=bearer("t")).json()
    assert len(clocks) == user["private_device_count"] == 2


def test_control_endpoints_inject_faults(client: httpx.Client) -> None:
    client.post("/_sim/fail", json={"path_prefix": "/oauth/", "status": 502, "times": 1})
    assert client.get(SYNC, headers=PARQEX).status_code == 502
    assert client.get(SYNC, headers=PARQEX).status_code == 200
    client.post("/_sim/latency", json={"seconds": 0.1, "path_prefix": SYNC})
    started = time.perf_counter()
    client.get(SYNC, headers=PARQEX)
    assert time.perf_counter() - started >= 0.1
    assert client.get("/_sim/stats").json()["max_latency_applied"] == 0.1
    ranged = {"seconds": 0.01, "max_seconds": 0.03, "path_prefix": SYNC}
    assert client.post("/_sim/latency", json=ranged).json() == {"ok": True}
    client.post("/_sim/reset_stats")
    client.get(SYNC, headers=PARQEX)
    assert 0.01 <= client.get("/_sim/stats").json()["max_latency_applied"] <= 0.03
    client.post("/_sim/fail", json={"path_prefix": "/", "status": 500})
    client.post("/_sim/clear_faults")
    assert client.get(SYNC, headers=PARQEX).status_code == 200


def test_control_stats_and_reset(client: httpx.Client) -> None:
    client.get(SYNC, headers=PARQEX)
    client.get("/api/v2/users/me", headers=LAMETRIC)
    client.get("/api/v2/users/me", headers=LAMETRIC)
    assert client.get("/_sim/stats").json() == {
        "requests": 3,
        "by_path": {SYNC: 1, "/api/v2/users/me": 2},
        "max_in_flight": {SYNC: 1, "/api/v2/users/me": 1},
        "max_latency_applied": 0.0,
    }
    client.post("/_sim/reset_stats")
    assert client.get("/_sim/stats").json()["requests"] == 0


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/_sim/door", {"door_id": "nope", "state": "OPEN"}, 404),
        ("POST", "/_sim/lametric_device", {"device_id": 19, "name": "x"}, 404),
        ("POST", "/_sim/door", {"state": "OPEN"}, 400),
        ("POST", "/_sim/latency", ["not", "an", "object"], 400),
        ("POST", "/_sim/latency", {"seconds": 0.3, "max_seconds": 0.1}, 400),
        ("POST", "/_sim/nothing", {}, 404),
        ("GET", "/_sim/door", None, 404),
    ],
)
def test_control_errors(
    client: httpx.Client, method: str, path: str, body: Any, status: int
) -> None:
    response = client.request(method, path, json=body)
    assert response.status_code == status
    assert response.json()["message"]


# -- generated data -------------------------------------------------------------------------


def test_generated_parqex_devices_are_complete_unique_and_reproducible() -> None:
    devices = SimulatedCloud.generate_parqex_devices(500, doors_per_device=3, seed=1)
    seed_device = seed("parqex_sync.json")["devices"][0]
    door_ids = [d["id"] for device in devices for d in device["doors"]]
    device_ids = [device["id"] for device in devices]
    assert len(set(device_ids + door_ids)) == 500 * 4
    assert all(re.fullmatch("[0-9a-f]{32}", i) for i in device_ids + door_ids)
    assert all(device.keys() == seed_device.keys() for device in devices)
    assert all(d.keys() == seed_device["doors"][0].keys() for dv in devices for d in dv["doors"])
    assert SimulatedCloud.generate_parqex_devices(500, seed=1) == devices
    assert SimulatedCloud.generate_parqex_devices(1, seed=2)[0]["id"] not in device_ids


def test_generated_lametric_devices_are_complete_and_unique() -> None:
    devices = SimulatedCloud.generate_lametric_devices(500)
    assert len({d["id"] for d in devices}) == 500
    assert all(d.keys() == seed("lametric_devices.json")[0].keys() for d in devices)


# -- command line ---------------------------------------------------------------------------


def test_cli_serves_until_sigterm() -> None:
    command = [sys.executable, "-m", "exporter.simulator", "--listen", "127.0.0.1:0"]
    command += ["--parqex-accounts", "2", "--devices", "2", "--doors", "1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.removeprefix("listening on ").strip()
        with http(url) as client:
            devices = client.get(SYNC, headers=bearer("parqex-token-1")).json()["devices"]
            assert [len(d["doors"]) for d in devices] == [1, 1]
            assert client.get(SYNC, headers=PARQEX).status_code == 200
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=5)
    finally:
        process.kill()
    assert (process.returncode, out, err) == (0, "", "")


def test_cli_latency_range_delays_requests() -> None:
    args = cli._parse_args(["--latency", "0.01", "--latency-max", "0.03", "--parqex-accounts", "1"])
    with cli._build_cloud(args) as sim, http(sim.url) as client:
        client.get(SYNC, headers=bearer("parqex-token-0"))
        first = sim.max_latency_applied()
        client.get("/api/v2/users/me", headers=LAMETRIC)
        assert 0.01 <= first <= sim.max_latency_applied() <= 0.03


def test_cli_refuses_a_latency_range_upside_down() -> None:
    command = [sys.executable, "-m", "exporter.simulator", "--latency", "0.3"]
    result = subprocess.run(
        [*command, "--latency-max", "0.1"], capture_output=True, text=True, timeout=10
    )
    assert result.returncode == 2
    assert "--latency-max >= --latency" in result.stderr


def test_cli_refuses_a_non_loopback_address() -> None:
    command = [sys.executable, "-m", "exporter.simulator", "--listen", "0.0.0.0:0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=10)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert "not a loopback address" in result.stderr


@pytest.mark.parametrize("extra_clocks", [0, 2])
def test_the_seed_lametric_user_counts_the_devices_it_has(extra_clocks: int) -> None:
    """The demo's LaMetric user reported private_device_count 5 while it had one clock."""
    clock = simdata.load_seed("lametric_devices.json")[0]
    devices = None if not extra_clocks else [{**clock, "id": 100 + i} for i in range(extra_clocks)]
    sim = SimulatedCloud(lametric_token=None)
    sim.add_lametric_account("demo-lametric-token", devices=devices)
    url = sim.start()
    try:
        with httpx.Client(base_url=url, headers=LAMETRIC, timeout=10) as client:
            clocks = client.get("/api/v2/users/me/devices").json()
            user = client.get("/api/v2/users/me").json()
    finally:
        sim.stop()
    assert len(clocks) == (extra_clocks or 1)
    assert user["private_device_count"] == len(clocks)
