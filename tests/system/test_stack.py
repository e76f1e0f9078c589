"""The shipped alerts and dashboard, proven on the real stack.

simulated cloud -> exporter -> Prometheus (Debian's, 1 s scrape and rule interval, the shipped
prometheus.yml/alerts.yml with only intervals, targets and `for:` shortened) -> Alertmanager
(the shipped alertmanager.yml with its webhook pointed at a receiver run by the test).

The simulated cloud holds two kinds of accounts:
- "home" (the seed devices, made healthy: doors closed, controllers just seen) must stay quiet
  until a test changes it: it is where the door-open and battery alerts are driven end to end,
  through Alertmanager to the webhook, and resolved again;
- "zoo" and "expired" hold everything that can go wrong at once (a door open for 2 h with a
  5 % battery on an inactive controller not seen for 2 h, a banned and a stuck-new LaMetric, an
  unparseable field, a revoked token), so that every alert expression returns data and every
  alert fires. A second, dead target in the exporter's job makes DeviceCloudExporterDown fire.
"""

from __future__ import annotations

import copy
import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from exporter.simulator import SimulatedCloud
from exporter.simulator import data as simdata
from tests.system.conftest import (
    PrometheusAPI,
    WebhookReceiver,
    free_port,
    wait_until,
)
from tests.test_rules import data_panels, grafana_queries_as_promql

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "prometheus"
DASHBOARD = ROOT / "grafana" / "dashboards" / "device-cloud.json"
JOB = yaml.safe_load((PROM_DIR / "thresholds.yml").read_text(encoding="utf-8"))["exporter_job"]

# The seed ("home") devices of the simulated cloud.
KITTY_CONTROLLER = "9d9e5e0e093a06d5f16e1116d108d0c7"
KITTY = "70fc7ebd63d841d9a9f06ff815be1e7c"  # no bluetooth sensor: battery 0 upstream
LAST_DOOR_CONTROLLER = "35ff0e08ac8eb84ca097a894541ba049"
LAST_DOOR = "a42308f43dbfaa8b1960a20ac4317b05"  # sensor, battery 98
LAST_DOOR_NAME = "Last Door! "

ZOO_CONTROLLER = "200c" * 8
ZOO_DOOR = "d00d" * 8
DEADLINE = 30.0  # seconds; every wait polls and normally ends within a few seconds


@dataclass
class Stack:
    sim: SimulatedCloud
    prometheus: PrometheusAPI
    webhook: WebhookReceiver
    dead_target: str
    alertmanager: str  # base URL


# --------------------------------------------------------------------------- set-up


