"""A cloud outage on the real stack: a firing door alert survives it and resolves only on closing.

simulated cloud -> exporter -> Prometheus (Debian's, 1 s scrape and rule interval, the shipped
alerts.yml with `for:` removed) -> Alertmanager (the shipped alertmanager.yml, delivering at
once) -> a webhook receiver. Its own stack (this module's fixtures), so the outage it causes
cannot disturb the other stack tests, nor they it.

Before collection_grace, the first failed scrape ended DeviceCloudDoorOpen: the webhook got a
"resolved" for a door still open, then a second "firing" when collection came back.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from exporter.clients.parqex import SYNC_PATH
from exporter.simulator import SimulatedCloud
from tests.system.conftest import PrometheusAPI, WebhookReceiver, free_port, wait_until
from tests.system.test_stack import (
    DEADLINE,
    KITTY,
    KITTY_CONTROLLER,
    PROM_DIR,
    alertmanager_config,
    fast_rules,
    healthy_home,
    parse_time,
    prometheus_config,
    wait_for_named_alert,
)

pytestmark = pytest.mark.system

THRESHOLD = 8  # seconds: Kitty's controller's own time_before_door_open_alert
FAILED_SCRAPES = 3


class OutageStack:
    def __init__(self, sim: SimulatedCloud, prometheus: PrometheusAPI, webhook: WebhookReceiver):
        self.sim, self.prometheus, self.webhook = sim, prometheus, webhook


@pytest.fixture(scope="module")
def outage_stack(
    exporter_factory: Any,
    alertmanager_factory: Any,
    prometheus_factory: Any,
    webhook_receiver: WebhookReceiver,
) -> Iterator[OutageStack]:
    sim = healthy_home(datetime.now(UTC))
    sim.set_parqex_device(KITTY_CONTROLLER, time_before_door_open_alert=THRESHOLD)
    url = sim.start()
    try:
        exporter = exporter_factory(
            {
                "parqex": {
                    "base_url": url,
                    "accounts": [{"name": "home", "token": "demo-parqex-token"}],
                }
            }
        )
        alertmanager = alertmanager_factory(alertmanager_config(webhook_receiver.url))
        dead = f"127.0.0.1:{free_port()}"
        config = prometheus_config(exporter.removeprefix("http://"), dead, alertmanager[7:])
        # Only the exporter: no second, dead target in this stack.
        config["scrape_configs"][0]["static_configs"] = [{"targets": [exporter[7:]]}]
        prometheus = prometheus_factory(
            config,
            {"alerts.yml": fast_rules((PROM_DIR / "alerts.yml").read_text(encoding="utf-8"))},
        )
        wait_until(
            lambda: prometheus.query(
                "parqex_device_door_open_alert_threshold_seconds"
                f'{{device_id="{KITTY_CONTROLLER}"}} == {THRESHOLD}'
            ),
            DEADLINE,
            "Prometheus to scrape Kitty's controller",
        )
        yield OutageStack(sim, prometheus, webhook_receiver)
    finally:
        sim.stop()


def kitty_door_open(webhook: WebhookReceiver) -> list[tuple[str, str]]:
    """(status, startsAt) of every DeviceCloudDoorOpen notification about Kitty, in order."""
    return [
        (alert["status"], alert["startsAt"])
        for alert in webhook.alerts()
        if alert["labels"].get("alertname") == "DeviceCloudDoorOpen"
        and alert["labels"].get("name") == "Kitty"
    ]


def test_door_alert_survives_three_failed_scrapes_and_resolves_only_when_closed(
    outage_stack: OutageStack,
) -> None:
    sim, prometheus, webhook = outage_stack.sim, outage_stack.prometheus, outage_stack.webhook
    up = 'parqex_up{account="home"}'
    kitty_open = f'parqex_door_open{{door_id="{KITTY}"}}'
    assert kitty_door_open(webhook) == []

    opened = time.time()
    sim.set_door(KITTY, state="OPEN")
    firing = wait_for_named_alert(webhook, "DeviceCloudDoorOpen", "Kitty", "firing")
    assert parse_time(firing["startsAt"]) >= math.floor(opened) + THRESHOLD

    # The ParqEx cloud fails the next three collections, then works again.
    failed_from = time.time()
    sim.fail(SYNC_PATH, 400, times=FAILED_SCRAPES)
    wait_until(
        lambda: (
            prometheus.query(f"min_over_time({up}[1m]) == 0") and prometheus.query(f"{up} == 1")
        ),
        DEADLINE,
        "the account to fail and recover",
    )
    window = f"[{math.ceil(time.time() - failed_from) + 3}s]"  # the outage and a little before
    # It really was a gap: Prometheus recorded the failed collections (all three, unless a
    # scrape of a loaded box timed out and lost one), and the door series missed each of them
    # (Prometheus marked it stale).
    failed = prometheus.query(f"count_over_time({up}{window}) - sum_over_time({up}{window})")
    zeros = float(failed[0]["value"][1])
    assert 1 <= zeros <= FAILED_SCRAPES, failed
    missed = prometheus.query(
        f"count_over_time({up}{window}) - ignoring (door_id, device_id) "
        f"count_over_time({kitty_open}{window})"
    )
    assert missed and float(missed[0]["value"][1]) >= zeros, missed
    # Let the rules evaluate a few times on the recovered data before closing the door.
    recovered = time.time()
    wait_until(
        lambda: all(
            parse_time(r["lastEvaluation"]) > recovered + 2
            for r in prometheus.rules()
            if r["name"] == "DeviceCloudDoorOpen"
        ),
        DEADLINE,
        "DeviceCloudDoorOpen evaluated after the recovery",
    )
    assert prometheus.query(
        'ALERTS{alertname="DeviceCloudDoorOpen", name="Kitty", alertstate="firing"}'
    ), "the door alert stopped firing"

    closed = time.time()
    sim.set_door(KITTY, state="CLOSED")
    resolved = wait_for_named_alert(webhook, "DeviceCloudDoorOpen", "Kitty", "resolved")
    # Exactly one firing notification, and the only resolved one came after the door closed.
    notes = kitty_door_open(webhook)
    assert notes == [("firing", firing["startsAt"]), ("resolved", firing["startsAt"])], notes
    assert parse_time(resolved["endsAt"]) >= closed - 1
