"""Multi-target mode on the real stack: the hashmod example of prometheus/prometheus.yml, run by
a real Prometheus against two exporter replicas, probes each account from exactly one replica."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.simulator import SimulatedCloud
from tests.system.conftest import PrometheusAPI, wait_until

pytestmark = pytest.mark.system

EXAMPLE = Path(__file__).parents[2] / "prometheus" / "prometheus.yml"
ACCOUNTS = Path(__file__).parents[2] / "prometheus" / "accounts.yml"
PARQEX = ["home", "office", "garage", "shop", "depot"]
LAMETRIC = ["home", "kitchen", "lobby"]


def example_jobs() -> list[dict[str, Any]]:
    """The commented multi-target block of the shipped prometheus.yml, uncommented."""
    text = EXAMPLE.read_text()
    block = text.split("# --- multi-target example (begin)")[1]
    block = block.split("# --- multi-target example (end)")[0]
    yaml_lines = [
        line.replace("  # ", "  ", 1)
        for line in block.splitlines()
        if line.strip().startswith("# ") and line.strip()[2:3] in ("-", " ")
    ]
    return yaml.safe_load("\n".join(yaml_lines))


@pytest.fixture
def cloud(cloud: SimulatedCloud) -> SimulatedCloud:
    """The shared cloud with one account per name of the shipped configs."""
    for name in PARQEX:
        cloud.add_parqex_account(f"parqex-{name}")
    for name in LAMETRIC:
        cloud.add_lametric_account(f"lametric-{name}")
    return cloud


def test_shipped_file_sd_targets_are_the_shipped_configs_accounts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from exporter import config

    monkeypatch.setenv("PARQEX_TOKEN", "x")
    monkeypatch.setenv("LAMETRIC_TOKEN", "y")
    shipped = config.load(EXAMPLE.parents[1] / "config.yaml").config
    accounts = {(source, account.name) for source, account in shipped.accounts()}
    groups = yaml.safe_load(ACCOUNTS.read_text())
    targets = {(g["labels"]["source"], t) for g in groups for t in g["targets"]}
    assert targets == accounts


def test_hashmod_example_probes_every_account_from_exactly_one_replica(
    cloud: SimulatedCloud,
    exporter_factory: Callable[[dict[str, Any]], str],
    prometheus_factory: Callable[..., PrometheusAPI],
) -> None:
    config = {
        "parqex": {
            "base_url": cloud.url,
            "accounts": [{"name": n, "token": f"parqex-{n}"} for n in PARQEX],
        },
        "lametric": {
            "base_url": cloud.url,
            "accounts": [{"name": n, "token": f"lametric-{n}"} for n in LAMETRIC],
        },
        "collection": {"metrics_include_accounts": False},
    }
    replicas = [exporter_factory(config).removeprefix("http://") for _ in range(2)]
    jobs = example_jobs()
    assert [j["job_name"] for j in jobs] == [
        "device-cloud-exporter-replicas",
        "device-cloud-accounts-0",
        "device-cloud-accounts-1",
    ]
    for job in jobs:  # the example's placeholders become this test's loopback addresses
        job["scrape_interval"], job["scrape_timeout"] = "1s", "1s"
        if "static_configs" in job:
            job["static_configs"] = [{"targets": replicas}]
        for rule in job.get("relabel_configs", []):
            if rule.get("replacement", "").startswith("exporter-"):
                rule["replacement"] = replicas[int(rule["replacement"][len("exporter-")])]
    targets = [
        {"targets": PARQEX, "labels": {"source": "parqex"}},
        {"targets": LAMETRIC, "labels": {"source": "lametric"}},
    ]
    prometheus = prometheus_factory(
        {"global": {"scrape_interval": "1s"}, "scrape_configs": jobs},
        {"accounts.yml": yaml.safe_dump(targets)},
    )
    expected = {("parqex", n) for n in PARQEX} | {("lametric", n) for n in LAMETRIC}
    own_up = 'count by (instance) (up{job="device-cloud-exporter-replicas"} == 1)'

    def probed() -> dict[tuple[str, str], list[str]] | None:
        """Every account probed successfully and both replicas' own /metrics up, or None yet.

        Prometheus scrapes each job on its own schedule: every condition is waited for here.
        """
        found: dict[tuple[str, str], list[str]] = {}
        for source in ("parqex", "lametric"):
            for series in prometheus.query(f"{source}_up == 1"):
                key = (source, series["metric"]["account"])
                found.setdefault(key, []).append(series["metric"]["job"])
        replicas_up = {s["metric"]["instance"] for s in prometheus.query(own_up)}
        return found if set(found) == expected and replicas_up == set(replicas) else None

    jobs_by_account = wait_until(
        probed, 30, "every account probed successfully and both replicas up"
    )
    assert all(len(j) == 1 for j in jobs_by_account.values()), jobs_by_account
    per_job = {
        job: {a for a, js in jobs_by_account.items() if job in js}
        for job in ("device-cloud-accounts-0", "device-cloud-accounts-1")
    }
    assert all(per_job.values()), f"one replica got no account: {per_job}"
    # instance names the account, not the replica
    instances = {s["metric"]["instance"] for s in prometheus.query("parqex_up")}
    assert instances == {f"parqex/{n}" for n in PARQEX}
    # the replicas' own /metrics carry no account series (metrics_include_accounts: false)
    leaked = prometheus.query('{job="device-cloud-exporter-replicas", account!=""}')
    assert leaked == []
    # and the cloud saw each account's token: nobody was left out or asked twice per round
    tokens = {r.token for r in cloud.requests}
    assert {f"parqex-{n}" for n in PARQEX} | {f"lametric-{n}" for n in LAMETRIC} <= tokens