def fast_rules(text: str) -> str:
    """The shipped rules with `for:` removed and a 1 s group interval, nothing else changed."""
    doc = yaml.safe_load(text)
    for group in doc["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            rule.pop("for", None)
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def prometheus_config(exporter: str, dead: str, alertmanager: str) -> dict[str, Any]:
    """The shipped prometheus.yml with 1 s intervals and loopback targets."""
    config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["alerting"]["alertmanagers"] = [{"static_configs": [{"targets": [alertmanager]}]}]
    job = next(job for job in config["scrape_configs"] if job["job_name"] == JOB)
    job.update(
        scrape_interval="1s", scrape_timeout="1s", static_configs=[{"targets": [exporter, dead]}]
    )
    config["scrape_configs"] = [job]
    return config


def alertmanager_config(webhook_url: str) -> dict[str, Any]:
    """The shipped alertmanager.yml, delivering to the test's receiver after a short wait.

    group_wait is what lets an inhibit rule's source (DoorOpenTooLong) arrive before its
    target's (DoorOpen's) first notification goes out: the shipped 30 s becomes 2 s, not 0 s,
    with which Alertmanager sends the target before its inhibitor has seen the source.
    """
    config = yaml.safe_load((PROM_DIR / "alertmanager.yml").read_text(encoding="utf-8"))
    routes = [config["route"], *config["route"].get("routes", [])]
    for route in routes:
        route.update(group_wait="2s", group_interval="1s", repeat_interval="1h")
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = webhook_url
    return config


def healthy_home(now: datetime) -> SimulatedCloud:
    """A cloud whose home account is healthy: doors closed, controllers in touch, at `now`."""
    sim = SimulatedCloud(live=False)
    for controller in (KITTY_CONTROLLER, LAST_DOOR_CONTROLLER):
        sim.set_parqex_device(controller, last_contact=now)
    for door in (KITTY, LAST_DOOR):
        sim.set_door(door, state="CLOSED")
    return sim


def build_cloud() -> SimulatedCloud:
    now = datetime.now(UTC)
    sim = healthy_home(now)

    # zoo: everything wrong at once.
    controller = copy.deepcopy(simdata.load_seed("parqex_sync.json")["devices"][1])
    two_hours_ago = simdata.format_time(now - timedelta(hours=2))
    controller.update(
        id=ZOO_CONTROLLER,
        owner_first_name="Zoo",
        owner_last_name="Keeper",
        blackbox_code="40000c2a69000200",
        active=False,
        last_contact=two_hours_ago,
    )
    controller["doors"][0].update(
        id=ZOO_DOOR,
        name="Zoo Door",
        state="OPEN",
        last_toggled=two_hours_ago,
        bluetooth_sensor=True,
        bluetooth_sensor_battery_level=5,
    )
    sim.add_parqex_account("zoo-parqex-token", devices=[controller])
    clock = simdata.load_seed("lametric_devices.json")[0]
    sim.add_lametric_account(
        "zoo-lametric-token",
        devices=[
            {
                **clock,
                "id": 30,
                "name": "Hall clock",
                "serial_number": "SA1401000022000030",
                "state": "banned",
                "updated_at": "not a date",  # -> device_cloud_exporter_parse_errors_total
            },
            {
                **clock,
                "id": 31,
                "name": "Spare clock",
                "serial_number": "SA1401000022000031",
                "state": "new",  # created in 2015: stuck
            },
        ],
    )
    return sim


@pytest.fixture(scope="module")
def stack(
    exporter_factory: Any,
    alertmanager_factory: Any,
    prometheus_factory: Any,
    webhook_receiver: WebhookReceiver,
) -> Iterator[Stack]:
    sim = build_cloud()
    url = sim.start()
    try:
        exporter = exporter_factory(
            {
                "parqex": {
                    "base_url": url,
                    "accounts": [
                        {"name": "home", "token": "demo-parqex-token"},
                        {"name": "zoo", "token": "zoo-parqex-token"},
                        {"name": "expired", "token": "expired-parqex-token"},
                    ],
                },
                "lametric": {
                    "base_url": url,
                    "accounts": [
                        {"name": "home", "token": "demo-lametric-token"},
                        {"name": "zoo", "token": "zoo-lametric-token"},
                    ],
                },
            }
        )
        alertmanager = alertmanager_factory(alertmanager_config(webhook_receiver.url))
        dead = f"127.0.0.1:{free_port()}"  # nothing listens there
        prometheus = prometheus_factory(
            prometheus_config(exporter.removeprefix("http://"), dead, alertmanager[7:]),
            {"alerts.yml": fast_rules((PROM_DIR / "alerts.yml").read_text(encoding="utf-8"))},
        )
        wait_until(
            lambda: prometheus.query(f'up{{job="{JOB}", instance="{exporter[7:]}"}} == 1'),
            DEADLINE,
            "Prometheus to scrape the exporter",
        )
        yield Stack(sim, prometheus, webhook_receiver, dead, alertmanager)
    finally:
        sim.stop()


# --------------------------------------------------------------------------- helpers


def identity(alert: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """(alertname, account, the human-readable thing it is about)."""
    labels = alert["labels"]
    about = next(
        (labels[key] for key in ("name", "owner", "field", "source", "instance") if key in labels),
        None,
    )
    return labels["alertname"], labels.get("account"), about


def parse_time(text: str) -> float:
    """RFC 3339 with up to nanoseconds (as Alertmanager writes it) -> Unix seconds."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.replace("Z", "+00:00"))
    return datetime.fromisoformat(text).timestamp()


def wait_for_named_alert(
    webhook: WebhookReceiver, alertname: str, name: str, status: str, what: str | None = None
) -> dict[str, Any]:
    """The first notification of `alertname` (`firing` or `resolved`) for the door or clock
    called `name` in account home, waited for at the webhook."""

    def wanted(alert: dict[str, Any]) -> bool:
        labels = alert["labels"]
        return (
            labels.get("alertname") == alertname
            and labels.get("name") == name
            and labels.get("account") == "home"
            and alert["status"] == status
        )

    return webhook.wait_for_alert(wanted, DEADLINE, f"{alertname} {status} for {what or name}")


# --------------------------------------------------------------------------- tests


def test_every_alert_fires_on_broken_accounts_and_healthy_ones_stay_quiet(stack: Stack) -> None:
    expected = {
        ("DeviceCloudDoorOpen", "zoo", "Zoo Door"),
        ("DeviceCloudDoorOpenTooLong", "zoo", "Zoo Door"),
        ("DeviceCloudDoorSensorBatteryLow", "zoo", "Zoo Door"),
        ("DeviceCloudDoorSensorBatteryCritical", "zoo", "Zoo Door"),
        ("DeviceCloudControllerNotSeen", "zoo", "Zoo Keeper"),
        ("DeviceCloudControllerInactive", "zoo", "Zoo Keeper"),
        ("DeviceCloudLaMetricDeviceBanned", "zoo", "Hall clock"),
        ("DeviceCloudLaMetricDeviceStuckNew", "zoo", "Spare clock"),
        ("DeviceCloudAccountDown", "expired", "parqex"),
        ("DeviceCloudAccountAuthFailing", "expired", "parqex"),
        ("DeviceCloudParseErrors", "zoo", "device.updated_at"),
        ("DeviceCloudExporterDown", None, stack.dead_target),
    }
    shipped = {
        rule["alert"]
        for group in yaml.safe_load((PROM_DIR / "alerts.yml").read_text(encoding="utf-8"))["groups"]
        for rule in group["rules"]
    }
    # Every shipped alert but "absent" (the exporter is here) and "flapping" (the simulated
    # cloud fails all of a path's requests or none; prometheus/tests/gaps.yml proves it) fires.
    assert {name for name, _, _ in expected} == shipped - {
        "DeviceCloudExporterAbsent",
        "DeviceCloudAccountFlapping",
    }

    last: dict[str, Any] = {}

    def firing_exactly_expected() -> bool:
        alerts = stack.prometheus.alerts("firing")
        last["alerts"] = alerts
        return {identity(a) for a in alerts} == expected

    try:
        wait_until(firing_exactly_expected, DEADLINE, "exactly the expected alerts firing")
    except AssertionError:
        got = {identity(a) for a in last.get("alerts", [])}
        pytest.fail(f"missing: {sorted(expected - got)}\nunexpected: {sorted(got - expected)}")

    by_name = {a["labels"]["alertname"]: a for a in last["alerts"]}
    # Templates rendered against real data: human names, the device's own threshold, reasons.
    door_open = by_name["DeviceCloudDoorOpen"]["annotations"]["description"]
    assert 'door "Zoo Door"' in door_open and "longer than the 15m 0s" in door_open
    assert (
        'doors "Zoo Door"' in by_name["DeviceCloudControllerNotSeen"]["annotations"]["description"]
    )
    assert "by reason: auth=" in by_name["DeviceCloudAccountDown"]["annotations"]["description"]
    assert "5%" in by_name["DeviceCloudDoorSensorBatteryCritical"]["annotations"]["summary"]
    for alert in last["alerts"]:
        assert alert["labels"]["severity"] in {"critical", "warning", "info"}
        assert "/d/device-cloud-exporter/" in alert["annotations"]["dashboard_url"]
        assert "{{" not in str(alert["annotations"]), alert["annotations"]


@pytest.mark.parametrize(
    ("critical", "inhibited"),
    [
        ("DeviceCloudDoorOpenTooLong", "DeviceCloudDoorOpen"),
        ("DeviceCloudDoorSensorBatteryCritical", "DeviceCloudDoorSensorBatteryLow"),
    ],
)
def test_the_webhook_gets_the_critical_alert_and_not_the_warning_it_inhibits(
    stack: Stack, critical: str, inhibited: str
) -> None:
    """What README's example stack prints: the demo's doors are open far past both thresholds
    (as the zoo door here), so Prometheus fires both door alerts, and the shipped
    alertmanager.yml's inhibit rule delivers only the critical one."""
    shipped = yaml.safe_load((PROM_DIR / "alertmanager.yml").read_text(encoding="utf-8"))
    wait = re.fullmatch(r"(\d+)s", shipped["route"]["group_wait"])
    assert wait and int(wait.group(1)) >= 2, "the test waits less than the shipped group_wait"
    zoo_door = ("zoo", "Zoo Door")
    stack.webhook.wait_for_alert(
        lambda a: identity(a) == (critical, *zoo_door) and a["status"] == "firing",
        DEADLINE,
        f"{critical} for the zoo door at the webhook",
    )
    firing = {identity(a) for a in stack.prometheus.alerts("firing")}
    assert (inhibited, *zoo_door) in firing, "Prometheus should fire the warning too"

    def held_back() -> list[dict[str, Any]]:
        answer = httpx.get(
            f"{stack.alertmanager}/api/v2/alerts",
            params={"filter": [f'alertname="{inhibited}"', 'account="zoo"']},
            timeout=10,
        )
        answer.raise_for_status()
        return [
            a
            for a in answer.json()
            if a["status"]["state"] == "suppressed" and a["status"]["inhibitedBy"]
        ]

    wait_until(held_back, DEADLINE, f"Alertmanager to hold {inhibited} back, inhibited")
    delivered = [a for a in stack.webhook.alerts() if identity(a) == (inhibited, *zoo_door)]
    assert delivered == [], f"{inhibited} reached the webhook although inhibited"


def test_every_rule_expression_runs_and_returns_data(stack: Stack) -> None:
    prometheus = stack.prometheus
    shipped = yaml.safe_load((PROM_DIR / "alerts.yml").read_text(encoding="utf-8"))
    rules = [rule for group in shipped["groups"] for rule in group["rules"]]

    def evaluated() -> list[dict[str, Any]] | None:
        loaded = prometheus.rules()
        never = "0001-01-01"  # Prometheus' lastEvaluation of a rule not evaluated yet
        return loaded if all(not r["lastEvaluation"].startswith(never) for r in loaded) else None

    loaded = wait_until(evaluated, DEADLINE, "every rule evaluated once")
    assert len(loaded) == len(rules)
    for rule in loaded:
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))

    for rule in rules:
        if rule["alert"] == "DeviceCloudAccountFlapping":
            # No account flaps here: each side of its `and` must still run on real series.
            for side in rule["expr"].split("\nand\n"):
                body = re.sub(r"\n\s*(<|>=) [0-9.]+\n\)$", "\n)", side)
                assert body != side, side
                assert wait_until(
                    lambda body=body: prometheus.query(body), DEADLINE, f"data from {body}"
                )
            continue
        if rule["alert"] == "DeviceCloudExporterAbsent":
            # absent() returns data only when the exporter is gone; here it is present, so
            # the expression must be empty and its selector must not be.
            assert prometheus.query(rule["expr"]) == []
            assert prometheus.query(f'up{{job="{JOB}"}}'), "absent() watches nothing"
            continue
        assert wait_until(
            lambda rule=rule: prometheus.query(rule["expr"]),
            DEADLINE,
            f"data from {rule['alert']}",
        )


