"""Content negotiation: every Accept header gets a format we serve; gzip only when wanted."""

from __future__ import annotations

import gzip
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter import negotiate
from exporter.negotiate import OPENMETRICS, TEXT
from exporter.scrape import Scraper

PROMETHEUS_2 = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
PROMETHEUS_TEXT_FIRST = "text/plain;version=0.0.4;q=1,application/openmetrics-text;q=0.5,*/*;q=0.1"


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, TEXT),
        ("", TEXT),
        ("*/*", TEXT),
        ("text/plain", TEXT),
        ("text/plain; version=0.0.4", TEXT),
        ("text/plain; version=abc", TEXT),  # was an HTTP 500 with a traceback
        ("text/plain; version=1.0.0", TEXT),  # a format we do not write: the one we do
        ("application/openmetrics-text", OPENMETRICS),
        ("application/openmetrics-text; version=1.0.0", OPENMETRICS),
        ("application/openmetrics-text; version=0.0.1", OPENMETRICS),
        ("application/openmetrics-text; version=1.x", OPENMETRICS),  # was a 500
        ("application/openmetrics-text; version=2.0.0", TEXT),  # not ours: fall back
        ("application/openmetrics-text; version=abc", TEXT),
        ("application/openmetrics-text; q=0", TEXT),  # q=0: not acceptable
        ("application/openmetrics-text; q=abc", TEXT),  # a bad q-value drops the item
        ("application/openmetrics-text; q=2", TEXT),
        ("application/openmetrics-text; q=nan", TEXT),
        ("application/openmetrics-text; q=", TEXT),
        (PROMETHEUS_2, OPENMETRICS),
        (PROMETHEUS_TEXT_FIRST, TEXT),
        ("text/plain;q=0.2, application/openmetrics-text;q=0.9", OPENMETRICS),
        ("application/openmetrics-text;q=0.2, text/plain;q=0.9", TEXT),
        ("application/json", TEXT),  # nothing we serve is acceptable: text rather than a 406
        ("garbage;;;==,,,;q", TEXT),
        ("\x00\xff", TEXT),
        ("APPLICATION/OpenMetrics-Text", OPENMETRICS),  # media types are case-insensitive
    ],
)
def test_every_accept_header_gets_a_format_we_serve(accept: str | None, expected: str) -> None:
    assert negotiate.content_type(accept) == expected


@pytest.mark.parametrize(
    ("accept_encoding", "expected"),
    [
        (None, False),
        ("", False),
        ("identity", False),
        ("gzip", True),
        ("GZIP", True),
        ("x-gzip", True),
        ("gzip, deflate", True),
        ("gzip;q=0", False),  # was gzipped: the old check looked for the word only
        ("gzip; q=0.0", False),
        ("gzip;q=0.001", True),
        ("gzip;q=abc", False),  # a bad q-value drops the item
        ("*", True),
        ("*;q=0", False),
        ("*;q=0.5, gzip;q=0", False),  # gzip named: `*` does not apply to it
        ("deflate, br", False),
        ("identity;q=0", False),  # we have nothing else to offer: identity it is
        ("notgzip", False),
    ],
)
def test_gzip_only_when_the_client_accepts_it(accept_encoding: str | None, expected: bool) -> None:
    assert negotiate.wants_gzip(accept_encoding) is expected


@given(st.text(max_size=300))
def test_no_header_raises(text: str) -> None:
    assert negotiate.content_type(text) in (TEXT, OPENMETRICS)
    assert negotiate.wants_gzip(text) in (True, False)


# --------------------------------------------------------------------------- render


@pytest.mark.parametrize(
    "accept",
    [
        "text/plain; version=abc",
        "application/openmetrics-text; version=1.x",
        "text/plain; version=1.0.0; escaping=allow-utf-8",
        "application/openmetrics-text; q=bad, text/plain",
    ],
)
def test_render_answers_odd_accept_headers(scraper: Scraper, accept: str) -> None:
    body, headers = scraper.render(accept=accept, accept_encoding="gzip;q=0", timeout_header=None)
    assert "Content-Encoding" not in headers
    assert headers["Content-Type"] in (TEXT, OPENMETRICS)
    assert b'parqex_up{account="home"} 1.0' in body
    assert body.endswith(b"# EOF\n") == (headers["Content-Type"] == OPENMETRICS)


