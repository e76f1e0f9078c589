"""Config reload: SIGHUP and POST /-/reload re-read --config.file; a bad file changes nothing.

The first half runs the exporter as a process against the simulated cloud; the second half
drives `Reloader` and `Scraper` in-process, for what a process cannot show deterministically
(an old engine closed only after its last scrape, back-off and counters across a reload).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
import respx

from exporter import config
from exporter.engine import Engine
from exporter.outcome import ReloadStatus
from exporter.reload import Reloader
from exporter.scrape import Scraper
from exporter.simulator import SimulatedCloud
from tests.processes import ExporterProcess, start_exporter
from tests.support import PARQEX_URL, config_yaml, make_config, parqex_only, render, value

OK = "device_cloud_exporter_config_last_reload_successful"
WHEN = "device_cloud_exporter_config_last_reload_success_timestamp_seconds"
ERRORS = "device_cloud_exporter_upstream_errors_total"
BACKOFF = "device_cloud_exporter_backoff_until_timestamp_seconds"
T = TypeVar("T")


def eventually(probe: Callable[[], T], what: str, timeout: float = 10) -> T:
    deadline = time.monotonic() + timeout
    while not (result := probe()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return result


def parqex_config(url: str, *accounts: str, **sections: object) -> str:
    """ParqEx accounts on the simulator; an account named `broken*` has a wrong token."""
    return config_yaml(
        parqex=[
            {"name": n, "token": "wrong-token" if n.startswith("broken") else "demo-parqex-token"}
            for n in accounts
        ],
        base_url=url,
        **sections,
    )


# --------------------------------------------------------------------------- as a process


@pytest.fixture
def config_file(tmp_path: Path, cloud: SimulatedCloud) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(parqex_config(cloud.url, "home", "broken"))
    return path


@pytest.fixture
def exporter(config_file: Path) -> Iterator[ExporterProcess]:
    process = start_exporter(["--config.file", str(config_file)])
    yield process
    assert process.stop() == 0, process.log


def scrape_until(exporter: ExporterProcess, done: Callable[[str], bool]) -> str:
    """Scrape until a scrape satisfies `done` (a signal is handled asynchronously); return it."""

    def probe() -> str | None:
        text = exporter.scrape().text
        return text if done(text) else None

    return eventually(probe, "a scrape that shows the reload")


def reload_lines(process: ExporterProcess) -> list[str]:
    return [line for line in process.log.splitlines() if "config reload failed" in line]


@pytest.mark.system
def test_sighup_with_a_new_account_starts_scraping_it(
    exporter: ExporterProcess, config_file: Path, cloud: SimulatedCloud
) -> None:
    first = exporter.scrape().text
    assert value(first, "parqex_up", account="home") == 1
    assert value(first, "parqex_up", account="second") is None
    assert value(first, OK) == 1
    started = value(first, WHEN)
    assert started is not None and abs(started - time.time()) < 60  # set at start-up
    config_file.write_text(parqex_config(cloud.url, "home", "broken", "second"))
    exporter.process.send_signal(signal.SIGHUP)
    text = scrape_until(exporter, lambda t: value(t, "parqex_up", account="second") is not None)
    assert value(text, "parqex_up", account="second") == 1
    assert value(text, "parqex_up", account="home") == 1
    assert value(text, OK) == 1
    assert value(text, WHEN) > started
    assert 'msg="configuration reloaded"' in exporter.log and "accounts=3" in exporter.log


@pytest.mark.system
def test_a_broken_config_is_rejected_and_the_old_accounts_keep_being_scraped(
    exporter: ExporterProcess, config_file: Path, cloud: SimulatedCloud
) -> None:
    before = exporter.scrape().text
    config_file.write_text(parqex_config(cloud.url, "home", collection={"timeout": 5}))
    exporter.process.send_signal(signal.SIGHUP)
    text = scrape_until(exporter, lambda t: value(t, OK) == 0)
    assert value(text, WHEN) == value(before, WHEN)  # the last *successful* reload
    syncs = cloud.request_count("/oauth/v1/endpoints/sync")
    text = exporter.scrape().text
    assert cloud.request_count("/oauth/v1/endpoints/sync") > syncs  # still calling the cloud
    assert value(text, "parqex_up", account="home") == 1
    assert value(text, "parqex_up", account="broken") == 0  # the old config's accounts
    (line,) = eventually(lambda: reload_lines(exporter), "the log line")
    assert "level=error" in line
    assert f"{config_file}: collection.timeout: unknown key (did you mean" in line


@pytest.mark.system
def test_post_reload_answers_200_or_500_with_the_problems(
    exporter: ExporterProcess, config_file: Path, cloud: SimulatedCloud
) -> None:
    reload_url = f"{exporter.url}/-/reload"
    refused = httpx.get(reload_url)
    assert refused.status_code == 405 and refused.headers["allow"] == "POST"
    assert httpx.head(reload_url).status_code == 405
    assert httpx.post(f"{exporter.url}/metrics").status_code == 405
    broken = parqex_config(cloud.url, "home", "home")  # the same name twice
    config_file.write_text(broken)
    with pytest.raises(config.ConfigError) as raised:
        config.load(config_file)
    failed = httpx.post(reload_url)
    assert failed.status_code == 500
    assert failed.text.splitlines() == raised.value.problems  # the same one-line problems
    assert value(exporter.scrape().text, OK) == 0
    config_file.write_text(parqex_config(cloud.url, "home", "other"))
    ok = httpx.post(reload_url, content=b"ignored body")  # a body is read and ignored
    assert ok.status_code == 200 and ok.text == f"reloaded {config_file}\n"
    text = exporter.scrape().text
    assert value(text, OK) == 1
    assert value(text, "parqex_up", account="other") == 1
    assert value(text, "parqex_up", account="broken") is None  # gone with the old config


@pytest.mark.system
def test_counters_carry_over_a_reload(
    exporter: ExporterProcess, config_file: Path, cloud: SimulatedCloud
) -> None:
    auth = {"source": "parqex", "account": "broken", "reason": "auth"}
    assert value(exporter.scrape().text, ERRORS, **auth) == 1
    assert value(exporter.scrape().text, ERRORS, **auth) == 2
    config_file.write_text(parqex_config(cloud.url, "home", "broken", "second"))
    assert httpx.post(f"{exporter.url}/-/reload").status_code == 200
    text = exporter.scrape().text
    assert value(text, "parqex_up", account="second") == 1
    assert value(text, ERRORS, **auth) == 3  # 2 before the reload, +1: not reset to 1
    assert value(text, ERRORS, source="parqex", account="second", reason="auth") == 0


@pytest.mark.system
def test_demo_mode_has_nothing_to_reload(tmp_path: Path) -> None:
    demo = start_exporter(["--demo"], cwd=tmp_path)
    try:
        answer = httpx.post(f"{demo.url}/-/reload")
        assert answer.status_code == 200 and answer.text == "nothing to reload in --demo mode\n"
        demo.process.send_signal(signal.SIGHUP)
        eventually(lambda: demo.log.count("nothing to re-read in --demo mode") == 2, "the log")
        text = demo.scrape().text
        assert value(text, OK) == 1 and value(text, "parqex_up", account="demo") == 1
    finally:
        assert demo.stop() == 0, demo.log


@pytest.mark.system
def test_reload_is_behind_basic_auth_when_configured(tmp_path: Path) -> None:
    hashed = "$2b$04$u9RjRsEU3R15KMcyIDi.5ed6Vz0293BUpBKZALSPG88YXw/kvvsbW"  # "pw", cost 4
    (tmp_path / "web.yml").write_text(f"basic_auth_users:\n  ops: '{hashed}'\n")
    demo = start_exporter(["--demo", "--web.config.file", str(tmp_path / "web.yml")])
    try:
        assert httpx.post(f"{demo.url}/-/reload").status_code == 401
        assert httpx.post(f"{demo.url}/-/reload", auth=("ops", "nope")).status_code == 401
        assert httpx.post(f"{demo.url}/-/reload", auth=("ops", "pw")).status_code == 200
        assert "basic auth without TLS sends passwords in clear text" in demo.log
    finally:
        assert demo.stop() == 0, demo.log


# --------------------------------------------------------------------------- in-process


def test_a_replaced_engine_is_closed_only_after_its_last_scrape(
    running: tuple[Scraper, Reloader, Path], clouds: respx.Router, monkeypatch: pytest.MonkeyPatch
) -> None:
    scraper, reloader, _ = running
    old = scraper.engine
    inside, release = threading.Event(), threading.Event()
    real_collect = old.collect

    def slow_collect(budget: float, only: object = None) -> list:
        inside.set()
        assert release.wait(10)
        return real_collect(budget, only)

    closed: list[Engine] = []
    real_close = old.close
    monkeypatch.setattr(old, "collect", slow_collect)
    monkeypatch.setattr(old, "close", lambda: (closed.append(old), real_close()))
    pool = ThreadPoolExecutor(1)
    scrape = pool.submit(render, scraper)  # its result, or its exception, comes back below
    assert inside.wait(10)
    assert reloader.reload() == []
    assert scraper.engine is not old  # new scrapes use the new engine at once ...
    assert 'parqex_up{account="home"} 1.0' in render(scraper)
    (retire,) = reloader.retiring
    retire.join(0.3)
    assert retire.is_alive() and closed == []  # ... the old one waits for its scrape
    release.set()
    result = scrape.result(10)
    pool.shutdown()
    retire.join(10)
    assert closed == [old]
    assert 'parqex_up{account="home"} 1.0' in result  # the scrape in flight completed


def test_a_failed_reload_changes_nothing_but_the_status(
    running: tuple[Scraper, Reloader, Path], clouds: respx.Router, caplog: pytest.LogCaptureFixture
) -> None:
    scraper, reloader, path = running
    engine = scraper.engine
    path.write_text("parqex:\n  acounts: []\n  timezon: UTC\n")  # two problems
    with caplog.at_level(logging.ERROR, logger="exporter"):
        problems = reloader.reload()
    with pytest.raises(config.ConfigError) as raised:
        config.load(path)
    assert problems == raised.value.problems  # the lines config.load gives, as at start-up
    assert len(problems) == 2 and "parqex.acounts: unknown key" in problems[0]
    assert "parqex.timezon: unknown key (did you mean 'timezone'?)" in problems[1]
    assert scraper.engine is engine and reloader.retiring == []
    assert scraper.reload_status == ReloadStatus(False, 1000.0)
    assert [r.problem for r in caplog.records] == problems  # one log line per problem line
    text = render(scraper)
    assert value(text, "device_cloud_exporter_config_last_reload_successful") == 0
    assert value(text, WHEN) == 1000.0
    path.write_text(parqex_only("home"))
    assert reloader.reload() == []
    assert scraper.reload_status == ReloadStatus(True, 2000.0)


def test_a_scrape_that_sees_the_new_config_sees_the_new_reload_time(
    running: tuple[Scraper, Reloader, Path], clouds: respx.Router, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new accounts and the new last-reload time appear in the same scrape, never apart.

    (Seen as a flaky `value(text, WHEN) > started` in the process test above: a scrape between
    the engine swap and the status update showed the new account with start-up's timestamp.)
    """
    scraper, reloader, path = running
    seen: list[str] = []
    real_replace = scraper.replace_engine

    def replace_then_scrape(*args: object, **kwargs: object) -> Engine:
        old = real_replace(*args, **kwargs)
        seen.append(render(scraper))  # the first scrape that can run after the swap
        return old

    monkeypatch.setattr(scraper, "replace_engine", replace_then_scrape)
    path.write_text(parqex_only("home", "gone", "new"))
    assert reloader.reload() == []
    (text,) = seen
    assert value(text, "parqex_up", account="new") == 1
    assert (value(text, OK), value(text, WHEN)) == (1, 2000.0)


