"""A cloud that sends too much, or a gzip bomb, over real HTTP: bounded memory, `too_large`."""

from __future__ import annotations

import gzip
import io
import tracemalloc

import pytest

from exporter.engine import Engine
from exporter.outcome import Outcome
from exporter.simulator import SimulatedCloud
from tests.support import config_yaml, make_config

LIMIT = 1024 * 1024


def collect_once(cloud: SimulatedCloud) -> tuple[Outcome, int]:
    """One collection of one ParqEx account; returns its outcome and the peak traced memory."""
    engine = Engine(
        make_config(
            config_yaml(
                parqex=[{"name": "home", "token": "demo-parqex-token"}],
                base_url=cloud.url,
                collection={"max_response_bytes": LIMIT},
            )
        )
    )
    engine.start()
    try:
        tracemalloc.start()
        outcome = engine.collect(10.0)[0]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        engine.close()
    return outcome, peak


def bomb(size: int) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as packed:
        chunk = b"\0" * (1024 * 1024)
        for _ in range(size // len(chunk)):
            packed.write(chunk)
    return out.getvalue()


def test_gzip_bomb_is_too_large_and_memory_stays_bounded(cloud: SimulatedCloud) -> None:
    payload = bomb(200 * 1024 * 1024)  # 200 MiB of zeros in ~200 KiB
    assert len(payload) < 1024 * 1024
    cloud.respond_raw(
        "/oauth/v1/endpoints/sync",
        payload,
        content_type="application/json",
        content_encoding="gzip",
    )
    outcome, peak = collect_once(cloud)
    assert (outcome.ok, outcome.reason) == (False, "too_large")
    assert peak < 8 * LIMIT, f"peak {peak} bytes while inflating a bomb"


def test_plain_oversized_body_is_too_large(cloud: SimulatedCloud) -> None:
    cloud.respond_raw(
        "/oauth/v1/endpoints/sync",
        b"[" + b" " * (4 * LIMIT) + b"]",
        content_type="application/json",
    )
    outcome, peak = collect_once(cloud)
    assert (outcome.ok, outcome.reason) == (False, "too_large")
    assert peak < 8 * LIMIT


@pytest.mark.parametrize(
    ("body", "encoding"),
    [
        (gzip.compress(b'{"devices": []}')[:-9], "gzip"),  # truncated stream
        (b"\x1f\x8b\x08\x00garbage-after-a-gzip-magic", "gzip"),  # corrupt header
        (b'{"devices": []}', "br"),  # an encoding we never asked for
    ],
    ids=["truncated-gzip", "corrupt-gzip", "unasked-encoding"],
)
def test_broken_encodings_are_decode_errors(
    cloud: SimulatedCloud, body: bytes, encoding: str
) -> None:
    cloud.respond_raw(
        "/oauth/v1/endpoints/sync", body, content_type="application/json", content_encoding=encoding
    )
    outcome, _ = collect_once(cloud)
    assert (outcome.ok, outcome.reason) == (False, "decode")


def test_a_body_at_the_limit_still_parses(cloud: SimulatedCloud) -> None:
    body = b'{"devices": []}' + b" " * (LIMIT - 15)
    assert len(body) == LIMIT
    cloud.respond_raw("/oauth/v1/endpoints/sync", body, content_type="application/json")
    outcome, _ = collect_once(cloud)
    assert outcome.ok, outcome.reason