def test_every_dashboard_expression_runs_and_returns_data(stack: Stack) -> None:
    prometheus = stack.prometheus
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    # The check can fail: a typo'd metric name returns nothing.
    assert prometheus.query("parqex_door_opne") == []

    queries = grafana_queries_as_promql(dashboard)
    assert len(queries) > 30
    for where, expr in queries:
        assert wait_until(lambda expr=expr: prometheus.query(expr), DEADLINE, where), where

    # Range panels also as range queries, the way Grafana runs them.
    by_where = dict(queries)
    assert len(by_where) == len(queries), "panel titles must be unique"
    for panel in data_panels(dashboard):
        for target in panel["targets"]:
            if target.get("range"):
                where = f"{panel['title']}/{target['refId']}"
                assert prometheus.query_range(by_where[where], 30), where

    # The device dropdown: Grafana formats each query_result() series as text and applies the
    # variable's regex; every device must come out with an id as value and a name as text.
    device = next(v for v in dashboard["templating"]["list"] if v["name"] == "device")
    inner = re.fullmatch(r"query_result\((.*)\)", device["query"], re.S)
    assert inner
    regex = re.compile(device["regex"].strip("/").replace("(?<", "(?P<"))
    expr = by_where["variable device"]
    options = {}
    for series in prometheus.query(expr):
        metric = dict(series["metric"])
        name = metric.pop("__name__")
        text = name + "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items())) + "}"
        match = regex.search(f"{text} {series['value'][1]} {series['value'][0]}")
        assert match, text
        options[match.group("value")] = match.group("text")
    assert options == {
        KITTY_CONTROLLER: "ParqEx Production 20000c2a6908848d",
        LAST_DOOR_CONTROLLER: "ParqEx Test 30000c2a691dd625",
        ZOO_CONTROLLER: "Zoo Keeper 40000c2a69000200",
        "18": "My LaMetric",
        "30": "Hall clock",
        "31": "Spare clock",
    }


