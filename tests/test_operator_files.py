"""Files a careless operator points at: FIFOs, devices, directories, huge files, alias bombs.

Every file the exporter reads from an operator's path (config, web config, token_file,
client_secret_file, refresh_token_file) must be a regular file of bounded size, read without
ever blocking; a problem is one line at start-up, `reason="token"` for one account at run time,
and a failed reload that keeps the old configuration.

Tests that exercise a read that used to block run it in a helper thread with a deadline, and
unblock a FIFO on teardown, so a regression fails the test instead of hanging the suite.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import respx

from exporter import config, files, webconfig
from exporter.engine import Engine
from exporter.outcome import ReloadStatus
from exporter.reload import Reloader
from exporter.scrape import Scraper
from tests.support import config_yaml, make_config, render, value

T = TypeVar("T")


def only_problem(text: str) -> str:
    """The one line a config refused as t.yaml is refused with."""
    with pytest.raises(config.ConfigError) as raised:
        config.parse(text, "t.yaml")
    (line,) = raised.value.problems
    return line


# The ~600-byte "billion laughs": 9 levels of 10 aliases, 10**9 strings once expanded.
BILLION_LAUGHS = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
    "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
    "h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n"
    "i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n"
)


def small_bomb(levels: int) -> str:
    """An alias bomb of 10**levels strings, under an unknown key after a valid account."""
    lines = [
        "parqex:\n  accounts:\n    - {name: home, token: abcdefgh}",
        "x0: &x0 [" + ",".join(["lol"] * 10) + "]",
    ]
    for level in range(1, levels):
        lines.append(f"x{level}: &x{level} [" + ",".join([f"*x{level - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def within(seconds: float, call: Callable[[], T], what: str) -> T:
    """`call()` in a daemon thread; fail (instead of hanging) if it takes over `seconds`."""
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(call())
        except BaseException as exc:  # handed to the test thread below
            error.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{what} did not return within {seconds:g} s"
    if error:
        raise error[0]
    return result[0]


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "pipe"
    os.mkfifo(path)
    yield path
    # A reader stuck in open() (a regression) gets its end of file here, so no thread leaks.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return
    os.close(fd)


def special(kind: str, tmp_path: Path, fifo: Path) -> Path:
    """A path of `kind` that is not a regular file (a symlink for the device, as people do)."""
    if kind == "fifo":
        return fifo
    if kind == "directory":
        (tmp_path / "dir").mkdir()
        return tmp_path / "dir"
    link = tmp_path / "zero"
    link.symlink_to("/dev/zero")
    return link


KINDS = {
    "fifo": "is a FIFO (named pipe), not a regular file",
    "directory": "is a directory, not a regular file",
    "device": "is a character device, not a regular file",
}


def oauth_yaml(secret_file: Path, refresh_file: Path) -> str:
    return (
        "parqex:\n  accounts:\n    - name: home\n      oauth2:\n        client_id: cid\n"
        f"        client_secret_file: {secret_file}\n        refresh_token_file: {refresh_file}\n"
    )


# --------------------------------------------------------------------------- the reader


def test_a_regular_file_and_a_symlink_to_one_are_read(tmp_path: Path) -> None:
    target = tmp_path / "token"
    target.write_text("abc\n")
    link = tmp_path / "link"
    link.symlink_to(target)
    assert files.read_text(target, limit=files.SECRET_LIMIT) == "abc\n"
    assert files.read_text(link, limit=files.SECRET_LIMIT) == "abc\n"


@pytest.mark.parametrize("kind", KINDS)
def test_the_reader_refuses_what_is_not_a_regular_file_without_blocking(
    kind: str, tmp_path: Path, fifo: Path
) -> None:
    path = special(kind, tmp_path, fifo)
    with pytest.raises(files.FileProblem) as raised:
        within(5, lambda: files.read_text(path, limit=files.SECRET_LIMIT), f"reading a {kind}")
    assert raised.value.reason == KINDS[kind]


def test_the_reader_refuses_a_file_over_its_limit(tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(b"x" * 1025)
    with pytest.raises(files.FileProblem) as raised:
        files.read_text(path, limit=1024)
    assert raised.value.reason == "is larger than 1 KiB"
    path.write_bytes(b"x" * 1024)
    assert len(files.read_text(path, limit=1024)) == 1024


def test_the_reader_never_puts_the_file_content_in_its_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1"
    path.write_bytes(b"s3cr\xe9t-value")
    with pytest.raises(files.FileProblem) as raised:
        files.read_text(path, limit=1024)
    assert raised.value.reason == "is not UTF-8 text"
    assert "s3cr" not in str(raised.value) and raised.value.__context__ is None


# --------------------------------------------------------------------------- at start-up


@pytest.mark.parametrize("kind", KINDS)
def test_a_token_file_that_is_not_a_regular_file_is_one_line(
    kind: str, tmp_path: Path, fifo: Path
) -> None:
    path = special(kind, tmp_path, fifo)
    text = config_yaml(parqex=[{"name": "home", "token_file": path}], base_url="")
    with pytest.raises(config.ConfigError) as raised:
        within(5, lambda: config.parse(text, "t.yaml"), f"checking a {kind} token_file")
    assert raised.value.problems == [
        f"t.yaml: parqex.accounts[0].token_file: {path} {KINDS[kind]}; fix: point token_file "
        "at a regular file that holds the access token"
    ]


@pytest.mark.parametrize("key", ["client_secret_file", "refresh_token_file"])
def test_oauth_files_that_are_not_regular_files_are_one_line(
    key: str, tmp_path: Path, fifo: Path
) -> None:
    good = tmp_path / "good"
    good.write_text("value-123\n")
    good.chmod(0o600)
    text = oauth_yaml(
        fifo if key == "client_secret_file" else good, fifo if key != "client_secret_file" else good
    )
    with pytest.raises(config.ConfigError) as raised:
        within(5, lambda: config.parse(text, "t.yaml"), f"checking a FIFO {key}")
    what = "client secret" if key == "client_secret_file" else "refresh token"
    assert raised.value.problems == [
        f"t.yaml: parqex.accounts[0].oauth2.{key}: {fifo} {KINDS['fifo']}; fix: point {key} "
        f"at a regular file that holds the {what}"
    ]


def test_a_token_file_over_the_secret_limit_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_bytes(b"t" * (files.SECRET_LIMIT + 1))
    path.chmod(0o600)
    text = config_yaml(parqex=[{"name": "home", "token_file": path}], base_url="")
    assert only_problem(text) == (
        f"t.yaml: parqex.accounts[0].token_file: {path} is larger than 64 KiB, far more than "
        "an access token; fix: point token_file at a file that holds only the access token"
    )


LOADERS = {
    "--config.file": (config.load, config.ConfigError),
    "--web.config.file": (webconfig.load, webconfig.WebConfigError),
}


@pytest.mark.parametrize("flag", LOADERS)
@pytest.mark.parametrize("kind", KINDS)
def test_a_config_file_that_is_not_a_regular_file_is_one_line(
    kind: str, flag: str, tmp_path: Path, fifo: Path
) -> None:
    path = special(kind, tmp_path, fifo)
    load, error = LOADERS[flag]
    with pytest.raises(error) as raised:
        within(5, lambda: load(path), f"loading a {kind} for {flag}")
    assert raised.value.problems == [  # type: ignore[attr-defined]
        f"{path}: {KINDS[kind]}; fix: pass {flag} the path of a regular YAML file"
    ]


def test_a_config_file_over_the_limit_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    with path.open("w") as out:
        out.write("# padding\n" * (files.CONFIG_LIMIT // 10 + 1))
    with pytest.raises(config.ConfigError) as raised:
        config.load(path)
    assert raised.value.problems == [
        f"{path}: is larger than 1 MiB; fix: a config is a few KiB, check that --config.file "
        "names the right file"
    ]


def test_a_fifo_named_as_a_certificate_is_one_line(tmp_path: Path, fifo: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text(f"tls_server_config:\n  cert_file: {fifo}\n  key_file: {fifo}\n")
    with pytest.raises(webconfig.WebConfigError) as raised:
        within(5, lambda: webconfig.load(path), "loading a web config naming a FIFO")
    assert raised.value.problems == [
        f"{path}: tls_server_config.cert_file: {fifo} {KINDS['fifo']}; fix: point it at a "
        "regular PEM file"
    ]


def test_the_cli_exits_1_with_one_line_for_a_fifo_config(tmp_path: Path, fifo: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--config.check", "--config.file", str(fifo)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: {fifo}: {KINDS['fifo']}; fix: pass --config.file the path of a regular YAML file"
    ]


# --------------------------------------------------------------------------- YAML aliases


def test_a_billion_laughs_config_is_refused_at_once() -> None:
    started = time.monotonic()
    with pytest.raises(config.ConfigError) as raised:
        within(20, lambda: config.parse(BILLION_LAUGHS, "t.yaml"), "parsing an alias bomb")
    assert time.monotonic() - started < 5  # in fact milliseconds; minutes before the fix
    (line,) = raised.value.problems
    # the smallest value over the limit: f, on line 6, is 10**6 strings
    assert line.startswith("t.yaml: line 6, column 4: ")
    assert "aliases expand it to more than 100000 values" in line
    assert "fix: write the values out instead of repeating aliases" in line


def test_a_small_bomb_is_refused_for_what_it_expands_to_not_for_its_alias_count() -> None:
    # 6 levels: 10**6 values from 50 aliases; the old code expanded it and only then failed
    # on the unknown key.
    line = only_problem(small_bomb(6))
    assert "aliases expand it to more than 100000 values" in line


def test_a_recursive_alias_is_one_line() -> None:
    text = "parqex:\n  accounts:\n    - {name: home, token: abcdefgh}\nloop: &loop [*loop]\n"
    line = only_problem(text)
    assert line.startswith("t.yaml: line 4, column ")
    assert "an alias inside the value it refers to" in line


def test_too_deep_nesting_is_one_line() -> None:
    text = "x: " + "[" * 5000 + "]" * 5000 + "\n"
    line = only_problem(text)
    assert line.startswith("t.yaml: ") and "nested more than" in line


def test_ordinary_anchors_and_merge_keys_still_work() -> None:
    good = (
        "parqex:\n  base_url: &url 'http://127.0.0.1:9'\n  accounts:\n"
        "    - &home {name: home, token: &tok abcdefgh}\n"
        "    - {<<: *home, name: away}\n"
        "lametric:\n  base_url: *url\n  accounts:\n    - {name: clock, token: *tok}\n"
    )
    cfg = config.parse(good, "t.yaml").config
    assert [(s, a.name) for s, a in cfg.accounts()] == [
        ("parqex", "home"),
        ("parqex", "away"),
        ("lametric", "clock"),
    ]
    assert cfg.base_url("lametric") == "http://127.0.0.1:9"


def test_a_web_config_alias_bomb_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text(BILLION_LAUGHS)
    with pytest.raises(webconfig.WebConfigError) as raised:
        within(20, lambda: webconfig.load(path), "loading an alias bomb web config")
    (line,) = raised.value.problems
    assert "aliases expand it to more than 100000 values" in line


# --------------------------------------------------------------------------- a token as a path


JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJkY2UtdGVzdCJ9.c2lnbmF0dXJlLXNlbnRpbmVs"


@pytest.mark.parametrize(
    "key", ["token_file", "oauth2.client_secret_file", "oauth2.refresh_token_file"]
)
def test_a_token_written_under_a_file_key_is_never_echoed(key: str, tmp_path: Path) -> None:
    if key == "token_file":
        text = config_yaml(parqex=[{"name": "home", "token_file": JWT}], base_url="")
    else:
        good = tmp_path / "good"
        good.write_text("value-123\n")
        fields = {"client_secret_file": good, "refresh_token_file": good}
        fields[key.split(".")[1]] = JWT  # type: ignore[assignment]
        text = oauth_yaml(*fields.values())  # type: ignore[arg-type]
    line = only_problem(text)
    assert JWT not in line and "eyJhbGciOi" not in line
    assert (
        f"parqex.accounts[0].{key}: no such file (the value is not shown: neither it nor its "
        in line
    )
    assert "fix: " in line


def test_a_token_of_digits_under_token_file_is_never_echoed() -> None:
    text = "parqex:\n  accounts:\n    - {name: home, token_file: 8675309123456}\n"
    line = only_problem(text)
    assert "8675309123456" not in line and "parqex.accounts[0].token_file" in line


def test_a_missing_file_in_an_existing_directory_is_named(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "token"
    path.parent.mkdir()
    text = config_yaml(parqex=[{"name": "home", "token_file": path}], base_url="")
    assert only_problem(text) == (
        f"t.yaml: parqex.accounts[0].token_file: cannot read {path} (No such file or "
        "directory); fix: create the file with the access token, readable by the exporter's user"
    )


# --------------------------------------------------------------------------- at run time


def two_accounts(path: Path) -> str:
    return config_yaml(
        parqex=[{"name": "filed", "token_file": path}, {"name": "inline", "token": "inline-token"}]
    )


@pytest.fixture
def token_engine(tmp_path: Path, clouds: respx.Router) -> Iterator[tuple[Engine, Path]]:
    token = tmp_path / "token"
    token.write_text("filed-token\n")
    token.chmod(0o600)
    engine = Engine(make_config(two_accounts(token)))
    engine.start()
    yield engine, token
    engine.close()


def outcomes(engine: Engine, budget: float = 3.0) -> dict[str, str | None]:
    found = within(budget + 5, lambda: engine.collect(budget), "a collection")
    return {outcome.account: outcome.reason for outcome in found}


@pytest.mark.parametrize("kind", KINDS)
def test_a_token_file_swapped_at_run_time_costs_that_account_only(
    kind: str, token_engine: tuple[Engine, Path], tmp_path: Path, fifo: Path
) -> None:
    engine, token = token_engine
    assert outcomes(engine) == {"filed": None, "inline": None}
    token.unlink()
    token.symlink_to(special(kind, tmp_path, fifo))
    assert outcomes(engine) == {"filed": "token", "inline": None}
    assert outcomes(engine) == {"filed": "token", "inline": None}  # and again: nothing stuck
    token.unlink()
    token.write_text("filed-token\n")
    assert outcomes(engine) == {"filed": None, "inline": None}


def test_a_huge_token_file_at_run_time_is_a_token_failure(
    token_engine: tuple[Engine, Path], caplog: pytest.LogCaptureFixture
) -> None:
    engine, token = token_engine
    token.write_bytes(b"a" * (2 * files.SECRET_LIMIT))
    assert outcomes(engine) == {"filed": "token", "inline": None}
    assert any("is larger than 64 KiB" in str(getattr(r, "error", "")) for r in caplog.records)


def test_a_slow_token_read_never_blocks_the_other_accounts(
    token_engine: tuple[Engine, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, _ = token_engine
    release = threading.Event()
    real = files.read_text
    reads: list[object] = []

    def stuck(path: object, *, limit: int) -> str:
        reads.append(path)
        release.wait(30)  # a hung network file system
        return real(path, limit=limit)  # type: ignore[arg-type]

    monkeypatch.setattr(files, "read_text", stuck)
    monkeypatch.setattr(files, "READ_TIMEOUT", 0.3)
    try:
        assert outcomes(engine) == {"filed": "token", "inline": None}
        assert outcomes(engine) == {"filed": "token", "inline": None}
        # one read in flight per file, however many scrapes gave up on it
        assert len(reads) == 1
    finally:
        release.set()


# --------------------------------------------------------------------------- reloads


@pytest.mark.usefixtures("clouds")
@pytest.mark.parametrize("kind", [*KINDS, "bomb"])
def test_a_bad_file_on_reload_keeps_the_old_config(
    kind: str,
    running: tuple[Scraper, Reloader, Path],
    tmp_path: Path,
    fifo: Path,
) -> None:
    scraper, reloader, path = running
    engine = scraper.engine
    path.unlink()
    if kind == "bomb":
        path.write_text(BILLION_LAUGHS)
    else:
        path.symlink_to(special(kind, tmp_path, fifo))
    problems = within(20, reloader.reload, f"a reload of a {kind}")
    assert len(problems) == 1 and str(path) in problems[0]
    assert scraper.engine is engine
    assert scraper.reload_status == ReloadStatus(False, 1000.0)
    assert value(render(scraper), "parqex_up", account="home") == 1


@pytest.mark.usefixtures("clouds")
def test_an_unexpected_error_in_a_reload_is_a_failed_reload(
    running: tuple[Scraper, Reloader, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scraper, reloader, path = running
    engine = scraper.engine

    def exhausted(*_: object, **__: object) -> None:
        raise MemoryError

    monkeypatch.setattr(config, "load", exhausted)
    problems = reloader.reload()
    assert problems == [
        f"{path}: the reload failed (MemoryError); still serving the previous configuration"
    ]
    assert scraper.engine is engine and scraper.reload_status == ReloadStatus(False, 1000.0)


@pytest.mark.usefixtures("clouds")
def test_post_reload_answers_while_another_reload_runs(
    running: tuple[Scraper, Reloader, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scraper, reloader, _ = running
    inside, release = threading.Event(), threading.Event()
    real = config.load

    def slow(*args: object, **kwargs: object) -> config.Loaded:
        inside.set()
        release.wait(30)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(config, "load", slow)
    monkeypatch.setattr(Reloader, "WAIT_SECONDS", 0.5)
    first = threading.Thread(target=reloader.reload, daemon=True)
    first.start()
    try:
        assert inside.wait(10)
        ok, lines = within(10, reloader.reload_for_http, "POST /-/reload")
        assert not ok
        assert lines == ["another reload is still running; try again in a moment"]
    finally:
        release.set()
        first.join(10)
    assert scraper.reload_status == ReloadStatus(True, 2000.0)


@pytest.mark.usefixtures("clouds")
def test_300_reloads_leave_the_descriptors_where_they_were(
    running: tuple[Scraper, Reloader, Path],
) -> None:
    """Retired engines close their event loops; garbage collection must not be what does it."""
    scraper, reloader, _ = running
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(300):
            assert reloader.reload() == []
            for thread in reloader.retiring:
                thread.join(10)
        after = len(os.listdir("/proc/self/fd"))
    finally:
        if was_enabled:
            gc.enable()
    assert after - before <= 30, f"{before} descriptors before 300 reloads, {after} after"
    assert value(render(scraper), "parqex_up", account="home") == 1
