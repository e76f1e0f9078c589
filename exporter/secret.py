"""A value that must never be printed: not in a repr, a log line, an exception or a metric.

Every live `Secret` also registers its value, so the log formatter can mask it in every line it
writes, even one that reached a message some other way (an upstream that echoes a token back in
its error page, an exception that quotes a header). Three rules keep that affordable and safe:

- Only values that can be credentials are masked (`maskable`): a secret that is an ordinary word
  ("failed", "parqex") or a number would otherwise blank that word in every later log line.
- A value leaves the registry when the last `Secret` holding it is gone (a rotated token, a
  reloaded config); the last few released values stay masked a little longer (`RECENT`), for
  the error message that outlives its token by a moment.
- Every form a line can carry a value in (escaped, URL-encoded, base64) is found by one
  compiled regex of their first characters (`_Masker`), rebuilt only when the set of masked
  values changes: masking costs the same whatever the process has seen before.
"""

from __future__ import annotations

import base64
import collections
import json
import re
import threading
from collections.abc import Iterable
from typing import Final
from urllib.parse import quote, quote_plus

MIN_LENGTH: Final = 8
# Ordinary words and numbers, alone or joined by - _ . : "failed", "parqex", "Garage-Door",
# "token_file", "12345678". A generated credential (hex, base64, JWT, UUID) mixes letters and
# digits or cases inside its parts, so it never looks like this; a passphrase of words does,
# but it is longer than any word or key of ours that a line could carry (PASSPHRASE_LENGTH).
_WORDS: Final = re.compile(
    r"(?:[A-Z]?[a-z]+|[A-Z]+|[0-9]+)(?:[-_.](?:[A-Z]?[a-z]+|[A-Z]+|[0-9]+))*"
)
PASSPHRASE_LENGTH: Final = 24
RECENT: Final = 32  # released values still masked, newest last
MASK: Final = "***"


def maskable(value: str) -> bool:
    """Whether masking `value` everywhere can only hide a credential, never our own text."""
    core = value.strip()
    if len(core) < MIN_LENGTH:
        return False
    return len(core) >= PASSPHRASE_LENGTH or _WORDS.fullmatch(core) is None


def credential_problem(value: str) -> str | None:
    """Why `value` (already trimmed) cannot be sent as a credential, or None; never quotes it.

    A credential travels in an HTTP header or a query string: whitespace, control characters
    or non-ASCII characters there are a copy-and-paste mistake, and make the request fail with
    an error message that would quote the header.
    """
    if not value:
        return "is empty"
    if not all("!" <= char <= "~" for char in value):
        return "has whitespace, control or non-ASCII characters inside"
    return None


class Secret:
    """Holds a credential; only `reveal()` gives it back, so accidental formatting shows `***`."""

    __slots__ = ("_registered", "_value")

    def __init__(self, value: str) -> None:
        self._value = value
        self._registered = _registry.register(value)

    def reveal(self) -> str:
        return self._value

    def __del__(self) -> None:
        # Only a lock-free append here: __del__ may run inside the garbage collector while
        # this very thread holds the registry's lock. The registry takes it from there.
        try:
            if self._registered:
                _released.append(self._value)
        except (AttributeError, NameError, TypeError):  # half-built, or interpreter shutdown
            pass

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __copy__(self) -> Secret:
        return self  # immutable: copies (deepcopy, dataclasses.replace) may share it

    def __deepcopy__(self, memo: dict[int, object]) -> Secret:
        return self

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret is not pickled, so it cannot leak through a pickle")


def forms(value: str) -> set[str]:
    """Every way a log line may carry `value`: as is, escaped, URL-encoded and base64."""
    core = value.strip()
    out = {value, core}
    for text in (value, core):
        escaped = {
            repr(text)[1:-1],
            repr(text.encode("utf-8", "backslashreplace"))[2:-1],
            json.dumps(text)[1:-1],
            json.dumps(text, ensure_ascii=False)[1:-1],
            text.encode("unicode_escape").decode("ascii"),
            _backslashed(text),
        }
        out |= escaped
        out |= {json.dumps(e)[1:-1] for e in escaped} | {_backslashed(e) for e in escaped}
        for encoded in (
            quote(text, safe=""),
            quote(text),
            quote_plus(text),
            quote_plus(text, safe="/"),
        ):
            out |= {encoded, re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), encoded)}
    out |= _base64_cores(core)
    return {form for form in out if len(form) >= MIN_LENGTH}


def _backslashed(text: str) -> str:
    return re.sub(r"[\\'\"]", lambda m: "\\" + m.group(), text)


