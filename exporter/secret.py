"""A value that must never be printed: not in a repr, a log line, an exception or a metric.

Every `Secret` also registers its value, so the log formatter can mask any secret the process
knows in every line it writes, even one that reached a message some other way (an upstream that
echoes a token back in its error page, say).
"""

from __future__ import annotations

import threading

_MIN_LENGTH = 6  # shorter values are too likely to be ordinary words to mask everywhere
_known: frozenset[str] = frozenset()
_lock = threading.Lock()


class Secret:
    """Holds a credential; only `reveal()` gives it back, so accidental formatting shows `***`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        _register(value)

    def reveal(self) -> str:
        return self._value

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


def _register(value: str) -> None:
    global _known
    if len(value) >= _MIN_LENGTH and value not in _known:
        with _lock:  # copy-on-write: readers never see a set that changes under them
            _known = _known | {value}


def redact(text: str) -> str:
    """`text` with every known secret replaced by `***`."""
    for value in _known:
        if value in text:
            text = text.replace(value, "***")
    return text
