"""Log masking: every form a line can carry a secret in, a registry that forgets what is gone,
and word-like secrets that must not blank our own words."""

from __future__ import annotations

import asyncio
import base64
import gc
import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from exporter import secret
from exporter.logs import JsonFormatter, LogfmtFormatter
from exporter.scrape import Scraper
from exporter.secret import Secret, redact
from exporter.simulator import SimulatedCloud
from tests.support import value

FORMATTERS = pytest.mark.parametrize(
    "formatter", [LogfmtFormatter(), JsonFormatter()], ids=["logfmt", "json"]
)


def line(formatter: logging.Formatter, msg: str, **extra: object) -> str:
    rec = logging.makeLogRecord({"name": "exporter.engine", "levelname": "WARNING", "msg": msg})
    rec.__dict__.update(extra)
    return formatter.format(rec)


# -- 1. every form --------------------------------------------------------------------------------

# Quotes, a backslash, and characters URL-encoding and base64 change: all legal in a credential.
AWKWARD = "Zq7\"wK'9\\m/+x=Lp&?4fT"
FORMS: dict[str, Callable[[str], str]] = {
    "plain": lambda v: v,
    "repr": lambda v: repr(v),
    "bytes-repr": lambda v: repr(v.encode()),
    "json": lambda v: json.dumps(v),
    "json-of-repr": lambda v: json.dumps(repr(v)),
    "backslash-escaped": lambda v: v.replace("\\", "\\\\").replace('"', '\\"').replace("'", "\\'"),
    "quote": lambda v: quote(v, safe=""),
    "quote-keeps-slash": lambda v: quote(v),
    "quote_plus": lambda v: quote_plus(v),
    "quote-lower-hex": lambda v: re.sub(r"%[0-9A-F]{2}", lambda m: m[0].lower(), quote(v, safe="")),
    "basic-auth": lambda v: "Basic " + base64.b64encode(f"user:{v}".encode()).decode(),
    "basic-auth-other-user": lambda v: base64.b64encode(f"me:{v}".encode()).decode(),
    "base64url": lambda v: base64.urlsafe_b64encode(f"x{v}".encode()).decode(),
}


@FORMATTERS
@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS.keys())
def test_a_secret_is_masked_in_every_form_a_line_can_carry(
    formatter: logging.Formatter, form: Callable[[str], str]
) -> None:
    held = Secret(AWKWARD)
    carried = form(held.reveal())
    assert carried != AWKWARD or form is FORMS["plain"]
    text = line(formatter, f"GET /x failed: {carried}", error=f"upstream said <{carried}>")
    assert carried not in text
    assert "Zq7" not in text and "Lp&" not in text and "Lp%26" not in text
    assert text.count("***") >= 2


@FORMATTERS
def test_a_token_with_a_newline_is_masked_in_the_header_error_that_quotes_it(
    formatter: logging.Formatter,
) -> None:
    """What h11 raises for `Authorization: Bearer <token>\\n`: the bytes' repr, not the token."""
    held = Secret("tok-SENTINEL-4f2a\n")
    header = f"Bearer {held.reveal()}".encode()
    text = line(
        formatter, "collection failed", error=f"LocalProtocolError: Illegal header value {header!r}"
    )
    assert "SENTINEL" not in text and "4f2a" not in text
    assert "Illegal header value b'Bearer ***'" in text or "Bearer ***" in text


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Every log line at warn and above, as the process would write it (logfmt)."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(LogfmtFormatter())
    handler.setLevel(logging.WARNING)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield out
    finally:
        root.removeHandler(handler)


def test_a_token_from_the_environment_with_a_trailing_newline_works_and_never_shows(
    start_scraper: Callable[[str], Scraper],
    monkeypatch: pytest.MonkeyPatch,
    captured: io.StringIO,
) -> None:
    token = "tok-SENTINEL-env-4f2a"
    monkeypatch.setenv("DCE_TEST_TOKEN", token + "\n")  # as a Kubernetes secret often has it
    with SimulatedCloud(parqex_token=token, lametric_token=None) as sim:
        scraper = start_scraper(
            f"parqex:\n  base_url: {sim.url}\n  accounts:\n"
            "    - {name: home, token: '${DCE_TEST_TOKEN}'}\n"
        )
        body, _ = scraper.render(accept=None, accept_encoding=None, timeout_header=None)
    assert value(body.decode(), "parqex_up", account="home") == 1
    assert "SENTINEL" not in captured.getvalue()


# -- 2. a registry that forgets what is gone -------------------------------------------------------