def _base64_cores(text: str) -> set[str]:
    """The base64 characters that depend on `text` alone, at each of the 3 byte alignments.

    A basic-auth header encodes `user:secret`: wherever the secret starts, one of these cores
    is part of the header value.
    """
    data = text.encode("utf-8")
    cores: set[str] = set()
    for offset in range(3):
        total = offset + len(data)
        start, end = -(-offset * 8 // 6), total * 8 // 6
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            cores.add(encode(b"\0" * offset + data).decode("ascii")[start:end])
    return cores


def scrub(text: str, values: Iterable[str]) -> str:
    """`text` with every form of each of `values` replaced by `***`, maskable or not.

    For one message about one request, where the values are known to be that request's
    credentials; the log formatter's `redact` covers everything else.
    """
    every = set().union(*(forms(v) | {v} for v in values if v))
    return _Masker(every).sub(text) if every else text


def redact(text: str) -> str:
    """`text` with every form of every registered secret replaced by `***`."""
    masker = _registry.masker()
    return text if masker is None else masker.sub(text)


def registered() -> int:
    """How many values are masked now (live ones and the last few released)."""
    return _registry.size()


class _Registry:
    """Reference-counted values; the masked set is the live values plus the `RECENT` released."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._recent: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._masker: _Masker | None = None
        self._stale = False

    def register(self, value: str) -> bool:
        if not maskable(value):
            return False
        with self._lock:
            self._drain()
            count = self._counts.get(value, 0)
            self._counts[value] = count + 1
            if count == 0 and self._recent.pop(value, _ABSENT) is _ABSENT:
                self._stale = True  # a new value; one coming back from `_recent` changes nothing
        return True

    def masker(self) -> _Masker | None:
        if self._stale or _released:
            with self._lock:
                self._drain()
                if self._stale:
                    masked = [*self._counts, *self._recent]
                    every = set().union(*map(forms, masked)) if masked else set()
                    self._masker = _Masker(every) if every else None
                    self._stale = False
        return self._masker

    def size(self) -> int:
        with self._lock:
            self._drain()
            return len(self._counts) + len(self._recent)

    def _drain(self) -> None:
        """Apply the releases `Secret.__del__` queued; the caller holds the lock."""
        while _released:
            value = _released.popleft()
            count = self._counts.get(value, 0) - 1
            if count > 0:
                self._counts[value] = count
                continue
            self._counts.pop(value, None)
            self._recent[value] = None
            self._recent.move_to_end(value)
            if len(self._recent) > RECENT:
                self._recent.popitem(last=False)
                self._stale = True


class _Masker:
    """Finds every occurrence of a set of strings in a text, the longest at each place.

    One regex finds where one of the strings may start (their first `MIN_LENGTH` characters,
    as a trie, so a match attempt costs the same for 10 strings as for 10,000); a dict then
    says which whole strings start with what was found. The regex holds a fraction of the
    characters a regex of the whole strings would, so rebuilding it after a change is cheap.
    """

    __slots__ = ("_by_prefix", "_key_lengths", "_starts")

    def __init__(self, strings: Iterable[str]) -> None:
        by_prefix: dict[str, list[str]] = {}
        for string in strings:
            by_prefix.setdefault(string[:MIN_LENGTH], []).append(string)
        self._by_prefix = by_prefix
        # keys are MIN_LENGTH long, or a whole shorter string (only `scrub` passes those)
        self._key_lengths = sorted({len(key) for key in by_prefix}, reverse=True)
        self._starts = re.compile(_alternation(by_prefix))

    def sub(self, text: str) -> str:
        out: list[str] = []
        done = pos = 0
        while (found := self._starts.search(text, pos)) is not None:
            start = found.start()
            longest = ""
            for length in self._key_lengths:
                for candidate in self._by_prefix.get(text[start : start + length], ()):
                    if len(candidate) > len(longest) and text.startswith(candidate, start):
                        longest = candidate
            if longest:
                out += (text[done:start], MASK)
                done = pos = start + len(longest)
            else:
                pos = start + 1  # a prefix only: another string may start inside it
        return "".join(out) + text[done:] if out else text


# A character trie: each key is one character ("" marks the end of a string).
_Trie = dict[str, "_Trie"]


def _alternation(strings: Iterable[str]) -> str:
    """One regex for a set of literal strings, as a trie: the cost of a match attempt depends
    on the length of the strings, not on how many there are, and the longest form wins."""
    trie: _Trie = {}
    for string in strings:
        node = trie
        for char in string:
            node = node.setdefault(char, {})
        node[""] = {}
    return _trie_regex(trie)


def _trie_regex(node: _Trie) -> str:
    branches = []
    for char in sorted(key for key in node if key):
        child, text = node[char], re.escape(char)
        while len(child) == 1 and "" not in child:  # a chain without branching: one literal
            ((char, child),) = child.items()
            text += re.escape(char)
        branches.append(text + _trie_regex(child))
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    return f"(?:{body})?" if "" in node else body


_ABSENT: Final = object()
_released: collections.deque[str] = collections.deque()
_registry = _Registry()
