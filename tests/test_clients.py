"""The two cloud clients against respx-mocked upstreams: requests, bodies, errors, limits.

Every upstream here is a respx route on a `.test` host; nothing leaves the process.
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import json
import time
import tracemalloc
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import respx

import exporter
from exporter.clients import lametric as lametric_module
from exporter.clients import parqex as parqex_module
from exporter.clients.http import UpstreamError, new_client
from exporter.clients.lametric import LametricClient
from exporter.clients.parqex import ParqexClient
from exporter.models.lametric import parse_devices, parse_user
from exporter.models.parqex import parse_sync
from exporter.sources import LametricSnapshot, fetch_lametric
from tests.support import fixture_path

PARQEX = "https://parqex.test"
LAMETRIC = "https://lametric.test"
ELSEWHERE = "https://elsewhere.test"

SYNC_PATH = "/oauth/v1/endpoints/sync"
USER_PATH = "/api/v2/users/me"
DEVICES_PATH = "/api/v2/users/me/devices"

TOKEN = "tok-5f0c2b9e8d7a4c1e9b3f6a2d0e8c7b1a"
MAX_BYTES = 1 << 20
TIMEOUT = 5.0

# Headers httpx adds for the transport itself; everything else must be exactly EXPECTED_HEADERS.
TRANSPORT_HEADERS = {"host", "connection", "content-length"}
EXPECTED_HEADERS = {
    "accept": "application/json",
    "accept-encoding": "gzip",
    "accept-charset": "utf-8",
    "authorization": f"Bearer {TOKEN}",
    "content-type": "application/json",
    "user-agent": f"device-cloud-exporter/{exporter.__version__}",
}


def fixture_bytes(name: str) -> bytes:
    return fixture_path(name).read_bytes()


def fixture_json(name: str) -> Any:
    return json.loads(fixture_bytes(name))


# --------------------------------------------------------------------------------------------
# One table of every call the clients make, so each behaviour is checked on every endpoint.
# --------------------------------------------------------------------------------------------

Call = Callable[[httpx.AsyncClient, str, int], Awaitable[Any]]


@dataclass(frozen=True)
class Endpoint:
    id: str
    method: str
    base: str
    path: str
    ok_fixture: str
    call: Call
    expected: Callable[[], Any]  # the parsed value of ok_fixture
    auth_body: Any  # what the upstream says on 401/403
    auth_text: str  # ... and the words of it the message must carry
    auth_hint: str


def _parqex_call(http: httpx.AsyncClient, token: str, max_bytes: int) -> Awaitable[Any]:
    return ParqexClient(http, PARQEX, zone=UTC, max_bytes=max_bytes).sync(token)


def _lametric(http: httpx.AsyncClient, max_bytes: int) -> LametricClient:
    return LametricClient(http, LAMETRIC, max_bytes=max_bytes)


PARQEX_AUTH = {"message": "Invalid Access Token"}
LAMETRIC_AUTH = {"errors": [{"message": "Unauthorized"}]}

ENDPOINTS = [
    Endpoint(
        "parqex.sync",
        "GET",
        PARQEX,
        SYNC_PATH,
        "parqex_sync.json",
        _parqex_call,
        lambda: parse_sync(fixture_json("parqex_sync.json"), UTC),
        PARQEX_AUTH,
        "Invalid Access Token",
        parqex_module.AUTH_HINT,
    ),
    Endpoint(
        "lametric.user",
        "GET",
        LAMETRIC,
        USER_PATH,
        "lametric_user.json",
        lambda http, token, mb: _lametric(http, mb).user(token),
        lambda: parse_user(fixture_json("lametric_user.json")),
        LAMETRIC_AUTH,
        "Unauthorized",
        lametric_module.AUTH_HINT,
    ),
    Endpoint(
        "lametric.devices",
        "GET",
        LAMETRIC,
        DEVICES_PATH,
        "lametric_devices.json",
        lambda http, token, mb: _lametric(http, mb).devices(token),
        lambda: parse_devices(fixture_json("lametric_devices.json")),
        LAMETRIC_AUTH,
        "Unauthorized",
        lametric_module.AUTH_HINT,
    ),
]
ENDPOINT_IDS = [e.id for e in ENDPOINTS]
PARQEX_SYNC = ENDPOINTS[0]
LAMETRIC_USER = ENDPOINTS[1]


def call(
    endpoint: Endpoint,
    answer: httpx.Response | Any,
    *,
    max_bytes: int = MAX_BYTES,
    token: str = TOKEN,
) -> tuple[Any, respx.Route]:
    """Mock `endpoint` with a response or a side effect, make the call, return (value, route)."""
    with respx.mock(base_url=endpoint.base, assert_all_called=False) as mock:
        route = mock.route(method=endpoint.method, path=endpoint.path)
        if isinstance(answer, httpx.Response):
            route.return_value = answer
        else:
            route.side_effect = answer

        async def go() -> Any:
            async with new_client(timeout=TIMEOUT) as http:
                return await endpoint.call(http, token, max_bytes)

        return asyncio.run(go()), route


def fail(endpoint: Endpoint, answer: httpx.Response | Any, **kwargs: Any) -> UpstreamError:
    """The UpstreamError the call raises (and nothing else: any other exception fails the test)."""
    with pytest.raises(UpstreamError) as info:
        call(endpoint, answer, **kwargs)
    assert type(info.value) is UpstreamError
    return info.value


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status,
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )


class RawStream(httpx.AsyncByteStream):
    """A body delivered in chunks and never pre-read or pre-decoded by httpx or respx.

    (`httpx.Response(content=...)` inflates a gzip body when it is built, and respx pre-reads
    byte streams, which would break corrupt-gzip cases and inflate a bomb in the test itself.)
    """

    def __init__(self, data: bytes, chunk: int = 16 * 1024) -> None:
        self._data = data
        self._chunk = chunk

    async def __aiter__(self):  # type: ignore[override]
        for start in range(0, len(self._data), self._chunk):
            yield self._data[start : start + self._chunk]


def raw_response(status: int, raw: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers or {}, stream=RawStream(raw))


def gzip_response(status: int, raw: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return raw_response(
        status,
        raw,
        {"Content-Type": "application/json", "Content-Encoding": "gzip", **(headers or {})},
    )


# --------------------------------------------------------------------------------------------
# The exact request
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=ENDPOINT_IDS)
def test_request_method_path_and_exact_headers(endpoint: Endpoint) -> None:
    _, route = call(endpoint, httpx.Response(200, content=fixture_bytes(endpoint.ok_fixture)))

    assert route.call_count == 1
    request = route.calls.last.request
    assert request.method == endpoint.method
    assert request.url.host == httpx.URL(endpoint.base).host
    assert request.url.path == endpoint.path
    assert request.url.query == b""
    sent = {k.lower(): v for k, v in request.headers.items()}
    assert {k: v for k, v in sent.items() if k not in TRANSPORT_HEADERS} == EXPECTED_HEADERS
    # one value each: e.g. not "gzip, deflate, br" merged with httpx's own defaults
    for name in EXPECTED_HEADERS:
        assert request.headers.get_list(name) == [EXPECTED_HEADERS[name]], name


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=ENDPOINT_IDS)
def test_cookies_a_cloud_sets_are_never_sent_back(endpoint: Endpoint) -> None:
    """Bearer tokens are the only credential: a Set-Cookie is neither parsed nor returned."""
    ok = fixture_bytes(endpoint.ok_fixture)
    with respx.mock(base_url=endpoint.base, assert_all_called=False) as mock:
        route = mock.route(method=endpoint.method, path=endpoint.path)
        route.return_value = httpx.Response(
            200, content=ok, headers={"Set-Cookie": "session=abc123; Path=/"}
        )

        async def twice() -> httpx.Cookies:
            async with new_client(timeout=TIMEOUT) as http:
                await endpoint.call(http, TOKEN, MAX_BYTES)
                await endpoint.call(http, TOKEN, MAX_BYTES)
                return http.cookies

        cookies = asyncio.run(twice())
    assert route.call_count == 2
    assert all("cookie" not in call.request.headers for call in route.calls)
    assert not cookies


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=ENDPOINT_IDS)
def test_request_body(endpoint: Endpoint) -> None:
    """Every call is a read: a GET without a body."""
    _, route = call(endpoint, httpx.Response(200, content=fixture_bytes(endpoint.ok_fixture)))
    request = route.calls.last.request
    assert request.method == "GET"
    assert request.content == b""


# --------------------------------------------------------------------------------------------
# Bodies: plain and gzip
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=ENDPOINT_IDS)
@pytest.mark.parametrize("encoding", ["plain", "gzip"])
def test_body_decodes_to_the_fixture_models(endpoint: Endpoint, encoding: str) -> None:
    raw = fixture_bytes(endpoint.ok_fixture)
    if encoding == "gzip":
        response = gzip_response(200, gzip.compress(raw))
    else:
        response = httpx.Response(200, content=raw, headers={"Content-Type": "application/json"})
    value, _ = call(endpoint, response)
    assert value == endpoint.expected()


def test_sync_gzip_body_values() -> None:
    """Not only equal to the parser's output: the actual values came through."""
    sync, _ = call(
        PARQEX_SYNC, gzip_response(200, gzip.compress(fixture_bytes("parqex_sync.json")))
    )
    assert [d.id for d in sync.devices] == [
        "9d9e5e0e093a06d5f16e1116d108d0c7",
        "35ff0e08ac8eb84ca097a894541ba049",
    ]
    assert sync.devices[1].doors[0].battery_level == 98.0
    assert sync.devices[0].last_contact == 1608317245.0
    assert sync.problems == ()


