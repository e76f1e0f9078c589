"""Plain clients fetching the same upstream answers as a scrape, all at once: the latency floor.

A scrape of N accounts cannot end before the simulator has answered all their requests. These
clients send exactly those requests (the same paths and tokens, `Accept-Encoding: gzip`), all at
once over connections opened beforehand, and time how long the simulator takes to answer them
all. `run.py` reports that time next to the exporter's scrape wall time: the gap is the
exporter's, and a reference far above the simulated latency means the simulator (or the
machine) is the bottleneck, not the exporter.

Two clients:

- `raw`: asyncio streams writing the HTTP/1.1 request by hand and reading the body by its
  Content-Length. Nothing is decompressed or parsed, so it costs the client next to no CPU: it
  measures the simulator and the loopback network.
- `httpx`: one `httpx.AsyncClient` per account, as the exporter configures its clients (one
  per account; a single client for all 600 requests is much slower still, httpcore's pool
  being the bottleneck); answers are read and gunzipped, not parsed. The difference to `raw`
  is what the HTTP client library costs when all answers arrive at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal
from urllib.parse import urlsplit

import httpx

PARQEX_SYNC = "/oauth/v1/endpoints/sync"
LAMETRIC_PATHS = ("/api/v2/users/me", "/api/v2/users/me/devices")

Kind = Literal["raw", "httpx"]


@dataclass(frozen=True)
class Fetch:
    """One upstream request of a scrape: a path and the account's bearer token."""

    path: str
    token: str


def account_fetches(parqex: Sequence[str], lametric: Sequence[str]) -> list[Fetch]:
    """What the exporter asks per scrape: a ParqEx sync per account, two LaMetric requests."""
    return [Fetch(PARQEX_SYNC, t) for t in parqex] + [
        Fetch(path, t) for t in lametric for path in LAMETRIC_PATHS
    ]


class _RawConnection:
    """One kept-alive HTTP/1.1 connection that sends a fixed request and reads the answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def exchange(self, request: bytes) -> int:
        """Send `request` and read the answer; its body's length (the body is not decoded)."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        if status != b"200":
            raise RuntimeError(f"simulator answered {head.splitlines()[0]!r}")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await self.reader.readexactly(length)
        return length


class PlainClient:
    """Fetches a fixed set of answers all at once, round after round, on one event loop.

    Connections are opened (and used once) on entry, so a round, like a scrape after the
    warm-up, costs no connection set-up.
    """

    def __init__(self, base_url: str, fetches: Sequence[Fetch], kind: Kind) -> None:
        self.base_url, self.fetches, self.kind = base_url, list(fetches), kind
        self._runner = asyncio.Runner()
        self._raw: list[_RawConnection] = []
        self._httpx: dict[str, httpx.AsyncClient] = {}  # by token
        url = urlsplit(base_url)
        host = f"{url.hostname}:{url.port}"
        self._requests = [
            (
                f"GET {f.path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {f.token}\r\n"
                "Accept-Encoding: gzip\r\n\r\n"
            ).encode()
            for f in self.fetches
        ]

    def __enter__(self) -> PlainClient:
        self._runner.run(self._open())
        self.round()  # warm-up: the simulator's handler threads exist from now on
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._runner.run(self._close())
        self._runner.close()

    def round(self) -> float:
        """Send every request at once and wait for every answer: the wall time in seconds."""
        return self._runner.run(self._round())

    async def _open(self) -> None:
        if self.kind == "httpx":
            self._httpx = {
                f.token: httpx.AsyncClient(
                    base_url=self.base_url,
                    timeout=60,
                    headers={"Accept-Encoding": "gzip", "Authorization": f"Bearer {f.token}"},
                    trust_env=False,
                )
                for f in self.fetches
            }
            return
        url = urlsplit(self.base_url)
        assert url.hostname is not None and url.port is not None
        opened = await asyncio.gather(
            *(asyncio.open_connection(url.hostname, url.port) for _ in self.fetches)
        )
        self._raw = [_RawConnection(reader, writer) for reader, writer in opened]

    async def _close(self) -> None:
        for client in self._httpx.values():
            await client.aclose()
        for connection in self._raw:
            connection.writer.close()

    async def _round(self) -> float:
        start = time.perf_counter()
        if self._httpx:
            responses = await asyncio.gather(
                *(self._httpx[f.token].get(f.path) for f in self.fetches)
            )
            for response in responses:
                response.raise_for_status()
        else:
            await asyncio.gather(
                *(c.exchange(r) for c, r in zip(self._raw, self._requests, strict=True))
            )
        return time.perf_counter() - start
