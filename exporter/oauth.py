"""OAuth 2 refresh-token grant: access tokens kept in memory, rotated refresh tokens kept on disk.

The two clouds ask for the same grant in two shapes: ParqEx wants a GET with every parameter in
the query string, LaMetric a standard POST with a form body. Neither shape needs a library.

The one rule that matters: a cloud that rotates refresh tokens spends the old one as it answers,
so the new refresh token is saved to `refresh_token_file` (atomically, fsynced) *before* the new
access token is handed out. If saving fails, the answer is kept in memory, not used, and the save
is retried at the next call; see docs/oauth2.md for what a crash at each step means.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlencode

import httpx

from exporter import files
from exporter.clients.http import UpstreamError, parse_retry_after, upstream_message
from exporter.config import OAuth2, SourceName
from exporter.problems import os_reason
from exporter.secret import Secret, credential_problem
from exporter.secret import scrub as scrub_values

Style = Literal["query", "form"]

TOKEN_PATHS: Final[dict[SourceName, str]] = {
    "parqex": "/oauth/v2/endpoints/token/",  # GET, parameters in the query string
    "lametric": "/api/v2/oauth2/token",  # POST, application/x-www-form-urlencoded body
}
STYLES: Final[dict[SourceName, Style]] = {"parqex": "query", "lametric": "form"}

DEFAULT_LIFETIME: Final = 3600.0  # seconds, when the answer has no usable expires_in
EARLY_FRACTION: Final = 0.9  # refresh at 90 % of the lifetime...
EARLY_SECONDS: Final = 60.0  # ...or 60 s before it ends, whichever is earlier...
LATEST_FRACTION: Final = 0.5  # ...but never before half of it (short lifetimes)
ANSWER_LIMIT: Final = 64 * 1024  # a token answer is a few hundred bytes
SENSITIVE_PARAMS: Final = frozenset(
    {"client_secret", "refresh_token", "access_token", "code", "password", "client_assertion"}
)


def default_token_url(source: SourceName, base_url: str) -> str:
    """The cloud's documented token endpoint, below `base_url` (so a simulator works too)."""
    return base_url.rstrip("/") + TOKEN_PATHS[source]


def refresh_delay(lifetime: float) -> float:
    """Seconds after the request until a token of this lifetime should be replaced."""
    return max(min(lifetime * EARLY_FRACTION, lifetime - EARLY_SECONDS), lifetime * LATEST_FRACTION)


@dataclass(frozen=True, slots=True)
class _Grant:
    """A token endpoint's answer that is not in use yet."""

    access: Secret
    refresh: Secret | None  # None: keep the refresh token file as it is
    refresh_at: float  # clock() time at which to ask for the next one


