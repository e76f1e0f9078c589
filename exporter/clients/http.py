"""What both cloud clients share: headers, one pooled httpx client, bounded reads, error reasons.

Bodies are read raw and inflated here, with a byte limit applied *after* decompression, so a huge
or endless body, or a gzip bomb, costs at most `max_bytes` of memory.
"""

from __future__ import annotations

import email.utils
import http.cookiejar
import json
import math
import re
import ssl
import time
import zlib
from typing import Any, Final, NoReturn

import certifi
import httpx

from exporter import __version__
from exporter.clients.transport import AiohttpTransport
from exporter.secret import scrub

REASONS: Final = (
    "timeout",
    "connect",
    "auth",
    "rate_limited",
    "http_4xx",
    "http_5xx",
    "decode",
    "too_large",
    "token",
)

ERROR_BODY_LIMIT: Final = 64 * 1024


def default_headers() -> dict[str, str]:
    """The headers the ParqEx document asks for, sent to both clouds, plus who we are."""
    return {
        "Accept": "application/json",
        "Accept-Encoding": "gzip",
        "Accept-Charset": "utf-8",
        "Content-Type": "application/json",
        "User-Agent": f"device-cloud-exporter/{__version__}",
    }


def tls_context() -> ssl.SSLContext:
    """One verifying context (certifi's CAs, as httpx uses) for every client of an engine.

    Building a context loads the CA bundle: about 20 ms and several hundred KiB each, which
    a client per account must not pay again and again.
    """
    return ssl.create_default_context(cafile=certifi.where())


class _NoCookies(http.cookiejar.CookieJar):
    """A jar that keeps nothing: both APIs authenticate with a bearer token, never a cookie.

    httpx runs every answer through the standard library's cookie parser; with a hundred
    accounts that was a tenth of the exporter's CPU per request. A cloud that sets cookies
    gets none back, so every scrape is a fresh, stateless request.
    """

    def extract_cookies(self, response: object, request: object) -> None:
        return None

    def add_cookie_header(self, request: object) -> None:
        return None


# Per account: at most 8 connections, idle ones kept for 5 s (httpx's default expiry). The
# aiohttp transport has no bound of its own on idle connections: all 8 may stay open, not 4.
LIMITS: Final = httpx.Limits(max_connections=8, max_keepalive_connections=4, keepalive_expiry=5.0)