def churn(prefix: str, count: int = 2_000) -> None:
    for n in range(count):
        Secret(f"{prefix}-{n:04d}-x9Q")  # dropped at once, like a token replaced by the next
    gc.collect()


def test_a_released_secret_leaves_the_registry_after_the_recent_few() -> None:
    churn("gone")
    assert redact("old gone-0000-x9Q") == "old gone-0000-x9Q"  # no longer masked: it is gone
    assert redact("new gone-1999-x9Q") == "new ***"  # the last few released still are, a moment
    size = secret.registered()
    churn("more")
    assert secret.registered() == size  # 2,000 more secrets seen, not one more masked


def test_a_value_stays_masked_while_any_secret_holds_it() -> None:
    held = Secret("shared-7Hq2-value")
    for _ in range(3):
        Secret("shared-7Hq2-value")  # e.g. a token file read on each scrape: same value again
    churn("churn", 200)  # pushes every released value out of the recent few
    assert redact("x shared-7Hq2-value") == "x ***"
    assert held.reveal() == "shared-7Hq2-value"


# -- 3. word-like secrets do not blank our words ---------------------------------------------------

WORD_LIKE = ["failed", "parqex", "collection", "lametric", "Garage-Door", "token_file", "12345678"]
CREDENTIAL_LIKE = [
    "x7Kq9-Lm2Pz",
    "deadbeef00112233",
    "eyJhbGciOi.J9x.Sf1Kx",
    "ab12cd34",
    "correct-horse-battery-staple",  # words, but a passphrase: longer than any word of ours
]


@FORMATTERS
def test_word_like_secrets_leave_our_text_intact_and_real_ones_are_masked(
    formatter: logging.Formatter,
) -> None:
    held = [Secret(word) for word in WORD_LIKE + CREDENTIAL_LIKE]
    text = line(
        formatter,
        "collection failed",
        source="parqex",
        account="Garage-Door",
        error="the token_file of lametric account 12345678 failed",
    )
    for word in (
        "collection failed",
        "parqex",
        "Garage-Door",
        "token_file",
        "lametric",
        "12345678",
    ):
        assert word in text
    assert "***" not in text
    for credential in CREDENTIAL_LIKE:
        masked = line(formatter, "collection failed", error=f"upstream said {credential}!")
        assert credential not in masked and "upstream said ***!" in masked
        assert "collection failed" in masked
    assert len(held) == len(WORD_LIKE + CREDENTIAL_LIKE)


@pytest.mark.parametrize("word", WORD_LIKE)
def test_word_like_values_are_not_maskable(word: str) -> None:
    assert not secret.maskable(word)


@pytest.mark.parametrize("credential", CREDENTIAL_LIKE)
def test_credential_like_values_are_maskable(credential: str) -> None:
    assert secret.maskable(credential)


# -- a token file rewritten at run time with a value no header can carry -------------------------


def test_a_token_file_with_a_value_no_header_can_carry_fails_the_account_unquoted(
    tmp_path: Path,
) -> None:
    from exporter.auth import FileToken
    from exporter.clients.http import UpstreamError

    path = tmp_path / "token"
    path.write_text("tok-SENTINEL\n4f2a\n")  # two lines: a paste gone wrong

    async def read() -> UpstreamError:
        with pytest.raises(UpstreamError) as caught:
            await FileToken(path).token()
        return caught.value

    error = asyncio.run(read())
    assert error.reason == "token"
    assert str(path) in error.message and "whitespace, control or non-ASCII" in error.message
    assert "SENTINEL" not in error.message and "4f2a" not in error.message


@pytest.mark.parametrize("formatter", [LogfmtFormatter(), JsonFormatter()], ids=["logfmt", "json"])
def test_a_field_that_is_not_a_string_is_masked_too(formatter: logging.Formatter) -> None:
    """An exception, a path or a list passed in `extra` is written as its str(): mask that."""
    held = Secret("SENTINEL-in-an-object-77f1")
    value = held.reveal()
    record = logging.makeLogRecord(
        {
            "msg": "collection failed",
            "levelname": "WARNING",
            "error": ValueError(f"upstream said {value}"),
            "items": [value],
            "status": 401,
            "ratio": 0.5,
            "ok": True,
        }
    )
    line = formatter.format(record)
    assert "77f1" not in line
    assert line.count("***") == 2
    if isinstance(formatter, JsonFormatter):
        data = json.loads(line)
        assert (data["status"], data["ratio"], data["ok"]) == (401, 0.5, True)  # still numbers
    else:
        assert "status=401 ratio=0.5 ok=True" in line
