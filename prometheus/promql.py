"""PromQL the alerts and the dashboard share, so a stat shows what an alert sees.

`bridged` is the heart of it: a device expression on live data, or during a gap in collection
on the values of the last successful collection (see docs/alerts-and-outages.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


def indent(text: str, by: int = 2) -> str:
    return "\n".join((" " * by + line) if line else line for line in text.splitlines())


@dataclass(frozen=True)
class Reading:
    """How a device expression reads its inputs: the current samples, or (with `grace`) the
    values of the account's last successful collection, as of that collection's time.

    Every device expression is built twice from one function, once per reading, so the
    expression that bridges a gap cannot drift from the one that alerts on live data.
    `account_filter`/`device_filter` are label matchers the dashboard adds.
    """

    source: str  # parqex | lametric
    grace: str | None = None
    account_filter: str = ""
    device_filter: str = ""

    def metric(self, name: str, matchers: str = "") -> str:
        joined = ", ".join(m for m in (matchers, self.device_filter) if m)
        selector = f"{name}{{{joined}}}" if joined else name
        return selector if self.grace is None else f"last_over_time({selector}[{self.grace}])"

    def info(self, name: str, key: str) -> str:
        """An `_info` metric to join names from: one series per `key`, also when a label
        (a new name, firmware or IP) changed within the grace period."""
        selector = self.metric(name)
        return selector if self.grace is None else f"topk by ({key}) (1, {selector})"

    def age(self, timestamp: str) -> str:
        """Seconds from the instant vector `timestamp` to the account's last successful
        collection. Not to time(): live and bridged readings must agree, or an alert that had
        just crossed its threshold would drop at the first failed scrape (the collection is
        up to a scrape interval older than the evaluation)."""
        last = f"{self.source}_last_success_timestamp_seconds"
        if self.account_filter:
            last += f"{{{self.account_filter}}}"
        if self.grace is not None:
            last = f"last_over_time({last}[{self.grace}])"
        return f"{last}\n- on (job, instance, account) group_right ()\n  {timestamp}"


def bridged(
    build: Callable[[Reading], str],
    source: str,
    grace: str,
    account_filter: str = "",
    device_filter: str = "",
) -> str:
    """`build` on live data, or on the last collected values while the account is not up.

    While `<source>_up` is 1 the live samples decide, so a door seen closed resolves at once.
    While it is 0 or missing (a failed collection, an exporter restart) the device series are
    stale and the second branch answers with the values of the last successful collection,
    for `grace` after it: a firing alert keeps firing and a pending one keeps its timer.
    """
    live = build(Reading(source, None, account_filter, device_filter))
    last = build(Reading(source, grace, account_filter, device_filter))
    up = f"{source}_up{{{account_filter}}}" if account_filter else f"{source}_up"
    return (
        f"(\n{indent(live)}\n)\n"
        "or\n"
        f"(\n  (\n{indent(last, 4)}\n  )\n"
        f"  unless on (job, instance, account)\n    ({up} == 1)\n)"
    )


def door_open_expr(r: Reading, factor: float | None) -> str:
    threshold = f"({r.metric('parqex_device_door_open_alert_threshold_seconds')} > 0)"
    if factor is not None:
        threshold = f"{threshold} * {factor:g}"
    toggled = f"({r.metric('parqex_door_last_toggled_timestamp_seconds')} > 0)"
    return (
        "(\n"
        "  (\n"
        f"      (\n{indent(r.age(toggled), 8)}\n      )\n"
        "    and on (account, device_id, door_id)\n"
        f"      ({r.metric('parqex_door_open')} == 1)\n"
        "  )\n"
        "  > on (account, device_id) group_left ()\n"
        f"    {threshold}\n"
        ")\n"
        "* on (account, device_id, door_id) group_left (name)\n"
        f"  {r.info('parqex_door_info', 'account, device_id, door_id')}"
    )
