"""Logging in the two formats Prometheus exporters use: logfmt (default) and JSON lines.

Structured fields travel in `extra={...}`; every key that is not a standard LogRecord attribute
is written as a field.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time

from exporter.secret import redact

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _fields(record: logging.LogRecord) -> dict[str, object]:
    out: dict[str, object] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z",
        "level": {"WARNING": "warn", "CRITICAL": "error"}.get(
            record.levelname, record.levelname.lower()
        ),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for key, value in vars(record).items():
        if key not in _STANDARD and value is not None:
            out[key] = value
    if record.exc_info:
        out["exception"] = logging.Formatter().formatException(record.exc_info)
    # the last line of defence: no secret the process knows leaves it through a log line
    return {key: _masked(value) for key, value in out.items()}


def _masked(value: object) -> object:
    """Numbers stay numbers (in JSON too); anything else is written as its str(), masked.

    An exception, a path or a list passed in `extra` carries a secret as well as a string does.
    """
    if isinstance(value, bool | int | float):
        return value
    return redact(value if isinstance(value, str) else str(value))


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{key}={_logfmt_value(value)}" for key, value in _fields(record).items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str)


def _logfmt_value(value: object) -> str:
    text = str(value)
    if text and not any(c in text for c in ' ="\\\n\t'):
        return text
    return json.dumps(text)


def json_lines() -> bool:
    """Whether stderr carries JSON log lines only (so nothing else may be printed there)."""
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)


def setup(level: str = "info", fmt: str = "logfmt") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    route_uncaught()


def route_uncaught() -> None:
    """Send what Python would print raw on stderr through logging, in the chosen format.

    An exception nobody caught (in the main thread, another thread, or a destructor) and a
    warning otherwise print multi-line tracebacks, which break a JSON log stream. asyncio's
    loop already reports through the "asyncio" logger.
    """
    crash = logging.getLogger("exporter.crash")

    def uncaught(kind: type[BaseException], exc: BaseException, tb: object) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, exc, tb)  # type: ignore[arg-type]
            return
        crash.error("uncaught exception; please report this", exc_info=(kind, exc, tb))  # type: ignore[arg-type]

    def in_thread(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        crash.error(
            "uncaught exception in a thread; please report this",
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),  # type: ignore[arg-type]
            extra={"thread_name": args.thread.name if args.thread else None},
        )

    def unraisable(args: sys.UnraisableHookArgs) -> None:
        crash.warning(
            "exception ignored",
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),  # type: ignore[arg-type]
            extra={"where": args.err_msg or repr(args.object)},
        )

    sys.excepthook = uncaught
    threading.excepthook = in_thread
    sys.unraisablehook = unraisable
    logging.captureWarnings(True)
