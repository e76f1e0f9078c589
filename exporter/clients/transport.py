"""An httpx transport that sends requests with aiohttp: httpx's API, aiohttp's HTTP/1.1 engine.

Every scrape fetches every account at once, so a few hundred answers arrive together and are
parsed one after the other on the event loop. httpx's own transport (httpcore, h11, anyio) spends
about 460-560 us of CPU on each small keep-alive request; aiohttp's pool and C parser about
110-130 us. Everything above the transport stays httpx: the clients, redirects (and the
Authorization header they drop on leaving the origin), our bounded reads and error reasons.

What goes on the wire is what httpx built: method, URL as encoded, headers in their order and
nothing else (aiohttp's own default headers are all skipped), the body. The answer's body is
passed up raw, never decompressed, so the caller's byte limit holds after inflation. Redirects,
cookies, proxies and the environment are left alone. aiohttp's errors become the httpx errors
`exporter.clients.http` classifies, with our own words: aiohttp's texts can quote the request
URL (which holds OAuth secrets in the query style) or the bytes of a malformed answer.
"""

from __future__ import annotations

import asyncio
import math
import ssl
from collections.abc import AsyncIterator
from typing import Final

import aiohttp
import httpx
import yarl

# aiohttp adds these unless told not to; httpx has already set every header we send.
_SKIP_AUTO_HEADERS: Final = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")

# Bounds on an answer's head. httpx's own transport (h11) allows 100 KiB for the whole head;
# aiohttp bounds each line and the number of them instead. 16 KiB a header and 64 headers keep
# a hostile head under about 1 MiB; real clouds send a few hundred bytes of each.
MAX_LINE_SIZE: Final = 16 * 1024  # the status line
MAX_FIELD_SIZE: Final = 16 * 1024  # one header, name and value
MAX_HEADERS: Final = 64

_TURNS_TO_SEE_A_CLOSE: Final = 2
_HTTP_11: Final = b"HTTP/1.1"
_HTTP_10: Final = b"HTTP/1.0"
_V10: Final = aiohttp.HttpVersion10


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp session and pool, created on first use inside the running event loop."""

    def __init__(self, *, tls: ssl.SSLContext, limits: httpx.Limits) -> None:
        self._tls = tls
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}

    def _open(self) -> aiohttp.ClientSession:
        # Only here, in a coroutine: aiohttp binds the session and pool to the running loop.
        # limit_per_host is left open: a client talks to one host (and a redirect's target).
        # aiohttp has no separate bound on idle connections: up to max_connections stay open
        # for keepalive_expiry, where httpx kept max_keepalive_connections.
        connector = aiohttp.TCPConnector(
            ssl=self._tls,
            limit=self._limits.max_connections or 0,
            keepalive_timeout=self._limits.keepalive_expiry,
            timeout_ceil_threshold=math.inf,  # never round a timeout up to a whole second
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=_SKIP_AUTO_HEADERS,
            auto_decompress=False,
            trust_env=False,
            timeout=aiohttp.ClientTimeout(),
            max_line_size=MAX_LINE_SIZE,
            max_field_size=MAX_FIELD_SIZE,
            max_headers=MAX_HEADERS,
        )
        # aiohttp sends a GET again, once, when the server hangs up without an answer (RFC 9112
        # allows it); httpx never did, and a cloud must see the requests it saw before. Its
        # own test client turns this off the same way; there is no public switch. A kept-alive
        # connection the server has closed is still dropped before use, as httpcore did.
        self._session._retry_connection = False
        return self._session

    def _timeout(self, request: httpx.Request) -> aiohttp.ClientTimeout:
        """httpx's four timeouts as aiohttp's: waiting for the pool counts towards connecting.

        aiohttp has no write timeout; a request is a few hundred bytes, and every fetch runs
        under the engine's deadline besides.
        """
        given = request.extensions.get("timeout", {})
        connect, read, pool = given.get("connect"), given.get("read"), given.get("pool")
        key = (connect, read, pool)
        timeout = self._timeouts.get(key)
        if timeout is None:
            timeout = aiohttp.ClientTimeout(
                total=None,
                connect=None if connect is None or pool is None else connect + pool,
                sock_connect=connect,
                sock_read=read,
                ceil_threshold=math.inf,
            )
            self._timeouts[key] = timeout
        return timeout

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._open()
        body = await request.aread()
        # Let the loop notice connections the server closed after their last answer (an EOF
        # not read yet), so the pool drops them instead of sending on them: httpcore polls an
        # idle socket for the same reason, and a GET is never sent twice here (see _open).
        # One turn reads the EOF, the next runs the protocol's connection_lost.
        for _ in range(_TURNS_TO_SEE_A_CLOSE):
            await asyncio.sleep(0)
        failure: httpx.TransportError
        try:
            response = await session.request(
                request.method,
                yarl.URL(str(request.url), encoded=True),
                headers=_headers(request),
                data=body or None,
                allow_redirects=False,
                timeout=self._timeout(request),
            )
        except Exception as exc:  # every failure becomes an httpx error, below
            failure = _mapped(exc, request, connecting=True)
        else:
            return httpx.Response(
                response.status,
                headers=list(response.raw_headers),
                stream=_Body(response, request),
                extensions={
                    "http_version": _HTTP_10 if response.version == _V10 else _HTTP_11,
                    "reason_phrase": _reason(response),
                },
            )
        # Raised outside the except block: aiohttp's exception (its request_info holds the
        # request's headers, Authorization among them) must not ride along as __context__.
        raise failure

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


class _Body(httpx.AsyncByteStream):
    """The answer's body as aiohttp reads it, chunk by chunk, still encoded."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._response.content
        while True:
            failure: httpx.TransportError | None = None
            try:
                chunk = await content.readany()
            except Exception as exc:  # every failure becomes an httpx error
                failure = _mapped(exc, self._request, connecting=False)
            if failure is not None:
                raise failure
            if not chunk:
                return
            yield chunk

    async def aclose(self) -> None:
        # A body read to its end leaves a connection ready for the next request; one abandoned
        # half-way cannot be reused (the rest of the body is still on its way).
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


