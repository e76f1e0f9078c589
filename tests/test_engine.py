"""A failing account never fails the scrape: each failure mode leaves the other accounts intact."""

from __future__ import annotations

import asyncio
import gzip
import logging
import platform
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from exporter import __version__
from exporter.scrape import Scraper
from tests.support import LAMETRIC_URL, PARQEX_URL, config_yaml, fixture, samples, value

SYNC = f"{PARQEX_URL}/oauth/v1/endpoints/sync"
GOOD_DOOR = {
    "account": "good",
    "device_id": "9d9e5e0e093a06d5f16e1116d108d0c7",
    "door_id": "70fc7ebd63d841d9a9f06ff815be1e7c",
}
SECRET_BAD = "bad-token-0123456789abcdef"  # a sentinel: must never show up in any output
HOME = {"name": "home", "token": "t"}


def config_text() -> str:
    return config_yaml(
        parqex=[{"name": "good", "token": "good-token"}, {"name": "bad", "token": SECRET_BAD}],
        lametric=[{"name": "clock", "token": "good-token"}],
    )


def good_sync() -> httpx.Response:
    return httpx.Response(200, json=fixture("parqex_sync.json"))


def raise_(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def effect(request: httpx.Request) -> httpx.Response:
        raise exc

    return effect


FAILURES: dict[str, tuple[Callable[[httpx.Request], httpx.Response], str]] = {
    "401": (lambda r: httpx.Response(401, json={"message": "Invalid Access Token"}), "auth"),
    "403": (lambda r: httpx.Response(403, json={"message": "Forbidden"}), "auth"),
    "404": (lambda r: httpx.Response(404, text="no such endpoint"), "http_4xx"),
    "429": (lambda r: httpx.Response(429, headers={"Retry-After": "30"}), "rate_limited"),
    "500": (lambda r: httpx.Response(500, json={"error": "boom"}), "http_5xx"),
    "html": (
        lambda r: httpx.Response(
            200,
            text="<html><title>Maintenance</title></html>",
            headers={"Content-Type": "text/html"},
        ),
        "decode",
    ),
    "not-json": (lambda r: httpx.Response(200, text="{devices: oops"), "decode"),
    "too-large": (
        lambda r: httpx.Response(200, content=b"[" + b" " * 2_000_000 + b"]"),
        "too_large",
    ),
    "timeout": (raise_(httpx.ReadTimeout("read timed out")), "timeout"),
    "connect": (raise_(httpx.ConnectError("connection refused")), "connect"),
}


@pytest.fixture
def router() -> Iterator[respx.Router]:
    with respx.mock(assert_all_called=False) as mock:
        mock.get(f"{LAMETRIC_URL}/api/v2/users/me").mock(
            return_value=httpx.Response(200, json=fixture("lametric_user.json"))
        )
        mock.get(f"{LAMETRIC_URL}/api/v2/users/me/devices").mock(
            return_value=httpx.Response(200, json=fixture("lametric_devices.json"))
        )
        yield mock


def scrape(scraper: Scraper, timeout_header: str | None = None) -> str:
    body, _ = scraper.render(accept=None, accept_encoding=None, timeout_header=timeout_header)
    return body.decode()


def by_token(bad: Callable[[httpx.Request], httpx.Response]):
    def effect(request: httpx.Request) -> httpx.Response:
        if request.headers["Authorization"] == f"Bearer {SECRET_BAD}":
            return bad(request)
        return good_sync()

    return effect


@pytest.mark.parametrize("failure", list(FAILURES))
def test_one_failing_account_leaves_the_others_intact(
    failure: str,
    router: respx.Router,
    start_scraper: Callable[[str], Scraper],
    caplog: pytest.LogCaptureFixture,
) -> None:
    effect, reason = FAILURES[failure]
    router.get(SYNC).mock(side_effect=by_token(effect))
    text = config_text().replace("accounts:\n", "accounts:\n", 1)
    scraper = start_scraper(
        text.replace("lametric:", "collection: {max_response_bytes: 1000000}\nlametric:")
    )
    with caplog.at_level(logging.DEBUG):
        out = scrape(scraper)
    assert value(out, "parqex_up", account="bad") == 0
    assert value(out, "parqex_up", account="good") == 1
    assert value(out, "lametric_up", account="clock") == 1
    assert value(out, "parqex_door_open", **GOOD_DOOR) == 1
    assert (
        value(out, "lametric_device_state", account="clock", device_id="18", state="configured")
        == 1
    )
    assert not any(
        labels and dict(labels).get("account") == "bad"
        for (name, labels) in samples(out)
        if name.startswith("parqex_door")
    )
    errors = "device_cloud_exporter_upstream_errors_total"
    assert value(out, errors, source="parqex", account="bad", reason=reason) == 1
    assert value(out, errors, source="parqex", account="good", reason=reason) == 0
    failures = [r for r in caplog.records if r.getMessage() == "collection failed"]
    assert len(failures) == 1
    record = failures[0]
    assert (record.source, record.account, record.reason) == ("parqex", "bad", reason)
    assert record.levelno == logging.WARNING
    assert SECRET_BAD not in caplog.text and SECRET_BAD not in out


def test_failure_log_names_status_and_upstream_message(
    router: respx.Router, start_scraper: Callable[[str], Scraper], caplog: pytest.LogCaptureFixture
) -> None:
    router.get(SYNC).mock(side_effect=by_token(FAILURES["401"][0]))
    scraper = start_scraper(config_text())
    with caplog.at_level(logging.INFO):
        scrape(scraper)
        scrape(scraper)  # the same error again is not logged at warning level again
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].status == 401
    assert warnings[0].error.startswith(
        "HTTP 401 from GET /oauth/v1/endpoints/sync: Invalid Access Token (ParqEx says"
    )


