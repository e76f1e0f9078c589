"""Where an account's access token comes from: the config itself, a file read on every scrape,
or an OAuth 2 refresh-token grant (exporter.oauth).

Reading `token_file` each time lets an outside job (a sidecar, a cron refresh) rotate the token
without restarting the exporter. The read runs off the event loop and is time-bounded
(exporter.files): a file swapped for a FIFO or a device costs its account a `token` failure.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import httpx

from exporter import files
from exporter.clients.http import UpstreamError
from exporter.config import DEFAULT_BASE_URLS, Account, SourceName
from exporter.oauth import OAuthToken
from exporter.secret import Secret, credential_problem


class TokenSource(Protocol):
    async def token(self) -> Secret:
        """The access token to send now."""
        ...

    async def rejected(self, token: Secret) -> bool:
        """The cloud answered 401/403 to `token`: True if a retry with `token()` may succeed.

        May raise UpstreamError when getting a fresh token failed (an OAuth refresh).
        """
        ...


class StaticToken:
    def __init__(self, value: Secret) -> None:
        self._value = value

    async def token(self) -> Secret:
        return self._value

    async def rejected(self, token: Secret) -> bool:
        return False  # the same token again would fail the same way

    def __repr__(self) -> str:
        return "StaticToken(***)"


class FileToken:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._reader = files.OffLoopReader(path, files.SECRET_LIMIT)

    async def token(self) -> Secret:
        try:
            value = (await self._reader.read()).strip()
        except files.FileProblem as unreadable:
            raise UpstreamError("token", f"token file: {unreadable}") from None
        if not value:
            raise UpstreamError("token", f"token file {self.path} is empty")
        problem = credential_problem(value)
        if problem is not None:  # sent, it would fail in a header that the error message quotes
            raise UpstreamError("token", f"token file {self.path}: the token {problem}")
        return Secret(value)

    async def rejected(self, token: Secret) -> bool:
        """Worth a retry only if someone rotated the file since we read it."""
        try:
            return (await self.token()) != token
        except UpstreamError:
            return False

    def __repr__(self) -> str:
        return f"FileToken({str(self.path)!r})"


def token_source(
    account: Account,
    source: SourceName | None = None,
    base_url: str | None = None,
    new_http: Callable[[], httpx.AsyncClient] | None = None,
) -> TokenSource:
    """The account's token source; an oauth2 account also needs its source and an HTTP client.

    `new_http` is called once, only for an oauth2 account; whoever passes it closes the client.
    """
    if account.token is not None:
        return StaticToken(Secret(account.token.get_secret_value()))
    if account.oauth2 is not None:
        if source is None or new_http is None:
            raise ValueError("an oauth2 account needs its source and an HTTP client")
        return OAuthToken.from_config(
            account.oauth2, source, base_url or DEFAULT_BASE_URLS[source], new_http()
        )
    assert account.token_file is not None  # the config guarantees exactly one
    return FileToken(account.token_file)
