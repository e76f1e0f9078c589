"""ParqEx cloud client: the `sync` call that returns every controller and door of a user."""

from __future__ import annotations

from datetime import tzinfo

import httpx

from exporter.clients.http import request_json
from exporter.models.parqex import Sync, parse_sync

SYNC_PATH = "/oauth/v1/endpoints/sync"
AUTH_HINT = (
    "ParqEx says Invalid Access Token when the token is wrong or expired, or a required header "
    "was stripped; fix: renew the account's token"
)


class ParqexClient:
    def __init__(
        self, http: httpx.AsyncClient, base_url: str, *, zone: tzinfo, max_bytes: int
    ) -> None:
        self._http = http
        self._url = httpx.URL(base_url.rstrip("/") + SYNC_PATH)
        self._zone = zone
        self._max_bytes = max_bytes

    async def sync(self, token: str) -> Sync:
        body = await request_json(
            self._http, "GET", self._url, token, max_bytes=self._max_bytes, auth_hint=AUTH_HINT
        )
        return parse_sync(body, self._zone)
