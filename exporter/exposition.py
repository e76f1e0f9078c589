"""Metric families rendered straight to the text and OpenMetrics formats.

prometheus-client validates and escapes every label name of every sample; at 30,000 doors that
was three quarters of a scrape's CPU. Here a family keeps each sample's label set as the string
that goes between the braces, so a collector renders a door's labels once and reuses them for
all of that door's metrics. The output is byte for byte what prometheus-client writes for the
same samples (tests/test_exposition.py and tests/test_properties.py prove it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from prometheus_client.utils import floatToGoString

# prometheus-client leaves it unannotated; the Go formatting Prometheus itself uses
_go_float: Callable[[float], str] = floatToGoString

OPENMETRICS = "application/openmetrics-text"


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
    """One metric family of one scrape: name, HELP, type, and (label string, value) samples."""

    __slots__ = ("_order", "documentation", "kind", "labelnames", "name", "samples")

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str] = (), kind: str = "gauge"
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.kind = kind  # "gauge" or "counter"
        # The formats list labels sorted by name; values arrive in `labelnames` order.
        self._order = sorted(range(len(self.labelnames)), key=self.labelnames.__getitem__)
        self.samples: list[tuple[str, float]] = []

    def add(self, values: Sequence[str], value: float) -> None:
        names = self.labelnames
        labels = ",".join(f'{names[i]}="{escape(values[i])}"' for i in self._order)
        self.samples.append((labels, value))

    def add_rendered(self, labels: str, value: float) -> None:
        """Add a sample whose label string is already rendered (escaped, sorted by name)."""
        self.samples.append((labels, value))

    @property
    def sample_name(self) -> str:
        return self.name + "_total" if self.kind == "counter" else self.name


def render(families: Iterable[Family], openmetrics: bool) -> str:
    """The families in the text format 0.0.4, or OpenMetrics 1.0 (without the final `# EOF`)."""
    out: list[str] = []
    for family in families:
        help_text = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
        if openmetrics:
            help_text = help_text.replace('"', r"\"")
            header = family.name
        else:
            header = family.sample_name
        out.append(f"# HELP {header} {help_text}\n# TYPE {header} {family.kind}\n")
        name = family.sample_name
        out.extend(
            f"{name}{{{labels}}} {format_value(value)}\n"
            if labels
            else f"{name} {format_value(value)}\n"
            for labels, value in family.samples
        )
    return "".join(out)
