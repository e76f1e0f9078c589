"""ParqEx cloud client: the `sync` call that returns every controller and door of a user."""

from __future__ import annotations

from datetime import tzinfo

import httpx

from exporter.clients.http import decode_json, request_body
from exporter.models.parqex import Sync, decode_sync

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
        self._what = f"GET {self._url.path}"  # as request_json names the call
        self._zone = zone
        self._max_bytes = max_bytes

    async def sync(self, token: str) -> Sync:
        body, content_type = await request_body(
            self._http, "GET", self._url, token, max_bytes=self._max_bytes, auth_hint=AUTH_HINT
        )
        # The bytes, not decoded JSON: decode_sync reads a well-formed answer without building
        # its dicts, and decodes the rest as request_json would (not JSON: UpstreamError).
        return decode_sync(body, self._zone, lambda raw: decode_json(raw, content_type, self._what))
