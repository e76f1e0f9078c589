"""Arbitrary JSON in, a valid exposition out: the parsers never raise, the output always parses."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families

from exporter.collectors import lametric as lametric_metrics
from exporter.collectors import parqex as parqex_metrics
from exporter.exposition import Family, render
from exporter.models.lametric import parse_devices, parse_user
from exporter.models.parqex import parse_sync
from exporter.outcome import Outcome
from exporter.sources import LametricSnapshot

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
# Plausible values for every field the parsers read, so the strategies reach the deep paths.
plausible = (
    json_values
    | st.sampled_from(["OPEN", "CLOSED", "open", "AJAR", "", "new", "configured", "banned"])
    | st.sampled_from(["2020-12-18 18:47:25", "2015-03-06T15:15:55+02:00", "2020-02-30 25:00:00"])
    | st.text(alphabet=st.characters(codec="utf-8"), max_size=12)  # quotes, backslashes, newlines
    # lone surrogates (a JavaScript client's string cut mid-emoji) and control characters
    | st.text(alphabet=st.characters(exclude_categories=()), max_size=12)
)
DOOR_KEYS = [
    "id", "name", "entity_number", "user_relationship", "state", "active",
    "door_auto_close_enabled", "door_auto_close_delay", "last_toggled", "bluetooth_sensor",
    "bluetooth_sensor_battery_level",
]  # fmt: skip
DEVICE_KEYS = [
    "id", "blackbox_code", "software_version", "owner_first_name", "owner_last_name", "active",
    "registered", "bluetooth_onboard", "last_contact", "time_before_door_open_alert",
    "number_of_entities_controlled",
]  # fmt: skip
LAMETRIC_KEYS = [
    "id", "name", "state", "serial_number", "mac", "wifi_ssid", "ipv4_internal", "created_at",
    "updated_at", "api_key",
]  # fmt: skip
USER_KEYS = ["id", "name", "email", "apps_count", "private_device_count", "private_apps_count"]


def objects(keys: list[str], **nested: st.SearchStrategy[Any]) -> st.SearchStrategy[dict]:
    fields = {key: plausible for key in keys} | nested
    return st.fixed_dictionaries({}, optional=fields)


doors = st.lists(objects(DOOR_KEYS) | json_values, max_size=3)
devices = st.lists(objects(DEVICE_KEYS, doors=doors | json_values) | json_values, max_size=3)
sync_bodies = st.fixed_dictionaries({}, optional={"devices": devices | json_values}) | json_values
lametric_devices = st.lists(objects(LAMETRIC_KEYS) | json_values, max_size=4) | json_values
users = objects(USER_KEYS) | json_values


class _Registry:
    def __init__(self, families: list) -> None:
        self.families = families

    def collect(self) -> list:
        return self.families


def our_values(family: Family) -> list[float]:
    """The values of a family's samples, in order, whether added as pairs or as lines."""
    lines = [line for chunk in family.chunks for line in chunk.splitlines()]
    return [value for _, value in family.samples] + [
        float(line.rsplit(b" ", 1)[1]) for line in lines
    ]


def assert_valid_exposition(families: list[Family]) -> None:
    """Our writer's output parses, keeps every sample and label value, and is byte for byte
    what prometheus-client's own writers make of the parsed result, in both formats."""
    text = render(families, openmetrics=False)
    text.encode("utf-8")  # strict: a lone surrogate here would cost the whole scrape
    parsed = list(text_string_to_metric_families(text))
    assert sum(len(f.samples) for f in parsed) == sum(len(our_values(f)) for f in families)
    assert generate_latest(_Registry(parsed)).decode() == text
    om_text = render(families, openmetrics=True) + "# EOF\n"
    om_parsed = list(parse_openmetrics(om_text))
    assert generate_openmetrics(_Registry(om_parsed)).decode() == om_text
    by_name = {f.name: f for f in families}
    for family in om_parsed:
        ours = by_name[family.name]
        assert [s.value for s in family.samples] == our_values(ours)


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(body=sync_bodies)
def test_parqex_any_body_gives_a_valid_exposition(body: Any) -> None:
    sync = parse_sync(body, UTC)
    outcome = Outcome("parqex", 'acc"\\\n', sync, None, 0.1, 1.0)
    families, crashed = parqex_metrics.families([outcome], now=1_700_000_000.0)
    assert not crashed
    assert_valid_exposition(families)


@SETTINGS
@given(user=users, device_list=lametric_devices)
def test_lametric_any_body_gives_a_valid_exposition(user: Any, device_list: Any) -> None:
    if isinstance(user, dict):
        user = {**user, "email": "someone.private@example.invalid"}
    parsed_user, parsed_devices = parse_user(user), parse_devices(device_list)
    snapshot = LametricSnapshot(
        parsed_user.value, parsed_devices.value, parsed_user.problems + parsed_devices.problems
    )
    outcome = Outcome("lametric", "home", snapshot, None, 0.1, 1.0)
    families, crashed = lametric_metrics.families([outcome], now=0.0)
    assert not crashed
    assert_valid_exposition(families)
    text = render(families, openmetrics=False)
    assert "someone.private" not in text  # the e-mail is personal data, never exported
