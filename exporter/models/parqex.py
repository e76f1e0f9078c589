"""ParqEx `/oauth/v1/endpoints/sync` answers as typed values.

Field names follow the ParqEx "Get User Devices" document. `image`, `light` and `sensor` are
deprecated upstream and not read. Timestamps carry no zone; `parqex.timezone` from the config
applies.

`decode_sync` reads the answer's bytes: a well-formed answer goes straight into strict msgspec
structs (no dicts of every field, no per-field checks in Python); anything else goes the
tolerant way, `parse_sync` over the decoded JSON. Both give the same `Sync` for every body.
"""

from __future__ import annotations

import codecs
import json
import re
import sys
from collections.abc import Callable
from datetime import tzinfo
from typing import Annotated, Any, Literal

import msgspec

from exporter.models.fields import MAX_STRING_LENGTH, Problem, Reader, epoch_seconds, unique

KNOWN_DOOR_STATES: tuple[str, ...] = ("OPEN", "CLOSED")


# Structs, not dataclasses: a 100,000-device answer makes 400,000 of them, and a struct is
# built in a third of the time and, with gc=False (they hold no cycles), never walked by the
# garbage collector.


class Door(msgspec.Struct, frozen=True, gc=False):
    id: str
    name: str | None
    entity_number: int | None
    user_relationship: str | None
    state: str | None  # upper-cased; may be a state the document does not list
    active: bool | None
    auto_close_enabled: bool | None
    auto_close_delay_seconds: float | None
    last_toggled: float | None  # seconds since the epoch
    bluetooth_sensor: bool | None
    battery_level: float | None  # 0..100, as sent; meaningful only with a bluetooth sensor


class Device(msgspec.Struct, frozen=True, gc=False):
    id: str
    blackbox_code: str | None
    software_version: str | None
    owner: str | None  # "first last"
    active: bool | None
    registered: bool | None
    bluetooth_onboard: bool | None
    last_contact: float | None
    door_open_alert_threshold_seconds: float | None
    entities_controlled: float | None
    doors: tuple[Door, ...]


class Sync(msgspec.Struct, frozen=True, gc=False):
    devices: tuple[Device, ...]
    problems: tuple[Problem, ...]


def parse_sync(body: Any, zone: tzinfo) -> Sync:
    """Turn a decoded sync body into devices; never raises on content, only skips and records."""
    problems: list[Problem] = []
    if not isinstance(body, dict):
        problems.append(Problem("sync", "wrong_type"))
        return Sync((), tuple(problems))
    top = Reader(body, "sync", problems)
    devices = unique(
        (_device(raw, zone, problems) for raw in top.objects("devices")), "device", problems
    )
    return Sync(devices, tuple(problems))


def _device(raw: dict[str, Any], zone: tzinfo, problems: list[Problem]) -> Device | None:
    r = Reader(raw, "device", problems)
    device_id = r.ident("id")
    if device_id is None:
        return None  # without an id there is no series to put the rest on
    first, last = r.optional_text("owner_first_name"), r.optional_text("owner_last_name")
    owner = " ".join(p for p in (first, last) if p and p.strip()) or None
    return Device(
        id=device_id,
        blackbox_code=r.text("blackbox_code"),
        software_version=_version(r),
        owner=owner,
        active=r.flag("active"),
        registered=r.flag("registered"),
        bluetooth_onboard=r.flag("bluetooth_onboard"),
        last_contact=r.timestamp("last_contact", zone),
        door_open_alert_threshold_seconds=r.number("time_before_door_open_alert", low=0),
        entities_controlled=r.number("number_of_entities_controlled", low=0),
        doors=unique((_door(d, zone, problems) for d in r.objects("doors")), "door", problems),
    )


def _version(r: Reader) -> str | None:
    # documented as a string ("0"); a bare number is the same version, not a broken field.
    return r.ident("software_version")


