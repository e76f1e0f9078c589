"""Log lines: logfmt and JSON, structured fields, and no known secret in either."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
import warnings
from collections.abc import Iterator

import pytest

from exporter import logs
from exporter.logs import JsonFormatter, LogfmtFormatter
from exporter.secret import Secret, redact


def record(msg: str, **extra: object) -> logging.LogRecord:
    rec = logging.makeLogRecord({"name": "exporter.engine", "levelname": "WARNING", "msg": msg})
    rec.__dict__.update(extra)
    return rec


def test_logfmt_quotes_only_what_needs_it() -> None:
    line = LogfmtFormatter().format(
        record("collection failed", source="parqex", account="my home", status=401, none=None)
    )
    assert line.split(" ", 1)[1] == (
        'level=warn logger=exporter.engine msg="collection failed" source=parqex '
        'account="my home" status=401'
    )
    assert line.startswith("ts=") and line.split(" ", 1)[0].endswith("Z")


def test_json_lines_carry_the_same_fields() -> None:
    data = json.loads(JsonFormatter().format(record("recovered", account="a", status=None)))
    assert {k: data[k] for k in ("level", "logger", "msg", "account")} == {
        "level": "warn",
        "logger": "exporter.engine",
        "msg": "recovered",
        "account": "a",
    }
    assert "status" not in data


@pytest.mark.parametrize("formatter", [LogfmtFormatter(), JsonFormatter()], ids=["logfmt", "json"])
def test_every_known_secret_is_masked_in_every_field(formatter: logging.Formatter) -> None:
    secret = Secret('tok"en-with-a-quote-31337')
    try:
        raise ValueError(f"boom {secret.reveal()}")
    except ValueError:
        import sys

        rec = record(f"msg {secret.reveal()}", error=f"upstream said {secret.reveal()}")
        rec.exc_info = sys.exc_info()
    line = formatter.format(rec)
    assert "31337" not in line
    assert line.count("***") == 3


def test_short_values_are_not_treated_as_secrets() -> None:
    Secret("t")  # a one-letter test token must not blank every "t" in every log line
    assert redact("the cat") == "the cat"


@pytest.fixture
def json_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """Root logging to a JSON stream, with uncaught exceptions routed; hooks restored after."""
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    root = logging.getLogger()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    monkeypatch.setattr(root, "handlers", [handler])
    logs.route_uncaught()
    yield stream
    logging.captureWarnings(False)


def test_uncaught_exceptions_and_warnings_become_json_log_lines(json_log: io.StringIO) -> None:
    def crash() -> None:
        raise RuntimeError("a bug in a thread")

    thread = threading.Thread(target=crash, name="crashing")
    thread.start()
    thread.join()
    warnings.warn("something odd", UserWarning, stacklevel=1)
    sys.excepthook(ValueError, ValueError("in main"), None)
    lines = json_log.getvalue().splitlines()
    assert len(lines) == 3, json_log.getvalue()
    records = [json.loads(line) for line in lines]  # no raw traceback line in between
    assert records[0]["thread_name"] == "crashing" and "RuntimeError" in records[0]["exception"]
    assert "something odd" in records[1]["msg"]
    assert "ValueError: in main" in records[2]["exception"]
