"""LaMetric metric families, built fresh for every scrape from the accounts' snapshots."""

from __future__ import annotations

from collections.abc import Sequence

from exporter.collectors.common import (
    account_labels,
    add_if,
    add_states,
    device_labels,
    gauge,
    source_families,
)
from exporter.exposition import Family
from exporter.models.lametric import KNOWN_DEVICE_STATES
from exporter.outcome import Outcome
from exporter.sources import LametricSnapshot

DEVICE = ["account", "device_id"]


def families(
    outcomes: Sequence[Outcome], now: float, *, deflated: bool = False
) -> tuple[list[Family], list[Outcome]]:
    """The LaMetric families, and the accounts whose families crashed (see `add_accounts`)."""
    # LaMetric has no "age" metrics, and its samples are few, kept as pairs (never deflated):
    # the signature matches the other collectors
    del now, deflated
    user_info = gauge(
        "lametric_user_info",
        "LaMetric user identity, always 1 (id, name).",
        ["account", "user_id", "name"],
    )
    user_devices = gauge(
        "lametric_user_devices",
        "Devices connected to the user's account (private_device_count).",
        ["account"],
    )
    user_apps = gauge("lametric_user_apps", "Apps the user has created (apps_count).", ["account"])
    user_private_apps = gauge(
        "lametric_user_private_apps",
        "Private apps the user has created (private_apps_count).",
        ["account"],
    )
    device_info = gauge(
        "lametric_device_info",
        "LaMetric device identity, always 1 (name, serial_number, mac, wifi_ssid, ipv4_internal).",
        [*DEVICE, "name", "serial_number", "mac", "wifi_ssid", "ipv4_internal"],
    )
    device_state = gauge(
        "lametric_device_state",
        "1 for the device's current state, 0 for the other documented ones (state: new, "
        "configured, banned); an undocumented state appears as its own value.",
        [*DEVICE, "state"],
    )
    created = gauge(
        "lametric_device_created_timestamp_seconds",
        "Unix time the device was added (created_at).",
        DEVICE,
    )
    updated = gauge(
        "lametric_device_updated_timestamp_seconds",
        "Unix time the device's record last changed (updated_at).",
        DEVICE,
    )
    data = [
        user_info,
        user_devices,
        user_apps,
        user_private_apps,
        device_info,
        device_state,
        created,
        updated,
    ]

    def add(outcome: Outcome) -> None:
        snapshot = outcome.snapshot
        assert isinstance(snapshot, LametricSnapshot)
        account = outcome.account
        if (user := snapshot.user) is not None:
            user_info.add([account, user.id or "", user.name or ""], 1.0)
            labels = account_labels(account)
            add_if(user_devices, labels, user.private_device_count)
            add_if(user_apps, labels, user.apps_count)
            add_if(user_private_apps, labels, user.private_apps_count)
        for device in snapshot.devices:
            device_info.add(
                [
                    account,
                    device.id,
                    device.name or "",
                    device.serial_number or "",
                    device.mac or "",
                    device.wifi_ssid or "",
                    device.ipv4_internal or "",
                ],
                1.0,
            )
            labels = device_labels(account, device.id)
            add_if(created, labels, device.created_at)
            add_if(updated, labels, device.updated_at)
        add_states(
            device_state,
            [device_labels(account, device.id) for device in snapshot.devices],
            KNOWN_DEVICE_STATES,
            [device.state for device in snapshot.devices],
        )

    return source_families("lametric", outcomes, data, add)
