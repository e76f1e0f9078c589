"""The aiohttp transport (exporter/clients/transport.py) over real loopback sockets.

Most tests run twice, through httpx's own transport ("httpx", what the exporter used before)
and through ours ("aiohttp"): what the clients see, reasons and bytes on the wire, must be the
same. The upstreams are the project's simulator and, where a test needs exact bytes or bad
behaviour (a head that never comes, a body cut short, TLS), a raw socket server below.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import io
import socket
import ssl
import threading
import time
import tracemalloc
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import httpx
import pytest
import trustme

from exporter.clients import http
from exporter.clients.http import UpstreamError, new_client, request_json
from exporter.clients.transport import MAX_FIELD_SIZE, AiohttpTransport
from exporter.simulator import SimulatedCloud

TOKEN = "demo-parqex-token"
SECRET = "tok-SENTINEL-7c1d"  # a token no upstream here knows, to look for in error texts
SYNC_PATH = "/oauth/v1/endpoints/sync"
MAX_BYTES = 1 << 20

# What reaches a server is what httpx built (HTTP/1.1 names as httpx spells them), in order.
EXPECTED_HEAD = [
    "GET {path} HTTP/1.1",
    "Host: {host}",
    "Connection: keep-alive",
    "Accept: application/json",
    "Accept-Encoding: gzip",
    "Accept-Charset: utf-8",
    "Content-Type: application/json",
    "User-Agent: device-cloud-exporter/{version}",
    "Authorization: Bearer {token}",
]


@pytest.fixture(autouse=True)
def respx_sees_our_clients() -> None:
    """Overrides tests/conftest.py's seam: here every client has the production transport."""


@pytest.fixture(params=["httpx", "aiohttp"])
def kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which transport new_client gives its clients: httpx's own, or ours (the production one)."""
    if request.param == "httpx":

        def httpx_transport(tls: ssl.SSLContext, limits: httpx.Limits) -> Any:
            return httpx.AsyncHTTPTransport(verify=tls, limits=limits, trust_env=False)

        monkeypatch.setattr(http, "make_transport", httpx_transport)
    return str(request.param)


def fetch(url: str, token: str = TOKEN, *, timeout: float = 5.0, **kwargs: Any) -> Any:
    async def go() -> Any:
        async with new_client(timeout=timeout, **kwargs) as client:
            return await request_json(client, "GET", httpx.URL(url), token, max_bytes=MAX_BYTES)

    return asyncio.run(go())


def failure(url: str, token: str = SECRET, **kwargs: Any) -> UpstreamError:
    with pytest.raises(UpstreamError) as info:
        fetch(url, token, **kwargs)
    assert token not in info.value.message
    assert info.value.__context__ is None and info.value.__cause__ is None
    return info.value


# --------------------------------------------------------------------------------------------
# A raw server: exact bytes in, exact (or no, or broken) bytes out
# --------------------------------------------------------------------------------------------

# request head -> bytes to send, then hang up if they are empty or say "Connection: close";
# None: never answer, never hang up
Answer = Callable[[bytes], bytes | None]


class RawServer:
    """A loopback HTTP/1.1 server of a few lines; counts connections and keeps request heads."""

    def __init__(
        self, answer: Answer, *, tls: ssl.SSLContext | None = None, idle_close: bool = False
    ) -> None:
        self.answer = answer
        self.tls = tls
        self.idle_close = idle_close  # hang up after each answer, without saying so
        self.heads: list[bytes] = []
        self.accepted = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._open: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        self._sock.close()
        for conn in self._open:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
        self._thread.join(5)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.accepted += 1
            self._open.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
                self._open.append(conn)
            self._exchange(conn)
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    def _exchange(self, conn: socket.socket) -> None:
        data = b""
        while True:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, data = data.partition(b"\r\n\r\n")
            self.heads.append(head)
            reply = self.answer(head)
            if reply is None:
                self._stop.wait()  # never answer, never hang up
                return
            conn.sendall(reply)
            if not reply or b"Connection: close" in reply or self.idle_close:
                return


def ok(body: bytes = b'{"devices": []}', *extra: bytes) -> Answer:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + b"".join(
        line + b"\r\n" for line in extra
    )
    return lambda _: head + b"Content-Length: %d\r\n\r\n" % len(body) + body