def test_lametric_values_come_through() -> None:
    user, _ = call(LAMETRIC_USER, httpx.Response(200, content=fixture_bytes("lametric_user.json")))
    assert user.value.name == "John Smith"
    assert user.value.private_device_count == 5.0
    devices, _ = call(
        ENDPOINTS[2], gzip_response(200, gzip.compress(fixture_bytes("lametric_devices.json")))
    )
    assert [d.id for d in devices.value] == ["18"]
    assert devices.value[0].created_at == 1425647755.0


@pytest.mark.parametrize("encoding", ["x-gzip", " GZIP "])
def test_gzip_encoding_spellings(encoding: str) -> None:
    raw = fixture_bytes("parqex_sync.json")
    response = raw_response(200, gzip.compress(raw), {"Content-Encoding": encoding})
    sync, _ = call(PARQEX_SYNC, response)
    assert len(sync.devices) == 2


# --------------------------------------------------------------------------------------------
# Status codes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=ENDPOINT_IDS)
@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_carry_the_upstream_text_and_hint(endpoint: Endpoint, status: int) -> None:
    error = fail(endpoint, json_response(status, endpoint.auth_body))
    assert error.reason == "auth"
    assert error.status == status
    assert endpoint.auth_text in error.message
    assert endpoint.auth_hint in error.message
    assert str(status) in error.message
    assert str(error) == error.message