def test_gzip_is_still_served_to_prometheus(scraper: Scraper) -> None:
    body, headers = scraper.render(accept=PROMETHEUS_2, accept_encoding="gzip", timeout_header=None)
    assert headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    assert headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body).endswith(b"# EOF\n")


def test_concurrent_identical_scrapes_share_one_render(
    scraper: Scraper, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = scraper.engine
    real_collect = engine.collect
    calls: list[float] = []
    entered, release = threading.Event(), threading.Event()

    def slow_collect(budget: float, only: object = None) -> list:
        calls.append(budget)
        entered.set()
        assert release.wait(10)
        return real_collect(budget, only)

    monkeypatch.setattr(engine, "collect", slow_collect)
    answers: list[tuple[bytes, dict[str, str]]] = []

    def scrape() -> None:
        answers.append(scraper.render(accept=None, accept_encoding=None, timeout_header=None))

    first = threading.Thread(target=scrape)
    first.start()
    assert entered.wait(10)
    others = [threading.Thread(target=scrape) for _ in range(5)]
    for thread in others:
        thread.start()
    # every other scrape is waiting for the first one's render, none has collected
    deadline = time.monotonic() + 10
    while sum(shared.followers for shared in list(scraper._renders.values())) < 5:
        assert time.monotonic() < deadline, "the other scrapes did not join the render"
        time.sleep(0.01)
    release.set()
    for thread in (first, *others):
        thread.join(10)
    assert len(calls) == 1, f"{len(calls)} renders for six concurrent scrapes"
    assert len(answers) == 6
    assert all(body is answers[0][0] for body, _ in answers)  # one body in memory, not six
    answers[0][1]["X"] = "changed"  # each caller gets headers of its own
    assert "X" not in answers[1][1]
    # nothing is kept: the next scrape collects afresh, and a different format renders apart
    scraper.render(accept=None, accept_encoding=None, timeout_header=None)
    scraper.render(accept="application/openmetrics-text", accept_encoding=None, timeout_header=None)
    assert len(calls) == 3


def test_scrapes_that_differ_only_in_a_few_ms_of_timeout_header_share_one_render(
    scraper: Scraper,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The shared-render key holds the exact budget, so a client that sends
    X-Prometheus-Scrape-Timeout-Seconds 5.01, 5.02, ... gets one body each: 40 such clients of
    the 11.5 MB fleet took the exporter to 960 MiB peak (111 MiB with one header) and left it
    at 329 MiB. Bodies in memory must not grow with the number of headers a client invents."""
    engine = scraper.engine
    real_collect = engine.collect
    calls: list[float] = []
    release = threading.Event()

    def slow_collect(budget: float, only: object = None) -> list:
        calls.append(budget)
        assert release.wait(10)
        return real_collect(budget, only)

    monkeypatch.setattr(engine, "collect", slow_collect)
    headers = [f"5.0{i}" for i in range(1, 7)]
    threads = [
        threading.Thread(
            target=scraper.render,
            kwargs={"accept": None, "accept_encoding": None, "timeout_header": header},
        )
        for header in headers
    ]
    for thread in threads:
        thread.start()

    def settled() -> bool:  # each scrape is either collecting or waiting for a render
        followers = sum(shared.followers for shared in list(scraper._renders.values()))
        return len(calls) + followers == len(headers)

    deadline = time.monotonic() + 10
    while not settled():
        assert time.monotonic() < deadline, "every scrape to collect or to join a render"
        time.sleep(0.01)
    release.set()
    for thread in threads:
        thread.join(10)
    assert len(calls) == 1, f"{len(calls)} renders for six scrapes 10 ms of timeout apart"
