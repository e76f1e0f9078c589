"""Metric families rendered straight to the text and OpenMetrics formats.

prometheus-client validates and escapes every label name of every sample; at 30,000 doors that
was three quarters of a scrape's CPU. Here a family keeps each sample's label set as the string
that goes between the braces, so a collector renders a door's labels once and reuses them for
all of that door's metrics. Big families skip even that: a collector writes their sample lines
straight into UTF-8 chunks (`Family.add_lines`), one per account, so a scrape of 365,000 samples
holds a few dozen large byte strings instead of a million small objects. The output is byte for
byte what prometheus-client writes for the same samples (tests/test_exposition.py and
tests/test_properties.py prove it).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client.utils import floatToGoString

from exporter.deflate import Deflated, deflate

# prometheus-client leaves it unannotated; the Go formatting Prometheus itself uses
_go_float: Callable[[float], str] = floatToGoString

OPENMETRICS = "application/openmetrics-text"

log = logging.getLogger(__name__)

# Lines joined into one chunk: about 0.5 MiB of text, few enough chunks to add nothing per line.
LINES_PER_CHUNK = 4096
# A chunk is deflated on its own from this size: a compressor costs about 50 us to set up, too
# much for the small chunks of a hundred small accounts, which gzip_stream compresses together.
DEFLATE_FROM = 64 * 1024


def escape(value: str) -> str:
    """A label value as the exposition formats want it: backslash, newline and quote escaped."""
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


def format_value(value: float) -> str:
    if value == 1.0:
        return "1.0"  # most samples are 0/1 flags: skip the general formatter for them
    if value == 0.0 and str(value)[0] != "-":
        return "0.0"
    return _go_float(value)


class Family:
    """One metric family of one scrape: name, HELP, type, and its samples.

    Samples are either (label string, value) pairs (`add`, `add_rendered`), or lines already
    written in the exposition syntax (`add_lines`); a family is filled one way or the other.
    """

    __slots__ = (
        "_order",
        "chunks",
        "deflated",
        "documentation",
        "kind",
        "labelnames",
        "name",
        "samples",
    )

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        kind: str = "gauge",
        *,
        deflated: bool = False,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.kind = kind  # "gauge" or "counter"
        # The formats list labels sorted by name; values arrive in `labelnames` order.
        self._order = sorted(range(len(self.labelnames)), key=self.labelnames.__getitem__)
        self.samples: list[tuple[str, float]] = []
        # Sample lines, UTF-8, each ending in a newline; deflated at once (`deflated`, for a
        # gzip answer) so that a big exposition is never held plain.
        self.chunks: list[bytes | Deflated] = []
        self.deflated = deflated

    def add(self, values: Sequence[str], value: float) -> None:
        names = self.labelnames
        labels = ",".join(f'{names[i]}="{escape(values[i])}"' for i in self._order)
        self.samples.append((labels, value))

    def add_rendered(self, labels: str, value: float) -> None:
        """Add a sample whose label string is already rendered (escaped, sorted by name)."""
        self.samples.append((labels, value))

    def add_lines(self, lines: Iterable[str]) -> None:
        """Add sample lines written by the caller, each `name{labels} value` and a newline.

        They are taken LINES_PER_CHUNK at a time, joined and encoded, so what the family keeps
        is byte strings, and a generator of lines is never held whole as strings.
        """
        pending = iter(lines)
        while batch := list(itertools.islice(pending, LINES_PER_CHUNK)):
            chunk = utf8("".join(batch))
            big = self.deflated and len(chunk) >= DEFLATE_FROM
            self.chunks.append(deflate(chunk) if big else chunk)

    @property
    def sample_name(self) -> str:
        return self.name + "_total" if self.kind == "counter" else self.name


def utf8(text: str) -> bytes:
    """`text` as UTF-8, whatever a string in it holds.

    The parsers replace what UTF-8 cannot carry (lone surrogates) in every string a cloud
    sends; this is the last line of defence, so that a string that slipped past them costs a
    `?` in one label, never every metric of the answer.
    """
    try:
        return text.encode()
    except UnicodeEncodeError:
        log.error("a label value could not be encoded as UTF-8; please report this")
        return text.encode("utf-8", "replace")


def pieces(families: Iterable[Family], openmetrics: bool) -> Iterator[bytes | Deflated]:
    """The families in the text format 0.0.4, or OpenMetrics 1.0 (without the final `# EOF`),
    as UTF-8 pieces, deflated chunks as they are (see `exporter.deflate.gzip_stream`)."""
    for family in families:
        help_text = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
        if openmetrics:
            help_text = help_text.replace('"', r"\"")
            header = family.name
        else:
            header = family.sample_name
        name = family.sample_name
        text = [f"# HELP {header} {help_text}\n# TYPE {header} {family.kind}\n"]
        text.extend(
            f"{name}{{{labels}}} {format_value(value)}\n"
            if labels
            else f"{name} {format_value(value)}\n"
            for labels, value in family.samples
        )
        yield utf8("".join(text))
        yield from family.chunks


def parts(families: Iterable[Family], openmetrics: bool) -> Iterator[bytes]:
    """`pieces`, every one plain."""
    for piece in pieces(families, openmetrics):
        yield piece.inflate() if isinstance(piece, Deflated) else piece


def render(families: Iterable[Family], openmetrics: bool) -> str:
    """The families in the text format 0.0.4, or OpenMetrics 1.0 (without the final `# EOF`)."""
    return b"".join(parts(families, openmetrics)).decode()