def make_transport(tls: ssl.SSLContext, limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    """The transport of every client new_client makes: aiohttp's HTTP/1.1 under httpx's API.

    See exporter.clients.transport for why. This function is the one seam for tests: respx
    intercepts httpx's own transport (httpcore), so tests/conftest.py replaces it with one that
    uses httpx's transport while respx is mocking, and this one otherwise.
    """
    return AiohttpTransport(tls=tls, limits=limits)


def new_client(*, timeout: float, tls: ssl.SSLContext | None = None) -> httpx.AsyncClient:
    """A long-lived client for one account: keep-alive connections survive between scrapes.

    One client per account, not per source: a small pool per account keeps the pool's
    bookkeeping linear (httpcore's pool scanned every connection for every queued request,
    encode/httpcore#1035). The client's transport owns the pool; closing the client closes it.
    """
    return httpx.AsyncClient(
        headers=default_headers(),
        cookies=_NoCookies(),
        timeout=httpx.Timeout(timeout),
        transport=make_transport(tls if tls is not None else tls_context(), LIMITS),
        follow_redirects=True,  # httpx drops Authorization when a redirect leaves the origin
        max_redirects=3,
        trust_env=False,
    )


class UpstreamError(Exception):
    """A failed upstream call; `reason` is one of REASONS and becomes a label value."""

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status
        self.retry_after = retry_after  # seconds from now, when the upstream said so


def reason_for_status(status: int) -> str:
    if status in (401, 403):
        return "auth"
    if status == 429:
        return "rate_limited"
    return "http_5xx" if status >= 500 else "http_4xx"


async def request_json(
    client: httpx.AsyncClient,
    method: str,
    url: httpx.URL,
    token: str,
    *,
    max_bytes: int,
    auth_hint: str = "",
) -> Any:
    """Send an authorised request and return decoded JSON, or raise UpstreamError.

    `url` is parsed once by the caller: httpx validates every part of a string URL again on
    each request.
    """
    body, content_type = await request_body(
        client, method, url, token, max_bytes=max_bytes, auth_hint=auth_hint
    )
    return decode_json(body, content_type, f"{method} {url.path}")


async def request_body(
    client: httpx.AsyncClient,
    method: str,
    url: httpx.URL,
    token: str,
    *,
    max_bytes: int,
    auth_hint: str = "",
) -> tuple[bytes | bytearray, str]:
    """Like `request_json`, but the body undecoded, with its content type (for `decode_json`)."""
    try:
        return await _exchange(client, method, url, token, max_bytes, auth_hint)
    except httpx.HTTPError as exc:
        failure = _transport_error(exc, f"{method} {url.path}", token)
    # Raised outside the except block, so the httpx exception (whose request holds the
    # Authorization header) is not kept as this error's __context__.
    raise failure


async def _exchange(
    client: httpx.AsyncClient,
    method: str,
    url: httpx.URL,
    token: str,
    max_bytes: int,
    hint: str,
) -> tuple[bytes | bytearray, str]:
    headers = {"Authorization": f"Bearer {token}"}
    async with client.stream(method, url, headers=headers) as response:
        if response.status_code >= 300:
            try:
                body = await _read_limited(response, ERROR_BODY_LIMIT, tolerate_overflow=True)
            except UpstreamError:
                body = b""  # an unreadable error page must not hide the status behind it
            raise _status_error(response, body, token, hint)
        body = await _read_limited(response, max_bytes)
        return body, response.headers.get("content-type", "")


def _transport_error(exc: httpx.HTTPError, what: str, token: str) -> UpstreamError:
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamError("timeout", f"{what} timed out")
    if isinstance(exc, httpx.TooManyRedirects):
        return UpstreamError("http_4xx", f"{what}: too many redirects")
    if isinstance(exc, httpx.DecodingError):
        return UpstreamError("decode", f"{what}: the answer cannot be decoded")
    return UpstreamError("connect", f"{what}: {type(exc).__name__}: {_clean(str(exc), token)}")


def decode_json(body: bytes | bytearray, content_type: str, what: str) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:  # UnicodeDecodeError included
        if "integer string conversion" not in str(exc):
            _not_json(content_type, what)
    except RecursionError:
        _not_json(content_type, what)
    # An integer of more than 4,300 digits (Python's limit on int(str)) is valid JSON: one
    # field that cannot be used, not an answer that cannot be read. Only this rare answer pays
    # for a Python callback per integer.
    try:
        return json.loads(body, parse_int=_bounded_int)
    except (ValueError, RecursionError):
        _not_json(content_type, what)


def _bounded_int(digits: str) -> int | float:
    """An integer too long for int(): an infinity, which every number field skips."""
    try:
        return int(digits)
    except ValueError:
        return -math.inf if digits.startswith("-") else math.inf


def _not_json(content_type: str, what: str) -> NoReturn:
    kind = content_type.split(";")[0].strip() or "no content type"
    raise UpstreamError("decode", f"{what}: the answer is not JSON ({kind})")


async def _read_limited(
    response: httpx.Response, limit: int, *, tolerate_overflow: bool = False
) -> bytes | bytearray:
    """Read at most `limit` decoded bytes; past that, raise `too_large` (or just stop reading)."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("gzip", "x-gzip"):
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding in ("identity", ""):
        inflater = None
    else:
        raise UpstreamError("decode", f"unsupported Content-Encoding {encoding!r}")
    out = bytearray()
    try:
        async for chunk in response.aiter_raw():
            pending = chunk
            while pending:
                if inflater is None:
                    data, pending = pending, b""
                else:
                    data = inflater.decompress(pending, limit + 1 - len(out))
                    pending = b"" if inflater.eof else inflater.unconsumed_tail
                out += data
                if len(out) > limit:
                    if tolerate_overflow:
                        return bytes(out[:limit])
                    raise UpstreamError(
                        "too_large", f"the answer is larger than {limit} bytes after decompression"
                    )
    except zlib.error:
        raise UpstreamError("decode", "the answer's gzip stream is corrupt") from None
    if inflater is not None and not inflater.eof and not tolerate_overflow:
        raise UpstreamError("decode", "the answer's gzip stream is truncated")
    return out  # not bytes(out): a copy of a 64 MiB answer is 64 MiB more at the peak


def _status_error(
    response: httpx.Response, body: bytes | bytearray, token: str, hint: str
) -> UpstreamError:
    status = response.status_code
    reason = reason_for_status(status)
    message = upstream_message(body, response.headers.get("content-type", ""), secret=token)
    text = f"HTTP {status} from {response.request.method} {_path(str(response.request.url))}"
    if message:
        text += f": {message}"
    if reason == "auth" and hint:
        text += f" ({hint})"
    return UpstreamError(
        reason,
        text,
        status=status,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
    )


def upstream_message(body: bytes | bytearray, content_type: str, *, secret: str = "") -> str:
    """The upstream's own words about an error, short and on one line, `secret` masked."""
    if secret:  # before any shortening, so no part of it can survive a cut
        body = body.replace(secret.encode(), b"***")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        data = None
    if isinstance(data, dict):
        errors = data.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            data = errors[0]
        for key in ("message", "error_description", "error", "detail"):
            if isinstance(data.get(key), str):
                return _one_line(data[key])
    if "html" in content_type.lower():
        match = re.search(rb"<title[^>]*>(.*?)</title>", body, re.I | re.S)
        title = match.group(1).decode("utf-8", "replace") if match else ""
        return f"an HTML page{f' ({_one_line(title)})' if title.strip() else ''}"
    return _one_line(body.decode("utf-8", "replace"))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds from now: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _clean(text: str, token: str) -> str:
    """`text` without `token` in any form: h11 quotes a bad header as bytes (`b'Bearer ...'`)."""
    return scrub(text, [token])


def _path(url: str) -> str:
    return httpx.URL(url).path