def test_parqex_auth_hint_says_to_renew_the_token() -> None:
    error = fail(PARQEX_SYNC, json_response(401, PARQEX_AUTH))
    assert "Invalid Access Token" in error.message
    assert "renew the account's token" in error.message


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=ENDPOINT_IDS)
def test_404_is_http_4xx_without_auth_hint(endpoint: Endpoint) -> None:
    error = fail(endpoint, json_response(404, {"errors": [{"message": "Not found"}]}))
    assert error.reason == "http_4xx"
    assert error.status == 404
    assert "Not found" in error.message
    assert endpoint.auth_hint not in error.message
    assert error.retry_after is None


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=ENDPOINT_IDS)
@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx(endpoint: Endpoint, status: int) -> None:
    error = fail(endpoint, json_response(status, {"message": "boom"}))
    assert error.reason == "http_5xx"
    assert error.status == status
    assert "boom" in error.message


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=ENDPOINT_IDS)
def test_429_retry_after_seconds(endpoint: Endpoint) -> None:
    error = fail(endpoint, json_response(429, {"message": "slow down"}, {"Retry-After": "120"}))
    assert error.reason == "rate_limited"
    assert error.status == 429
    assert error.retry_after == 120.0


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=ENDPOINT_IDS)
def test_429_retry_after_http_date(endpoint: Endpoint) -> None:
    when = datetime.now(UTC) + timedelta(seconds=60)
    header = email.utils.format_datetime(when, usegmt=True)
    error = fail(endpoint, json_response(429, {}, {"Retry-After": header}))
    assert error.reason == "rate_limited"
    assert error.retry_after is not None
    # the date has whole seconds and some time passes: 60 s give or take a few
    assert 55.0 <= error.retry_after <= 61.0


