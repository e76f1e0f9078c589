"""Helpers shared by the tests: fixtures on disk, configs, mocked clouds, parsing expositions."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import respx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from exporter import config
from exporter.scrape import Scraper

FIXTURES = Path(__file__).parent / "fixtures"
# The documents' example bodies the simulator also serves (parqex_sync.json,
# lametric_devices.json) have one copy, in the package, which --demo needs.
SIMDATA = Path(config.__file__).parent / "simdata"
PARQEX_URL = "https://parqex.test"  # never the real hosts: respx answers for these
LAMETRIC_URL = "https://lametric.test"
NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z: scrape time for the age metrics


def fixture_path(name: str) -> Path:
    """tests/fixtures/<name>, or exporter/simdata/<name> for a body the simulator serves too."""
    path = FIXTURES / name
    return path if path.exists() else SIMDATA / name


def fixture(name: str) -> Any:
    return json.loads(fixture_path(name).read_text())


def make_config(text: str) -> config.Config:
    return config.parse(text, "test.yaml").config


Account = Mapping[str, object]  # one entry of `accounts:`, e.g. {"name": "home", "token": "t"}


def config_yaml(
    *,
    parqex: Sequence[Account] | None = None,
    lametric: Sequence[Account] | None = None,
    base_url: str | None = None,
    collection: Mapping[str, object] | None = None,
    **sections: object,
) -> str:
    """A config file's text from keyword arguments: each source's accounts on `base_url` (the
    respx-mocked hosts when not given; "" leaves the key out, for the clouds' real hosts),
    `collection` and any other top-level section.

    YAML written by a YAML writer: a token or path is quoted where it must be, which text
    assembled by hand gets wrong. Paths may be given as `Path`.
    """
    doc: dict[str, object] = {}
    for source, accounts, mocked in (
        ("parqex", parqex, PARQEX_URL),
        ("lametric", lametric, LAMETRIC_URL),
    ):
        if accounts is not None:
            url = mocked if base_url is None else base_url
            doc[source] = {"base_url": url} if url else {}
            doc[source]["accounts"] = list(accounts)
    if collection is not None:
        doc["collection"] = collection
    doc.update(sections)
    return yaml.safe_dump(json.loads(json.dumps(doc, default=str)), sort_keys=False)


def two_cloud_config(*, parqex: list[str] = ("home",), lametric: list[str] = ("home",)) -> str:
    """YAML with one account per name; each account's token is `<source>-<name>-token`."""
    return config_yaml(
        parqex=[{"name": n, "token": f"parqex-{n}-token"} for n in parqex],
        lametric=[{"name": n, "token": f"lametric-{n}-token"} for n in lametric],
    )


def mock_clouds(router: respx.Router) -> None:
    """Both clouds answering every token with the documents' example bodies."""
    router.get(f"{PARQEX_URL}/oauth/v1/endpoints/sync").mock(
        return_value=httpx.Response(200, json=fixture("parqex_sync.json"))
    )
    router.get(f"{LAMETRIC_URL}/api/v2/users/me").mock(
        return_value=httpx.Response(200, json=fixture("lametric_user.json"))
    )
    router.get(f"{LAMETRIC_URL}/api/v2/users/me/devices").mock(
        return_value=httpx.Response(200, json=fixture("lametric_devices.json"))
    )


def samples(exposition: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, keyed by name and labels (prometheus-client parses it)."""
    out = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(exposition: str, metric: str, **labels: str) -> float | None:
    """The value of one sample (all labels given), or None when the series is absent."""
    return samples(exposition).get((metric, frozenset(labels.items())))


def parqex_only(*accounts: str) -> str:
    """ParqEx accounts on the respx-mocked cloud, each with the token `<name>-token`."""
    return config_yaml(parqex=[{"name": name, "token": f"{name}-token"} for name in accounts])


def render(scraper: Scraper) -> str:
    """One `/metrics` body, plain text, rendered in-process."""
    body, _ = scraper.render(accept=None, accept_encoding=None, timeout_header=None)
    return body.decode()
