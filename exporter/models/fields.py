"""Tolerant reading of untrusted JSON objects.

The clouds are not ours: any field may be missing, null, or of another type tomorrow. A `Reader`
returns `None` for such a field and records a `Problem`, so one bad value costs one metric, never
the device, the account or the scrape.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timezone, tzinfo
from typing import Any, Protocol, TypeVar
from zoneinfo import ZoneInfo


@dataclass(frozen=True, slots=True)
class Problem:
    """A skipped field: `field` is `object.key` (e.g. `door.state`), `reason` a short word."""

    field: str
    # missing | null | wrong_type | out_of_range | bad_format | duplicate | too_long, or
    # bad_characters: the value is kept with U+FFFD in place of what no exposition can carry
    reason: str


# A label value longer than this is a broken or hostile answer, not a name: one such value
# would make every scrape megabytes larger. Device names and ids are tens of characters.
MAX_STRING_LENGTH = 1024
# What a valid exposition cannot carry, or a parser may choke on: lone UTF-16 surrogates (a
# JavaScript client cutting a string mid-emoji writes them as \ud83d) cannot be encoded as
# UTF-8 at all, and C0/C1 control characters other than tab and newline (NUL, ESC, ...) are
# garbage in a label. Tab is harmless and newline is escaped by the exposition writer.
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


class Reader:
    """Typed getters over one JSON object; every skipped field is appended to `problems`."""

    __slots__ = ("_kind", "_obj", "_problems")

    def __init__(self, obj: dict[str, Any], kind: str, problems: list[Problem]) -> None:
        self._obj = obj
        self._kind = kind
        self._problems = problems

    def _raw(self, key: str) -> Any:
        value = self._obj.get(key, _ABSENT)
        if value is _ABSENT:
            self.skip(key, "missing")
            return None
        if value is None:
            self.skip(key, "null")
        return value

    def skip(self, key: str, reason: str) -> None:
        self._problems.append(Problem(f"{self._kind}.{key}", reason))

    # Each getter tries the expected type first (one dict lookup, one type check): a sync of
    # 30,000 doors reads about 400,000 fields, nearly all of them well-formed.

    def text(self, key: str) -> str | None:
        value = self._obj.get(key)
        if type(value) is str and len(value) <= MAX_STRING_LENGTH and value.isprintable():
            return value  # isprintable() is False for every character _clean changes
        value = self._raw(key)
        if value is None:
            return None
        if isinstance(value, str):
            return self._clean(key, value)
        self.skip(key, "wrong_type")
        return None

    def optional_text(self, key: str) -> str | None:
        """A string the API may leave out or null without that being a problem."""
        return self.text(key) if self._obj.get(key) is not None else None

    def state(self, key: str, normalise: Callable[[str], str]) -> str | None:
        """A state word, trimmed and normalised (upper- or lower-cased); blank is bad_format."""
        value = self.text(key)
        if value is None:
            return None
        value = normalise(value.strip())
        if not value:
            self.skip(key, "bad_format")
            return None
        return value

    def _clean(self, key: str, value: str) -> str | None:
        """`value` fit for a label: too long is skipped, unencodable characters replaced."""
        if len(value) > MAX_STRING_LENGTH:
            self.skip(key, "too_long")
            return None
        cleaned = _UNPRINTABLE.sub("\ufffd", value)
        if cleaned != value:
            self.skip(key, "bad_characters")  # counted and logged once; the value is kept
        return cleaned

    def ident(self, key: str) -> str | None:
        """An id: a non-empty string, or an integer (LaMetric's are numbers), as a label value."""
        value = self._obj.get(key)
        if (
            type(value) is str
            and 0 < len(value) <= MAX_STRING_LENGTH
            and value.isprintable()
            and not value[0].isspace()
            and not value[-1].isspace()
        ):
            return value
        value = self._raw(key)
        if isinstance(value, str) and value.strip():
            return self._clean(key, value.strip())
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if value is not None:
            self.skip(key, "wrong_type" if not isinstance(value, str) else "bad_format")
        return None

    def flag(self, key: str) -> bool | None:
        value = self._obj.get(key)
        if type(value) is bool:
            return value
        value = self._raw(key)
        if value is None or isinstance(value, bool):
            return value
        self.skip(key, "wrong_type")
        return None

    def number(
        self, key: str, *, low: float | None = None, high: float | None = None
    ) -> float | None:
        value: Any = self._obj.get(key)
        kind = type(value)
        plain = (kind is int and -(2**53) <= value <= 2**53) or (
            kind is float and math.isfinite(value)
        )
        if plain and (low is None or value >= low) and (high is None or value <= high):
            return float(value)
        return self._number_slow(key, low, high)

    def _number_slow(self, key: str, low: float | None, high: float | None) -> float | None:
        value = self._raw(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            self.skip(key, "wrong_type")  # NaN included: it is not a number
            return None
        try:
            number = float(value)  # a 400-digit JSON integer does not fit
        except OverflowError:
            number = math.inf
        if (
            not math.isfinite(number)
            or (low is not None and number < low)
            or (high is not None and number > high)
        ):
            self.skip(key, "out_of_range")
            return None
        return number

    def integer(self, key: str, *, low: int | None = None) -> int | None:
        """A whole number; 1.5 is a bad format, 2.0 is 2."""
        number = self.number(key, low=low)
        if number is None:
            return None
        if not number.is_integer():
            self.skip(key, "bad_format")
            return None
        return int(number)

    def timestamp(self, key: str, zone: tzinfo | None = None) -> float | None:
        """Seconds since the epoch; a zone-less time is read in `zone` (UTC when not given)."""
        value = self._obj.get(key)
        if type(value) is not str:
            value = self._raw(key)
            if value is None:
                return None
            if not isinstance(value, str):
                self.skip(key, "wrong_type")
                return None
        try:  # no label is made of it: whatever is not a time is one bad_format, never two
            return epoch_seconds(value, zone)
        except ValueError:
            self.skip(key, "bad_format")
            return None

    def objects(self, key: str) -> list[dict[str, Any]]:
        """The objects of a list field; non-object entries are skipped and counted."""
        value = self._raw(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.skip(key, "wrong_type")
            return []
        items = [item for item in value if isinstance(item, dict)]
        if len(items) != len(value):
            self.skip(key, "wrong_type")
        return items


def epoch_seconds(value: str, zone: tzinfo | None = None) -> float:
    """An ISO 8601 time as seconds since the epoch, zone-less read in `zone` (UTC when not given).

    ValueError when it is not a time. One function for `Reader.timestamp` and the ParqEx fast
    path, so both turn a time into the same float.
    """
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        zone = zone or UTC
        offset = zone.utcoffset(moment) if type(zone) in _WALL_CLOCK_ZONES else None
        if offset is not None:
            # What moment.replace(tzinfo=zone).timestamp() computes, the same timedelta to the
            # microsecond, in a quarter of the time (replace() alone costs 0.7 us, and a sync
            # holds four times per controller).
            return (moment - _NAIVE_EPOCH - offset).total_seconds()
        moment = moment.replace(tzinfo=zone)
    return moment.timestamp()


# Zones whose utcoffset(dt) reads only dt's wall time and fold, never dt.tzinfo: a zone-less dt
# gets the offset the same dt with the zone attached gets.
_WALL_CLOCK_ZONES = (ZoneInfo, timezone)
_NAIVE_EPOCH = datetime(1970, 1, 1)


_ABSENT = object()
_Identified = TypeVar("_Identified", bound="HasId")


class HasId(Protocol):
    @property
    def id(self) -> str: ...


def unique(
    items: Iterable[_Identified | None], kind: str, problems: list[Problem]
) -> tuple[_Identified, ...]:
    """Drop objects without an id (already counted) and repeats of an id seen before.

    Two devices with one id would be two samples with one label set: Prometheus rejects such
    a scrape whole, so the first one wins and the repeat is counted as `<kind>.id` duplicate.
    """
    seen: dict[str, _Identified] = {}
    for item in items:
        if item is None:
            continue
        if item.id in seen:
            problems.append(Problem(f"{kind}.id", "duplicate"))
        else:
            seen[item.id] = item
    return tuple(seen.values())
