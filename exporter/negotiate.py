"""Content negotiation for `/metrics`: which format and whether to gzip, from any header.

prometheus-client's `choose_encoder` raises on a version it cannot parse (`text/plain;
version=abc` was an HTTP 500 with a traceback) and ignores q-values. Here every `Accept` and
`Accept-Encoding` value, however malformed, picks one of the formats we serve: the Prometheus
text format 0.0.4, or OpenMetrics 1.0.0 when the client prefers it. Nothing is ever refused
with 406: a scraper that sent an odd header still gets metrics, like Go's expfmt.Negotiate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
MAX_HEADER = 4096  # characters of a header looked at: a long one is not worth more CPU
MAX_RANGES = 64


@dataclass(frozen=True)
class _Range:
    kind: str  # "type/subtype", lower case, possibly with "*"
    params: dict[str, str]
    q: float
    position: int


def _parse(header: str | None) -> list[_Range]:
    """Comma-separated items `value; key=value; q=0.5`; an item with a bad q-value is dropped."""
    ranges = []
    for position, item in enumerate((header or "")[:MAX_HEADER].split(",")[:MAX_RANGES]):
        kind, *rest = item.split(";")
        params = {}
        for param in rest:
            key, _, value = param.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        q = _quality(params.pop("q", "1"))
        kind = kind.strip().lower()
        if kind and q is not None:
            ranges.append(_Range(kind, params, q, position))
    return ranges


def _quality(text: str) -> float | None:
    """RFC 9110 qvalue, leniently: any number from 0 to 1; anything else drops the item."""
    try:
        q = float(text)
    except ValueError:
        return None
    return q if math.isfinite(q) and 0 <= q <= 1 else None


def _serves(item: _Range) -> str | None:
    """The format we answer `item` with, or None when we speak no format it accepts."""
    if item.kind == "application/openmetrics-text":
        version = item.params.get("version", "1.0.0")
        # 0.0.1 is the draft Prometheus still offers; 1.x is 1.0.0's family. A 2.0 is not ours.
        if version == "0.0.1" or version == "1" or version.startswith("1."):
            return OPENMETRICS
        return None
    if item.kind in ("text/plain", "text/*", "*/*"):
        return TEXT  # any version asked for: 0.0.4 is the text format we write
    return None


def content_type(accept: str | None) -> str:
    """TEXT or OPENMETRICS for an `Accept` value: the acceptable one with the highest q
    (the first listed among equals); TEXT when nothing we serve is acceptable."""
    best: tuple[float, int] | None = None
    chosen = TEXT
    for item in _parse(accept):
        served = _serves(item)
        if served is None or item.q <= 0:
            continue
        rank = (item.q, -item.position)
        if best is None or rank > best:
            best, chosen = rank, served
    return chosen


def wants_gzip(accept_encoding: str | None) -> bool:
    """Whether to gzip: `gzip` (or `x-gzip`, or `*` when gzip is not named) with q > 0."""
    named: float | None = None
    star: float | None = None
    for item in _parse(accept_encoding):
        if item.kind in ("gzip", "x-gzip"):
            named = item.q if named is None else max(named, item.q)
        elif item.kind == "*":
            star = item.q
    q = named if named is not None else star
    return q is not None and q > 0