def test_door_held_open_past_its_threshold_alerts_by_name_and_resolves(stack: Stack) -> None:
    sim, prometheus, webhook = stack.sim, stack.prometheus, stack.webhook
    threshold = 3  # seconds: this controller's own time_before_door_open_alert
    try:
        sim.set_parqex_device(KITTY_CONTROLLER, time_before_door_open_alert=threshold)
        wait_until(
            lambda: prometheus.query(
                "parqex_device_door_open_alert_threshold_seconds"
                f'{{device_id="{KITTY_CONTROLLER}"}} == {threshold}'
            ),
            DEADLINE,
            "the new threshold to be scraped",
        )
        assert not [a for a in webhook.alerts() if a["labels"].get("name") == "Kitty"]

        opened = time.time()
        sim.set_door(KITTY, state="OPEN")
        alert = wait_for_named_alert(webhook, "DeviceCloudDoorOpen", "Kitty", "firing")
        # Not before the controller's threshold had passed (ParqEx times are whole seconds).
        assert parse_time(alert["startsAt"]) >= math.floor(opened) + threshold
        assert alert["labels"]["severity"] == "warning"
        assert alert["annotations"]["summary"].startswith('Door "Kitty" has been open for')
        assert (
            f"longer than the {threshold}s its controller allows"
            in (alert["annotations"]["description"])
        )

        sim.set_door(KITTY, state="CLOSED")
        resolved = wait_for_named_alert(webhook, "DeviceCloudDoorOpen", "Kitty", "resolved")
        assert resolved["startsAt"] == alert["startsAt"]
        assert parse_time(resolved["endsAt"]) > parse_time(resolved["startsAt"])
    finally:
        sim.set_door(KITTY, state="CLOSED")
        sim.set_parqex_device(KITTY_CONTROLLER, time_before_door_open_alert=900)