def _headers(request: httpx.Request) -> list[tuple[str, str]]:
    """httpx's headers, names spelled and ordered as httpx has them, duplicates kept."""
    return [
        (name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers.raw
    ]


def _reason(response: aiohttp.ClientResponse) -> bytes:
    return (response.reason or "").encode("latin-1", "replace")


def _mapped(exc: Exception, request: httpx.Request, *, connecting: bool) -> httpx.TransportError:
    """The httpx error for an aiohttp (or socket) failure, in words that quote nothing sent.

    `connecting`: the failure came before the answer's head (so a plain timeout or reset
    happened while connecting or waiting for the head), not while its body was read.
    """
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout("timed out connecting", request=request)
    if isinstance(exc, aiohttp.SocketTimeoutError | asyncio.TimeoutError):
        return httpx.ReadTimeout("timed out reading", request=request)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return httpx.ConnectError(str(exc.certificate_error), request=request)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(_os_words(exc.os_error), request=request)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError(
            "Server disconnected without sending a response."
            if connecting
            else "Server disconnected before the end of the body.",
            request=request,
        )
    if isinstance(exc, aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError(
            "the body ended before its announced length, or its chunked framing is broken",
            request=request,
        )
    if isinstance(exc, aiohttp.ClientResponseError):
        # A malformed head; aiohttp's message quotes the offending bytes, so none of it here.
        too_long = "too long" in exc.message.lower() or "got more than" in exc.message.lower()
        return httpx.RemoteProtocolError(
            f"the answer's head is larger than allowed (a line over {MAX_FIELD_SIZE} bytes "
            f"or over {MAX_HEADERS} headers)"
            if too_long
            else "the answer's status line or headers are not valid HTTP/1.1",
            request=request,
        )
    if isinstance(exc, aiohttp.ClientSSLError):
        return httpx.ConnectError("TLS failure", request=request)
    if isinstance(exc, aiohttp.ClientOSError | OSError):
        words = _os_words(exc)
        if connecting:
            return httpx.ConnectError(words, request=request)
        return httpx.ReadError(words, request=request)
    if isinstance(exc, ValueError):
        # aiohttp refuses a header with CR or LF, or a URL it cannot send; name neither.
        return httpx.LocalProtocolError(
            "a request header or the URL cannot be sent", request=request
        )
    return httpx.TransportError(f"{type(exc).__name__}", request=request)


def _os_words(exc: OSError) -> str:
    """`[Errno 111] Connection refused`: the error number and the system's words, no address."""
    if exc.errno is not None and exc.strerror:
        return f"[Errno {exc.errno}] {exc.strerror}"
    return type(exc).__name__
