"""Issue 8 §1: whatever a cloud puts in a string, and whatever bug of ours builds one account's
families, the scrape answers with a valid exposition and costs at most that one account."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import respx
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)

from exporter.collectors import parqex as parqex_collector
from exporter.models.fields import Problem, Reader
from exporter.scrape import Scraper
from tests.support import (
    PARQEX_URL,
    fixture,
    mock_clouds,
    samples,
    two_cloud_config,
    value,
)

SYNC = f"{PARQEX_URL}/oauth/v1/endpoints/sync"
CONFIG = two_cloud_config(parqex=["bad", "good"], lametric=["home"])

# What clouds have been seen to send, or could: each must leave a valid exposition.
HOSTILE = {
    "lone_high_surrogate": "Kitchen \ud83d",
    "lone_low_surrogate": "\udc00 Garage",
    "nul": "Gar\x00age",
    "control_characters": "a\x01b\x1bc\x7fd\x85e\r",
    "quote_backslash_newline": 'a "quoted"\\ name\nsecond line',
    "megabyte": "x" * (1024 * 1024),
    "emoji_with_joiner": "Family \U0001f468\u200d\U0001f469\u200d\U0001f467",
}


def sync_with(**door: Any) -> dict[str, Any]:
    body = copy.deepcopy(fixture("parqex_sync.json"))
    body["devices"][0]["doors"][0].update(door)
    return body


@pytest.fixture
def router() -> Iterator[respx.Router]:
    with respx.mock(assert_all_called=False) as mock:
        mock_clouds(mock)  # serve_bad_body replaces the ParqEx answer
        yield mock


def serve_bad_body(router: respx.Router, bad: bytes) -> None:
    """Account `bad` gets `bad` as its sync body; account `good` gets the document's example."""
    good = json.dumps(fixture("parqex_sync.json")).encode()

    def answer(request: httpx.Request) -> httpx.Response:
        token = request.headers["Authorization"]
        content = bad if "parqex-bad-token" in token else good
        return httpx.Response(200, content=content, headers={"Content-Type": "application/json"})

    router.get(SYNC).mock(side_effect=answer)


def parse_errors(text: str, field: str) -> float | None:
    """Account `bad`'s count of skipped `field`s."""
    name = "device_cloud_exporter_parse_errors_total"
    return value(text, name, source="parqex", account="bad", field=field)


def scrape(scraper: Scraper, accept: str | None = None) -> str:
    body, _ = scraper.render(accept=accept, accept_encoding=None, timeout_header=None)
    return body.decode("utf-8")  # strict: the answer must be valid UTF-8


