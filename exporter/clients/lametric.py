"""LaMetric cloud client: the two reads of the Users document (the user, the devices)."""

from __future__ import annotations

import httpx

from exporter.clients.http import request_json
from exporter.models.lametric import Device, Parsed, User, parse_devices, parse_user

USER_PATH = "/api/v2/users/me"
DEVICES_PATH = "/api/v2/users/me/devices"
AUTH_HINT = "LaMetric rejected the token; fix: renew the account's access token"


class LametricClient:
    def __init__(self, http: httpx.AsyncClient, base_url: str, *, max_bytes: int) -> None:
        self._http = http
        base = base_url.rstrip("/")
        self._user_url = httpx.URL(base + USER_PATH)
        self._devices_url = httpx.URL(base + DEVICES_PATH)
        self._max_bytes = max_bytes

    async def _get(self, url: httpx.URL, token: str) -> object:
        return await request_json(
            self._http,
            "GET",
            url,
            token,
            max_bytes=self._max_bytes,
            auth_hint=AUTH_HINT,
        )

    async def user(self, token: str) -> Parsed[User | None]:
        return parse_user(await self._get(self._user_url, token))

    async def devices(self, token: str) -> Parsed[tuple[Device, ...]]:
        return parse_devices(await self._get(self._devices_url, token))