@pytest.fixture
def sim() -> Iterator[SimulatedCloud]:
    with SimulatedCloud() as cloud:
        yield cloud


# --------------------------------------------------------------------------------------------
# The production default and what goes on the wire
# --------------------------------------------------------------------------------------------


def test_new_client_sends_through_aiohttp_by_default() -> None:
    async def go() -> object:
        async with new_client(timeout=1) as client:
            return client._transport

    assert isinstance(asyncio.run(go()), AiohttpTransport)


def test_the_head_on_the_wire_is_exactly_what_httpx_built(kind: str) -> None:
    with RawServer(ok()) as server:
        assert fetch(server.url + "/a/b%2Fc?x=1&y=%20") == {"devices": []}
    host = server.url.removeprefix("http://")
    expected = [
        line.format(path="/a/b%2Fc?x=1&y=%20", host=host, version=_version(), token=TOKEN)
        for line in EXPECTED_HEAD
    ]
    assert server.heads[0].decode("latin-1").split("\r\n") == expected


def test_a_post_sends_its_body_and_its_length_only(kind: str) -> None:
    seen: list[bytes] = []

    def answer(head: bytes) -> bytes:
        seen.append(head)
        return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"

    async def go() -> bytes:
        async with new_client(timeout=5) as client:
            request = client.build_request(
                "POST",
                server.url + "/token",
                content=b"grant_type=refresh_token",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            response = await client.send(request)
            return response.content

    with RawServer(answer) as server:
        assert asyncio.run(go()) == b"{}"
    lines = seen[0].decode().split("\r\n")
    assert lines[0] == "POST /token HTTP/1.1"
    assert "Content-Type: application/x-www-form-urlencoded" in lines
    assert "Content-Length: 24" in lines
    assert not [line for line in lines if line.lower().startswith(("transfer-encoding", "cookie"))]
    assert [line.split(":")[0].lower() for line in lines].count("content-type") == 1


@pytest.mark.parametrize("version", ["HTTP/1.0", "HTTP/1.1"])
def test_status_version_reason_and_headers_come_up_as_sent(kind: str, version: str) -> None:
    reply = f"{version} 418 Short And Stout\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 2\r\n\r\n{{}}"

    async def go() -> httpx.Response:
        async with new_client(timeout=5) as client:
            response = await client.get(server.url + "/")
            await response.aread()
            return response

    with RawServer(lambda _: reply.encode()) as server:
        response = asyncio.run(go())
    assert (response.status_code, response.http_version) == (418, version)
    assert response.reason_phrase == "Short And Stout"
    assert response.headers.get_list("x-a") == ["1", "2"]
    assert response.headers.raw[:2] == [(b"X-A", b"1"), (b"x-a", b"2")]
    assert response.content == b"{}"


def test_headers_httpx_left_out_are_not_added(kind: str) -> None:
    """aiohttp has defaults of its own (Accept, Accept-Encoding, User-Agent, a body's type)."""

    async def go() -> None:
        async with new_client(timeout=5) as client:
            request = client.build_request("POST", server.url + "/token", content=b"x")
            for name in ("Accept", "Accept-Encoding", "User-Agent", "Content-Type"):
                del request.headers[name]
            await client.send(request)

    with RawServer(ok(b"{}")) as server:
        asyncio.run(go())
    names = [line.split(":")[0] for line in server.heads[0].decode().split("\r\n")[1:]]
    assert names == ["Host", "Connection", "Accept-Charset", "Content-Length"]


def test_cookies_a_server_sets_are_never_sent_back(kind: str) -> None:
    async def go() -> None:
        async with new_client(timeout=5) as client:
            for _ in range(2):
                await request_json(
                    client,
                    "GET",
                    httpx.URL(f"http://localhost:{server.port}/"),
                    TOKEN,
                    max_bytes=MAX_BYTES,
                )

    with RawServer(ok(b"{}", b"Set-Cookie: session=abc; Path=/")) as server:
        asyncio.run(go())
    assert len(server.heads) == 2
    assert b"cookie" not in server.heads[1].lower()


def _version() -> str:
    import exporter

    return exporter.__version__


# --------------------------------------------------------------------------------------------
# Bodies: raw, bounded
# --------------------------------------------------------------------------------------------


def test_a_gzip_body_reaches_the_client_still_compressed(kind: str, sim: SimulatedCloud) -> None:
    async def go() -> tuple[str, bytes]:
        async with new_client(timeout=5) as client:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with client.stream("GET", sim.url + SYNC_PATH, headers=headers) as response:
                raw = b"".join([chunk async for chunk in response.aiter_raw()])
                return response.headers["content-encoding"], raw

    encoding, raw = asyncio.run(go())
    assert encoding == "gzip"
    assert raw[:2] == b"\x1f\x8b"  # what the server sent, not inflated on the way
    assert "devices" in gzip.decompress(raw).decode()
    assert fetch(sim.url + SYNC_PATH)["devices"]  # and request_json inflates it itself


def _bomb(size: int) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as packed:
        for _ in range(size // (1 << 20)):
            packed.write(b"\0" * (1 << 20))
    return out.getvalue()


def test_a_gzip_bomb_costs_at_most_max_bytes(kind: str, sim: SimulatedCloud) -> None:
    payload = _bomb(200 << 20)  # 200 MiB of zeros in about 200 KiB
    sim.respond_raw(SYNC_PATH, payload, content_type="application/json", content_encoding="gzip")
    tracemalloc.start()
    try:
        error = failure(sim.url + SYNC_PATH, TOKEN)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error.reason == "too_large"
    assert peak < 16 * MAX_BYTES, f"peak {peak} bytes"


def test_proxy_variables_in_the_environment_are_ignored(
    kind: str, sim: SimulatedCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as closed:
        nowhere = f"http://127.0.0.1:{closed.getsockname()[1]}"
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, nowhere)  # a proxy that refuses every connection
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert fetch(sim.url + SYNC_PATH)["devices"]
    assert len(sim.requests) == 1


# --------------------------------------------------------------------------------------------
# Redirects: httpx follows them, above the transport
# --------------------------------------------------------------------------------------------


def test_a_redirect_to_another_origin_drops_authorization(kind: str, sim: SimulatedCloud) -> None:
    with SimulatedCloud() as other:  # another port: another origin
        sim.fail(SYNC_PATH, 302, headers={"Location": other.url + SYNC_PATH}, times=1)
        error = failure(sim.url + SYNC_PATH, TOKEN)
        assert error.reason == "auth"  # the other cloud got no token
        assert [r.headers.get("authorization") for r in other.requests] == [None]
    assert sim.requests[0].headers["authorization"] == f"Bearer {TOKEN}"


def test_a_redirect_on_the_same_origin_keeps_authorization(kind: str, sim: SimulatedCloud) -> None:
    sim.fail("/old", 301, headers={"Location": sim.url + SYNC_PATH}, times=1)
    assert fetch(sim.url + "/old")["devices"]
    assert [r.path for r in sim.requests] == ["/old", SYNC_PATH]
    assert sim.requests[1].token == TOKEN


# --------------------------------------------------------------------------------------------
# Failures: the same reasons as httpx's own transport, no token in any text
# --------------------------------------------------------------------------------------------


def test_a_refused_connection_is_connect(kind: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    error = failure(f"http://127.0.0.1:{port}{SYNC_PATH}")
    assert error.reason == "connect"
    assert "Connection refused" in error.message or "ConnectError" in error.message


def test_a_server_that_never_answers_is_a_timeout_within_the_budget(kind: str) -> None:
    with RawServer(lambda _: None) as server:
        started = time.monotonic()
        error = failure(server.url + SYNC_PATH, timeout=0.5)
        took = time.monotonic() - started
    assert error.reason == "timeout"
    assert 0.45 <= took < 2.0, took


def test_a_body_that_stops_coming_is_a_timeout(kind: str) -> None:
    def answer(_: bytes) -> bytes:
        return b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"dev'

    with RawServer(answer) as server:
        started = time.monotonic()
        error = failure(server.url + SYNC_PATH, timeout=0.5)
        took = time.monotonic() - started
    assert error.reason == "timeout"
    assert took < 2.0, took


@pytest.mark.parametrize(
    "reply",
    [
        b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{"dev',
        b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\n{"dev',
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 100\r\n"
        b"Connection: close\r\n\r\n" + gzip.compress(b'{"devices": []}')[:12],
    ],
    ids=["length", "chunked", "gzip"],
)
def test_a_body_cut_short_is_connect(kind: str, reply: bytes) -> None:
    with RawServer(lambda _: reply) as server:
        error = failure(server.url + SYNC_PATH)
    assert error.reason == "connect"
    assert error.message.startswith(f"GET {SYNC_PATH}: RemoteProtocolError: ")


@pytest.mark.parametrize(
    "reply",
    [b"", b"HTTP/1.1 200 OK\r\nContent-Le", b"SSH-2.0-OpenSSH_9.2\r\n\r\n"],
    ids=["nothing", "half-a-head", "not-http"],
)
def test_a_hang_up_or_junk_before_the_answer_is_connect(kind: str, reply: bytes) -> None:
    with RawServer(lambda _: reply + b"Connection: close" if reply else b"") as server:
        error = failure(server.url + SYNC_PATH)
    assert error.reason == "connect"
    assert "RemoteProtocolError" in error.message
    assert len(server.heads) == 1  # not sent again (aiohttp would, by itself, once)


def test_a_gzip_stream_cut_inside_a_complete_body_is_decode(kind: str) -> None:
    cut = gzip.compress(b'{"devices": []}' * 10)[:20]
    reply = ok(cut, b"Content-Encoding: gzip")
    with RawServer(reply) as server:
        assert failure(server.url + SYNC_PATH).reason == "decode"


def test_a_head_that_echoes_the_token_never_shows_it(kind: str) -> None:
    """A malformed head quoting what we sent: the error names the problem, not the bytes."""

    def answer(head: bytes) -> bytes:
        return b"HTTP/1.1 200 OK\r\nX-Echo " + head + b"\r\n\r\n"

    with RawServer(answer) as server:
        error = failure(server.url + SYNC_PATH)
    assert error.reason == "connect"
    assert "Bearer" not in error.message


def test_an_oversized_header_is_refused(kind: str) -> None:
    """Ours: one header over MAX_FIELD_SIZE. httpx's: a head over h11's 100 KiB (which h11
    checks only between reads of 64 KiB, so a head of up to about 164 KiB gets through)."""
    size = MAX_FIELD_SIZE + 1 if kind == "aiohttp" else 200 * 1024
    with RawServer(ok(b"{}", b"X-Big: " + b"a" * size)) as server:
        error = failure(server.url + SYNC_PATH)
    assert error.reason == "connect"
    assert "RemoteProtocolError" in error.message


def test_a_large_header_within_the_bound_is_fine(kind: str) -> None:
    with RawServer(ok(b"{}", b"Content-Security-Policy: " + b"a" * 12_000)) as server:
        assert fetch(server.url + SYNC_PATH) == {}


# --------------------------------------------------------------------------------------------
# Connections: kept alive, returned only when whole, closed with the client
# --------------------------------------------------------------------------------------------


def test_two_requests_share_one_kept_alive_connection(kind: str, sim: SimulatedCloud) -> None:
    async def go() -> None:
        async with new_client(timeout=5) as client:
            for _ in range(2):
                await request_json(
                    client, "GET", httpx.URL(sim.url + SYNC_PATH), TOKEN, max_bytes=MAX_BYTES
                )

    asyncio.run(go())
    ports = [r.client_port for r in sim.requests]
    assert len(ports) == 2 and ports[0] == ports[1], ports


def test_a_kept_alive_connection_the_server_closed_is_not_used(kind: str) -> None:
    """A cloud closing idle connections sooner than we do: a new connection, not an error."""

    async def go() -> None:
        async with new_client(timeout=5) as client:
            for _ in range(2):
                url = httpx.URL(server.url + SYNC_PATH)
                await request_json(client, "GET", url, TOKEN, max_bytes=MAX_BYTES)
                await asyncio.sleep(0.2)  # the server's FIN arrives meanwhile

    with RawServer(ok(), idle_close=True) as server:
        asyncio.run(go())
    assert (server.accepted, len(server.heads)) == (2, 2)


def test_a_body_abandoned_half_way_is_not_reused(kind: str) -> None:
    body = b"x" * 300_000

    async def go() -> None:
        async with new_client(timeout=5) as client:
            async with client.stream("GET", server.url + "/big") as response:
                async for _ in response.aiter_raw():
                    break  # stop reading: the rest of the body is still on the wire
            response = await client.get(server.url + "/small")
            assert response.content == body

    with RawServer(ok(body)) as server:
        asyncio.run(go())
    assert server.accepted == 2


def test_cancelling_a_request_propagates_and_leaves_nothing_open(kind: str) -> None:
    """The engine cancels fetches (its deadline, shutdown): no error of ours instead, and the
    client's aclose closes the aiohttp session and pool (a ResourceWarning fails the test)."""
    sessions: list[aiohttp.ClientSession] = []

    async def go() -> None:
        client = new_client(timeout=30)
        with pytest.raises(TimeoutError):  # wait_for's, not an httpx timeout (30 s)
            await asyncio.wait_for(client.get(server.url + SYNC_PATH), 0.3)
        transport = client._transport
        if isinstance(transport, AiohttpTransport):
            assert transport._session is not None
            sessions.append(transport._session)
        await client.aclose()

    with RawServer(lambda _: None) as server, warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        started = time.monotonic()
        asyncio.run(go())
        assert time.monotonic() - started < 2.0
        gc.collect()
    assert len(server.heads) == 1
    assert all(session.closed for session in sessions)
    assert len(sessions) == (kind == "aiohttp")


def test_a_client_made_outside_any_loop_works_inside_one(
    kind: str, sim: SimulatedCloud, recwarn: pytest.WarningsRecorder
) -> None:
    """The engine builds clients in its loop thread; tests build them anywhere."""
    client = new_client(timeout=5)

    async def go() -> Any:
        try:
            return await request_json(
                client, "GET", httpx.URL(sim.url + SYNC_PATH), TOKEN, max_bytes=MAX_BYTES
            )
        finally:
            await client.aclose()

    assert asyncio.run(go())["devices"]
    gc.collect()
    assert not [w for w in recwarn if issubclass(w.category, ResourceWarning)]


# --------------------------------------------------------------------------------------------
# TLS with the engine's shared context
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


def test_tls_with_a_trusted_certificate(kind: str, ca: trustme.CA) -> None:
    trusting = http.tls_context()
    ca.configure_trust(trusting)
    with RawServer(ok(), tls=_server_tls(ca)) as server:
        assert fetch(server.url + SYNC_PATH, tls=trusting) == {"devices": []}
    assert server.heads[0].startswith(b"GET " + SYNC_PATH.encode())


def test_tls_with_an_unknown_certificate_is_connect(kind: str, ca: trustme.CA) -> None:
    with RawServer(ok(), tls=_server_tls(ca)) as server:
        error = failure(server.url + SYNC_PATH, tls=http.tls_context())
    assert error.reason == "connect"
    assert "CERTIFICATE_VERIFY_FAILED" in error.message
    assert server.heads == []  # nothing was sent to a server we could not verify


def test_tls_to_the_wrong_name_is_connect(kind: str) -> None:
    other = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    other.issue_cert("elsewhere.example").configure_cert(context)
    trusting = http.tls_context()
    other.configure_trust(trusting)
    with RawServer(ok(), tls=context) as server:
        error = failure(server.url + SYNC_PATH, tls=trusting)
    assert error.reason == "connect"
    assert server.heads == []


async def _answer_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")  # no Connection: close
    await writer.drain()
    writer.close()


def test_a_connection_the_server_closed_after_its_answer_is_not_reused() -> None:
    """A server that closes after each answer without saying so: the next request must not go
    out on the closed connection (aiohttp would, and never retries a GET here); httpcore polls
    the socket for this. Found in review: 10 of 20 back-to-back requests failed."""

    async def failures() -> int:
        server = await asyncio.start_server(_answer_then_close, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        failed = 0
        transport = AiohttpTransport(tls=http.tls_context(), limits=http.LIMITS)
        async with httpx.AsyncClient(transport=transport, timeout=5) as client:
            for _ in range(20):
                try:
                    await client.get(f"http://127.0.0.1:{port}/x")
                except httpx.HTTPError:
                    failed += 1
        server.close()
        await server.wait_closed()
        return failed

    assert asyncio.run(failures()) == 0
