"""Helpers shared by the per-source collectors."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence

from exporter.exposition import Family, escape, format_value
from exporter.outcome import Outcome

log = logging.getLogger(__name__)


def add_accounts(
    outcomes: Sequence[Outcome], families: Sequence[Family], add: Callable[[Outcome], None]
) -> tuple[list[Outcome], list[Outcome]]:
    """Call `add` for each collected account; a bug of ours in it costs that account only.

    An account whose samples could not be built has its half-built samples taken out again and
    is reported as failed with reason "internal", so the answer stays whole and every other
    account keeps its metrics. Returns the outcomes to report health for, and those that crashed.
    """
    reported: list[Outcome] = []
    crashed: list[Outcome] = []
    for outcome in outcomes:
        if outcome.snapshot is not None:
            marks = [(len(family.samples), len(family.chunks)) for family in families]
            try:
                add(outcome)
            except Exception:
                for family, (samples, chunks) in zip(families, marks, strict=True):
                    del family.samples[samples:]
                    del family.chunks[chunks:]
                log.error(
                    "building metrics crashed; please report this",
                    exc_info=True,
                    extra={"source": outcome.source, "account": outcome.account},
                )
                outcome = dataclasses.replace(outcome, snapshot=None, reason="internal")
                crashed.append(outcome)
        reported.append(outcome)
    return reported, crashed


def source_families(
    source: str, outcomes: Sequence[Outcome], data: Sequence[Family], add: Callable[[Outcome], None]
) -> tuple[list[Family], list[Outcome]]:
    """A source's families: its health families, then `data` with `add` called for each of its
    accounts (see `add_accounts`); none at all when the source has no account. Also returns
    the accounts whose metrics crashed."""
    outcomes = [o for o in outcomes if o.source == source]
    if not outcomes:
        return [], []
    reported, crashed = add_accounts(outcomes, data, add)
    return [*health_families(source, reported), *data], crashed


def gauge(name: str, doc: str, labels: Sequence[str]) -> Family:
    return Family(name, doc, labels)


def add_if(family: Family, labels: str, value: float | bool | None) -> None:
    """Add a sample only for a value the API actually sent: an absent field has no series.

    `labels` is a rendered label string (see `exporter.exposition`), shared by an object's
    metrics so it is built once.
    """
    if value is not None:
        family.add_rendered(labels, float(value))


def add_values(
    family: Family, labels: Sequence[str], values: Iterable[float | bool | None]
) -> None:
    """One sample line per label string whose value is not None.

    `labels[i]` is the rendered label string of the i-th value (see `exporter.exposition`); a
    value the API did not send (None) has no series, like `add_if`.
    """
    prefix = family.sample_name + "{"
    family.add_lines(
        f"{prefix}{label}}} {format_value(value)}\n"
        for label, value in zip(labels, values, strict=True)
        if value is not None
    )


def add_states(
    family: Family, labels: Sequence[str], known: Sequence[str], states: Iterable[str | None]
) -> None:
    """One series per known state (1 for the current, 0 otherwise), plus an unknown current
    one, for each object of `labels` (rendered label strings) whose state is not None.

    The `state` label sorts after every label of `labels`, so it is appended to them.
    """
    family.add_lines(_state_lines(family.sample_name + "{", labels, known, states))


def _state_lines(
    prefix: str, labels: Sequence[str], known: Sequence[str], states: Iterable[str | None]
) -> Iterator[str]:
    for label, current in zip(labels, states, strict=True):
        if current is None:
            continue
        for state in known:
            yield f'{prefix}{label},state="{state}"}} {"1.0" if state == current else "0.0"}\n'
        if current not in known:
            yield f'{prefix}{label},state="{escape(current)}"}} 1.0\n'


def health_families(source: str, outcomes: Sequence[Outcome]) -> list[Family]:
    """`<source>_up`, `_scrape_duration_seconds` and `_last_success_timestamp_seconds`."""
    up = gauge(
        f"{source}_up",
        f"1 if this scrape collected the {source} account successfully, 0 if it failed "
        "(device_cloud_exporter_upstream_errors_total says why).",
        ["account"],
    )
    duration = gauge(
        f"{source}_scrape_duration_seconds",
        f"Seconds the {source} account's collection took in this scrape.",
        ["account"],
    )
    success = gauge(
        f"{source}_last_success_timestamp_seconds",
        f"Unix time of the newest successful collection of the {source} account.",
        ["account"],
    )
    for outcome in outcomes:
        labels = account_labels(outcome.account)
        up.add_rendered(labels, 1.0 if outcome.ok else 0.0)
        duration.add_rendered(labels, outcome.duration_seconds)
        add_if(success, labels, outcome.last_success)
    return [up, duration, success]


def account_labels(account: str) -> str:
    return f'account="{escape(account)}"'


def device_labels(account: str, device_id: str) -> str:
    """`account` and `device_id`: in sorted order, so `door_id` or `state` may follow."""
    return f'account="{escape(account)}",device_id="{escape(device_id)}"'