def test_low_battery_alerts_by_name_and_resolves(stack: Stack) -> None:
    sim, prometheus, webhook = stack.sim, stack.prometheus, stack.webhook
    try:
        sim.set_door(LAST_DOOR, battery=15)
        alert = wait_for_named_alert(
            webhook,
            "DeviceCloudDoorSensorBatteryLow",
            LAST_DOOR_NAME,
            "firing",
            what="the last door",
        )
        assert alert["labels"]["severity"] == "warning"
        assert f'door "{LAST_DOOR_NAME}"' in alert["annotations"]["description"]
        assert "reports 15% battery" in alert["annotations"]["description"]
        # 15 % is low, not critical.
        assert not prometheus.query(
            'ALERTS{alertname="DeviceCloudDoorSensorBatteryCritical", account="home"}'
        )

        sim.set_door(LAST_DOOR, battery=98)
        wait_for_named_alert(
            webhook,
            "DeviceCloudDoorSensorBatteryLow",
            LAST_DOOR_NAME,
            "resolved",
            what="the last door",
        )
    finally:
        sim.set_door(LAST_DOOR, battery=98)
    # Kitty has no sensor and reports battery 0 upstream: never a battery alert.
    assert not [
        a
        for a in webhook.alerts()
        if a["labels"].get("name") == "Kitty" and "Battery" in a["labels"]["alertname"]
    ]
