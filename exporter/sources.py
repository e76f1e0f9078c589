"""One fetch per account and source: from a token to a parsed snapshot of that account."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from exporter.clients.http import UpstreamError
from exporter.clients.lametric import LametricClient
from exporter.clients.parqex import ParqexClient
from exporter.models.fields import Problem
from exporter.models.lametric import KNOWN_DEVICE_STATES, Device, User
from exporter.models.parqex import KNOWN_DOOR_STATES, Sync


@dataclass(frozen=True, slots=True)
class LametricSnapshot:
    user: User | None
    devices: tuple[Device, ...]
    problems: tuple[Problem, ...]


Snapshot = Sync | LametricSnapshot


async def fetch_parqex(client: ParqexClient, token: str) -> Sync:
    return await client.sync(token)


async def fetch_lametric(client: LametricClient, token: str) -> LametricSnapshot:
    """User and devices are independent: ask for both at once, fail both if either fails."""
    try:
        async with asyncio.TaskGroup() as group:
            user = group.create_task(client.user(token))
            devices = group.create_task(client.devices(token))
    except BaseExceptionGroup as group_error:
        raise _first_upstream_error(group_error) from None
    return LametricSnapshot(
        user.result().value,
        devices.result().value,
        user.result().problems + devices.result().problems,
    )


def undocumented_states(snapshot: Snapshot) -> set[str]:
    """States the vendor's document does not list: exported as-is, and worth one log line."""
    if isinstance(snapshot, Sync):
        return {
            door.state
            for device in snapshot.devices
            for door in device.doors
            if door.state is not None and door.state not in KNOWN_DOOR_STATES
        }
    return {
        device.state
        for device in snapshot.devices
        if device.state is not None and device.state not in KNOWN_DEVICE_STATES
    }


def _first_upstream_error(group: BaseExceptionGroup) -> BaseException:
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            return _first_upstream_error(error)
        if isinstance(error, UpstreamError):
            return error
    return group.exceptions[0]
