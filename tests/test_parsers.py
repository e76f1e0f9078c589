"""The tolerant parsers of both clouds, as pure functions: exact values, one bad field at a time."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import pickle
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.models.fields import Problem, epoch_seconds
from exporter.models.lametric import (
    KNOWN_DEVICE_STATES,
    Parsed,
    User,
    parse_devices,
    parse_user,
)
from exporter.models.lametric import Device as LDevice
from exporter.models.parqex import KNOWN_DOOR_STATES, Device, Door, Sync, parse_sync
from exporter.secret import Secret
from exporter.sources import LametricSnapshot, undocumented_states
from tests.support import fixture

BERLIN = ZoneInfo("Europe/Berlin")
REASONS = {
    "missing",
    "null",
    "wrong_type",
    "out_of_range",
    "bad_format",
    "duplicate",
    "too_long",
    "bad_characters",
}
MISSING = object()  # "delete the key" in a parametrized case

API_KEY = "8adaa0c98278dbb1ecb218d1c3e11f9312317ba474ab3361f80c0bd4f13a6749"


def load(name: str) -> Any:
    return fixture(name)


# --------------------------------------------------------------------------------------------
# Expected values, written out by hand from the vendors' documents
# --------------------------------------------------------------------------------------------

KITTY = Door(
    id="70fc7ebd63d841d9a9f06ff815be1e7c",
    name="Kitty",
    entity_number=1,
    user_relationship="Has Access",
    state="OPEN",
    active=True,
    auto_close_enabled=False,
    auto_close_delay_seconds=0.0,
    last_toggled=1608316345.0,  # 2020-12-18 18:32:25 UTC
    bluetooth_sensor=False,
    battery_level=0.0,
)
LAST_DOOR = Door(
    id="a42308f43dbfaa8b1960a20ac4317b05",
    name="Last Door! ",  # kept as sent, trailing space included
    entity_number=1,
    user_relationship="Owner",
    state="OPEN",
    active=True,
    auto_close_enabled=True,
    auto_close_delay_seconds=3600.0,
    last_toggled=1597977217.0,  # 2020-08-21 02:33:37 UTC
    bluetooth_sensor=True,
    battery_level=98.0,
)
PRODUCTION = Device(
    id="9d9e5e0e093a06d5f16e1116d108d0c7",
    blackbox_code="20000c2a6908848d",
    software_version="0",
    owner="ParqEx Production",
    active=True,
    registered=True,
    bluetooth_onboard=False,
    last_contact=1608317245.0,  # 2020-12-18 18:47:25 UTC
    door_open_alert_threshold_seconds=900.0,
    entities_controlled=3.0,
    doors=(KITTY,),
)
TEST_DEVICE = Device(
    id="35ff0e08ac8eb84ca097a894541ba049",
    blackbox_code="30000c2a691dd625",
    software_version="0",
    owner="ParqEx Test",
    active=True,
    registered=True,
    bluetooth_onboard=False,
    last_contact=1597977217.0,
    door_open_alert_threshold_seconds=900.0,
    entities_controlled=3.0,
    doors=(LAST_DOOR,),
)

JOHN = User(
    id="1", name="John Smith", apps_count=1.0, private_device_count=5.0, private_apps_count=3.0
)
MY_LAMETRIC = LDevice(
    id="18",
    name="My LaMetric",
    state="configured",
    serial_number="SA140100002200W00BS9",
    mac="58:63:56:10:D6:30",
    wifi_ssid="homewifi",
    ipv4_internal="192.168.0.128",
    created_at=1425647755.0,  # 2015-03-06T15:15:55+02:00
    updated_at=1465918033.0,  # 2016-06-14T18:27:13+03:00
)


def _all_fields(obj: Any) -> dict[str, Any]:
    """Every field, those dataclass equality ignores included."""
    if isinstance(obj, msgspec.Struct):
        return msgspec.structs.asdict(obj)
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def replace(obj: Any, **changes: Any) -> Any:
    """A copy with `changes`: the ParqEx models are msgspec structs, the others dataclasses."""
    if isinstance(obj, msgspec.Struct):
        return msgspec.structs.replace(obj, **changes)
    return dataclasses.replace(obj, **changes)


# --------------------------------------------------------------------------------------------
# Fixtures parse to exactly the expected values
# --------------------------------------------------------------------------------------------


def test_parqex_fixture_utc() -> None:
    sync = parse_sync(load("parqex_sync.json"), UTC)
    assert sync == Sync(devices=(PRODUCTION, TEST_DEVICE), problems=())
    assert sync.devices[0].last_contact == 1608317245.0
    assert isinstance(sync.devices[0].doors[0].entity_number, int)


def test_parqex_fixture_in_berlin() -> None:
    sync = parse_sync(load("parqex_sync.json"), BERLIN)
    # December is CET (+01:00), August is CEST (+02:00)
    assert sync.devices[0].last_contact == 1608313645.0
    assert sync.devices[0].doors[0].last_toggled == 1608316345.0 - 3600
    assert sync.devices[1].last_contact == 1597977217.0 - 7200
    assert sync.devices[1].doors[0].last_toggled == 1597977217.0 - 7200
    assert sync.devices == (
        replace(
            PRODUCTION,
            last_contact=1608313645.0,
            doors=(replace(KITTY, last_toggled=1608312745.0),),
        ),
        replace(
            TEST_DEVICE,
            last_contact=1597970017.0,
            doors=(replace(LAST_DOOR, last_toggled=1597970017.0),),
        ),
    )
    assert sync.problems == ()


def test_parqex_timestamp_with_its_own_offset_ignores_the_zone() -> None:
    body = load("parqex_sync.json")
    body["devices"][0]["last_contact"] = "2020-12-18T18:47:25+00:00"
    assert parse_sync(body, BERLIN).devices[0].last_contact == 1608317245.0


def test_lametric_user_fixture() -> None:
    parsed = parse_user(load("lametric_user.json"))
    assert parsed == Parsed(JOHN, ())
    assert not hasattr(parsed.value, "email")
    assert "user@mail.com" not in repr(parsed)


def test_lametric_devices_fixture() -> None:
    parsed = parse_devices(load("lametric_devices.json"))
    assert parsed == Parsed((MY_LAMETRIC,), ())
    assert _all_fields(parsed.value[0]) == _all_fields(MY_LAMETRIC)


def test_lametric_device_fixture() -> None:
    parsed = parse_devices([load("lametric_device.json")])
    assert parsed == Parsed((MY_LAMETRIC,), ())
    assert _all_fields(parsed.value[0]) == _all_fields(MY_LAMETRIC)
    assert parsed.value[0].created_at == 1425647755.0


def test_lametric_zone_less_timestamp_is_utc() -> None:
    body = load("lametric_device.json")
    body["created_at"] = "2015-03-06T13:15:55"
    assert parse_devices([body]).value[0].created_at == 1425647755.0


# --------------------------------------------------------------------------------------------
# One bad field at a time
# --------------------------------------------------------------------------------------------

COMMON = [("missing", MISSING, "missing"), ("null", None, "null")]
BAD = {
    "str": [
        *COMMON,
        ("int", 5, "wrong_type"),
        ("float", 1.5, "wrong_type"),
        ("bool", True, "wrong_type"),
        ("list", ["x"], "wrong_type"),
        ("object", {"v": "x"}, "wrong_type"),
    ],
    "ident": [
        *COMMON,
        ("bool", True, "wrong_type"),
        ("float", 1.5, "wrong_type"),
        ("list", ["1"], "wrong_type"),
        ("object", {"id": "1"}, "wrong_type"),
        ("empty", "", "bad_format"),
        ("blank", "   ", "bad_format"),
    ],
    "bool": [
        *COMMON,
        ("string", "true", "wrong_type"),
        ("int-1", 1, "wrong_type"),
        ("int-0", 0, "wrong_type"),
        ("list", [True], "wrong_type"),
        ("object", {}, "wrong_type"),
    ],
    "number": [
        *COMMON,
        ("string", "5", "wrong_type"),
        ("empty-string", "", "wrong_type"),
        ("true", True, "wrong_type"),
        ("false", False, "wrong_type"),
        ("list", [5], "wrong_type"),
        ("object", {"value": 5}, "wrong_type"),
        ("nan", math.nan, "wrong_type"),
        ("negative", -1, "out_of_range"),
        ("negative-float", -0.5, "out_of_range"),
    ],
    "timestamp": [
        *COMMON,
        ("int", 1608317245, "wrong_type"),
        ("bool", True, "wrong_type"),
        ("list", ["2020-12-18 18:47:25"], "wrong_type"),
        ("object", {}, "wrong_type"),
        ("yesterday", "yesterday", "bad_format"),
        ("empty", "", "bad_format"),
        ("bad-date", "2020-13-45 25:61:00", "bad_format"),
    ],
    "objects": [
        *COMMON,
        ("object", {"id": "x"}, "wrong_type"),
        ("string", "doors", "wrong_type"),
        ("int", 1, "wrong_type"),
        ("bool", True, "wrong_type"),
    ],
    "state": [
        *COMMON,
        ("int", 1, "wrong_type"),
        ("bool", False, "wrong_type"),
        ("list", ["OPEN"], "wrong_type"),
        ("object", {"state": "OPEN"}, "wrong_type"),
        ("empty", "", "bad_format"),
        ("blank", "  ", "bad_format"),
    ],
}
BAD["percent"] = [
    *BAD["number"],
    ("over-100", 150, "out_of_range"),
    ("just-over-100", 100.5, "out_of_range"),
]
# LaMetric's state: an empty string becomes None without a problem (see the models), so it is
# not among the cases that must record one.
BAD["lstate"] = [case for case in BAD["state"] if case[2] != "bad_format"]


def _cases(table: list[tuple[str, str, str]]) -> list[Any]:
    """(json key, attribute, kind) rows -> one pytest.param per bad value of that kind."""
    return [
        pytest.param(key, attr, value, reason, id=f"{key}-{label}")
        for key, attr, kind in table
        for label, value, reason in BAD[kind]
    ]


def _set(obj: dict[str, Any], key: str, value: Any) -> None:
    if value is MISSING:
        del obj[key]
    else:
        obj[key] = value


PARQEX_DEVICE_FIELDS = [
    ("blackbox_code", "blackbox_code", "str"),
    ("software_version", "software_version", "ident"),
    ("active", "active", "bool"),
    ("registered", "registered", "bool"),
    ("bluetooth_onboard", "bluetooth_onboard", "bool"),
    ("last_contact", "last_contact", "timestamp"),
    ("time_before_door_open_alert", "door_open_alert_threshold_seconds", "number"),
    ("number_of_entities_controlled", "entities_controlled", "number"),
    ("doors", "doors", "objects"),
]
PARQEX_DOOR_FIELDS = [
    ("name", "name", "str"),
    ("entity_number", "entity_number", "number"),
    ("user_relationship", "user_relationship", "str"),
    ("state", "state", "state"),
    ("active", "active", "bool"),
    ("door_auto_close_enabled", "auto_close_enabled", "bool"),
    ("door_auto_close_delay", "auto_close_delay_seconds", "number"),
    ("last_toggled", "last_toggled", "timestamp"),
    ("bluetooth_sensor", "bluetooth_sensor", "bool"),
    ("bluetooth_sensor_battery_level", "battery_level", "percent"),
]
SECOND_KITTY_ID = "0000000000000000000000000000beef"
SECOND_KITTY = replace(KITTY, id=SECOND_KITTY_ID, name="Second")


def _parqex_body() -> dict[str, Any]:
    """The fixture, with a second door on the first device so a door has a sibling to keep."""
    body = load("parqex_sync.json")
    sibling = copy.deepcopy(body["devices"][0]["doors"][0])
    sibling.update(id=SECOND_KITTY_ID, name="Second")
    body["devices"][0]["doors"].append(sibling)
    return body


PRODUCTION_2 = replace(PRODUCTION, doors=(KITTY, SECOND_KITTY))


def test_parqex_body_baseline() -> None:
    assert parse_sync(_parqex_body(), UTC) == Sync((PRODUCTION_2, TEST_DEVICE), ())


@pytest.mark.parametrize(("key", "attr", "value", "reason"), _cases(PARQEX_DEVICE_FIELDS))
def test_parqex_bad_device_field(key: str, attr: str, value: Any, reason: str) -> None:
    body = _parqex_body()
    _set(body["devices"][0], key, value)
    sync = parse_sync(body, UTC)
    assert sync.problems == (Problem(f"device.{key}", reason),)
    empty = () if attr == "doors" else None
    assert sync.devices == (replace(PRODUCTION_2, **{attr: empty}), TEST_DEVICE)


@pytest.mark.parametrize(("key", "attr", "value", "reason"), _cases(PARQEX_DOOR_FIELDS))
def test_parqex_bad_door_field(key: str, attr: str, value: Any, reason: str) -> None:
    body = _parqex_body()
    _set(body["devices"][0]["doors"][0], key, value)
    sync = parse_sync(body, UTC)
    assert sync.problems == (Problem(f"door.{key}", reason),)
    door = replace(KITTY, **{attr: None})
    assert sync.devices == (replace(PRODUCTION, doors=(door, SECOND_KITTY)), TEST_DEVICE)


@pytest.mark.parametrize(
    ("key", "attr", "value", "expected"),
    [
        ("software_version", "software_version", 3, "3"),
        ("software_version", "software_version", " 1.2 ", "1.2"),
        ("time_before_door_open_alert", "door_open_alert_threshold_seconds", 0, 0.0),
        ("time_before_door_open_alert", "door_open_alert_threshold_seconds", 12.5, 12.5),
        ("number_of_entities_controlled", "entities_controlled", 0, 0.0),
        ("last_contact", "last_contact", "2020-12-18T18:47:25", 1608317245.0),
        ("last_contact", "last_contact", "2020-12-18T18:47:25Z", 1608317245.0),
        ("last_contact", "last_contact", "2020-12-18 19:47:25+01:00", 1608317245.0),
    ],
)
def test_parqex_valid_device_variants(key: str, attr: str, value: Any, expected: Any) -> None:
    body = _parqex_body()
    body["devices"][0][key] = value
    sync = parse_sync(body, UTC)
    assert sync.problems == ()
    assert sync.devices == (replace(PRODUCTION_2, **{attr: expected}), TEST_DEVICE)


@pytest.mark.parametrize(
    ("key", "attr", "value", "expected"),
    [
        ("bluetooth_sensor_battery_level", "battery_level", 100, 100.0),
        ("bluetooth_sensor_battery_level", "battery_level", 0, 0.0),
        ("bluetooth_sensor_battery_level", "battery_level", 55.5, 55.5),
        ("door_auto_close_delay", "auto_close_delay_seconds", 0, 0.0),
        ("entity_number", "entity_number", 7, 7),
        ("state", "state", "open", "OPEN"),
        ("state", "state", " Closed ", "CLOSED"),
        ("state", "state", "AJAR", "AJAR"),
        ("name", "name", "", ""),
    ],
)
def test_parqex_valid_door_variants(key: str, attr: str, value: Any, expected: Any) -> None:
    body = _parqex_body()
    body["devices"][0]["doors"][0][key] = value
    sync = parse_sync(body, UTC)
    assert sync.problems == ()
    door = replace(KITTY, **{attr: expected})
    assert sync.devices == (replace(PRODUCTION, doors=(door, SECOND_KITTY)), TEST_DEVICE)


@pytest.mark.parametrize(
    ("first", "last", "owner"),
    [
        (MISSING, MISSING, None),
        (None, "Production", "Production"),
        ("ParqEx", 5, "ParqEx"),
        ("  ", "", None),
        (["x"], {"y": 1}, None),
    ],
)
def test_parqex_owner_is_built_from_what_is_usable(first: Any, last: Any, owner: Any) -> None:
    body = _parqex_body()
    _set(body["devices"][0], "owner_first_name", first)
    _set(body["devices"][0], "owner_last_name", last)
    sync = parse_sync(body, UTC)
    assert sync.devices == (replace(PRODUCTION_2, owner=owner), TEST_DEVICE)


def test_parqex_deprecated_and_unknown_fields_are_ignored() -> None:
    body = _parqex_body()
    door = body["devices"][0]["doors"][0]
    door.update(image=None, light="?", sensor=[], brand_new_field={"x": 1})
    body["devices"][0]["bluetooth_mac_address"] = None
    assert parse_sync(body, UTC) == Sync((PRODUCTION_2, TEST_DEVICE), ())


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (MISSING, "missing"),
        (None, "null"),
        ("", "bad_format"),
        ("  ", "bad_format"),
        (True, "wrong_type"),
        (1.5, "wrong_type"),
        ([], "wrong_type"),
        ({}, "wrong_type"),
    ],
)
def test_parqex_device_without_id_is_dropped_and_counted(value: Any, reason: str) -> None:
    body = _parqex_body()
    _set(body["devices"][0], "id", value)
    sync = parse_sync(body, UTC)
    assert sync.devices == (TEST_DEVICE,)
    assert sync.problems == (Problem("device.id", reason),)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (MISSING, "missing"),
        (None, "null"),
        ("", "bad_format"),
        (False, "wrong_type"),
        ([], "wrong_type"),
    ],
)
def test_parqex_door_without_id_is_dropped_and_counted(value: Any, reason: str) -> None:
    body = _parqex_body()
    _set(body["devices"][0]["doors"][0], "id", value)
    sync = parse_sync(body, UTC)
    assert sync.devices == (replace(PRODUCTION, doors=(SECOND_KITTY,)), TEST_DEVICE)
    assert sync.problems == (Problem("door.id", reason),)


def test_parqex_integer_ids_are_labels() -> None:
    body = _parqex_body()
    body["devices"][0]["id"] = 42
    body["devices"][0]["doors"][0]["id"] = 7
    sync = parse_sync(body, UTC)
    assert sync.devices[0].id == "42"
    assert sync.devices[0].doors[0].id == "7"
    assert sync.problems == ()


def test_parqex_non_object_doors_are_skipped_and_counted() -> None:
    body = _parqex_body()
    body["devices"][0]["doors"][1:1] = [None, "door", 3, ["x"]]
    sync = parse_sync(body, UTC)
    assert sync.devices == (PRODUCTION_2, TEST_DEVICE)
    assert sync.problems == (Problem("device.doors", "wrong_type"),)


def test_parqex_several_problems_are_all_recorded() -> None:
    body = _parqex_body()
    body["devices"][0]["active"] = "yes"
    body["devices"][0]["doors"][1]["bluetooth_sensor_battery_level"] = 150
    del body["devices"][1]["doors"][0]["state"]
    sync = parse_sync(body, UTC)
    assert sync.devices == (
        replace(
            PRODUCTION_2, active=None, doors=(KITTY, replace(SECOND_KITTY, battery_level=None))
        ),
        replace(TEST_DEVICE, doors=(replace(LAST_DOOR, state=None),)),
    )
    assert sorted(sync.problems, key=repr) == sorted(
        [
            Problem("device.active", "wrong_type"),
            Problem("door.bluetooth_sensor_battery_level", "out_of_range"),
            Problem("door.state", "missing"),
        ],
        key=repr,
    )


# --------------------------------------------------------------------------------------------
# Top-level shapes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [[], [{"devices": []}], "devices", "", None, 0, 3.5, True])
def test_parqex_wrong_top_level_shape(body: Any) -> None:
    assert parse_sync(body, UTC) == Sync((), (Problem("sync", "wrong_type"),))


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({}, Problem("sync.devices", "missing")),
        ({"devices": None}, Problem("sync.devices", "null")),
        ({"devices": {}}, Problem("sync.devices", "wrong_type")),
        ({"devices": "none"}, Problem("sync.devices", "wrong_type")),
        ({"devices": [1, None, "x"]}, Problem("sync.devices", "wrong_type")),
    ],
)
def test_parqex_devices_missing_or_wrong(body: Any, problem: Problem) -> None:
    assert parse_sync(body, UTC) == Sync((), (problem,))


def test_parqex_empty_devices_is_fine() -> None:
    assert parse_sync({"devices": []}, UTC) == Sync((), ())


def test_parqex_non_object_devices_are_skipped_and_the_rest_kept() -> None:
    body = _parqex_body()
    body["devices"].insert(1, ["not", "a", "device"])
    sync = parse_sync(body, UTC)
    assert sync.devices == (PRODUCTION_2, TEST_DEVICE)
    assert sync.problems == (Problem("sync.devices", "wrong_type"),)


@pytest.mark.parametrize("body", [{}, [], "user", None, 1, True])
def test_lametric_user_wrong_top_level_shape(body: Any) -> None:
    if isinstance(body, dict):
        parsed = parse_user(body)  # an object, but empty: a user of nothing
        assert parsed.value == User(None, None, None, None, None)
        assert {p.reason for p in parsed.problems} == {"missing"}
    else:
        assert parse_user(body) == Parsed(None, (Problem("user", "wrong_type"),))


@pytest.mark.parametrize("body", [{}, {"id": 18}, "devices", None, 0, 1.5, False])
def test_lametric_devices_wrong_top_level_shape(body: Any) -> None:
    assert parse_devices(body) == Parsed((), (Problem("devices", "wrong_type"),))


def test_lametric_devices_empty_list() -> None:
    assert parse_devices([]) == Parsed((), ())


def test_lametric_devices_non_objects_skipped_and_counted_once() -> None:
    second = {**load("lametric_device.json"), "id": 19, "name": "Second"}
    parsed = parse_devices([None, load("lametric_device.json"), "x", 5, [], second])
    assert parsed.value == (MY_LAMETRIC, replace(MY_LAMETRIC, id="19", name="Second"))
    assert parsed.problems == (Problem("devices", "wrong_type"),)


# --------------------------------------------------------------------------------------------
# LaMetric, one bad field at a time
# --------------------------------------------------------------------------------------------

LAMETRIC_USER_FIELDS = [
    ("id", "id", "ident"),  # a user without an id is still a user
    ("name", "name", "str"),
    ("apps_count", "apps_count", "number"),
    ("private_device_count", "private_device_count", "number"),
    ("private_apps_count", "private_apps_count", "number"),
]
LAMETRIC_DEVICE_FIELDS = [
    ("name", "name", "str"),
    ("state", "state", "lstate"),
    ("serial_number", "serial_number", "str"),
    ("mac", "mac", "str"),
    ("wifi_ssid", "wifi_ssid", "str"),
    ("ipv4_internal", "ipv4_internal", "str"),
    ("created_at", "created_at", "timestamp"),
    ("updated_at", "updated_at", "timestamp"),
]
OTHER_LAMETRIC = replace(MY_LAMETRIC, id="19", name="Kitchen")


def _lametric_devices_body() -> list[dict[str, Any]]:
    first = load("lametric_device.json")
    return [first, {**first, "id": 19, "name": "Kitchen", "api_key": "other-key"}]


@pytest.mark.parametrize(("key", "attr", "value", "reason"), _cases(LAMETRIC_USER_FIELDS))
def test_lametric_bad_user_field(key: str, attr: str, value: Any, reason: str) -> None:
    body = load("lametric_user.json")
    _set(body, key, value)
    parsed = parse_user(body)
    assert parsed == Parsed(replace(JOHN, **{attr: None}), (Problem(f"user.{key}", reason),))


@pytest.mark.parametrize(("key", "attr", "value", "reason"), _cases(LAMETRIC_DEVICE_FIELDS))
def test_lametric_bad_device_field_in_list(key: str, attr: str, value: Any, reason: str) -> None:
    body = _lametric_devices_body()
    _set(body[0], key, value)
    parsed = parse_devices(body)
    assert parsed.problems == (Problem(f"device.{key}", reason),)
    assert parsed.value == (replace(MY_LAMETRIC, **{attr: None}), OTHER_LAMETRIC)


@pytest.mark.parametrize(("key", "attr", "value", "reason"), _cases(LAMETRIC_DEVICE_FIELDS))
def test_lametric_bad_field_single_device(key: str, attr: str, value: Any, reason: str) -> None:
    body = load("lametric_device.json")
    _set(body, key, value)
    parsed = parse_devices([body])
    assert parsed == Parsed(
        (replace(MY_LAMETRIC, **{attr: None}),), (Problem(f"device.{key}", reason),)
    )
    assert _all_fields(parsed.value[0]) == {**_all_fields(MY_LAMETRIC), attr: None}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (MISSING, "missing"),
        (None, "null"),
        ("", "bad_format"),
        (True, "wrong_type"),
        (18.0, "wrong_type"),
        ([18], "wrong_type"),
        ({"id": 18}, "wrong_type"),
    ],
)
def test_lametric_device_without_id_is_dropped_and_counted(value: Any, reason: str) -> None:
    body = _lametric_devices_body()
    _set(body[0], "id", value)
    assert parse_devices(body) == Parsed((OTHER_LAMETRIC,), (Problem("device.id", reason),))
    single = load("lametric_device.json")
    _set(single, "id", value)
    assert parse_devices([single]) == Parsed((), (Problem("device.id", reason),))


def test_lametric_string_id_and_user_id() -> None:
    assert parse_devices([{**load("lametric_device.json"), "id": " 18 "}]).value == (MY_LAMETRIC,)
    assert parse_user({**load("lametric_user.json"), "id": "1"}).value == JOHN


def test_lametric_user_email_is_not_kept_even_when_odd() -> None:
    body = {**load("lametric_user.json"), "email": ["x"]}
    assert parse_user(body) == Parsed(JOHN, ())


# --------------------------------------------------------------------------------------------
# Undocumented states
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "kept", "undocumented"),
    [
        ("OPEN", "OPEN", set()),
        ("open", "OPEN", set()),
        ("Closed", "CLOSED", set()),
        ("AJAR", "AJAR", {"AJAR"}),
        (" ajar ", "AJAR", {"AJAR"}),
    ],
)
def test_parqex_door_states(sent: str, kept: str, undocumented: set[str]) -> None:
    body = _parqex_body()
    body["devices"][0]["doors"][0]["state"] = sent
    sync = parse_sync(body, UTC)
    assert sync.problems == ()
    assert sync.devices[0].doors[0].state == kept
    assert undocumented_states(sync) == undocumented
    assert (kept in KNOWN_DOOR_STATES) == (not undocumented)


@pytest.mark.parametrize(
    ("sent", "kept", "undocumented"),
    [
        ("configured", "configured", set()),
        ("Banned", "banned", set()),
        ("NEW", "new", set()),
        ("retired", "retired", {"retired"}),
        (" Retired ", "retired", {"retired"}),
    ],
)
def test_lametric_device_states(sent: str, kept: str, undocumented: set[str]) -> None:
    parsed = parse_devices([{**load("lametric_device.json"), "state": sent}])
    assert parsed.problems == ()
    assert parsed.value[0].state == kept
    snapshot = LametricSnapshot(JOHN, parsed.value, ())
    assert undocumented_states(snapshot) == undocumented
    assert (kept in KNOWN_DEVICE_STATES) == (not undocumented)


def test_lametric_empty_state_is_none() -> None:
    parsed = parse_devices([{**load("lametric_device.json"), "state": "  "}])
    assert parsed.value == (replace(MY_LAMETRIC, state=None),)


# --------------------------------------------------------------------------------------------
# The api_key never shows
# --------------------------------------------------------------------------------------------


def _renderings(obj: Any) -> list[str]:
    return [
        repr(obj),
        str(obj),
        format(obj),
        f"{obj}",
        f"{obj!r}",
        f"{obj!s}",
        "%s %r" % (obj, obj),  # noqa: UP031 - the old formatting path is a rendering too
    ]


def test_api_key_is_not_in_any_rendering() -> None:
    devices = parse_devices(load("lametric_devices.json"))
    device = devices.value[0]
    single = parse_devices([load("lametric_device.json")])
    snapshot = LametricSnapshot(JOHN, devices.value, devices.problems)
    for obj in (device, devices, single, snapshot, [device], {"d": device}):
        for text in _renderings(obj):
            assert API_KEY not in text
            assert API_KEY[:16] not in text


def test_secret_renders_as_stars() -> None:
    secret = Secret("hunter2")
    for text in _renderings(secret):
        assert "hunter2" not in text
        assert "***" in text
    assert format(secret, ">40") == repr(secret)  # a format spec does not reach the value
    assert secret.reveal() == "hunter2"


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_secret_refuses_pickling(protocol: int) -> None:
    with pytest.raises(TypeError):
        pickle.dumps(Secret(API_KEY), protocol=protocol)


def test_secret_equality_and_hash() -> None:
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert Secret("a") != "a"
    assert hash(Secret("a")) == hash(Secret("a"))


# --------------------------------------------------------------------------------------------
# Numbers JSON can carry but a float cannot (json.loads gives inf for 1e400, a big int for 1e400
# written out in digits)
# --------------------------------------------------------------------------------------------

HUGE_INT = json.loads("1" + "0" * 400)
INF = json.loads("1e400")


@pytest.mark.parametrize(
    ("where", "key", "value"),
    [
        ("device", "time_before_door_open_alert", HUGE_INT),
        ("device", "number_of_entities_controlled", HUGE_INT),
        ("door", "door_auto_close_delay", HUGE_INT),
        ("door", "entity_number", HUGE_INT),
        ("door", "entity_number", INF),
        ("user", "apps_count", HUGE_INT),
    ],
    ids=[
        "alert-1e400-int",
        "entities-1e400-int",
        "delay-1e400-int",
        "entity-1e400-int",
        "entity-inf",
        "apps_count-1e400-int",
    ],
)
def test_out_of_float_range_numbers_do_not_raise(where: str, key: str, value: Any) -> None:
    if where == "user":
        body = load("lametric_user.json")
        body[key] = value
        parsed = parse_user(body)
        assert parsed.value == replace(JOHN, apps_count=None)
        assert [p.field for p in parsed.problems] == [f"user.{key}"]
        return
    body = _parqex_body()
    target = body["devices"][0] if where == "device" else body["devices"][0]["doors"][0]
    target[key] = value
    sync = parse_sync(body, UTC)
    assert [p.field for p in sync.problems] == [f"{where}.{key}"]
    assert sync.devices[1] == TEST_DEVICE


@pytest.mark.parametrize("key", ["time_before_door_open_alert", "number_of_entities_controlled"])
def test_infinite_numbers_are_rejected(key: str) -> None:
    body = _parqex_body()
    body["devices"][0][key] = INF
    sync = parse_sync(body, UTC)
    assert sync.problems == (Problem(f"device.{key}", "out_of_range"),)


def test_infinite_battery_is_out_of_range() -> None:
    body = _parqex_body()
    body["devices"][0]["doors"][0]["bluetooth_sensor_battery_level"] = INF
    sync = parse_sync(body, UTC)
    assert sync.problems == (Problem("door.bluetooth_sensor_battery_level", "out_of_range"),)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0001-01-01 00:00:00", -62135596800.0),
        ("9999-12-31 23:59:59", 253402300799.0),
        ("9999-12-31T23:59:59-23:59", 253402387139.0),
    ],
)
def test_extreme_timestamps_do_not_raise(value: str, expected: float) -> None:
    body = _parqex_body()
    body["devices"][0]["last_contact"] = value
    assert parse_sync(body, UTC).devices[0].last_contact == expected
    assert parse_sync(body, BERLIN).devices[0].last_contact is not None


# epoch_seconds computes a zone-less time's offset without attaching the zone: it must give
# what attaching it gives, also in the hour a clock skips or repeats.
WALL_CLOCK_ZONES = [
    UTC,
    BERLIN,
    ZoneInfo("America/Adak"),
    ZoneInfo("Australia/Lord_Howe"),  # moves by 30 minutes
    ZoneInfo("Pacific/Kiritimati"),
    ZoneInfo("America/St_Johns"),
    timezone(timedelta(hours=-3, minutes=-30)),
]


def _attached(text: str, zone: tzinfo) -> float:
    """What Reader.timestamp computed before epoch_seconds: the zone attached, then timestamp()."""
    moment = datetime.fromisoformat(text)
    return (moment.replace(tzinfo=zone) if moment.tzinfo is None else moment).timestamp()


@pytest.mark.parametrize("zone", WALL_CLOCK_ZONES, ids=str)
def test_epoch_seconds_is_the_zone_attached_across_clock_changes(zone: tzinfo) -> None:
    days = [datetime(2021, 1, 1) + timedelta(days=n) for n in range(366)]
    changes = [d for d in days if zone.utcoffset(d) != zone.utcoffset(d + timedelta(days=1))]
    assert changes or not isinstance(zone, ZoneInfo) or str(zone) in {"UTC", "Pacific/Kiritimati"}
    for day in changes or days[:1]:
        for minute in range(0, 2 * 24 * 60, 1):
            moment = day + timedelta(minutes=minute, microseconds=minute * 997)
            for text in (moment.isoformat(), moment.isoformat(sep=" ", timespec="seconds")):
                assert epoch_seconds(text, zone) == _attached(text, zone), (text, zone)


@settings(max_examples=300, deadline=None)
@given(
    moment=st.datetimes(timezones=st.none() | st.timezones()),
    zone=st.sampled_from(WALL_CLOCK_ZONES),
)
def test_epoch_seconds_is_the_zone_attached_for_any_time(moment: datetime, zone: tzinfo) -> None:
    text = moment.isoformat()
    assert epoch_seconds(text, zone) == _attached(text, zone)


# --------------------------------------------------------------------------------------------
# Hypothesis: nothing a JSON decoder can give makes a parser raise
# --------------------------------------------------------------------------------------------

# Strict JSON numbers: finite, and integers a float can hold (the out-of-range ones are the bug
# above, tested on their own).
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
timestamps = st.datetimes().map(lambda d: d.isoformat(sep=" ")) | st.datetimes(
    timezones=st.just(UTC)
).map(lambda d: d.isoformat())
interesting = (
    json_values
    | timestamps
    | st.sampled_from(["OPEN", "closed", "", "  ", "AJAR", "yesterday", "0", "-1"])
    | st.integers(min_value=-5, max_value=150)
)

PARQEX_DOOR_KEYS = [k for k, _, _ in PARQEX_DOOR_FIELDS]
PARQEX_DEVICE_KEYS = [
    "owner_first_name",
    "owner_last_name",
    *(k for k, _, _ in PARQEX_DEVICE_FIELDS if k != "doors"),
]
LAMETRIC_DEVICE_KEYS = ["api_key", *(k for k, _, _ in LAMETRIC_DEVICE_FIELDS)]
LAMETRIC_USER_KEYS = ["email", *(k for k, _, _ in LAMETRIC_USER_FIELDS)]

# Mostly usable ids, so the other fields of an object get read at all.
ids = (
    st.text(alphabet="0123456789abcdef", min_size=1, max_size=8)
    | st.integers(min_value=0, max_value=10**6)
    | interesting
)


def _shaped(keys: list[str], **required: st.SearchStrategy) -> st.SearchStrategy:
    return st.fixed_dictionaries(required, optional={k: interesting for k in keys})


parqex_doors = _shaped(PARQEX_DOOR_KEYS, id=ids)
parqex_devices = _shaped(
    PARQEX_DEVICE_KEYS,
    id=ids,
    doors=st.lists(parqex_doors | json_values, max_size=3) | json_values,
)
parqex_bodies = st.fixed_dictionaries(
    {"devices": st.lists(parqex_devices | json_values, max_size=4) | json_values}
)
lametric_devices = _shaped(LAMETRIC_DEVICE_KEYS, id=ids)
lametric_users = _shaped(LAMETRIC_USER_KEYS)
zones = st.sampled_from([UTC, BERLIN, ZoneInfo("Pacific/Kiritimati"), ZoneInfo("America/Adak")])

HYPOTHESIS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_problems(problems: tuple[Problem, ...]) -> None:
    for problem in problems:
        assert isinstance(problem, Problem)
        assert problem.reason in REASONS
        assert "." in problem.field or problem.field in {"sync", "user", "devices", "device"}


def _check_number(value: Any, low: float | None = 0, high: float | None = None) -> None:
    if value is None:
        return
    assert type(value) is float and math.isfinite(value)
    assert low is None or value >= low
    assert high is None or value <= high


def _check_lametric_device(device: Any) -> None:
    assert isinstance(device, LDevice)
    assert isinstance(device.id, str) and device.id and device.id == device.id.strip()
    for name in ("name", "state", "serial_number", "mac", "wifi_ssid", "ipv4_internal"):
        assert getattr(device, name) is None or isinstance(getattr(device, name), str)
    for name in ("created_at", "updated_at"):
        _check_number(getattr(device, name), low=None)


@HYPOTHESIS
@given(body=json_values, zone=zones)
def test_parse_sync_never_raises_on_any_json(body: Any, zone: ZoneInfo) -> None:
    _check_sync(body, parse_sync(body, zone))


@HYPOTHESIS
@given(body=parqex_bodies, zone=zones)
def test_parse_sync_never_raises_on_sync_shaped_json(body: Any, zone: ZoneInfo) -> None:
    _check_sync(body, parse_sync(body, zone))


def _check_sync(body: Any, sync: Sync) -> None:
    assert isinstance(sync, Sync)
    _check_problems(sync.problems)
    if not isinstance(body, dict):
        assert sync == Sync((), (Problem("sync", "wrong_type"),))
    for device in sync.devices:
        assert isinstance(device, Device)
        assert isinstance(device.id, str) and device.id.strip()
        _check_number(device.door_open_alert_threshold_seconds)
        _check_number(device.entities_controlled)
        _check_number(device.last_contact, low=None)
        for door in device.doors:
            assert isinstance(door, Door)
            assert isinstance(door.id, str) and door.id.strip()
            assert door.state is None or (door.state and door.state == door.state.strip().upper())
            _check_number(door.battery_level, high=100)
            _check_number(door.auto_close_delay_seconds)
            assert door.entity_number is None or (
                type(door.entity_number) is int and door.entity_number >= 0
            )


@HYPOTHESIS
@given(body=json_values | st.lists(lametric_devices | json_values, min_size=1, max_size=4))
def test_parse_devices_never_raises(body: Any) -> None:
    parsed = parse_devices(body)
    _check_problems(parsed.problems)
    assert isinstance(parsed.value, tuple)
    for device in parsed.value:
        _check_lametric_device(device)
    if not isinstance(body, list):
        assert parsed == Parsed((), (Problem("devices", "wrong_type"),))


@HYPOTHESIS
@given(body=json_values | lametric_devices)
def test_parse_device_never_raises(body: Any) -> None:
    parsed = parse_devices([body])
    _check_problems(parsed.problems)
    if parsed.value:
        (device,) = parsed.value
        _check_lametric_device(device)
    else:
        assert parsed.problems  # a missing device always says why


@HYPOTHESIS
@given(body=json_values | lametric_users)
def test_parse_user_never_raises(body: Any) -> None:
    parsed = parse_user(body)
    _check_problems(parsed.problems)
    if not isinstance(body, dict):
        assert parsed == Parsed(None, (Problem("user", "wrong_type"),))
        return
    user = parsed.value
    assert isinstance(user, User)
    assert user.id is None or isinstance(user.id, str)
    assert user.name is None or isinstance(user.name, str)
    for value in (user.apps_count, user.private_device_count, user.private_apps_count):
        _check_number(value)


def test_duplicate_ids_keep_the_first_and_are_counted() -> None:
    import copy

    from exporter.models.fields import Problem

    body = load("parqex_sync.json")
    first = body["devices"][0]
    twin = copy.deepcopy(first)
    twin["blackbox_code"] = "second-copy"
    first["doors"].append(copy.deepcopy(first["doors"][0]))
    body["devices"].append(twin)
    sync = parse_sync(body, UTC)
    assert [d.id for d in sync.devices] == [first["id"], body["devices"][1]["id"]]
    assert sync.devices[0].blackbox_code == first["blackbox_code"]
    assert len(sync.devices[0].doors) == 1
    assert sorted(sync.problems, key=str) == [
        Problem("device.id", "duplicate"),
        Problem("door.id", "duplicate"),
    ]
    devices = load("lametric_devices.json") * 2
    parsed = parse_devices(devices)
    assert [d.id for d in parsed.value] == ["18"]
    assert parsed.problems == (Problem("device.id", "duplicate"),)


def test_entity_number_must_be_whole_and_empty_lametric_state_is_bad_format() -> None:
    from exporter.models.fields import Problem

    body = load("parqex_sync.json")
    body["devices"][0]["doors"][0]["entity_number"] = 1.5
    body["devices"][1]["doors"][0]["entity_number"] = 2.0
    sync = parse_sync(body, UTC)
    assert [d.doors[0].entity_number for d in sync.devices] == [None, 2]
    assert sync.problems == (Problem("door.entity_number", "bad_format"),)
    devices = load("lametric_devices.json")
    devices[0]["state"] = "  "
    devices[0]["api_key"] = 12345  # never read, so never a problem
    parsed = parse_devices(devices)
    assert parsed.value[0].state is None
    assert set(parsed.problems) == {Problem("device.state", "bad_format")}


def test_the_api_key_is_never_read_nor_held() -> None:
    """A clock's api_key opens its local API and no metric needs it: it is not read at all, so
    nothing holds it and nothing has to mask it (50,000 of them in the log masking registry
    made every scrape take seconds)."""
    from exporter import secret
    from exporter.simulator.data import generate_lametric_devices

    body = generate_lametric_devices(2_000)
    keys = [device["api_key"] for device in body]
    body[1]["api_key"] = 12345  # not even its type is looked at
    before = secret.registered() if hasattr(secret, "registered") else None
    parsed = parse_devices(body)
    assert len(parsed.value) == 2_000 and parsed.problems == ()
    assert secret.redact(keys[0]) == keys[0]  # not a known secret: nobody holds it
    assert "api_key" not in {f.name for f in dataclasses.fields(LDevice)}
    assert secret.registered() == before