def test_a_back_off_survives_a_reload(
    running: tuple[Scraper, Reloader, Path], clouds: respx.Router
) -> None:
    scraper, reloader, path = running
    sync = clouds.get(f"{PARQEX_URL}/oauth/v1/endpoints/sync").mock(
        return_value=httpx.Response(429, headers={"Retry-After": "600"})
    )
    text = render(scraper)
    assert value(text, "parqex_up", account="home") == 0
    until = value(text, BACKOFF, source="parqex", account="home")
    assert until is not None and until > time.time() + 500
    calls = sync.call_count
    path.write_text(parqex_only("home", "new"))
    assert reloader.reload() == []
    text = render(scraper)
    assert sync.call_count == calls + 1  # only the new account calls the cloud
    assert value(text, BACKOFF, source="parqex", account="home") == until


def test_counters_of_removed_accounts_go_once_the_old_engine_is_closed(
    running: tuple[Scraper, Reloader, Path], clouds: respx.Router
) -> None:
    scraper, reloader, path = running
    clouds.get(f"{PARQEX_URL}/oauth/v1/endpoints/sync").mock(return_value=httpx.Response(500))
    render(scraper)
    stats = scraper.engine.stats
    assert stats.errors[("parqex", "home", "http_5xx")] == 1
    assert stats.errors[("parqex", "gone", "http_5xx")] == 1
    path.write_text(parqex_only("home"))
    assert reloader.reload() == []
    assert scraper.engine.stats is stats  # the same counters, carried over
    for thread in reloader.retiring:
        thread.join(10)
    assert stats.errors[("parqex", "home", "http_5xx")] == 1
    assert not [key for key in stats.errors if key[1] == "gone"]
    text = render(scraper)
    assert value(text, ERRORS, source="parqex", account="home", reason="http_5xx") == 2
    assert 'account="gone"' not in text