def test_429_retry_after_in_the_past_or_absent_or_garbage() -> None:
    past = email.utils.format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    assert fail(PARQEX_SYNC, json_response(429, {}, {"Retry-After": past})).retry_after == 0.0
    assert fail(PARQEX_SYNC, json_response(429, {})).retry_after is None
    garbage = fail(PARQEX_SYNC, json_response(429, {}, {"Retry-After": "soon"}))
    assert garbage.reason == "rate_limited"
    assert garbage.retry_after is None


# --------------------------------------------------------------------------------------------
# Transport failures
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=ENDPOINT_IDS)
@pytest.mark.parametrize("exc", [httpx.ReadTimeout, httpx.ConnectTimeout, httpx.PoolTimeout])
def test_timeouts(endpoint: Endpoint, exc: type[Exception]) -> None:
    error = fail(endpoint, exc)
    assert error.reason == "timeout"
    assert error.status is None
    assert endpoint.path in error.message


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=ENDPOINT_IDS)
@pytest.mark.parametrize("exc", [httpx.ConnectError, httpx.RemoteProtocolError])
def test_connect_errors(endpoint: Endpoint, exc: type[Exception]) -> None:
    error = fail(endpoint, exc)
    assert error.reason == "connect"
    assert error.status is None
    assert exc.__name__ in error.message


# --------------------------------------------------------------------------------------------
# Bad bodies
# --------------------------------------------------------------------------------------------

HTML_502 = (
    b"<!DOCTYPE html>\n<html><head>\n<TITLE>\n  502   Bad Gateway\n</TITLE></head>"
    b"<body><h1>Bad Gateway</h1><p>nginx</p></body></html>"
)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=ENDPOINT_IDS)
def test_html_page_with_200_is_decode(endpoint: Endpoint) -> None:
    page = b"<html><head><title>Login</title></head><body>Sign in</body></html>"
    response = httpx.Response(
        200, content=page, headers={"Content-Type": "text/html; charset=utf-8"}
    )
    error = fail(endpoint, response)
    assert error.reason == "decode"
    assert "not JSON" in error.message
    assert "text/html" in error.message
    assert "charset" not in error.message


def test_non_json_without_content_type_is_decode() -> None:
    error = fail(PARQEX_SYNC, httpx.Response(200, content=b"OK"))
    assert error.reason == "decode"
    assert "no content type" in error.message


@pytest.mark.parametrize("body", [b"", b"{", b'{"devices": [}', b"\xff\xfe\x00garbage"])
def test_broken_json_is_decode(body: bytes) -> None:
    error = fail(
        PARQEX_SYNC, httpx.Response(200, content=body, headers={"Content-Type": "application/json"})
    )
    assert error.reason == "decode"
    assert "application/json" in error.message


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=ENDPOINT_IDS)
def test_html_error_page_with_502_quotes_the_title(endpoint: Endpoint) -> None:
    response = httpx.Response(502, content=HTML_502, headers={"Content-Type": "text/html"})
    error = fail(endpoint, response)
    assert error.reason == "http_5xx"
    assert error.status == 502
    assert "HTML page" in error.message
    assert "(502 Bad Gateway)" in error.message  # the title, on one line
    assert "nginx" not in error.message  # the page itself is not dumped