@pytest.mark.parametrize("name", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_door_name_leaves_a_valid_exposition_and_every_account_up(
    router: respx.Router, start_scraper: Callable[[str], Scraper], name: str
) -> None:
    # json.dumps keeps lone surrogates as \ud83d escapes, as a JavaScript client writes them
    serve_bad_body(router, json.dumps(sync_with(name=name)).encode())
    scraper = start_scraper(CONFIG)
    text = scrape(scraper)
    for account in ("bad", "good"):
        assert value(text, "parqex_up", account=account) == 1
    assert value(text, "lametric_up", account="home") == 1
    openmetrics = scrape(scraper, "application/openmetrics-text; version=1.0.0")
    names = {family.name for family in openmetrics_families(openmetrics)}  # parses whole
    assert {"parqex_up", "parqex_door_info", "lametric_up"} <= names


def test_an_unencodable_name_becomes_a_replacement_character_and_is_counted(
    router: respx.Router, start_scraper: Callable[[str], Scraper]
) -> None:
    serve_bad_body(router, json.dumps(sync_with(name="Kitchen \ud83d")).encode())
    text = scrape(start_scraper(CONFIG))
    names = {
        dict(labels)["name"]
        for (metric, labels), _ in samples(text).items()
        if metric == "parqex_door_info" and dict(labels)["account"] == "bad"
    }
    assert "Kitchen \ufffd" in names
    assert parse_errors(text, "door.name") == 1


def test_a_megabyte_name_is_one_skipped_field_not_a_megabyte_label(
    router: respx.Router, start_scraper: Callable[[str], Scraper]
) -> None:
    serve_bad_body(router, json.dumps(sync_with(name="x" * (1024 * 1024))).encode())
    text = scrape(start_scraper(CONFIG))
    assert len(text) < 64 * 1024
    assert value(text, "parqex_up", account="bad") == 1
    assert parse_errors(text, "door.name") == 1


def test_invalid_json_escapes_fail_that_account_only_as_decode(
    router: respx.Router, start_scraper: Callable[[str], Scraper]
) -> None:
    body = json.dumps(sync_with(name="PLACEHOLDER")).replace("PLACEHOLDER", r"bad \q \x41 \u12")
    serve_bad_body(router, body.encode())
    text = scrape(start_scraper(CONFIG))
    assert value(text, "parqex_up", account="bad") == 0
    assert value(text, "parqex_up", account="good") == 1
    errors = "device_cloud_exporter_upstream_errors_total"
    assert value(text, errors, source="parqex", account="bad", reason="decode") == 1


def test_a_5000_digit_integer_is_one_skipped_field_not_a_failed_account(
    router: respx.Router, start_scraper: Callable[[str], Scraper]
) -> None:
    body = json.dumps(sync_with(bluetooth_sensor=True, bluetooth_sensor_battery_level=1))
    body = body.replace(
        '"bluetooth_sensor_battery_level": 1', '"bluetooth_sensor_battery_level": ' + "9" * 5000
    )
    serve_bad_body(router, body.encode())
    text = scrape(start_scraper(CONFIG))
    assert value(text, "parqex_up", account="bad") == 1
    field = "door.bluetooth_sensor_battery_level"
    assert parse_errors(text, field) == 1
    door = {
        "device_id": "9d9e5e0e093a06d5f16e1116d108d0c7",
        "door_id": "70fc7ebd63d841d9a9f06ff815be1e7c",
    }
    assert value(text, "parqex_door_open", account="bad", **door) == 1  # the rest of the door stays


def test_a_bug_of_ours_building_one_accounts_families_costs_that_account_only(
    router: respx.Router,
    start_scraper: Callable[[str], Scraper],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    serve_bad_body(router, json.dumps(sync_with(name="Boom")).encode())
    original = parqex_collector.add_values

    def add_values(family: Any, labels: list[str], values: list[Any]) -> None:
        original(family, labels, values)  # some samples are in before the crash
        if family.name == "parqex_door_active" and any('account="bad"' in s for s in labels):
            raise RuntimeError("a bug of ours")

    monkeypatch.setattr(parqex_collector, "add_values", add_values)
    scraper = start_scraper(CONFIG)
    text = scrape(scraper)
    assert value(text, "parqex_up", account="bad") == 0
    assert value(text, "parqex_up", account="good") == 1
    assert value(text, "lametric_up", account="home") == 1
    bad_series = [labels for (_, labels) in samples(text) if ("account", "bad") in labels]
    metric_names = {m for (m, labels) in samples(text) if ("account", "bad") in labels}
    # nothing half-built of the crashed account is left: only its health and counters
    assert not {m for m in metric_names if m.startswith("parqex_door")}, metric_names
    assert bad_series
    errors = "device_cloud_exporter_upstream_errors_total"
    assert value(text, errors, source="parqex", account="bad", reason="internal") == 1
    assert any(r.levelname == "ERROR" and "please report" in r.getMessage() for r in caplog.records)
    # and again on the next scrape: counted once per crash
    text = scrape(scraper)
    assert value(text, errors, source="parqex", account="bad", reason="internal") == 2


def test_reader_replaces_lone_surrogates_and_control_characters() -> None:
    problems: list[Problem] = []
    reader = Reader(
        {"a": "x\ud83dy\x00z\tq\n", "b": "fine", "c": "y" * (1024 * 1024)}, "o", problems
    )
    assert reader.text("a") == "x\ufffdy\ufffdz\tq\n"
    assert reader.text("b") == "fine"
    assert reader.text("c") is None
    assert problems == [Problem("o.a", "bad_characters"), Problem("o.c", "too_long")]
    assert reader.ident("a") == "x\ufffdy\ufffdz\tq"


@pytest.mark.parametrize("name", ["Kitchen \\ud83d", "tab\\there", "nul\\0"])
def test_an_account_name_no_label_can_carry_is_refused_at_load_time(name: str) -> None:
    from exporter.config import ConfigError, parse

    text = f'parqex:\n  accounts:\n    - {{name: "{name}", token: parqex-token-1}}\n'
    with pytest.raises(ConfigError) as caught:
        parse(text, "config.yaml")
    (line,) = caught.value.problems
    assert line.startswith("config.yaml: parqex.accounts[0].name:"), line
    assert "fix:" in line
