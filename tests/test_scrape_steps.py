"""The steps of one scrape, each alone: collect, build the families, encode.

`build_families` and `encode` take plain values, so these tests build outcomes and counters by
hand and need no engine, no event loop and no mocked cloud; `collect` needs an engine.
"""

from __future__ import annotations

import gzip
import zoneinfo
from collections.abc import Iterator
from typing import Any, cast

import pytest
import respx
from prometheus_client import CollectorRegistry, Gauge

from exporter import exposition, negotiate
from exporter.deflate import Deflated
from exporter.engine import Engine
from exporter.models.parqex import parse_sync
from exporter.outcome import Counters, Outcome, ReloadStatus
from exporter.scrape import Collected, build_families, collect, encode
from tests.support import fixture, make_config, mock_clouds, samples, two_cloud_config

NO_COUNTERS = Counters(errors={}, parse_errors={}, backoff_until=())
OWN = ["device_cloud_exporter_build_info", "device_cloud_exporter_scrape_timeout_seconds"]
RELOAD = [
    "device_cloud_exporter_config_last_reload_successful",
    "device_cloud_exporter_config_last_reload_success_timestamp_seconds",
]
ACCOUNTS = [
    "device_cloud_exporter_upstream_errors",
    "device_cloud_exporter_parse_errors",
    "device_cloud_exporter_backoff_until_timestamp_seconds",
]


def names(families: list[exposition.Family]) -> list[str]:
    return [family.name for family in families]


def parqex_home(snapshot: Any = None, ok: bool = True) -> Outcome:
    if ok and snapshot is None:
        snapshot = parse_sync(fixture("parqex_sync.json"), zoneinfo.ZoneInfo("UTC"))
    return Outcome("parqex", "home", snapshot, None if ok else "timeout", 0.25, 1000.0)


def text(families: list[exposition.Family]) -> str:
    return exposition.render(families, False)


def test_without_accounts_only_the_exporters_own_metrics() -> None:
    built = build_families(2.5, None, reload_status=ReloadStatus(True, 1000.0))
    assert names(built.families) == OWN + RELOAD
    assert built.crashed == []
    got = samples(text(built.families))
    assert got[("device_cloud_exporter_scrape_timeout_seconds", frozenset())] == 2.5


def test_a_probe_has_its_budget_and_its_accounts_but_no_process_wide_metrics() -> None:
    collected = Collected([parqex_home()], NO_COUNTERS, now=1_700_000_000.0)
    built = build_families(2.5, collected, probe=True, reload_status=ReloadStatus(True, 1.0))
    got = names(built.families)
    assert got[:4] == ["device_cloud_exporter_scrape_timeout_seconds", *ACCOUNTS]
    assert "parqex_door_open" in got
    assert not set(got) & {*RELOAD, "device_cloud_exporter_build_info"}


def test_families_come_in_exposition_order_own_then_counters_then_clouds() -> None:
    counters = Counters(
        errors={("parqex", "home", "timeout"): 3},
        parse_errors={("parqex", "home", "doors.battery"): 2},
        backoff_until=(("parqex", "home", 1234.0),),
    )
    collected = Collected([parqex_home()], counters, now=1_700_000_000.0)
    built = build_families(2.5, collected)
    got = names(built.families)
    assert got[:5] == OWN + ACCOUNTS
    assert got[5:8] == [
        "parqex_up",
        "parqex_scrape_duration_seconds",
        "parqex_last_success_timestamp_seconds",
    ]
    values = samples(text(built.families))
    home = {("account", "home"), ("source", "parqex")}
    errors = "device_cloud_exporter_upstream_errors_total"
    assert values[(errors, frozenset({*home, ("reason", "timeout")}))] == 3
    backoff = "device_cloud_exporter_backoff_until_timestamp_seconds"
    assert values[(backoff, frozenset(home))] == 1234.0


def test_a_crash_building_one_account_costs_it_alone_and_counts_in_this_answer() -> None:
    broken = Outcome("parqex", "broken", cast(Any, object()), None, 0.1, None)
    collected = Collected([parqex_home(), broken], NO_COUNTERS, now=1_700_000_000.0)
    built = build_families(2.5, collected)
    assert [(o.account, o.reason) for o in built.crashed] == [("broken", "internal")]
    values = samples(text(built.families))
    errors = "device_cloud_exporter_upstream_errors_total"
    key = frozenset({("source", "parqex"), ("account", "broken"), ("reason", "internal")})
    assert values[(errors, key)] == 1
    assert values[("parqex_up", frozenset({("account", "broken")}))] == 0
    assert values[("parqex_up", frozenset({("account", "home")}))] == 1
    assert NO_COUNTERS.errors == {}  # the snapshot handed in is not changed


