"""Reading a file an operator points at: only a regular file, of bounded size, never blocking.

A path in a config or on the command line can name anything: a FIFO (a plain open() waits for a
writer forever), a device (/dev/zero never ends), a directory, a multi-gigabyte log. Every
operator file goes through `read_text`, so each of those is one clear problem instead of a hung
process or exhausted memory. The file is opened with O_NONBLOCK (a FIFO's open returns at once)
and the *descriptor* is checked with fstat, so a file swapped between a check and the open
cannot slip through.

Run-time reads (a token file, on every scrape) go through `OffLoopReader`: a daemon thread per
file, at most one read in flight, awaited for at most READ_TIMEOUT seconds. A slow or hung file
system then costs its own account a `token` failure: it never stalls the event loop, and never
keeps the process from exiting (a thread pool's workers would be joined at exit).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
import threading
from typing import Final, Literal

SECRET_LIMIT: Final = 64 * 1024  # a token, a client secret: a few hundred bytes
# config.yaml, the web config: a few KiB in practice. 1 MiB is ~18,000 accounts and parses in
# ~5 s (PyYAML is pure Python here); 4 MiB would take ~18 s, too long for a reload to answer.
CONFIG_LIMIT: Final = 1024 * 1024
PEM_LIMIT: Final = 1024 * 1024  # a certificate chain or a CA bundle
READ_TIMEOUT: Final = 2.0  # seconds a run-time read may take before its account fails

Kind = Literal["missing", "unreadable", "type", "size", "encoding", "slow"]

_TYPES = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class FileProblem(Exception):
    """Why an operator's file cannot be used; never holds any of its content.

    `reason` reads after the path ("is a directory, not a regular file"); str() is the whole
    sentence, path included. `kind` lets the caller choose the fix it suggests.
    """

    def __init__(self, path: str | os.PathLike[str], kind: Kind, reason: str) -> None:
        self.path = os.fspath(path)
        self.kind = kind
        self.reason = reason
        super().__init__(
            f"cannot read {self.path} ({reason})"
            if kind in ("missing", "unreadable")
            else f"{self.path} {reason}"
        )


def human(size: int) -> str:
    """1024 -> '1 KiB', 4194304 -> '4 MiB' (the limits are round numbers)."""
    for unit, factor in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} bytes"


def _refuse(path: str | os.PathLike[str], st: os.stat_result, limit: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _TYPES if test(st.st_mode)), "a special file")
        raise FileProblem(path, "type", f"is {kind}, not a regular file")
    if st.st_size > limit:
        raise FileProblem(path, "size", f"is larger than {human(limit)}")


def _os_problem(path: str | os.PathLike[str], exc: OSError) -> FileProblem:
    kind: Kind = "missing" if exc.errno == errno.ENOENT else "unreadable"
    return FileProblem(path, kind, exc.strerror or type(exc).__name__)


def check(path: str | os.PathLike[str], *, limit: int) -> None:
    """Refuse what `read_text` would refuse, for a file some library opens itself (OpenSSL).

    A check before someone else's open leaves a moment for a swap; `read_text` does not.
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        raise _os_problem(path, exc) from None
    _refuse(path, st, limit)


def read_text(path: str | os.PathLike[str], *, limit: int) -> str:
    """The UTF-8 text of the regular file at `path` (a symlink to one is fine), at most `limit`
    bytes; FileProblem otherwise. Never blocks on a FIFO, never reads past `limit` + 1 bytes."""
    try:
        st = os.stat(path)  # refuse a device or FIFO without even opening it
        _refuse(path, st, limit)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise _os_problem(path, exc) from None
    try:
        _refuse(path, os.fstat(fd), limit)  # what was opened, in case it was swapped
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1024 * 1024))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise _os_problem(path, exc) from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:  # it grew after the fstat
        raise FileProblem(path, "size", f"is larger than {human(limit)}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:  # its message holds the file's bytes: never raise it on
        pass
    raise FileProblem(path, "encoding", "is not UTF-8 text")


class OffLoopReader:
    """Reads one file for coroutines: in a daemon thread, one read at a time, time-bounded.

    Callers that arrive while a read is in flight share it; one that waited READ_TIMEOUT
    seconds gets FileProblem(kind="slow") and the read carries on for the next caller.
    """

    def __init__(self, path: str | os.PathLike[str], limit: int) -> None:
        self.path = path
        self.limit = limit
        self._flight: asyncio.Future[str] | None = None

    async def read(self) -> str:
        flight = self._flight
        if flight is None or flight.done():
            flight = self._flight = self._start()
        timeout = READ_TIMEOUT  # looked up now: tests shorten it
        try:
            return await asyncio.wait_for(asyncio.shield(flight), timeout)
        except TimeoutError:
            pass
        raise FileProblem(self.path, "slow", f"could not be read within {timeout:g} s")

    def _start(self) -> asyncio.Future[str]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        future.add_done_callback(_retrieve)
        path, limit = self.path, self.limit

        def settle(text: str | None, problem: BaseException | None) -> None:
            if future.done():
                return
            if problem is not None:
                future.set_exception(problem)
            else:
                future.set_result(text or "")

        def run() -> None:
            text: str | None = None
            problem: BaseException | None = None
            try:
                text = read_text(path, limit=limit)  # the module's, looked up now
            except Exception as exc:  # FileProblem, or a bug of ours: the caller reports it
                problem = exc
            # RuntimeError: the loop was closed meanwhile, and nobody waits for this read.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, text, problem)

        threading.Thread(target=run, name="file-read", daemon=True).start()
        return future


def _retrieve(future: asyncio.Future[str]) -> None:
    """Every caller may have given up on a read before it failed: mark the failure as seen."""
    if not future.cancelled():
        future.exception()
