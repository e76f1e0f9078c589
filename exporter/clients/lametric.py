"""LaMetric cloud client: the four `/api/v2/users/me...` calls of the Users document."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from exporter.clients.http import UpstreamError, request_json
from exporter.models.lametric import (
    Device,
    Parsed,
    User,
    parse_device,
    parse_devices,
    parse_user,
)

USER_PATH = "/api/v2/users/me"
DEVICES_PATH = "/api/v2/users/me/devices"
AUTH_HINT = "LaMetric rejected the token; fix: renew the account's access token"


@dataclass(frozen=True, slots=True)
class Renamed:
    id: str
    name: str


class LametricClient:
    def __init__(self, http: httpx.AsyncClient, base_url: str, *, max_bytes: int) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._max_bytes = max_bytes

    async def _call(self, method: str, path: str, token: str, body: object = None) -> object:
        return await request_json(
            self._http,
            method,
            self._base + path,
            token,
            max_bytes=self._max_bytes,
            json_body=body,
            auth_hint=AUTH_HINT,
        )

    async def user(self, token: str) -> Parsed[User | None]:
        return parse_user(await self._call("GET", USER_PATH, token))

    async def devices(self, token: str) -> Parsed[tuple[Device, ...]]:
        return parse_devices(await self._call("GET", DEVICES_PATH, token))

    async def device(self, token: str, device_id: int | str) -> Parsed[Device | None]:
        return parse_device(await self._call("GET", f"{DEVICES_PATH}/{int(device_id)}", token))

    async def rename_device(self, token: str, device_id: int | str, name: str) -> Renamed:
        """PUT a new name; the exporter never calls this, it is here for completeness of the API."""
        answer = await self._call("PUT", f"{DEVICES_PATH}/{int(device_id)}", token, {"name": name})
        success = answer.get("success") if isinstance(answer, dict) else None
        if not (
            isinstance(success, dict)
            and isinstance(success.get("id"), int | str)
            and not isinstance(success.get("id"), bool)
            and isinstance(success.get("name"), str)
        ):
            raise UpstreamError("decode", "PUT device: the answer has no success.id/success.name")
        return Renamed(str(success["id"]), success["name"])