def test_recovery_is_logged_and_counted_once(
    router: respx.Router, start_scraper: Callable[[str], Scraper], caplog: pytest.LogCaptureFixture
) -> None:
    route = router.get(SYNC)
    route.mock(side_effect=[httpx.Response(503), good_sync()])
    scraper = start_scraper(config_yaml(parqex=[HOME]))
    with caplog.at_level(logging.INFO):
        first, second = scrape(scraper), scrape(scraper)
    assert value(first, "parqex_up", account="home") == 0
    assert value(second, "parqex_up", account="home") == 1
    assert (
        value(
            second,
            "device_cloud_exporter_upstream_errors_total",
            source="parqex",
            account="home",
            reason="http_5xx",
        )
        == 1
    )
    assert [r.getMessage() for r in caplog.records if r.name == "exporter.engine"] == [
        "collection failed",
        "collection recovered",
    ]
    assert value(second, "parqex_last_success_timestamp_seconds", account="home") == pytest.approx(
        time.time(), abs=30
    )


def test_slow_account_times_out_inside_the_scrape_budget(
    router: respx.Router, start_scraper: Callable[[str], Scraper]
) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        if request.headers["Authorization"] == f"Bearer {SECRET_BAD}":
            await asyncio.sleep(8)
        return good_sync()

    router.get(SYNC).mock(side_effect=slow)
    scraper = start_scraper(config_text())
    started = time.monotonic()
    out = scrape(scraper, timeout_header="1.5")  # budget 1.0 s after the 0.5 s offset
    took = time.monotonic() - started
    assert took < 6, "the answer must not wait for the slow account"
    assert value(out, "device_cloud_exporter_scrape_timeout_seconds") == 1.0
    assert value(out, "parqex_up", account="bad") == 0
    assert value(out, "parqex_up", account="good") == 1
    assert (
        value(
            out,
            "device_cloud_exporter_upstream_errors_total",
            source="parqex",
            account="bad",
            reason="timeout",
        )
        == 1
    )