def _door(raw: dict[str, Any], zone: tzinfo, problems: list[Problem]) -> Door | None:
    r = Reader(raw, "door", problems)
    door_id = r.ident("id")
    if door_id is None:
        return None
    return Door(
        id=door_id,
        name=r.text("name"),
        entity_number=r.integer("entity_number", low=0),
        user_relationship=r.text("user_relationship"),
        state=r.state("state", str.upper),
        active=r.flag("active"),
        auto_close_enabled=r.flag("door_auto_close_enabled"),
        auto_close_delay_seconds=r.number("door_auto_close_delay", low=0),
        last_toggled=r.timestamp("last_toggled", zone),
        bluetooth_sensor=r.flag("bluetooth_sensor"),
        battery_level=r.number("bluetooth_sensor_battery_level", low=0, high=100),
    )


# --------------------------------------------------------------------------------------------
# The fast path: strict structs that msgspec fills straight from the bytes. Every constraint is
# one of the Reader's, so whatever the Reader would skip, clean or count makes msgspec (or a
# check below) refuse the body, and the tolerant path reads it instead.
# --------------------------------------------------------------------------------------------

_Text = Annotated[str, msgspec.Meta(max_length=MAX_STRING_LENGTH)]  # Reader.text: too_long
_Seconds = Annotated[float, msgspec.Meta(ge=0, le=sys.float_info.max)]  # le: no infinity
_Percent = Annotated[float, msgspec.Meta(ge=0, le=100)]
# Reader.integer goes through a float: past 2**53 it rounds, so leave those to it.
_Whole = Annotated[int, msgspec.Meta(ge=0, le=2**53)]


class _WireDoor(msgspec.Struct, gc=False):
    id: _Text  # stripped below; blank refused there
    name: _Text
    entity_number: _Whole
    user_relationship: _Text
    state: Literal["OPEN", "CLOSED"]  # lower case, padded or undocumented: the Reader's job
    active: bool
    door_auto_close_enabled: bool
    door_auto_close_delay: _Seconds
    last_toggled: str  # epoch_seconds below, as Reader.timestamp
    bluetooth_sensor: bool
    bluetooth_sensor_battery_level: _Percent


class _WireDevice(msgspec.Struct, gc=False, kw_only=True):
    id: _Text
    blackbox_code: _Text
    software_version: _Text | int  # Reader.ident: a number is its digits
    owner_first_name: _Text | None = None  # optional_text: missing or null is no problem
    owner_last_name: _Text | None = None
    active: bool
    registered: bool
    bluetooth_onboard: bool
    last_contact: str
    time_before_door_open_alert: _Seconds
    number_of_entities_controlled: _Seconds
    doors: list[_WireDoor]


class _WireSync(msgspec.Struct, gc=False):
    devices: list[_WireDevice]


_DECODER = msgspec.json.Decoder(_WireSync)

# What msgspec decodes as is but the Reader replaces with U+FFFD (fields._UNPRINTABLE): DEL,
# a C1 control in UTF-8, or a control character written as an escape (\u0009 and \u000a,
# harmless, are refused too: rare, and a refusal only costs time). msgspec itself refuses raw
# C0 controls, lone surrogates and invalid UTF-8 in the fields it reads. An escape is a
# backslash after an even run of them: `\\f` is a backslash and an f, not a form feed.
_CONTROL_ESCAPE = re.compile(
    rb"(?<!\\)(?:\\\\)*\\(?:[bfr]|u00(?:[01][0-9a-fA-F]|7[fF]|[89][0-9a-fA-F]))"
)
_C1_UTF8 = re.compile(rb"\xc2[\x80-\x9f]")
_UTF8_CHUNK = 1 << 18


class _Refused(ValueError):
    """The fast path cannot give exactly what the tolerant path gives; the tolerant path reads."""


_Body = bytes | bytearray


