"""OAuth 2 refresh-token grant against the simulated clouds: rotation, timing, crashes, secrets.

Everything runs over real HTTP on 127.0.0.1 (exporter.simulator); no vendor host is contacted.
The simulator rotates refresh tokens like the real clouds: a refresh token works once.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import socket
import stat
import tempfile
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus

import httpx
import pytest
import yaml

from exporter.auth import token_source
from exporter.clients.http import UpstreamError, new_client
from exporter.config import DEFAULT_BASE_URLS, Config, SourceName
from exporter.engine import Engine
from exporter.oauth import (
    STYLES,
    OAuthToken,
    default_token_url,
    refresh_delay,
)
from exporter.scrape import Scraper
from exporter.secret import Secret
from exporter.simulator import SimulatedCloud
from tests.support import config_yaml, value

SOURCES: tuple[SourceName, ...] = ("parqex", "lametric")
CLIENT_ID = "dce-client-id"
# Sentinels: none of these may ever show up in a message, a repr or a log record.
CLIENT_SECRET = "cs-SENTINEL-7Qx9vJ2mLk+/="
REFRESH_0 = "rt-SENTINEL-0Hs8dW4pZa"
ACCOUNT_TOKEN = {"parqex": "acct-parqex-static", "lametric": "acct-lametric-static"}
TOKEN_PATH = {"parqex": "/oauth/v2/endpoints/token/", "lametric": "/api/v2/oauth2/token"}
DATA_PATH = {"parqex": "/oauth/v1/endpoints/sync", "lametric": "/api/v2/users/me"}
DATA_HANDLERS = {
    "parqex": ("_api_parqex_sync",),
    "lametric": ("_api_lametric_user", "_api_lametric_devices"),
}
UNAUTHORIZED = {
    "parqex": {"message": "Invalid Access Token"},
    "lametric": {"errors": [{"message": "Unauthorized"}]},
}


@dataclass
class Cloud:
    sim: SimulatedCloud
    grants: list[tuple[str, str]] = field(default_factory=list)  # (access, refresh) as issued

    def token_requests(self, source: SourceName) -> list[Any]:
        return [r for r in self.sim.requests if r.path == TOKEN_PATH[source]]

    def data_requests(self, source: SourceName) -> list[Any]:
        return [r for r in self.sim.requests if r.path.startswith(DATA_PATH[source])]


@pytest.fixture
def cloud() -> Iterator[Cloud]:
    sim = SimulatedCloud(
        parqex_token=ACCOUNT_TOKEN["parqex"], lametric_token=ACCOUNT_TOKEN["lametric"]
    )
    for source in SOURCES:
        sim.add_oauth_client(source, CLIENT_ID, CLIENT_SECRET, REFRESH_0, ACCOUNT_TOKEN[source])
    result = Cloud(sim)
    issue = sim._refresh

    def recording(name: str, params: dict[str, str]) -> dict[str, Any] | None:
        answer = issue(name, params)
        if answer:
            result.grants.append((answer["access_token"], answer["refresh_token"]))
        return answer

    sim._refresh = recording  # type: ignore[method-assign]
    with sim:
        yield result


@pytest.fixture
def refresh_file(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    path = state / "account.refresh"
    path.write_text(REFRESH_0 + "\n")
    path.chmod(0o600)
    return path


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def oauth_source(
    cloud: Cloud,
    source: SourceName,
    path: Path,
    *,
    clock: Callable[[], float] | None = None,
    token_url: str | None = None,
    **extra: Any,
) -> AsyncIterator[OAuthToken]:
    if "client_secret_file" not in extra:
        extra["client_secret"] = Secret(CLIENT_SECRET)
    async with new_client(timeout=5) as http:
        yield OAuthToken(
            http=http,
            token_url=token_url or default_token_url(source, cloud.sim.url),
            style=STYLES[source],
            client_id=CLIENT_ID,
            refresh_token_file=path,
            **({"clock": clock} if clock else {}),
            **extra,
        )


def raw_refresh(cloud: Cloud, source: SourceName, refresh: str) -> int:
    """Ask the simulator directly (not through the exporter) whether `refresh` is still valid."""
    params = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "grant_type": "refresh_token",
        "refresh_token": refresh,
    }
    with httpx.Client(base_url=cloud.sim.url, trust_env=False, timeout=5) as client:
        if source == "parqex":
            return client.get(TOKEN_PATH[source], params=params).status_code
        return client.post(TOKEN_PATH[source], data=params).status_code


def data_status(cloud: Cloud, source: SourceName, access: str) -> int:
    with httpx.Client(base_url=cloud.sim.url, trust_env=False, timeout=5) as client:
        headers = {"Authorization": f"Bearer {access}"}
        return client.get(DATA_PATH[source], headers=headers).status_code


@pytest.fixture
def start_engine(start_scraper: Callable[[str], Scraper]) -> Callable[[str], Engine]:
    return lambda text: start_scraper(text).engine


def scrape(engine: Engine) -> str:
    body, _ = Scraper(engine).render(accept=None, accept_encoding=None, timeout_header=None)
    return body.decode()


def oauth_config(source: SourceName, base_url: str, path: Path) -> str:
    oauth2 = {
        "client_id": CLIENT_ID,
        "client_secret": "${DCE_TEST_CLIENT_SECRET}",
        "refresh_token_file": path,
    }
    return config_yaml(**{source: [{"name": "home", "oauth2": oauth2}]}, base_url=base_url)


# -- rotation through the whole exporter --------------------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
def test_first_scrape_saves_the_rotated_refresh_token_before_using_the_access_token(
    source: SourceName,
    cloud: Cloud,
    refresh_file: Path,
    start_engine: Callable[[str], Engine],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[str | None, str, int]] = []  # what the disk held as each data request came

    for name in DATA_HANDLERS[source]:
        handler = getattr(cloud.sim, name)

        def spy(account: Any, request: Any, *groups: str, _handler: Any = handler) -> Any:
            mode = stat.S_IMODE(refresh_file.stat().st_mode)
            seen.append((request.token, refresh_file.read_text(), mode))
            return _handler(account, request, *groups)

        monkeypatch.setattr(cloud.sim, name, spy)
    monkeypatch.setenv("DCE_TEST_CLIENT_SECRET", CLIENT_SECRET)
    engine = start_engine(oauth_config(source, cloud.sim.url, refresh_file))

    assert value(scrape(engine), f"{source}_up", account="home") == 1
    assert len(cloud.grants) == 1
    access, refresh = cloud.grants[0]
    paths = [r.path for r in cloud.sim.requests]
    assert paths[0] == TOKEN_PATH[source]
    assert all(p.startswith(DATA_PATH[source]) for p in paths[1:]) and len(paths) > 1
    # every data request carried the new access token, and by then the new refresh token
    # was on disk, whole, mode 0600
    assert seen and all(entry == (access, refresh + "\n", 0o600) for entry in seen)
    # the access token lives in memory only
    for path in refresh_file.parent.parent.rglob("*"):
        assert path.is_dir() or access not in path.read_text()
    # the next scrape reuses it: no second refresh
    assert value(scrape(engine), f"{source}_up", account="home") == 1
    assert len(cloud.token_requests(source)) == 1
    # rotation: the refresh token the exporter started with is spent
    assert raw_refresh(cloud, source, REFRESH_0) in (400, 401)


@pytest.mark.parametrize("source", SOURCES)
def test_a_rejected_access_token_is_refreshed_once_and_never_twice(
    source: SourceName,
    cloud: Cloud,
    refresh_file: Path,
    start_engine: Callable[[str], Engine],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DCE_TEST_CLIENT_SECRET", CLIENT_SECRET)
    engine = start_engine(oauth_config(source, cloud.sim.url, refresh_file))
    assert value(scrape(engine), f"{source}_up", account="home") == 1
    access_1 = cloud.grants[0][0]

    cloud.sim.revoke_access_token(access_1)  # as if it expired early
    before = len(cloud.sim.requests)
    assert value(scrape(engine), f"{source}_up", account="home") == 1
    new = cloud.sim.requests[before:]
    access_2 = cloud.grants[1][0]
    rounds = 1 if source == "parqex" else 2  # LaMetric asks for user and devices at once
    token_at = [i for i, r in enumerate(new) if r.path == TOKEN_PATH[source]]
    assert len(token_at) == 1
    assert {r.token for r in new[: token_at[0]]} == {access_1}  # rejected
    # (a cancelled LaMetric sibling request may be recorded late, hence no strict order after)
    after = [r.token for r in new[token_at[0] + 1 :]]
    assert set(after) <= {access_1, access_2} and 1 <= after.count(access_2) <= rounds
    assert engine.stats.errors[(source, "home", "auth")] == 0

    # the refreshed token is rejected too: no second refresh, no second retry
    cloud.sim.fail(DATA_PATH[source], 401, UNAUTHORIZED[source])
    before = len(cloud.sim.requests)
    assert value(scrape(engine), f"{source}_up", account="home") == 0
    new = cloud.sim.requests[before:]
    access_3 = cloud.grants[2][0]
    assert len(cloud.grants) == 3
    assert [r.path for r in new].count(TOKEN_PATH[source]) == 1
    tokens = [r.token for r in new if r.path != TOKEN_PATH[source]]
    assert set(tokens) == {access_2, access_3}
    assert 1 <= tokens.count(access_2) <= rounds  # the first try
    assert 1 <= tokens.count(access_3) <= rounds  # the one retry, and no other
    assert engine.stats.errors[(source, "home", "auth")] == 1


# -- what goes over the wire ---------------------------------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
def test_token_request_has_each_clouds_shape_and_exact_parameters(
    source: SourceName, cloud: Cloud, refresh_file: Path
) -> None:
    async def main() -> None:
        async with oauth_source(cloud, source, refresh_file) as tokens:
            await tokens.token()

    asyncio.run(main())
    (request,) = cloud.token_requests(source)
    expected = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "grant_type": "refresh_token",
        "refresh_token": REFRESH_0,
    }
    assert request.token is None and "authorization" not in request.headers
    if source == "parqex":  # ParqEx: GET, everything in the query string, no body
        assert request.method == "GET"
        assert request.query == expected
        assert request.body == b""
    else:  # LaMetric: POST with a form body, nothing in the query string
        assert request.method == "POST"
        assert request.query == {}
        assert request.headers["content-type"] == "application/x-www-form-urlencoded"
        pairs = parse_qsl(request.body.decode(), keep_blank_values=True, strict_parsing=True)
        assert len(pairs) == 4 and dict(pairs) == expected


def test_default_token_urls_follow_the_source_and_its_base_url() -> None:
    assert (
        default_token_url("parqex", DEFAULT_BASE_URLS["parqex"])
        == "https://api.parqex.com/oauth/v2/endpoints/token/"
    )
    assert (
        default_token_url("lametric", DEFAULT_BASE_URLS["lametric"])
        == "https://developer.lametric.com/api/v2/oauth2/token"
    )
    assert (
        default_token_url("parqex", "http://127.0.0.1:8080")
        == "http://127.0.0.1:8080/oauth/v2/endpoints/token/"
    )

    def account(extra: str = "") -> Any:
        text = (
            "lametric:\n  accounts:\n    - name: a\n      oauth2:\n"
            f"        {{client_id: c, client_secret: s, refresh_token_file: /x{extra}}}\n"
        )
        return Config.model_validate(yaml.safe_load(text)).lametric.accounts[0]

    made: list[httpx.AsyncClient] = []

    def new_http() -> httpx.AsyncClient:
        made.append(httpx.AsyncClient())
        return made[-1]

    default = token_source(account(), "lametric", None, new_http)
    assert "'https://developer.lametric.com/api/v2/oauth2/token'" in repr(default)
    below = token_source(account(), "lametric", "http://127.0.0.1:9", new_http)
    assert "'http://127.0.0.1:9/api/v2/oauth2/token'" in repr(below)
    own = token_source(account(", token_url: 'https://id.example/t'"), "lametric", None, new_http)
    assert "'https://id.example/t'" in repr(own)
    assert len(made) == 3  # one client per oauth2 account, none for the others
    with pytest.raises(ValueError, match="needs its source"):
        token_source(account())


# -- when to refresh -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lifetime", "delay"), [(3600, 3240), (1000, 900), (600, 540), (100, 50), (30, 15)]
)
def test_refresh_delay_is_90_percent_or_60s_early_but_not_before_half(
    lifetime: float, delay: float
) -> None:
    assert refresh_delay(lifetime) == pytest.approx(delay)


@pytest.mark.parametrize("source", SOURCES)
def test_refreshes_shortly_before_expiry_and_not_before(
    source: SourceName, cloud: Cloud, refresh_file: Path
) -> None:
    cloud.sim.token_expires_in = 1000  # refresh due 900 s after the request
    clock = Clock()

    async def main() -> None:
        async with oauth_source(cloud, source, refresh_file, clock=clock) as tokens:
            start = clock.now
            first = await tokens.token()
            clock.now = start + 899.9
            assert await tokens.token() == first
            assert len(cloud.token_requests(source)) == 1
            clock.now = start + 900
            second = await tokens.token()
            assert second != first
            assert len(cloud.token_requests(source)) == 2
            assert second.reveal() == cloud.grants[1][0]
            clock.now = start + 900 + 899.9
            assert await tokens.token() == second
            assert len(cloud.token_requests(source)) == 2

    asyncio.run(main())


def test_without_expires_in_a_token_is_taken_to_last_an_hour(
    cloud: Cloud, refresh_file: Path
) -> None:
    answer = b'{"access_token": "a-without-expiry", "token_type": "Bearer"}'
    cloud.sim.respond_raw(TOKEN_PATH["parqex"], answer, content_type="application/json", times=2)
    clock = Clock()

    async def main() -> None:
        async with oauth_source(cloud, "parqex", refresh_file, clock=clock) as tokens:
            start = clock.now
            assert (await tokens.token()).reveal() == "a-without-expiry"
            clock.now = start + 3239.9  # 90 % of 3600 s
            await tokens.token()
            assert len(cloud.token_requests("parqex")) == 1
            clock.now = start + 3240
            await tokens.token()
            assert len(cloud.token_requests("parqex")) == 2

    asyncio.run(main())


UNUSABLE_EXPIRES_IN = [0, -60, "0", "-3600", "soon", "", None, True, "nan", float("inf")]


@pytest.mark.parametrize("expires_in", UNUSABLE_EXPIRES_IN, ids=repr)
def test_an_unusable_expires_in_is_taken_as_an_hour(
    expires_in: object, cloud: Cloud, refresh_file: Path
) -> None:
    """0, negative or non-numeric would make every token due at once: a refresh per scrape."""
    cloud.sim.token_expires_in = expires_in  # type: ignore[assignment]
    clock = Clock()

    async def main() -> None:
        async with oauth_source(cloud, "parqex", refresh_file, clock=clock) as tokens:
            start = clock.now
            first = await tokens.token()
            clock.now = start + 3239.9  # 90 % of the default 3600 s
            assert await tokens.token() == first
            assert len(cloud.token_requests("parqex")) == 1
            clock.now = start + 3240
            assert await tokens.token() != first
            assert len(cloud.token_requests("parqex")) == 2

    asyncio.run(main())


@pytest.mark.parametrize("source", SOURCES)
def test_expires_in_zero_does_not_refresh_on_every_scrape(
    source: SourceName,
    cloud: Cloud,
    refresh_file: Path,
    start_engine: Callable[[str], Engine],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cloud.sim.token_expires_in = 0
    monkeypatch.setenv("DCE_TEST_CLIENT_SECRET", CLIENT_SECRET)
    engine = start_engine(oauth_config(source, cloud.sim.url, refresh_file))
    for _ in range(3):
        assert value(scrape(engine), f"{source}_up", account="home") == 1
    assert len(cloud.token_requests(source)) == 1


def test_an_answer_without_refresh_token_keeps_the_file(cloud: Cloud, refresh_file: Path) -> None:
    answer = b'{"access_token": "a-not-rotated", "expires_in": 3600}'
    cloud.sim.respond_raw(TOKEN_PATH["lametric"], answer, content_type="application/json")
    before = refresh_file.stat()

    async def main() -> None:
        async with oauth_source(cloud, "lametric", refresh_file) as tokens:
            assert (await tokens.token()).reveal() == "a-not-rotated"

    asyncio.run(main())
    after = refresh_file.stat()
    assert refresh_file.read_text() == REFRESH_0 + "\n"
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_the_refresh_token_file_is_read_again_before_each_refresh(
    cloud: Cloud, refresh_file: Path
) -> None:
    clock = Clock()

    async def main() -> None:
        async with oauth_source(cloud, "parqex", refresh_file, clock=clock) as tokens:
            await tokens.token()
            # an operator puts in a refresh token fresh from the developer portal
            cloud.sim.add_oauth_client(
                "parqex", CLIENT_ID, CLIENT_SECRET, "rt-from-portal", ACCOUNT_TOKEN["parqex"]
            )
            refresh_file.write_text("rt-from-portal\n")
            clock.now += 3600
            await tokens.token()

    asyncio.run(main())
    sent = [r.query["refresh_token"] for r in cloud.token_requests("parqex")]
    assert sent == [REFRESH_0, "rt-from-portal"]
    assert refresh_file.read_text() == cloud.grants[1][1] + "\n"


def test_client_secret_file_is_read_when_refreshing(cloud: Cloud, refresh_file: Path) -> None:
    secret_file = refresh_file.parent / "client.secret"
    secret_file.write_text(CLIENT_SECRET + "\n")

    async def main() -> None:
        async with oauth_source(
            cloud, "lametric", refresh_file, client_secret_file=secret_file
        ) as tokens:
            assert (await tokens.token()).reveal() == cloud.grants[0][0]

    asyncio.run(main())
    (request,) = cloud.token_requests("lametric")
    assert dict(parse_qsl(request.body.decode()))["client_secret"] == CLIENT_SECRET


# -- one refresh for many callers ----------------------------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
def test_concurrent_callers_share_one_refresh(
    source: SourceName, cloud: Cloud, refresh_file: Path
) -> None:
    cloud.sim.set_latency(0.2, TOKEN_PATH[source])  # so that every caller arrives meanwhile

    async def main() -> None:
        async with oauth_source(cloud, source, refresh_file) as tokens:
            first = await asyncio.gather(*(tokens.token() for _ in range(20)))
            assert len(cloud.token_requests(source)) == 1
            assert {t.reveal() for t in first} == {cloud.grants[0][0]}
            # twenty scrapes see a 401 at once: still one refresh, and all may retry
            retry = await asyncio.gather(*(tokens.rejected(first[0]) for _ in range(20)))
            assert retry == [True] * 20
            assert len(cloud.token_requests(source)) == 2
            # a late caller holding the old token: someone refreshed already, no request
            assert await tokens.rejected(first[0]) is True
            assert len(cloud.token_requests(source)) == 2

    asyncio.run(main())


@pytest.mark.parametrize("source", SOURCES)
def test_a_caller_that_gives_up_does_not_abort_the_refresh(
    source: SourceName, cloud: Cloud, refresh_file: Path
) -> None:
    """The engine's deadline cancels a slow fetch; the cloud has spent the refresh token by then.

    Aborting the refresh there would lose the only valid refresh token; instead it completes
    and the next caller gets its result.
    """
    cloud.sim.set_latency(0.4, TOKEN_PATH[source])

    async def main() -> None:
        async with oauth_source(cloud, source, refresh_file) as tokens:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(tokens.token(), 0.05)
            token = await tokens.token()
            assert token.reveal() == cloud.grants[0][0]

    asyncio.run(main())
    assert len(cloud.token_requests(source)) == 1
    assert refresh_file.read_text() == cloud.grants[0][1] + "\n"


def test_settle_waits_for_a_refresh_in_flight(cloud: Cloud, refresh_file: Path) -> None:
    cloud.sim.set_latency(0.3, TOKEN_PATH["lametric"])

    async def main() -> None:
        async with oauth_source(cloud, "lametric", refresh_file) as tokens:
            await tokens.settle()  # nothing in flight: returns at once
            caller = asyncio.ensure_future(tokens.token())
            await asyncio.sleep(0.05)
            caller.cancel()  # the scrape gave up; shutting down now would cut the refresh off
            await tokens.settle()
            assert refresh_file.read_text() == cloud.grants[0][1] + "\n"

    asyncio.run(main())


# -- a crash while saving ------------------------------------------------------------------------


def _failing(real: Callable[..., Any], nth: int, partial: bool = False) -> Callable[..., Any]:
    calls = 0

    def fake(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls != nth:
            return real(*args, **kwargs)
        if partial:  # a short write, then the disk is full
            fd, data = args
            real(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.EIO if not partial else errno.ENOSPC, "simulated crash")

    return fake


# step: (module, function, which call fails, the refresh token file afterwards)
CRASH_STEPS = {
    "create-temp": (tempfile, "mkstemp", 1, "old"),
    "chmod-temp": (os, "fchmod", 1, "old"),
    "write-temp": (os, "write", 1, "old"),
    "fsync-temp": (os, "fsync", 1, "old"),
    "rename": (os, "replace", 1, "old"),
    "fsync-directory": (os, "fsync", 2, "new"),
}


@pytest.mark.parametrize("step", list(CRASH_STEPS))
@pytest.mark.parametrize("source", SOURCES)
def test_a_failed_save_never_leaves_a_partial_file_nor_uses_the_new_access_token(
    source: SourceName,
    step: str,
    cloud: Cloud,
    refresh_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module, name, nth, holds = CRASH_STEPS[step]

    async def main() -> None:
        async with oauth_source(cloud, source, refresh_file) as tokens:
            with monkeypatch.context() as patch:
                patch.setattr(
                    module, name, _failing(getattr(module, name), nth, step == "write-temp")
                )
                with pytest.raises(UpstreamError) as caught:
                    await tokens.token()
            assert caught.value.reason == "token"
            assert f"cannot save it to {refresh_file}" in caught.value.message
            assert "not used yet" in caught.value.message

            access, refresh = cloud.grants[0]
            # the file is whole: the old token or the new one, never empty, partial or missing
            assert refresh_file.read_text() == (REFRESH_0 if holds == "old" else refresh) + "\n"
            assert stat.S_IMODE(refresh_file.stat().st_mode) == 0o600
            assert sorted(refresh_file.parent.iterdir()) == [refresh_file]  # no temp file left
            # nothing was sent with the new access token
            assert [r.path for r in cloud.sim.requests] == [TOKEN_PATH[source]]

            # the disk recovers: the kept answer is saved first, then used; no second refresh
            token = await tokens.token()
            assert token.reveal() == access
            assert refresh_file.read_text() == refresh + "\n"
            assert len(cloud.token_requests(source)) == 1

    asyncio.run(main())
    assert data_status(cloud, source, cloud.grants[0][0]) == 200
    # What a real crash in this window costs (docs/oauth2.md): the cloud spent the old refresh
    # token when it answered, so a file still holding it needs a new one from the portal.
    assert raw_refresh(cloud, source, REFRESH_0) in (400, 401)


# -- never a secret ------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# mode: (expected reason, words the message must contain)
FAILURE_MODES: dict[str, tuple[str, tuple[str, ...]]] = {
    "invalid-grant": ("token", ("HTTP 4", "fix: if the refresh token in")),
    "error-echoing-secrets": ("token", ("bad refresh_token *** for client_secret ***",)),
    "html-500": ("token", ("HTTP 500", "an HTML page (502 Bad Gateway)")),
    "network": ("token", ("ConnectError",)),
    "bad-json": ("token", ("the answer is not JSON (application/json)",)),
    "no-access-token": ("token", ("the answer has no access_token (server_error)",)),
    "redirect": ("token", ("HTTP 302", "not followed")),
    "rate-limited": ("rate_limited", ("HTTP 429",)),
    "unwritable-directory": ("token", ("cannot save it to", "Permission denied")),
}


@pytest.mark.parametrize("mode", list(FAILURE_MODES))
@pytest.mark.parametrize("source", SOURCES)
def test_no_failure_reveals_a_secret(
    source: SourceName,
    mode: str,
    cloud: Cloud,
    refresh_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for logger in (None, "httpx", "httpcore", "exporter"):
        caplog.set_level(logging.DEBUG, logger=logger)
    path = TOKEN_PATH[source]
    token_url = None
    sim = cloud.sim
    if mode == "invalid-grant":
        refresh_file.write_text("rt-SENTINEL-unknown-to-the-cloud\n")
    elif mode == "error-echoing-secrets":
        sim.fail(
            path,
            400,
            {"error_description": f"bad refresh_token {REFRESH_0} for client_secret "
             f"{quote_plus(CLIENT_SECRET)}"},
        )  # fmt: skip
    elif mode == "html-500":
        page = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
        sim.respond_raw(path, page, status=500, content_type="text/html")
    elif mode == "network":
        token_url = f"http://127.0.0.1:{closed_port()}{path}"
    elif mode == "bad-json":
        sim.respond_raw(path, b'{"access_token": "', content_type="application/json")
    elif mode == "no-access-token":
        sim.fail(path, 200, {"error": "server_error"})
    elif mode == "redirect":
        sim.fail(path, 302, b"", headers={"Location": "http://127.0.0.1:9/collect"})
    elif mode == "rate-limited":
        sim.fail(path, 429, {"message": "slow down"}, headers={"Retry-After": "30"})
    elif mode == "unwritable-directory":
        # As root, chmod cannot deny writing; the OS's refusal is simulated instead.
        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise PermissionError(errno.EACCES, "Permission denied")

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    reason, words = FAILURE_MODES[mode]

    async def main() -> tuple[UpstreamError, str]:
        async with oauth_source(cloud, source, refresh_file, token_url=token_url) as tokens:
            with pytest.raises(UpstreamError) as caught:
                await tokens.token()
            return caught.value, repr(tokens)

    error, source_repr = asyncio.run(main())
    assert error.reason == reason
    for word in words:
        assert word in error.message
    if mode == "rate-limited":
        assert error.retry_after == 30
    assert error.__context__ is None and error.__cause__ is None

    sentinels = {CLIENT_SECRET, REFRESH_0, "rt-SENTINEL-unknown-to-the-cloud"}
    sentinels |= {token for grant in cloud.grants for token in grant}
    sentinels |= {quote(s, safe="") for s in sentinels} | {quote_plus(s) for s in sentinels}
    texts = [
        str(error),
        repr(error),
        "".join(traceback.format_exception(error)),
        source_repr,
    ]
    for record in caplog.records:
        texts += [record.getMessage(), repr(vars(record))]
        if record.exc_info:
            texts.append("".join(traceback.format_exception(*record.exc_info)))
    for text in texts:
        for sentinel in sentinels:
            assert sentinel not in text
    if mode not in ("network",):  # a response came: httpx logged its URL, and it was redacted
        logged = [r.getMessage() for r in caplog.records if r.name == "httpx"]
        assert logged
        if source == "parqex":
            assert "client_secret=REDACTED" in logged[0]
            assert "refresh_token=REDACTED" in logged[0]
    if mode == "redirect":
        assert len(sim.requests) == 1  # the secrets were not carried to the redirect's target


# -- tokens received: usable in a header, or refused without being quoted -------------------------


@pytest.mark.parametrize(
    ("field", "token"),
    [
        ("access_token", "at-SENTINEL 9f1c"),
        ("access_token", "at-SENTINEL\n9f1c"),
        ("access_token", "at-SENTINEL-9f1c\u00e9"),
        ("refresh_token", "rt-SENTINEL\x1b9f1c"),
    ],
    ids=["access-space", "access-newline", "access-non-ascii", "refresh-control"],
)
def test_a_received_token_that_cannot_travel_in_a_header_is_refused_unquoted(
    field: str, token: str, cloud: Cloud, refresh_file: Path
) -> None:
    answer = {"access_token": "at-ok-Q2x9", "refresh_token": "rt-ok-Q2x9", "expires_in": 3600}
    answer[field] = token
    cloud.sim.fail(TOKEN_PATH["lametric"], 200, answer)

    async def main() -> UpstreamError:
        async with oauth_source(cloud, "lametric", refresh_file) as tokens:
            with pytest.raises(UpstreamError) as caught:
                await tokens.token()
            return caught.value

    error = asyncio.run(main())
    assert error.reason == "token"
    assert field in error.message and "whitespace, control or non-ASCII" in error.message
    assert "SENTINEL" not in str(error) and "9f1c" not in str(error)
    if field == "access_token":
        # the cloud rotated the refresh token in that answer: losing it would lock us out
        assert refresh_file.read_text() == "rt-ok-Q2x9\n"
    else:
        assert refresh_file.read_text() == REFRESH_0 + "\n"  # nothing of that answer kept


def test_rotated_tokens_leave_the_log_masking_registry(cloud: Cloud, refresh_file: Path) -> None:
    """Each refresh brings two new secrets; the replaced ones must not be kept (and masked)
    forever, or masking cost grows with every rotation the process has lived through."""
    from exporter import secret

    clock = Clock()

    async def rotate(times: int) -> None:
        async with oauth_source(cloud, "parqex", refresh_file, clock=clock) as tokens:
            for _ in range(times):
                clock.now += 3600
                await tokens.token()
        gc.collect()

    asyncio.run(rotate(100))
    assert len(cloud.grants) == 100
    first_access, first_refresh = cloud.grants[0]
    assert secret.redact(first_access) == first_access
    assert secret.redact(first_refresh) == first_refresh
    last_access, _ = cloud.grants[-1]
    assert secret.redact(last_access) == "***"  # the newest are still masked a little longer
    size = secret.registered()
    asyncio.run(rotate(100))
    assert secret.registered() == size  # 200 more secrets seen, not one more masked


@pytest.mark.parametrize("which", ["refresh_token_file", "client_secret_file"])
def test_a_secret_file_with_a_value_no_request_can_carry_fails_unquoted(
    which: str, cloud: Cloud, refresh_file: Path, tmp_path: Path
) -> None:
    extra: dict[str, Any] = {}
    if which == "refresh_token_file":
        refresh_file.write_text("rt-SENTINEL 4f2a\n")
    else:
        extra["client_secret_file"] = tmp_path / "client.secret"
        extra["client_secret_file"].write_text("cs-SENTINEL\x1b4f2a\n")

    async def main() -> UpstreamError:
        async with oauth_source(cloud, "lametric", refresh_file, **extra) as tokens:
            with pytest.raises(UpstreamError) as caught:
                await tokens.token()
            return caught.value

    error = asyncio.run(main())
    assert error.reason == "token"
    assert "whitespace, control or non-ASCII" in error.message
    assert "SENTINEL" not in str(error) and "4f2a" not in str(error)
    assert cloud.token_requests("lametric") == []  # nothing was sent