def test_concurrent_scrapes_share_one_upstream_request(
    router: respx.Router, start_scraper: Callable[[str], Scraper]
) -> None:
    async def slowish(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.5)
        return good_sync()

    route = router.get(SYNC).mock(side_effect=slowish)
    scraper = start_scraper(config_yaml(parqex=[HOME]))
    outputs: list[str] = []
    threads = [threading.Thread(target=lambda: outputs.append(scrape(scraper))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(outputs) == 6
    assert all(value(out, "parqex_up", account="home") == 1 for out in outputs)
    assert route.call_count == 1


def test_accounts_are_collected_concurrently(
    router: respx.Router, start_scraper: Callable[[str], Scraper]
) -> None:
    in_flight = 0
    peak = 0

    async def tracked(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.3)
        in_flight -= 1
        return good_sync()

    router.get(SYNC).mock(side_effect=tracked)
    names = [f"a{i}" for i in range(8)]
    scraper = start_scraper(config_yaml(parqex=[{"name": n, "token": f"t{n}"} for n in names]))
    out = scrape(scraper)
    assert all(value(out, "parqex_up", account=n) == 1 for n in names)
    assert peak == len(names)


def test_token_file_is_read_on_every_scrape(
    router: respx.Router, start_scraper: Callable[[str], Scraper], tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    token.chmod(0o600)
    route = router.get(SYNC).mock(return_value=good_sync())
    scraper = start_scraper(config_yaml(parqex=[{"name": "home", "token_file": token}]))
    scrape(scraper)
    token.write_text("  second  \n")
    scrape(scraper)
    assert [c.request.headers["Authorization"] for c in route.calls] == [
        "Bearer first",
        "Bearer second",
    ]
    token.unlink()
    out = scrape(scraper)
    assert value(out, "parqex_up", account="home") == 0
    assert (
        value(
            out,
            "device_cloud_exporter_upstream_errors_total",
            source="parqex",
            account="home",
            reason="token",
        )
        == 1
    )


def test_malformed_fields_are_counted_and_logged_once(
    router: respx.Router, start_scraper: Callable[[str], Scraper], caplog: pytest.LogCaptureFixture
) -> None:
    body = fixture("parqex_sync.json")
    body["devices"][0]["doors"][0]["state"] = 7
    body["devices"][1]["doors"][0]["state"] = "AJAR"
    body["devices"][1]["last_contact"] = "yesterday"
    router.get(SYNC).mock(return_value=httpx.Response(200, json=body))
    scraper = start_scraper(config_yaml(parqex=[HOME]))
    with caplog.at_level(logging.WARNING):
        scrape(scraper)
        out = scrape(scraper)
    parse = "device_cloud_exporter_parse_errors_total"
    assert value(out, parse, source="parqex", account="home", field="door.state") == 2
    assert value(out, parse, source="parqex", account="home", field="device.last_contact") == 2
    ajar = {
        "account": "home",
        "device_id": "35ff0e08ac8eb84ca097a894541ba049",
        "door_id": "a42308f43dbfaa8b1960a20ac4317b05",
    }
    assert value(out, "parqex_door_state", **ajar, state="AJAR") == 1
    assert value(out, "parqex_door_state", **ajar, state="OPEN") == 0
    assert value(out, "parqex_door_open", **ajar) is None
    assert (
        value(
            out,
            "parqex_door_info",
            **ajar,
            name="Last Door! ",
            entity_number="1",
            user_relationship="Owner",
        )
        == 1
    )
    messages = [
        (r.getMessage(), getattr(r, "field", getattr(r, "state", None))) for r in caplog.records
    ]
    assert sorted(messages) == sorted(
        [
            ("skipped a malformed field from the API", "door.state"),
            ("skipped a malformed field from the API", "device.last_contact"),
            ("the API sent an undocumented state; exported as its own state value", "AJAR"),
        ]
    )


def test_build_info_names_this_version(
    router: respx.Router, start_scraper: Callable[[str], Scraper]
) -> None:
    router.get(SYNC).mock(return_value=good_sync())
    out = scrape(start_scraper(config_text()))
    assert (
        value(
            out,
            "device_cloud_exporter_build_info",
            version=__version__,
            python_version=platform.python_version(),
        )
        == 1
    )


def test_upstream_gzip_answer_is_decoded(
    router: respx.Router, start_scraper: Callable[[str], Scraper]
) -> None:
    import json

    packed = gzip.compress(json.dumps(fixture("parqex_sync.json")).encode())
    router.get(SYNC).mock(
        return_value=httpx.Response(200, content=packed, headers={"Content-Encoding": "gzip"})
    )
    out = scrape(start_scraper(config_text()))
    assert value(out, "parqex_door_open", **GOOD_DOOR) == 1


def test_a_bug_in_one_account_does_not_fail_the_scrape(
    router: respx.Router,
    start_scraper: Callable[[str], Scraper],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from exporter.clients import parqex

    def crash(body: object, zone: object, loads: object) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(parqex, "decode_sync", crash)
    router.get(SYNC).mock(return_value=good_sync())
    with caplog.at_level(logging.ERROR):
        out = scrape(start_scraper(config_text()))
    assert value(out, "parqex_up", account="good") == 0
    assert value(out, "lametric_up", account="clock") == 1
    crashes = [r.getMessage() for r in caplog.records if r.name == "exporter.engine"]
    assert crashes == ["collection crashed; please report this"] * 2
    errors = "device_cloud_exporter_upstream_errors_total"  # counted, not only logged
    assert value(out, errors, source="parqex", account="good", reason="internal") == 1


def test_a_rejected_token_is_retried_once_when_the_token_file_was_rotated(
    router: respx.Router, start_scraper: Callable[[str], Scraper], tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("old")
    token.chmod(0o600)

    def rotate_then_reject(request: httpx.Request) -> httpx.Response:
        if request.headers["Authorization"] == "Bearer old":
            token.write_text("new")  # an outside job renews the token meanwhile
            return httpx.Response(401, json={"message": "Invalid Access Token"})
        return good_sync()

    route = router.get(SYNC).mock(side_effect=rotate_then_reject)
    scraper = start_scraper(config_yaml(parqex=[{"name": "home", "token_file": token}]))
    out = scrape(scraper)
    assert value(out, "parqex_up", account="home") == 1
    assert [c.request.headers["Authorization"] for c in route.calls] == ["Bearer old", "Bearer new"]
    # a static token is not retried: the same token would fail the same way
    route.reset()
    token.write_text("old")
    route.mock(return_value=httpx.Response(401, json={"message": "Invalid Access Token"}))
    assert value(scrape(scraper), "parqex_up", account="home") == 0
    assert len(route.calls) == 1


def test_a_fetch_that_fails_after_every_waiter_gave_up_leaves_no_asyncio_noise(
    router: respx.Router,
    start_scraper: Callable[[str], Scraper],
    caplog: pytest.LogCaptureFixture,
) -> None:
    import gc

    async def slow_failure(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.5)
        return httpx.Response(503)

    router.get(SYNC).mock(side_effect=slow_failure)
    scraper = start_scraper(config_yaml(parqex=[HOME]))
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        out = scrape(scraper, timeout_header="0.2")  # gives up before the 503 arrives
        assert value(out, "parqex_up", account="home") == 0
        time.sleep(0.8)  # the fetch fails with nobody waiting for it
        out = scrape(scraper)  # a new fetch replaces the finished one
        del out
        gc.collect()
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []


def test_one_slow_fetch_counts_one_timeout_however_many_waiters_gave_up(
    router: respx.Router, start_scraper: Callable[[str], Scraper]
) -> None:
    """Two scrapes give up on the same fetch (0.2 s budget), then the fetch itself times out:
    one fetch that never answered is one `timeout`, not one per waiter plus one for the fetch."""
    from concurrent.futures import ThreadPoolExecutor

    calls = 0

    async def first_never_answers(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(3)  # far past the fetch timeout: cancelled by it
        return good_sync()

    router.get(SYNC).mock(side_effect=first_never_answers)
    # fetch timeout 1 s rather than 0.5 s: room for the second scrape to join on a busy box
    scraper = start_scraper(config_yaml(parqex=[HOME], collection={"timeout_seconds": 1}))
    gate = threading.Barrier(2)

    def impatient() -> str:
        gate.wait(10)
        return scrape(scraper, timeout_header="0.7")  # budget 0.7 - 0.5 offset = 0.2 s

    with ThreadPoolExecutor(2) as pool:
        outputs = [f.result(10) for f in [pool.submit(impatient) for _ in range(2)]]
    assert [value(out, "parqex_up", account="home") for out in outputs] == [0, 0]
    assert calls == 1, "both scrapes must have waited for the same fetch"

    # Scrape without a short budget until a new fetch succeeds: that one can only start once
    # the slow fetch has ended (timed out), so by then every count for it has been made.
    deadline = time.monotonic() + 15
    while value(out := scrape(scraper), "parqex_up", account="home") != 1:
        assert time.monotonic() < deadline, "the slow fetch never ended"
    assert calls == 2
    errors = "device_cloud_exporter_upstream_errors_total"
    assert value(out, errors, source="parqex", account="home", reason="timeout") == 1


def test_a_malformed_field_is_logged_once_per_account(
    router: respx.Router, start_scraper: Callable[[str], Scraper], caplog: pytest.LogCaptureFixture
) -> None:
    """The same bad field in two accounts is two problems to look at: one warning each."""
    body = fixture("parqex_sync.json")
    body["devices"][0]["doors"][0]["state"] = 7
    body["devices"][1]["doors"][0]["state"] = "AJAR"
    router.get(SYNC).mock(return_value=httpx.Response(200, json=body))
    scraper = start_scraper(
        config_yaml(parqex=[{"name": "north", "token": "t1"}, {"name": "south", "token": "t2"}])
    )
    with caplog.at_level(logging.WARNING, logger="exporter"):
        scrape(scraper)
        out = scrape(scraper)  # the same problems again: no new warning
    parse = "device_cloud_exporter_parse_errors_total"
    for account in ("north", "south"):
        assert value(out, parse, source="parqex", account=account, field="door.state") == 2
    logged = sorted(
        (r.account, r.getMessage(), getattr(r, "field", getattr(r, "state", None)))
        for r in caplog.records
    )
    assert logged == sorted(
        (account, message, what)
        for account in ("north", "south")
        for message, what in [
            ("skipped a malformed field from the API", "door.state"),
            ("the API sent an undocumented state; exported as its own state value", "AJAR"),
        ]
    )


def test_without_a_cache_no_snapshot_outlives_its_scrape(
    router: respx.Router, start_scraper: Callable[[str], Scraper], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With cache_seconds 0 (the default) nothing reads a snapshot again: a big fleet's parsed
    devices must not stay in memory between scrapes."""
    import sys

    from exporter.clients import parqex as parqex_client

    made: list[object] = []
    decode = parqex_client.decode_sync

    def recording_decode(*args: Any, **kwargs: Any) -> Any:
        made.append(decode(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(parqex_client, "decode_sync", recording_decode)
    router.get(SYNC).mock(return_value=good_sync())
    scraper = start_scraper(config_text())
    assert value(scrape(scraper), "parqex_door_open", **GOOD_DOOR) == 1
    assert len(made) == 2  # the accounts "good" and "bad"
    # each held by `made`, by the loop variable and by getrefcount's argument: nothing else
    assert [sys.getrefcount(sync) for sync in made] == [3, 3]