def decode_sync(body: _Body, zone: tzinfo, loads: Callable[[_Body], Any] = json.loads) -> Sync:
    """A sync answer's bytes as devices: always `parse_sync(loads(body), zone)`, mostly cheaper.

    The fast path decodes straight into strict structs, with only the fields read; any body it
    refuses is decoded by `loads` (the client's raises UpstreamError for what is not JSON) and
    read by the tolerant `parse_sync`, so each problem is counted once, by that path.
    """
    try:
        return _fast_sync(body, zone)
    except (msgspec.DecodeError, ValueError, RecursionError):  # ValidationError included
        pass
    return parse_sync(loads(body), zone)


def _fast_sync(body: bytes | bytearray, zone: tzinfo) -> Sync:
    if not _plain_characters(body):
        raise _Refused("a character the Reader would replace")
    wire = _DECODER.decode(body).devices
    if not body.isascii() and not _is_utf8(body):
        raise _Refused("not UTF-8")  # in a skipped field: msgspec does not look, json.loads does
    # Popped in the answer's order, so each controller's structs are freed once it is read:
    # the peak holds the structs or the models of a controller, not both.
    wire.reverse()
    problems: list[Problem] = []  # only duplicates can be recorded on this path
    devices = unique(
        (_fast_device(wire.pop(), zone, problems) for _ in range(len(wire))), "device", problems
    )
    return Sync(devices, tuple(problems))


def _plain_characters(body: bytes | bytearray) -> bool:
    """False when a string may hold a character the Reader replaces (false alarms are fine)."""
    if b"\x7f" in body:
        return False
    if b"\\" in body and _CONTROL_ESCAPE.search(body):
        return False
    return body.isascii() or not _C1_UTF8.search(body)


def _is_utf8(body: bytes | bytearray) -> bool:
    """As json.loads decodes bytes: UTF-8, surrogates allowed; read in pieces, not copied whole."""
    decoder = codecs.getincrementaldecoder("utf-8")("surrogatepass")
    view = memoryview(body)
    try:
        for start in range(0, len(view), _UTF8_CHUNK):
            decoder.decode(view[start : start + _UTF8_CHUNK])
        decoder.decode(b"", True)
    except UnicodeDecodeError:
        return False
    return True


def _ident(value: str | int) -> str:
    """Reader.ident of a value msgspec let through: a string stripped, a number as digits."""
    if isinstance(value, int):  # never a bool: msgspec refuses those for int
        return str(value)
    ident = value.strip()
    if not ident:
        raise _Refused("blank id")  # the Reader drops the object and counts bad_format
    return ident


def _fast_device(wire: _WireDevice, zone: tzinfo, problems: list[Problem]) -> Device:
    first, last = wire.owner_first_name, wire.owner_last_name
    return Device(
        id=_ident(wire.id),
        blackbox_code=wire.blackbox_code,
        software_version=_ident(wire.software_version),
        owner=" ".join(p for p in (first, last) if p and p.strip()) or None,
        active=wire.active,
        registered=wire.registered,
        bluetooth_onboard=wire.bluetooth_onboard,
        last_contact=epoch_seconds(wire.last_contact, zone),
        door_open_alert_threshold_seconds=wire.time_before_door_open_alert,
        entities_controlled=wire.number_of_entities_controlled,
        doors=unique((_fast_door(d, zone) for d in wire.doors), "door", problems),
    )


def _fast_door(wire: _WireDoor, zone: tzinfo) -> Door:
    return Door(
        id=_ident(wire.id),
        name=wire.name,
        entity_number=wire.entity_number,
        user_relationship=wire.user_relationship,
        state=wire.state,
        active=wire.active,
        auto_close_enabled=wire.door_auto_close_enabled,
        auto_close_delay_seconds=wire.door_auto_close_delay,
        last_toggled=epoch_seconds(wire.last_toggled, zone),
        bluetooth_sensor=wire.bluetooth_sensor,
        battery_level=wire.bluetooth_sensor_battery_level,
    )
