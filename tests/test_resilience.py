"""Kind to the upstream: cache, Retry-After in both forms, back-off after repeated 5xx."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import respx

from exporter.backoff import RETRY_AFTER_CAP_SECONDS, Backoff
from exporter.clients.http import UpstreamError
from exporter.scrape import Scraper
from tests.support import PARQEX_URL, config_yaml, fixture, value

SYNC = f"{PARQEX_URL}/oauth/v1/endpoints/sync"


def config(**collection: float) -> str:
    return config_yaml(parqex=[{"name": "home", "token": "t"}], collection=collection or None)


@pytest.fixture
def router() -> Iterator[respx.Router]:
    with respx.mock(assert_all_called=False) as mock:
        yield mock


def scrape(scraper: Scraper) -> str:
    return scraper.render(accept=None, accept_encoding=None, timeout_header=None)[0].decode()


def ok() -> httpx.Response:
    return httpx.Response(200, json=fixture("parqex_sync.json"))


def test_cache_serves_an_ha_pair_from_one_upstream_call(
    router: respx.Router, start_scraper: Callable[[str], Scraper]
) -> None:
    route = router.get(SYNC).mock(side_effect=lambda r: ok())
    scraper = start_scraper(config(cache_seconds=30))
    outputs = [scrape(scraper) for _ in range(8)]  # two servers, four scrapes each
    assert route.call_count == 1
    assert all(value(out, "parqex_up", account="home") == 1 for out in outputs)
    assert "# HELP parqex_door_open 1 if the door is OPEN" in outputs[-1]
    assert "Served from a cache up to 30s old." in outputs[-1].split("# HELP parqex_door_open")[1]
    up_help = outputs[-1].split("# HELP parqex_up ")[1].splitlines()[0]
    assert "cache" not in up_help  # health describes this scrape, not cached data


def test_without_cache_every_scrape_calls_and_help_does_not_mention_a_cache(
    router: respx.Router, start_scraper: Callable[[str], Scraper]
) -> None:
    route = router.get(SYNC).mock(side_effect=lambda r: ok())
    scraper = start_scraper(config())
    scrape(scraper)
    out = scrape(scraper)
    assert route.call_count == 2
    assert "cache" not in out


def test_cache_expires(router: respx.Router, start_scraper: Callable[[str], Scraper]) -> None:
    route = router.get(SYNC).mock(side_effect=lambda r: ok())
    scraper = start_scraper(config(cache_seconds=0.3))
    scrape(scraper)
    scrape(scraper)
    assert route.call_count == 1
    time.sleep(0.35)
    scrape(scraper)
    assert route.call_count == 2


def test_a_failure_is_never_cached(
    router: respx.Router, start_scraper: Callable[[str], Scraper]
) -> None:
    route = router.get(SYNC).mock(side_effect=[httpx.Response(401), ok()])
    scraper = start_scraper(config(cache_seconds=30))
    assert value(scrape(scraper), "parqex_up", account="home") == 0
    assert value(scrape(scraper), "parqex_up", account="home") == 1
    assert route.call_count == 2


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_retry_after_is_honoured(
    form: str, router: respx.Router, start_scraper: Callable[[str], Scraper]
) -> None:
    wait = 2
    header = (
        str(wait)
        if form == "seconds"
        else email.utils.formatdate(time.time() + wait + 1, usegmt=True)  # second resolution
    )
    route = router.get(SYNC).mock(
        side_effect=[httpx.Response(429, headers={"Retry-After": header}), ok()]
    )
    scraper = start_scraper(config())
    before = time.time()
    scrape(scraper)
    out = scrape(scraper)  # inside the back-off: the cloud is not called
    assert route.call_count == 1
    assert value(out, "parqex_up", account="home") == 0
    until = value(
        out,
        "device_cloud_exporter_backoff_until_timestamp_seconds",
        source="parqex",
        account="home",
    )
    assert before + wait - 1 <= until <= before + wait + 2
    counted = value(
        out,
        "device_cloud_exporter_upstream_errors_total",
        source="parqex",
        account="home",
        reason="rate_limited",
    )
    assert counted == 1  # one upstream error, however many scrapes the back-off covers
    outcome = scraper.engine.collect(1.0)[0]
    assert (outcome.reason, route.call_count) == ("rate_limited", 1)
    time.sleep(max(0.0, until - time.time()) + 0.05)
    out = scrape(scraper)
    assert route.call_count == 2
    assert value(out, "parqex_up", account="home") == 1
    backoff_metric = "device_cloud_exporter_backoff_until_timestamp_seconds"
    assert value(out, backoff_metric, source="parqex", account="home") == 0


def test_repeated_5xx_backs_off_exponentially(
    router: respx.Router, start_scraper: Callable[[str], Scraper]
) -> None:
    route = router.get(SYNC).mock(return_value=httpx.Response(503))
    scraper = start_scraper(config(backoff_base_seconds=0.4, backoff_max_seconds=5))
    scrape(scraper)
    scrape(scraper)  # a single 5xx does not back off: this one calls again
    assert route.call_count == 2
    outcome = scraper.engine.collect(1.0)[0]  # now backing off
    assert (outcome.reason, route.call_count) == ("http_5xx", 2)
    worker = scraper.engine.workers[0]
    first = worker.backoff.until - time.monotonic()
    assert 0.0 < first <= 0.4
    time.sleep(first + 0.05)
    scrape(scraper)  # third 5xx: twice as long, with jitter
    assert route.call_count == 3
    second = worker.backoff.until - time.monotonic()
    assert 0.3 < second <= 0.8


def test_concurrent_scrapes_during_backoff_do_not_call(
    router: respx.Router, start_scraper: Callable[[str], Scraper]
) -> None:
    route = router.get(SYNC).mock(return_value=httpx.Response(429, headers={"Retry-After": "60"}))
    scraper = start_scraper(config())
    scrape(scraper)
    with ThreadPoolExecutor(5) as pool:
        futures = [pool.submit(scrape, scraper) for _ in range(5)]
        outputs = [future.result(10) for future in futures]  # re-raises a thread's exception
    assert route.call_count == 1
    assert [value(out, "parqex_up", account="home") for out in outputs] == [0] * 5
    errors = "device_cloud_exporter_upstream_errors_total"
    assert all(
        value(out, errors, source="parqex", account="home", reason="rate_limited") == 1
        for out in outputs
    )


def error(reason: str, retry_after: float | None = None) -> UpstreamError:
    return UpstreamError(reason, "x", retry_after=retry_after)


def test_backoff_policy_grows_caps_jitters_and_resets() -> None:
    backoff = Backoff(base_seconds=10, max_seconds=60, rng=random.Random(1))
    delays = []
    for _ in range(6):
        backoff.failed(error("http_5xx"), now=0.0, now_wall=1000.0)
        delays.append(backoff.until)
    assert delays[0] == 0.0  # the first 5xx alone is not a reason to wait
    ceilings = [10, 20, 40, 60, 60]
    for delay, ceiling in zip(delays[1:], ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert backoff.until_wall == pytest.approx(1000.0 + backoff.until)
    assert backoff.active(backoff.until - 0.01) == "http_5xx"
    assert backoff.active(backoff.until) is None
    backoff.succeeded()
    assert (backoff.streak, backoff.until, backoff.active(0.0)) == (0, 0.0, None)


def test_backoff_policy_for_429_and_other_errors() -> None:
    backoff = Backoff(base_seconds=10, max_seconds=60, rng=random.Random(1))
    backoff.failed(error("rate_limited", retry_after=7), now=100.0, now_wall=0.0)
    assert backoff.until == 107.0  # Retry-After exactly, no jitter
    backoff.failed(error("rate_limited", retry_after=10**6), now=0.0, now_wall=0.0)
    assert backoff.until == RETRY_AFTER_CAP_SECONDS
    backoff.succeeded()
    backoff.failed(error("rate_limited"), now=0.0, now_wall=0.0)  # no Retry-After: exponential
    assert 5 <= backoff.until <= 10
    backoff.succeeded()
    for reason in ("auth", "timeout", "http_4xx", "decode"):
        backoff.failed(error(reason), now=0.0, now_wall=0.0)
        assert backoff.active(0.0) is None


def test_backoff_metric_returns_to_zero_when_the_wait_is_over_even_without_a_success(
    router: respx.Router, start_scraper: Callable[[str], Scraper]
) -> None:
    router.get(SYNC).mock(
        side_effect=[httpx.Response(429, headers={"Retry-After": "1"}), httpx.Response(401)]
    )
    scraper = start_scraper(config())
    metric = "device_cloud_exporter_backoff_until_timestamp_seconds"
    assert value(scrape(scraper), metric, source="parqex", account="home") > time.time()
    time.sleep(1.1)
    out = scrape(scraper)  # the wait is over; this call fails differently (401)
    assert value(out, "parqex_up", account="home") == 0
    assert value(out, metric, source="parqex", account="home") == 0


def connect_refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused")


@pytest.mark.parametrize(
    ("between", "reason"),
    [
        (lambda r: httpx.Response(401, json={"message": "Invalid Access Token"}), "auth"),
        (lambda r: httpx.Response(404, text="no such endpoint"), "http_4xx"),
        (lambda r: httpx.Response(200, text="{not json"), "decode"),
        (connect_refused, "connect"),
    ],
    ids=["auth", "http_4xx", "decode", "connect"],
)
def test_another_error_between_two_5xx_ends_the_streak(
    between: Callable[[httpx.Request], httpx.Response],
    reason: str,
    router: respx.Router,
    start_scraper: Callable[[str], Scraper],
) -> None:
    """5xx, <other error>, 5xx is not "repeated 5xx": the cloud is asked again at once."""
    answers = iter([lambda r: httpx.Response(503), between, lambda r: httpx.Response(503)])
    route = router.get(SYNC).mock(side_effect=lambda r: next(answers, lambda r: ok())(r))
    scraper = start_scraper(config(backoff_base_seconds=600, backoff_max_seconds=600))
    errors = "device_cloud_exporter_upstream_errors_total"
    _, middle, last = scrape(scraper), scrape(scraper), scrape(scraper)
    assert value(middle, errors, source="parqex", account="home", reason=reason) == 1
    assert value(last, errors, source="parqex", account="home", reason="http_5xx") == 2
    backoff_metric = "device_cloud_exporter_backoff_until_timestamp_seconds"
    assert value(last, backoff_metric, source="parqex", account="home") == 0
    out = scrape(scraper)  # a back-off of 300-600 s would skip this call
    assert route.call_count == 4
    assert value(out, "parqex_up", account="home") == 1