class OAuthToken:
    """A TokenSource for one account: refreshes shortly before expiry and once after a 401/403.

    Concurrent callers share one refresh. The refresh runs as its own task, so a caller that
    times out (the engine's deadline cancels it) does not abort a refresh half way, between the
    cloud spending the old refresh token and the new one reaching the disk.
    """

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        token_url: str,
        style: Style,
        client_id: str,
        refresh_token_file: Path,
        client_secret: Secret | None = None,
        client_secret_file: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (client_secret is None) == (client_secret_file is None):
            raise ValueError("give exactly one of client_secret, client_secret_file")
        self._http = http
        self._url = token_url
        self._style = style
        self._client_id = client_id
        self._refresh_file = refresh_token_file
        self._client_secret = client_secret
        self._client_secret_file = client_secret_file
        # Off the event loop and time-bounded: a FIFO or a hung file system costs this account.
        self._readers = {
            path: files.OffLoopReader(path, files.SECRET_LIMIT)
            for path in (refresh_token_file, client_secret_file)
            if path is not None
        }
        self._clock = clock
        self._access: Secret | None = None
        self._refresh_at = float("-inf")
        self._pending: _Grant | None = None  # received, but its refresh token is not saved yet
        self._flight: asyncio.Future[Secret] | None = None
        self._secrets: list[Secret] = []  # every secret this source has seen, for scrubbing

    @classmethod
    def from_config(
        cls,
        settings: OAuth2,
        source: SourceName,
        base_url: str,
        http: httpx.AsyncClient,
        clock: Callable[[], float] = time.monotonic,
    ) -> OAuthToken:
        secret = settings.client_secret
        return cls(
            http=http,
            token_url=settings.token_url or default_token_url(source, base_url),
            style=STYLES[source],
            client_id=settings.client_id,
            refresh_token_file=settings.refresh_token_file,
            client_secret=None if secret is None else Secret(secret.get_secret_value()),
            client_secret_file=settings.client_secret_file,
            clock=clock,
        )

    def __repr__(self) -> str:
        return (
            f"OAuthToken(client_id={self._client_id!r}, token_url={self._url!r}, "
            f"refresh_token_file={str(self._refresh_file)!r})"
        )

    # -- TokenSource -----------------------------------------------------------------------

    async def token(self) -> Secret:
        if self._access is not None and self._clock() < self._refresh_at:
            return self._access
        return await self._renew(rejected=None)

    async def rejected(self, token: Secret) -> bool:
        """Refresh once (unless someone already did); True if that gave a different token.

        A failing refresh raises its UpstreamError (reason "token" or "rate_limited"): that
        explains the failure better than the 401 that led here.
        """
        return (await self._renew(rejected=token)) != token

    async def settle(self) -> None:
        """Wait until a refresh in flight has finished (never raises).

        Call before closing the HTTP client: closing it mid-refresh can lose the refresh token
        the cloud has just rotated.
        """
        flight = self._flight
        if flight is not None and not flight.done():
            await asyncio.wait([flight])

    # -- refreshing ------------------------------------------------------------------------

    async def _renew(self, rejected: Secret | None) -> Secret:
        # No await between the check and starting the task: exactly one refresh at a time.
        flight = self._flight
        if flight is None or flight.done():
            if rejected is not None and rejected == self._access:
                self._refresh_at = float("-inf")  # known bad: later callers must not use it
            if self._access is not None and self._clock() < self._refresh_at:
                return self._access  # renewed by someone else since the caller looked
            flight = self._flight = asyncio.ensure_future(self._refresh())
            flight.add_done_callback(_retrieve)
        return await asyncio.shield(flight)

    async def _refresh(self) -> Secret:
        if self._pending is None:
            self._pending = await self._request_grant()
        grant = self._pending
        if grant.refresh is not None:
            self._save(grant.refresh)  # raises, keeping the grant pending, if it cannot
        self._pending = None
        self._access, self._refresh_at = grant.access, grant.refresh_at
        return grant.access

    async def _request_grant(self) -> _Grant:
        refresh = await self._read_secret(self._refresh_file, "refresh token")
        if self._client_secret is not None:
            client_secret = self._client_secret
        else:
            assert self._client_secret_file is not None
            client_secret = await self._read_secret(self._client_secret_file, "client secret")
        what = f"refreshing the access token ({'GET' if self._style == 'query' else 'POST'} "
        what += f"{httpx.URL(self._url).path})"
        started = self._clock()
        if self._style == "query":
            request = self._http.build_request(
                "GET",
                self._url,
                params={
                    "client_id": self._client_id,
                    "client_secret": client_secret.reveal(),
                    "grant_type": "refresh_token",
                    "refresh_token": refresh.reveal(),
                },
            )
        else:
            body = {
                "grant_type": "refresh_token",
                "refresh_token": refresh.reveal(),
                "client_id": self._client_id,
                "client_secret": client_secret.reveal(),
            }
            request = self._http.build_request(
                "POST",
                self._url,
                content=urlencode(body).encode("ascii"),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        failure: str | None = None
        try:
            # Never follow a redirect: the request carries the client secret and refresh token.
            response = await self._http.send(request, stream=True, follow_redirects=False)
            try:
                answer = await _read_capped(response, what)
            finally:
                await response.aclose()
        except httpx.TimeoutException:
            failure = f"{what}: timed out"
        except httpx.HTTPError as exc:
            # str(exc) of some httpx errors holds the URL, and ParqEx's URL holds the secrets.
            detail = self._scrub(str(exc))
            failure = f"{what}: {type(exc).__name__}" + (f": {detail}" if detail else "")
        if failure is not None:
            # Raised outside the except block: no __context__ carrying the URL along.
            raise UpstreamError("token", failure)
        content_type = response.headers.get("content-type", "")
        if response.status_code != 200:
            raise self._status_error(response, answer, content_type, what)
        return self._parse(answer, content_type, what, refresh, started)

    def _status_error(
        self, response: httpx.Response, answer: bytes, content_type: str, what: str
    ) -> UpstreamError:
        status = response.status_code
        said = self._scrub(upstream_message(answer, content_type))
        text = f"{what}: HTTP {status}" + (f": {said}" if said else "")
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        if status == 429:
            return UpstreamError("rate_limited", text, status=status, retry_after=retry_after)
        if 300 <= status < 400:
            text += (
                " (a redirect; not followed, the request carries secrets); "
                "fix: set oauth2.token_url to the endpoint the redirect points to"
            )
        elif status < 500:
            text += (
                f"; fix: if the refresh token in {self._refresh_file} was used, revoked or has "
                "expired, put a new one from the vendor's developer portal into that file, "
                "and check client_id and client_secret"
            )
        return UpstreamError("token", text, status=status, retry_after=retry_after)

    def _parse(
        self, answer: bytes, content_type: str, what: str, old_refresh: Secret, started: float
    ) -> _Grant:
        data = _json_or(answer, _NOT_JSON)
        if data is _NOT_JSON:
            kind = content_type.split(";")[0].strip() or "no content type"
            raise UpstreamError("token", f"{what}: the answer is not JSON ({kind})")
        access = data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(access, str) or not access.strip():
            said = self._scrub(upstream_message(answer, content_type)) if data else ""
            raise UpstreamError(
                "token",
                f"{what}: the answer has no access_token" + (f" ({said})" if said else ""),
            )
        new_refresh = data.get("refresh_token")
        if not isinstance(new_refresh, str):
            new_refresh = ""
        # A token that could not travel in a header is refused unquoted: sent on, it would
        # fail in an error message that quotes it; saved, it would fail at the next refresh.
        if new_refresh.strip() and (problem := credential_problem(new_refresh.strip())):
            raise UpstreamError("token", f"{what}: the answer's refresh_token {problem}")
        refresh: Secret | None = None
        if new_refresh.strip():
            refresh = Secret(new_refresh.strip())
            self._remember(refresh)
            if refresh == old_refresh:
                refresh = None  # not rotated: nothing to save
        if (problem := credential_problem(access.strip())) is not None:
            if refresh is not None:
                # The cloud has spent the old refresh token: keep the chain, or the account
                # stays locked out after this one bad answer.
                self._save(refresh)
            raise UpstreamError("token", f"{what}: the answer's access_token {problem}")
        grant_access = Secret(access.strip())
        self._remember(grant_access)
        lifetime = _lifetime(data.get("expires_in"))
        return _Grant(grant_access, refresh, started + refresh_delay(lifetime))

    # -- files -----------------------------------------------------------------------------

    async def _read_secret(self, path: Path, what: str) -> Secret:
        problem: str | None = None
        try:
            value = (await self._readers[path].read()).strip()
        except files.FileProblem as exc:  # never holds the file's content
            problem = str(exc)
        if problem is not None:
            raise UpstreamError("token", f"the {what} file: {problem}")
        if not value:
            raise UpstreamError("token", f"the {what} file {path} is empty")
        problem = credential_problem(value)
        if problem is not None:
            raise UpstreamError("token", f"the {what} file {path}: the {what} {problem}")
        secret = Secret(value)
        self._remember(secret)
        return secret

    def _save(self, refresh: Secret) -> None:
        path = Path(os.path.realpath(self._refresh_file))  # keep a symlink pointing at it
        problem: str | None = None
        try:
            write_atomically(path, refresh.reveal() + "\n")
        except OSError as exc:
            problem = os_reason(exc)
        if problem is not None:
            raise UpstreamError(
                "token",
                f"got a new refresh token but cannot save it to {self._refresh_file} "
                f"({problem}), so the new access token is not used yet; the save is retried "
                f"at the next scrape; fix: make {path.parent} writable for the exporter's user "
                "and keep the exporter running (the new refresh token is only in its memory)",
            )

    # -- never a secret in a message -------------------------------------------------------

    def _remember(self, secret: Secret) -> None:
        if secret not in self._secrets:
            self._secrets.append(secret)
            del self._secrets[:-8]  # a few recent ones are enough; the list must not grow

    def _scrub(self, text: str) -> str:
        known = [*self._secrets, *([self._client_secret] if self._client_secret else [])]
        return scrub(text, known)


def scrub(text: str, secrets: Iterable[Secret]) -> str:
    """`text` with every secret, in every form (as is, escaped, URL-encoded), replaced by ***."""
    return scrub_values(text, [secret.reveal() for secret in secrets])


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` so that it holds either its old content or `text`, never a mix or nothing.

    Temp file in the same directory, mode 0600, written and fsynced, renamed over `path`, then
    the directory fsynced so the rename itself survives a power cut.
    """
    directory = path.parent
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        try:
            os.fchmod(fd, 0o600)
            data = memoryview(text.encode("utf-8"))
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(temp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


async def _read_capped(response: httpx.Response, what: str) -> bytes:
    out = bytearray()
    async for chunk in response.aiter_bytes():
        out += chunk
        if len(out) > ANSWER_LIMIT:
            raise UpstreamError("token", f"{what}: the answer is larger than {ANSWER_LIMIT} bytes")
    return bytes(out)


_NOT_JSON: Final = object()


def _json_or(body: bytes, default: object) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):  # both keep the body: never raise them on
        return default


def _lifetime(value: Any) -> float:
    if isinstance(value, str):
        with suppress(ValueError):
            value = float(value)
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 10**9:
        return float(value)
    return DEFAULT_LIFETIME


def _retrieve(task: asyncio.Future[Secret]) -> None:
    """Mark a refresh's failure as seen: its waiters may all have given up (timed out)."""
    if not task.cancelled():
        task.exception()


class _RedactQuery(logging.Filter):
    """httpx logs every request's full URL at INFO; ParqEx's token URL carries secrets."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(
            isinstance(arg, httpx.URL) and arg.query for arg in record.args
        ):
            record.args = tuple(
                _redacted(arg) if isinstance(arg, httpx.URL) else arg for arg in record.args
            )
        return True


def _redacted(url: httpx.URL) -> str:
    if not url.query:
        return str(url)
    pairs = [
        f"{key}={'REDACTED' if key.lower() in SENSITIVE_PARAMS else value}"
        for key, value in url.params.multi_items()
    ]
    return str(url.copy_with(query=None)) + "?" + "&".join(pairs)


def _install_log_filter() -> None:
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactQuery) for f in logger.filters):
        logger.addFilter(_RedactQuery())


_install_log_filter()