def test_reloads_run_one_at_a_time(
    running: tuple[Scraper, Reloader, Path], clouds: respx.Router, monkeypatch: pytest.MonkeyPatch
) -> None:
    scraper, reloader, _ = running
    active, most = 0, 0
    lock = threading.Lock()
    real_load = config.load

    def counting_load(path: str, **kwargs: object) -> config.Loaded:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        time.sleep(0.05)
        try:
            return real_load(path)
        finally:
            with lock:
                active -= 1

    monkeypatch.setattr(config, "load", counting_load)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(reloader.reload) for _ in range(4)]
        problems = [future.result(10) for future in futures]  # re-raises a thread's exception
    assert problems == [[]] * 4
    assert most == 1
    assert scraper.reload_status == ReloadStatus(True, 2000.0)


def test_no_reload_metrics_without_a_reloader(clouds: respx.Router) -> None:
    engine = Engine(make_config(parqex_only("home")))
    engine.start()
    try:
        text = render(Scraper(engine))
    finally:
        engine.close()
    assert "config_last_reload" not in text


def test_a_fetch_still_running_in_the_old_engine_is_not_cut_into_an_error(
    tmp_path: Path, cloud: SimulatedCloud, caplog: pytest.LogCaptureFixture
) -> None:
    """A scrape that timed out leaves its fetch running; the reload lets it finish before closing
    the old engine's connections, instead of counting a `connect` error that never happened."""
    path = tmp_path / "config.yaml"
    path.write_text(parqex_config(cloud.url, "home"))
    engine = Engine(config.load(path).config)
    engine.start()
    scraper = Scraper(engine, reload_status=ReloadStatus(True, 1000.0))
    reloader = Reloader(scraper, str(path))
    cloud.set_latency(0.8, "/oauth/v1/endpoints/sync")
    try:
        body, _ = scraper.render(accept=None, accept_encoding=None, timeout_header="0.7")
        assert value(body.decode(), "parqex_up", account="home") == 0  # 0.2 s budget: timeout
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="exporter.engine"):
            assert reloader.reload() == []  # while the 0.8 s fetch still runs in the old engine
            for thread in reloader.retiring:
                thread.join(10)
        # the fetch finished (closing its connection would have failed it, or left it pending)
        assert [r.getMessage() for r in caplog.records] == ["collection recovered"]
        errors = {key[2]: n for key, n in engine.stats.errors.items() if n}
        assert errors == {"timeout": 1}
    finally:
        cloud.set_latency(0, "/oauth/v1/endpoints/sync")
        scraper.engine.close()