def test_truncated_gzip_is_decode() -> None:
    whole = gzip.compress(fixture_bytes("parqex_sync.json"))
    error = fail(PARQEX_SYNC, gzip_response(200, whole[: len(whole) // 2]))
    assert error.reason == "decode"
    assert "truncated" in error.message


def test_gzip_without_trailer_is_decode() -> None:
    whole = gzip.compress(fixture_bytes("parqex_sync.json"))
    error = fail(PARQEX_SYNC, gzip_response(200, whole[:-8]))  # the CRC and size are missing
    assert error.reason == "decode"


@pytest.mark.parametrize(
    "raw",
    [
        b"this is not gzip at all",
        # a valid header followed by garbage deflate data
        gzip.compress(b"{}")[:10] + b"\xff" * 32,
    ],
    ids=["not-gzip", "bad-deflate"],
)
def test_corrupt_gzip_is_decode(raw: bytes) -> None:
    error = fail(PARQEX_SYNC, gzip_response(200, raw))
    assert error.reason == "decode"
    assert "corrupt" in error.message


def test_corrupt_gzip_crc_is_decode() -> None:
    whole = bytearray(gzip.compress(fixture_bytes("parqex_sync.json")))
    whole[-8] ^= 0xFF  # CRC32 of the trailer
    error = fail(PARQEX_SYNC, gzip_response(200, bytes(whole)))
    assert error.reason == "decode"


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=ENDPOINT_IDS)
@pytest.mark.parametrize("encoding", ["br", "deflate", "zstd", "gzip, br"])
def test_unsupported_content_encoding_is_decode(endpoint: Endpoint, encoding: str) -> None:
    response = raw_response(200, fixture_bytes(endpoint.ok_fixture), {"Content-Encoding": encoding})
    error = fail(endpoint, response)
    assert error.reason == "decode"
    assert "Content-Encoding" in error.message
    assert repr(encoding.strip().lower()) in error.message


@pytest.mark.parametrize(
    ("status", "encoding", "raw", "reason"),
    [
        (502, "br", b"\x1b\x00\x00", "http_5xx"),
        (503, "gzip", b"not gzip", "http_5xx"),
        (429, "br", b"\x1b\x00\x00", "rate_limited"),
        (401, "gzip", b"not gzip", "auth"),
    ],
)
def test_error_status_with_unreadable_body_keeps_its_reason(
    status: int, encoding: str, raw: bytes, reason: str
) -> None:
    response = raw_response(status, raw, {"Content-Encoding": encoding, "Retry-After": "30"})
    error = fail(PARQEX_SYNC, response)
    assert error.reason == reason
    assert error.status == status
    assert error.retry_after == 30.0


@pytest.mark.parametrize(("status", "reason"), [(200, "decode"), (500, "http_5xx")])
def test_deeply_nested_json_is_decode_not_recursion_error(status: int, reason: str) -> None:
    depth = 30_000
    body = b"[" * depth + b"]" * depth  # valid JSON, 60 kB, under max_bytes and the error limit
    error = fail(PARQEX_SYNC, httpx.Response(status, content=body))
    assert error.reason == reason


# --------------------------------------------------------------------------------------------
# Size limits
# --------------------------------------------------------------------------------------------


def _padded_json(size: int) -> bytes:
    """A JSON object of exactly `size` bytes."""
    shell = b'{"devices": [], "pad": ""}'
    return shell[:-2] + b"x" * (size - len(shell)) + shell[-2:]


def test_body_of_exactly_max_bytes_is_read() -> None:
    body = _padded_json(1024)
    assert len(body) == 1024
    sync, _ = call(PARQEX_SYNC, httpx.Response(200, content=body), max_bytes=1024)
    assert sync.devices == ()


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=ENDPOINT_IDS)
def test_body_over_max_bytes_is_too_large(endpoint: Endpoint) -> None:
    error = fail(endpoint, httpx.Response(200, content=_padded_json(1025)), max_bytes=1024)
    assert error.reason == "too_large"
    assert "1024" in error.message


def test_gzip_body_inflating_over_max_bytes_is_too_large() -> None:
    raw = gzip.compress(_padded_json(1025))
    assert len(raw) < 1024  # small on the wire, too big once inflated
    error = fail(PARQEX_SYNC, gzip_response(200, raw), max_bytes=1024)
    assert error.reason == "too_large"


def test_gzip_of_exactly_max_bytes_is_read() -> None:
    raw = gzip.compress(_padded_json(1024))
    sync, _ = call(PARQEX_SYNC, gzip_response(200, raw), max_bytes=1024)
    assert sync.devices == ()


def _gzip_zeros(size: int) -> bytes:
    """gzip of `size` zero bytes, built in pieces so the test itself never holds them all."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    piece = bytes(1 << 20)
    out = [packer.compress(piece) for _ in range(size // len(piece))]
    out.append(packer.flush())
    return b"".join(out)


def test_gzip_bomb_is_too_large_quickly_and_with_bounded_memory() -> None:
    bomb = _gzip_zeros(50 * 1024 * 1024)
    assert len(bomb) < 200_000
    tracemalloc.start()
    started = time.perf_counter()
    try:
        error = fail(PARQEX_SYNC, gzip_response(200, bomb), max_bytes=1 << 20)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error.reason == "too_large"
    assert elapsed < 3.0
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes while reading a 50 MB bomb"


def test_gzip_bomb_in_an_error_body_is_cut_not_inflated() -> None:
    bomb = _gzip_zeros(50 * 1024 * 1024)
    tracemalloc.start()
    try:
        error = fail(PARQEX_SYNC, gzip_response(503, bomb))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error.reason == "http_5xx"
    assert peak < 8 * 1024 * 1024
    assert len(error.message) < 400


# --------------------------------------------------------------------------------------------
# The token never leaks
# --------------------------------------------------------------------------------------------


def _assert_no_token(error: UpstreamError, token: str = TOKEN) -> None:
    for text in (error.message, str(error), repr(error), *map(str, error.args)):
        assert token not in text


ECHOES = [
    ("json-401", lambda: json_response(401, {"message": f"Invalid Access Token {TOKEN}"})),
    ("json-bearer-403", lambda: json_response(403, {"errors": [{"message": f"Bearer {TOKEN}"}]})),
    ("json-404", lambda: json_response(404, {"error": f"no such token: {TOKEN}"})),
    ("text-500", lambda: httpx.Response(500, content=f"token={TOKEN} failed".encode())),
    (
        "html-502",
        lambda: httpx.Response(
            502, content=f"<title>{TOKEN}</title>".encode(), headers={"Content-Type": "text/html"}
        ),
    ),
    ("json-429", lambda: json_response(429, {"detail": TOKEN}, {"Retry-After": "5"})),
    (
        "gzip-401",
        lambda: gzip_response(401, gzip.compress(json.dumps({"message": TOKEN}).encode())),
    ),
]


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=ENDPOINT_IDS)
@pytest.mark.parametrize("make", [m for _, m in ECHOES], ids=[i for i, _ in ECHOES])
def test_token_echoed_in_error_body_is_masked(endpoint: Endpoint, make: Callable) -> None:
    error = fail(endpoint, make())
    _assert_no_token(error)
    assert "***" in error.message  # the echo was seen and masked, not just dropped


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=ENDPOINT_IDS)
def test_token_echoed_by_a_side_effect_reading_the_request(endpoint: Endpoint) -> None:
    """The mock echoes whatever Authorization it was sent, as a real misbehaving server would."""

    def echo(request: httpx.Request) -> httpx.Response:
        return json_response(401, {"message": f"bad {request.headers['Authorization']}"})

    error = fail(endpoint, echo)
    assert error.reason == "auth"
    _assert_no_token(error)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=ENDPOINT_IDS)
def test_token_in_a_transport_error_is_masked(endpoint: Endpoint) -> None:
    def boom(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(
            f"proxy refused {request.headers['Authorization']}", request=request
        )

    error = fail(endpoint, boom)
    assert error.reason == "connect"
    _assert_no_token(error)
    assert "***" in error.message


def test_token_cut_by_the_message_limit_does_not_leak_a_prefix() -> None:
    body = {"message": "x" * 180 + TOKEN}
    error = fail(PARQEX_SYNC, json_response(401, body))
    _assert_no_token(error)  # passes: the whole token is not there ...
    assert TOKEN[:12] not in error.message  # ... but its first 17 characters are


# --------------------------------------------------------------------------------------------
# Redirects
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", [PARQEX_SYNC, ENDPOINTS[2]], ids=["parqex", "lametric"])
def test_redirect_to_another_host_drops_authorization(endpoint: Endpoint) -> None:
    with respx.mock(assert_all_called=True) as mock:
        first = mock.get(endpoint.base + endpoint.path).respond(
            302, headers={"Location": ELSEWHERE + "/moved"}
        )
        second = mock.get(ELSEWHERE + "/moved").respond(
            200, content=fixture_bytes(endpoint.ok_fixture)
        )

        async def go() -> Any:
            async with new_client(timeout=TIMEOUT) as http:
                return await endpoint.call(http, TOKEN, MAX_BYTES)

        value = asyncio.run(go())

    assert value == endpoint.expected()
    assert first.calls.last.request.headers["Authorization"] == f"Bearer {TOKEN}"
    redirected = second.calls.last.request
    assert "authorization" not in {k.lower() for k in redirected.headers}
    assert TOKEN not in str(redirected.headers)
    assert TOKEN not in str(redirected.url)


def test_redirect_on_the_same_host_keeps_authorization() -> None:
    """The control for the test above: the header is visible to the second route when it stays."""
    with respx.mock(base_url=PARQEX, assert_all_called=True) as mock:
        mock.get(SYNC_PATH).respond(301, headers={"Location": PARQEX + "/v2/sync"})
        second = mock.get("/v2/sync").respond(200, content=fixture_bytes("parqex_sync.json"))

        async def go() -> Any:
            async with new_client(timeout=TIMEOUT) as http:
                return await PARQEX_SYNC.call(http, TOKEN, MAX_BYTES)

        asyncio.run(go())
    assert second.calls.last.request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_redirect_loop_is_an_error_not_a_hang() -> None:
    with respx.mock(base_url=PARQEX) as mock:
        mock.get(SYNC_PATH).respond(302, headers={"Location": PARQEX + SYNC_PATH})

        async def go() -> Any:
            async with new_client(timeout=TIMEOUT) as http:
                return await PARQEX_SYNC.call(http, TOKEN, MAX_BYTES)

        with pytest.raises(UpstreamError) as info:
            asyncio.run(go())
    assert info.value.reason == "http_4xx"
    assert "redirect" in info.value.message


# --------------------------------------------------------------------------------------------
# fetch_lametric: both calls at once, one error out
# --------------------------------------------------------------------------------------------


def _run_fetch_lametric(user_effect: Callable, devices_effect: Callable) -> LametricSnapshot:
    with respx.mock(base_url=LAMETRIC, assert_all_called=False) as mock:
        mock.get(USER_PATH).side_effect = user_effect
        mock.get(DEVICES_PATH).side_effect = devices_effect

        async def go() -> LametricSnapshot:
            async with new_client(timeout=TIMEOUT) as http:
                client = LametricClient(http, LAMETRIC, max_bytes=MAX_BYTES)
                # a sequential implementation deadlocks below; this turns that into a failure
                return await asyncio.wait_for(fetch_lametric(client, TOKEN), timeout=3)

        return asyncio.run(go())


def test_fetch_lametric_runs_user_and_devices_concurrently() -> None:
    events: dict[str, asyncio.Event] = {}
    order: list[str] = []

    def event(name: str) -> asyncio.Event:
        return events.setdefault(name, asyncio.Event())  # made inside the running loop

    async def user(request: httpx.Request) -> httpx.Response:
        order.append("user-start")
        event("user").set()
        await event("devices").wait()  # only returns if devices has started too
        order.append("user-end")
        return httpx.Response(200, content=fixture_bytes("lametric_user.json"))

    async def devices(request: httpx.Request) -> httpx.Response:
        order.append("devices-start")
        event("devices").set()
        await event("user").wait()
        order.append("devices-end")
        return httpx.Response(200, content=fixture_bytes("lametric_devices.json"))

    snapshot = _run_fetch_lametric(user, devices)

    assert order.index("user-start") < order.index("devices-end")
    assert order.index("devices-start") < order.index("user-end")
    assert snapshot.user == parse_user(fixture_json("lametric_user.json")).value
    assert snapshot.devices == parse_devices(fixture_json("lametric_devices.json")).value
    assert snapshot.problems == ()


def test_fetch_lametric_merges_both_calls_problems() -> None:
    async def user(request: httpx.Request) -> httpx.Response:
        return json_response(200, {"id": 1, "name": 5})

    async def devices(request: httpx.Request) -> httpx.Response:
        return json_response(200, [{"id": 2, "mac": []}, "junk"])

    snapshot = _run_fetch_lametric(user, devices)
    fields = {(p.field, p.reason) for p in snapshot.problems}
    assert ("user.name", "wrong_type") in fields
    assert ("device.mac", "wrong_type") in fields
    assert ("devices", "wrong_type") in fields
    assert [d.id for d in snapshot.devices] == ["2"]


async def _never(request: httpx.Request) -> httpx.Response:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def _user_ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=fixture_bytes("lametric_user.json"))


async def _devices_ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=fixture_bytes("lametric_devices.json"))


def _status(status: int, body: Any) -> Callable:
    async def effect(request: httpx.Request) -> httpx.Response:
        return json_response(status, body)

    return effect


def _raise(exc: type[Exception]) -> Callable:
    async def effect(request: httpx.Request) -> httpx.Response:
        raise exc("mock", request=request)

    return effect


@pytest.mark.parametrize(
    ("user", "devices", "reason", "path"),
    [
        (_status(401, LAMETRIC_AUTH), _devices_ok, "auth", USER_PATH),
        (_status(401, LAMETRIC_AUTH), _never, "auth", USER_PATH),  # the other is cancelled
        (_user_ok, _status(503, {"message": "down"}), "http_5xx", DEVICES_PATH),
        (_never, _status(429, {}), "rate_limited", DEVICES_PATH),
        (_never, _raise(httpx.ReadTimeout), "timeout", DEVICES_PATH),
        (_raise(httpx.ConnectError), _never, "connect", USER_PATH),
        (_user_ok, lambda request: httpx.Response(200, content=b"<html/>"), "decode", DEVICES_PATH),
    ],
    ids=[
        "user-auth",
        "user-auth-devices-pending",
        "devices-5xx",
        "devices-429-user-pending",
        "devices-timeout",
        "user-connect",
        "devices-decode",
    ],
)
def test_fetch_lametric_raises_the_failed_calls_upstream_error(
    user: Callable, devices: Callable, reason: str, path: str
) -> None:
    started = time.perf_counter()
    with pytest.raises(UpstreamError) as info:
        _run_fetch_lametric(user, devices)
    assert type(info.value) is UpstreamError  # not an ExceptionGroup
    assert not isinstance(info.value, BaseExceptionGroup)
    assert info.value.reason == reason
    assert path in info.value.message
    assert time.perf_counter() - started < 2.5  # the pending call did not hold the error back


def test_fetch_lametric_both_fail_gives_one_of_them() -> None:
    with pytest.raises(UpstreamError) as info:
        _run_fetch_lametric(_status(401, LAMETRIC_AUTH), _status(500, {}))
    assert info.value.reason in {"auth", "http_5xx"}
