"""The seed documents in, the exact exposition out: renaming a metric or label fails here."""

from __future__ import annotations

import os
import re

import pytest

from exporter.engine import Engine
from exporter.scrape import Scraper
from tests.support import FIXTURES, make_config, two_cloud_config

GOLDEN = FIXTURES / "golden.prom"
# Values that depend on the wall clock or the machine are replaced before comparing.
VARYING = re.compile(
    r"^((?:parqex|lametric)_(?:scrape_duration_seconds|last_success_timestamp_seconds)\{.*\}"
    r"|device_cloud_exporter_build_info)(?:\{.*\})? .*$"
)


def normalised(body: bytes) -> str:
    lines = []
    for line in body.decode().splitlines():
        if line.startswith(("process_", "python_", "# HELP process_", "# TYPE process_")):
            continue
        if line.startswith(("# HELP python_", "# TYPE python_")):
            continue
        lines.append(VARYING.sub(r"\1 <varies>", line))
    return "\n".join(sorted(lines)) + "\n"


def test_seed_documents_give_the_golden_exposition(scraper: Scraper) -> None:
    body, headers = scraper.render(accept=None, accept_encoding=None, timeout_header=None)
    assert headers == {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
    got = normalised(body)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(got)
    assert got == GOLDEN.read_text(), "run with UPDATE_GOLDEN=1 and review the diff"


def test_api_key_and_email_never_reach_the_exposition(scraper: Scraper) -> None:
    body, _ = scraper.render(accept=None, accept_encoding=None, timeout_header=None)
    assert b"8adaa0c98278dbb1ecb218d1c3e11f9312317ba474ab3361f80c0bd4f13a6749" not in body
    assert b"user@mail.com" not in body
    assert b'lametric_device_info{account="home"' in body


def test_openmetrics_and_gzip_on_request(scraper: Scraper) -> None:
    import gzip

    body, headers = scraper.render(
        accept="application/openmetrics-text; version=1.0.0",
        accept_encoding="gzip, deflate",
        timeout_header=None,
    )
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    text = gzip.decompress(body).decode()
    assert text.endswith("# EOF\n")
    assert 'parqex_door_open{account="home",device_id="9d9e5e0e093a06d5f16e1116d108d0c7"' in text


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, 10.0),
        ("", 10.0),
        ("bogus", 10.0),
        ("nan", 10.0),
        ("-3", 10.0),
        ("4", 3.5),  # minus the 0.5 s offset
        ("0.3", 0.3),  # smaller than the offset: used whole rather than turned into nothing
        ("60", 10.0),  # capped by collection.timeout_seconds
    ],
)
def test_budget_follows_the_scrape_timeout_header(header: str | None, expected: float) -> None:
    engine = Engine(make_config(two_cloud_config()))  # not started: budget() needs no network
    assert Scraper(engine).budget(header) == pytest.approx(expected)


def test_writer_matches_prometheus_client_byte_for_byte() -> None:
    from prometheus_client import generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.openmetrics.exposition import generate_latest as generate_om

    from exporter.exposition import Family, render

    help_text = 'odd "help" with \\ backslash\nand newline'
    values = [1.0, 0.0, -0.0, 0.98, 1.608316345e9, 123456789.0, -2.5, 1e-9, 3.0]
    labels = ["plain", 'q"uote', "back\\slash", "new\nline", "ünïcode", ""]
    ours = [
        Family("empty_gauge", help_text, ["a"]),
        Family("plain_gauge", help_text),
        Family("multi", help_text, ["zeta", "alpha", "mid"]),
        Family("some_errors", help_text, ["reason"], kind="counter"),
    ]
    theirs = [
        GaugeMetricFamily("empty_gauge", help_text, labels=["a"]),
        GaugeMetricFamily("plain_gauge", help_text, value=7.0),
        GaugeMetricFamily("multi", help_text, labels=["zeta", "alpha", "mid"]),
        CounterMetricFamily("some_errors", help_text, labels=["reason"]),
    ]
    ours[1].add_rendered("", 7.0)
    for i, value in enumerate(values):
        trio = [labels[i % len(labels)], labels[(i + 1) % len(labels)], str(i)]
        ours[2].add(trio, value)
        theirs[2].add_metric(trio, value)
        ours[3].add([labels[i % len(labels)] + str(i)], abs(value))
        theirs[3].add_metric([labels[i % len(labels)] + str(i)], abs(value))

    class Registry:
        def collect(self) -> list:
            return theirs

    assert render(ours, openmetrics=False).encode() == generate_latest(Registry())
    assert (render(ours, openmetrics=True) + "# EOF\n").encode() == generate_om(Registry())