def test_a_cache_is_announced_on_data_families_not_on_health_ones() -> None:
    collected = Collected([parqex_home()], NO_COUNTERS, now=1_700_000_000.0)
    built = build_families(2.5, collected, cache_seconds=30)
    docs = {family.name: family.documentation for family in built.families}
    suffix = " Served from a cache up to 30s old."
    assert docs["parqex_door_open"].endswith(suffix)
    assert not docs["parqex_up"].endswith(suffix)
    assert not docs["device_cloud_exporter_upstream_errors"].endswith(suffix)


def test_encode_puts_one_eof_at_the_very_end_of_openmetrics() -> None:
    process = CollectorRegistry(auto_describe=False)
    Gauge("process_like", "a process metric", registry=process).set(1)
    families = build_families(2.5, None).families
    body, headers = encode(
        families, content_type=negotiate.OPENMETRICS, gzipped=False, process=process
    )
    assert headers == {"Content-Type": negotiate.OPENMETRICS}
    assert body.startswith(b"# HELP process_like a process metric\n")
    assert body.endswith(b"# EOF\n") and body.count(b"# EOF") == 1
    assert exposition.render(families, True).encode() in body


def test_encode_gzips_the_same_body() -> None:
    families = build_families(2.5, None).families
    plain, _ = encode(families, content_type=negotiate.TEXT, gzipped=False, process=None)
    zipped, headers = encode(families, content_type=negotiate.TEXT, gzipped=True, process=None)
    assert headers == {"Content-Type": negotiate.TEXT, "Content-Encoding": "gzip"}
    assert gzip.decompress(zipped) == plain == exposition.render(families, False).encode()


@pytest.mark.parametrize("content_type", [negotiate.TEXT, negotiate.OPENMETRICS])
def test_a_gzip_answer_of_deflated_families_is_the_plain_answer(
    content_type: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Families built for gzip compress their lines as they go; the answer inflates to exactly
    the plain one, also when a family spans many chunks."""
    monkeypatch.setattr(exposition, "LINES_PER_CHUNK", 100)
    monkeypatch.setattr(exposition, "DEFLATE_FROM", 4096)
    devices = [
        {**device, "id": f"{device['id']}-{n}"}
        for n in range(300)  # 300 x 3 devices: several chunks per door family
        for device in fixture("parqex_sync.json")["devices"]
    ]
    snapshot = parse_sync({"devices": devices}, zoneinfo.ZoneInfo("UTC"))
    collected = Collected([parqex_home(snapshot)], NO_COUNTERS, now=1_700_000_000.0)
    deflated = build_families(2.5, collected, deflated=True).families
    assert any(isinstance(chunk, Deflated) for family in deflated for chunk in family.chunks)
    assert max(len(family.chunks) for family in deflated) > 1
    plain_families = build_families(2.5, collected).families
    zipped, headers = encode(deflated, content_type=content_type, gzipped=True, process=None)
    plain, _ = encode(plain_families, content_type=content_type, gzipped=False, process=None)
    assert headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(zipped) == plain
    assert (
        plain.count(b"parqex_door_open{")
        == 900 * sum(len(d["doors"]) for d in fixture("parqex_sync.json")["devices"]) // 3
    )


@pytest.fixture
def engine() -> Iterator[Engine]:
    with respx.mock(assert_all_called=False) as router:
        mock_clouds(router)
        engine = Engine(make_config(two_cloud_config(parqex=["home", "work"])))
        engine.start()
        try:
            yield engine
        finally:
            engine.close()


def test_collect_a_target_gets_its_outcome_and_its_counters_only(engine: Engine) -> None:
    collected = collect(engine, 5.0, ("parqex", "work"), clock=lambda: 42.0)
    assert [(o.source, o.account, o.ok) for o in collected.outcomes] == [("parqex", "work", True)]
    assert collected.now == 42.0
    assert {key[:2] for key in collected.counters.errors} == {("parqex", "work")}
    assert collected.counters.backoff_until == (("parqex", "work", 0.0),)


def test_collect_everything_reads_every_accounts_counters(engine: Engine) -> None:
    collected = collect(engine, 5.0)
    accounts = [(o.source, o.account) for o in collected.outcomes]
    assert accounts == [("parqex", "home"), ("parqex", "work"), ("lametric", "home")]
    assert [b[:2] for b in collected.counters.backoff_until] == accounts
    assert {key[:2] for key in collected.counters.errors} == set(accounts)
