"""The HTTP server: `/metrics`, a landing page, `/-/healthy` and `/-/reload`, on the stdlib.

One selector thread accepts connections and reads request heads; TLS handshakes run in short
non-blocking steps on two threads of their own; a bounded pool of worker threads serves complete
requests (see `ExporterServer`). The
collection itself runs on the engine's event loop. With `--web.config.file`, TLS and basic auth
come from the current `WebConfig`: every new connection is wrapped with the TLS context of the
moment. Every limit a client can hit is in `Limits` and docs/limits.md.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import functools
import html
import ipaddress
import logging
import math
import os
import queue
import resource
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from exporter import __version__, memory
from exporter.engine import UnknownTarget
from exporter.scrape import Scraper
from exporter.webconfig import REALM, AuthBusy, BasicAuth, WebConfigWatcher

log = logging.getLogger(__name__)


class ListenAddressError(ValueError):
    pass


def parse_listen_address(value: str) -> tuple[str, int]:
    """`:9862`, `0.0.0.0:9862`, `[::]:9862`, `127.0.0.1:9862`, `localhost:9862` -> (host, port)."""
    if "://" in value:  # a URL: the scheme is --web.config.file's business
        address = value.split("://", 1)[1].split("/", 1)[0]
        raise ListenAddressError(
            f"--web.listen-address {value!r}: drop the scheme: write {address} "
            "(HTTPS comes from --web.config.file)"
        )
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ListenAddressError(
            f"--web.listen-address {value!r}: expected HOST:PORT such as :9862 or 127.0.0.1:9862"
        )
    if host.startswith("[") or host.endswith("]") or ":" in host:
        inner = host[1:-1] if host.startswith("[") and host.endswith("]") else ""
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            raise ListenAddressError(
                f"--web.listen-address {value!r}: bad IPv6 address; fix: write it like [::1]:9862"
            ) from None
        host = inner
    elif host.replace(".", "").isdigit():  # meant as IPv4; never looked up as a host name
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ListenAddressError(
                f"--web.listen-address {value!r}: {host!r} is not an IPv4 address; "
                "fix: four numbers 0-255, like 127.0.0.1:9862"
            ) from None
    return host, int(port_text)


# What POST /-/reload calls: (succeeded, lines for the answer body).
Reload = Callable[[], tuple[bool, list[str]]]
LISTEN_BACKLOG = 128
HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 34\r\nConnection: close\r\n\r\nRequest head over 64 KiB: refused\n"
)
PLAIN_HTTP_TO_TLS = (
    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Connection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
)


def _listen(host: str, port: int) -> socket.socket:
    """A non-blocking listening socket; ':PORT' means every interface, IPv4 included."""
    family = socket.AF_INET6 if host in ("", "::") or ":" in host else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError:
        if host:
            raise
        # ':9862' on a kernel without IPv6: every IPv4 interface is what was meant.
        family, sock = socket.AF_INET, socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host in ("", "::"):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        bind_host = host or ("::" if family == socket.AF_INET6 else "0.0.0.0")
        sock.bind((bind_host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


@dataclass(frozen=True)
class Limits:
    """What one client may cost the server; see docs/limits.md for what a client sees at each."""

    # Open connections at once; None: half the soft RLIMIT_NOFILE (the other half is left to the
    # clouds' connections and files), at most MAX_CONNECTIONS_CEILING.
    max_connections: int | None = None
    workers: int = 32  # threads that serve requests; each holds at most one response body
    header_timeout: float = 10.0  # s to send a request head (from accept, or from its first byte)
    idle_timeout: float = 120.0  # s a kept-alive connection may wait for its next request
    handshake_timeout: float = 10.0  # s to complete the TLS handshake
    read_timeout: float = 10.0  # s to send a request body (only POST /-/reload takes one)
    write_timeout: float = 30.0  # s to take in a whole response
    stall_threshold: float = 60.0  # s without progress of the collection loop: /-/healthy fails


MAX_CONNECTIONS_CEILING = 4096
MAX_HEAD = 64 * 1024  # bytes of request line and headers; more is answered 431 and closed
_ACCEPT_BACKOFF_MIN = 0.005  # like Go's net/http accept loop: 5 ms, doubling, at most 1 s
_ACCEPT_BACKOFF_MAX = 1.0
_OUT_OF_DESCRIPTORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_HEALTHY = {"GET", "HEAD"}


def default_max_connections() -> int:
    """Half the descriptors the process may open: the collector needs the other half."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return MAX_CONNECTIONS_CEILING
    return max(16, min(MAX_CONNECTIONS_CEILING, soft // 2))


def _head_end(buf: bytearray) -> int:
    """Where the first request head in `buf` ends (its blank line starts), or -1."""
    ends = [end for end in (buf.find(b"\r\n\r\n"), buf.find(b"\n\n")) if end >= 0]
    return min(ends, default=-1)


class _Conn:
    """One client connection; in the selector while it waits, in a worker for one request."""

    __slots__ = ("buf", "client_address", "head_since", "since", "sock", "state", "tls_pending")

    def __init__(
        self, sock: socket.socket, client_address: tuple[Any, ...], now: float, tls: bool
    ) -> None:
        self.sock: socket.socket = sock
        self.client_address = client_address
        self.buf = bytearray()  # received, not yet consumed by a request
        self.since = now  # when it entered its current state
        self.head_since: float | None = now  # a request head is due (None: idle keep-alive)
        self.tls_pending = tls  # the TLS handshake is still to be done
        self.state = "selector"  # or "worker", "closed"

    def head_complete(self) -> bool:
        return b"\r\n\r\n" in self.buf or b"\n\n" in self.buf or len(self.buf) > MAX_HEAD

    def pending(self) -> int:
        """Decrypted bytes OpenSSL holds that the selector cannot see on the descriptor."""
        return self.sock.pending() if isinstance(self.sock, ssl.SSLSocket) else 0


class _Pool:
    """At most `size` daemon threads; created on demand, never left behind at exit."""

    def __init__(self, size: int, name: str) -> None:
        self._size = size
        self._name = name
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            start = self._idle <= 0 and self._threads < self._size
            if start:
                self._threads += 1
            else:
                self._idle -= 1  # this job is one idle thread's
        self._jobs.put(job)
        if start:
            thread = threading.Thread(
                target=self._run, name=f"{self._name}-{self._threads}", daemon=True
            )
            thread.start()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                job()
            except Exception:  # a bug of ours: log it, keep the thread
                log.error("HTTP worker failed; please report this", exc_info=True)
            finally:
                job = None  # drop the response body before waiting for the next job
            with self._lock:
                self._idle += 1

    def stop(self) -> None:
        with self._lock:
            threads, self._threads = self._threads, 0
        for _ in range(threads):
            self._jobs.put(None)


class ExporterServer:
    """A bounded HTTP/1.1 server: a selector thread and a pool of worker threads.

    The selector thread accepts connections and reads request heads; each step of a TLS
    handshake runs, without blocking, on one of two handshake threads once the client has sent
    something. Only a complete request head is handed to a worker, which serves that one
    request and gives the connection back for keep-alive. So an idle or slow client costs a
    descriptor and a few bytes, never a thread, and a client is closed when it is slower than a
    limit (`Limits`). At the connection cap the oldest waiting connection is closed to let a new
    one in. `GET /-/healthy` is answered by the selector thread itself: no busy worker, wrong
    password or slow scrape can delay it.
    """

    def __init__(
        self,
        address: tuple[str, int],
        scraper: Scraper,
        *,
        web: WebConfigWatcher | None = None,
        reload: Reload | None = None,
        limits: Limits | None = None,
    ) -> None:
        host, port = address
        self.scraper = scraper
        self.web = web
        self.reload = reload
        self.limits = limits or Limits()
        self.max_connections = self.limits.max_connections or default_max_connections()
        self.basic_auth = BasicAuth()
        # HTTP or HTTPS is decided at start-up; a changed web config cannot switch it.
        self.tls = web is not None and web.current().tls is not None
        self.socket = _listen(host, port)
        self.server_address = self.socket.getsockname()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._returned: queue.SimpleQueue[tuple[_Conn, str]] = queue.SimpleQueue()
        self._conns: dict[_Conn, None] = {}  # every open connection, oldest first
        self._waiting: dict[_Conn, None] = {}  # those in the selector, by time they got there
        self._pool = _Pool(self.limits.workers, "http-worker")
        # TLS handshakes: CPU work in short steps, never waiting on a client, so a few threads
        # of their own, which busy workers cannot hold up.
        self._handshakes = _Pool(2, "tls-handshake")
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()
        self._accept_delay = 0.0
        self._accept_paused_until = 0.0
        self._warned: dict[str, float] = {}  # what was warned about, when (see warn)
        self._next_sweep = 0.0
        self.stats = {"accept_calls": 0, "evicted": 0, "timed_out": 0, "out_of_descriptors": 0}

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        if host in ("::", "0.0.0.0"):
            host = "localhost"
        elif ":" in str(host):
            host = f"[{host}]"
        return f"{'https' if self.tls else 'http'}://{host}:{port}"

    # ------------------------------------------------------------------ life cycle

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="http", daemon=True)
        thread.start()
        return thread

    def serve_forever(self) -> None:
        self._stopped.clear()
        self._selector.register(self.socket, selectors.EVENT_READ, "listen")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self._stopping.is_set():
                self._step()
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop serving; returns once the selector thread has left its loop."""
        self._stopping.set()
        self._wake()
        self._stopped.wait()

    def server_close(self) -> None:
        """Close the listening socket and every connection; idle workers end."""
        self._stopping.set()
        self.socket.close()
        for conn in list(self._conns):
            if conn.state == "worker":  # wakes a worker blocked on this client; it then closes
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_RDWR)
            else:
                self._close(conn)
        self._pool.stop()
        self._handshakes.stop()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    # ------------------------------------------------------------------ the selector thread

    def _step(self) -> None:
        now = time.monotonic()
        if self._accept_paused_until and now >= self._accept_paused_until:
            self._accept_paused_until = 0.0
            self._selector.register(self.socket, selectors.EVENT_READ, "listen")
        timeout = 0.5  # the sweep for timed-out connections runs at least this often
        if self._accept_paused_until:
            timeout = min(timeout, max(0.0, self._accept_paused_until - now))
        for key, _ in self._selector.select(timeout):
            try:
                if key.data == "listen":
                    self._accept()
                elif key.data == "wake":
                    with contextlib.suppress(OSError):
                        while self._wake_r.recv(4096):
                            pass
                else:
                    self._readable(key.data)
            except Exception:  # a bug of ours must cost one connection, not the server
                log.error("HTTP server failed on a connection; please report this", exc_info=True)
                if isinstance(key.data, _Conn):
                    self._close(key.data)
        while True:
            try:
                conn, outcome = self._returned.get_nowait()
            except queue.Empty:
                break
            try:
                self._back_from_worker(conn, outcome)
            except Exception:
                log.error("HTTP server failed on a connection; please report this", exc_info=True)
                self._close(conn)
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + 0.25
            self._sweep(now)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # a full pipe wakes the selector just as well
            self._wake_w.send(b"\0")

    def _accept(self) -> None:
        for _ in range(64):  # then let the connections already in have their turn
            self.stats["accept_calls"] += 1
            try:
                sock, client_address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_DESCRIPTORS:
                    self._out_of_descriptors(exc)
                # ECONNABORTED and friends: that client is gone, the next one may be fine
                return
            self._accept_delay = 0.0
            now = time.monotonic()
            if len(self._conns) >= self.max_connections and not self._evict_oldest():
                sock.close()  # every connection is being served: this one cannot be
                continue
            sock.setblocking(False)
            conn = _Conn(sock, client_address, now, self.tls)
            self._conns[conn] = None
            self._to_selector(conn, now)

    def _out_of_descriptors(self, exc: OSError) -> None:
        """No descriptor for a new connection: free one, and wait before accepting again.

        Retrying at once would spin: the pending connection stays readable on the listener.
        """
        self.stats["out_of_descriptors"] += 1
        self._evict_oldest()
        self._accept_delay = min(
            _ACCEPT_BACKOFF_MAX, max(_ACCEPT_BACKOFF_MIN, self._accept_delay * 2)
        )
        self._accept_paused_until = time.monotonic() + self._accept_delay
        self._selector.unregister(self.socket)
        self.warn(
            "out of file descriptors: closing the oldest idle connection and accepting more "
            "slowly; fix: raise the nofile limit (ulimit -n)",
            error=os.strerror(exc.errno or 0),
        )

    def warn(self, message: str, **fields: object) -> None:
        """Log `message` at most once a minute: a flood must not flood the log as well."""
        now = time.monotonic()
        if now - self._warned.get(message, -math.inf) >= 60:
            self._warned[message] = now
            log.warning(message, extra=fields)

    def _evict_oldest(self) -> bool:
        """Close the connection that has waited longest in the selector; False if none."""
        for conn in self._waiting:
            self.stats["evicted"] += 1
            self.warn(
                "connection limit reached: closing the oldest idle connection for each new one",
                limit=self.max_connections,
            )
            self._close(conn)
            return True
        return False

    def _to_selector(self, conn: _Conn, now: float, events: int = selectors.EVENT_READ) -> None:
        conn.state = "selector"
        conn.since = now
        self._waiting[conn] = None
        self._selector.register(conn.sock, events, conn)

    def _back_from_worker(self, conn: _Conn, outcome: str) -> None:
        """`outcome`: "close"; "keep" after a request; "read"/"write" while a TLS handshake
        waits for the client; "handshaken" when it is done and the first request is due."""
        if outcome == "close" or self._stopping.is_set():
            self._close(conn)
            return
        now = time.monotonic()
        with contextlib.suppress(OSError):
            conn.sock.setblocking(False)
        if outcome in ("read", "write"):  # its clock (head_since) keeps running from accept
            events = selectors.EVENT_WRITE if outcome == "write" else selectors.EVENT_READ
            self._to_selector(conn, now, events)
            return
        # the header timeout runs from the handshake's end, or from the next request's first byte
        conn.head_since = now if conn.buf or outcome == "handshaken" else None
        if conn.head_complete():  # pipelined: the next request is here already
            self._dispatch(conn)
        else:
            self._to_selector(conn, now)
            if conn.pending():  # already decrypted: the descriptor may never become readable
                self._readable(conn)

    def _leave_selector(self, conn: _Conn) -> None:
        self._waiting.pop(conn, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)

    def _readable(self, conn: _Conn) -> None:
        if conn.tls_pending:  # the handshake's CPU work is done off this thread
            self._leave_selector(conn)
            conn.state = "worker"
            self._handshakes.submit(functools.partial(self._finish, conn, self._handshake_step))
            return
        try:
            while True:  # drain what OpenSSL already decrypted, too
                data = conn.sock.recv(65536)
                if not data:
                    self._close(conn)  # the client closed the connection
                    return
                if not conn.buf and conn.head_since is None:
                    conn.head_since = time.monotonic()  # a new request starts: its clock runs
                conn.buf += data
                if len(conn.buf) > MAX_HEAD or not conn.pending():
                    break
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        except OSError:  # reset, or a TLS error after the handshake
            self._close(conn)
            return
        if conn.head_complete():
            self._dispatch(conn)

    def _dispatch(self, conn: _Conn) -> None:
        """A whole request head is in: answer /-/healthy here, anything else in a worker."""
        self._leave_selector(conn)
        if not 0 <= _head_end(conn.buf) <= MAX_HEAD:  # no end within MAX_HEAD bytes
            with contextlib.suppress(OSError):
                conn.sock.send(HEAD_TOO_LARGE)
            self._close(conn)
            return
        if self._answer_health(conn):
            return
        conn.state = "worker"
        self._pool.submit(functools.partial(self._finish, conn, self._work))

    def _handshake_step(self, conn: _Conn) -> str:
        """One step of a TLS handshake, in a handshake thread; the socket never blocks.

        Returns what the selector does next (see _back_from_worker): "read" or "write" when
        the handshake waits for the client, "handshaken" when it is done, "close" when not.
        """
        if time.monotonic() - (conn.head_since or 0.0) > self.limits.handshake_timeout:
            return "close"  # it waited in the queue past its deadline
        sock = conn.sock
        try:
            if not isinstance(sock, ssl.SSLSocket):
                first = sock.recv(1, socket.MSG_PEEK)
                if first != b"\x16":  # not a TLS handshake record
                    if first:  # plain HTTP, most likely: say so, like Go's servers do
                        with contextlib.suppress(OSError):
                            sock.recv(65536)  # read the request, so closing does not reset it
                            sock.send(PLAIN_HTTP_TO_TLS)
                        problem = "plain HTTP sent to the HTTPS port"
                    else:
                        problem = "connection closed before the TLS handshake"
                    log.debug(
                        "TLS handshake failed",
                        extra={"client": conn.client_address[0], "error": problem},
                    )
                    return "close"
                assert self.web is not None
                context = self.web.current().tls  # the certificate of the moment
                assert context is not None
                sock = conn.sock = context.wrap_socket(
                    sock, server_side=True, do_handshake_on_connect=False
                )
            sock.do_handshake()
        except (ssl.SSLWantReadError, BlockingIOError):
            return "read"
        except ssl.SSLWantWriteError:
            return "write"
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            log.debug(
                "TLS handshake failed",
                extra={"client": conn.client_address[0], "error": str(exc) or type(exc).__name__},
            )
            return "close"
        conn.tls_pending = False
        return "handshaken"

    def _sweep(self, now: float) -> None:
        """Close connections slower than their limit: handshake, request head, or idle."""
        limits = self.limits
        for conn in list(self._waiting):
            if conn.tls_pending:
                late = now - (conn.head_since or conn.since) > limits.handshake_timeout
            elif conn.head_since is not None:
                late = now - conn.head_since > limits.header_timeout
            else:
                late = now - conn.since > limits.idle_timeout
            if late:
                self.stats["timed_out"] += 1
                self._close(conn)

    def _close(self, conn: _Conn) -> None:
        if conn.state == "closed":
            return
        if conn.state == "selector":
            self._leave_selector(conn)
        conn.state = "closed"
        self._conns.pop(conn, None)
        with contextlib.suppress(OSError):
            conn.sock.close()
        conn.buf = bytearray()

    def _answer_health(self, conn: _Conn) -> bool:
        """Answer `GET /-/healthy` without a worker; False when the request is anything else.

        The answer closes the connection (Kubernetes and load balancers open one per probe),
        so no request after it needs parsing here.
        """
        end = conn.buf.find(b"\n")
        words = bytes(conn.buf[:end]).split() if end >= 0 else []
        if len(words) != 3 or not words[2].startswith(b"HTTP/1."):
            return False
        method, target = words[0].decode("latin-1"), words[1].decode("latin-1")
        if method not in _HEALTHY or target.split("?", 1)[0] != "/-/healthy":
            return False
        status, body = self.health()
        reason = "OK" if status == 200 else "Service Unavailable"
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        with contextlib.suppress(OSError):  # a few hundred bytes fit any socket buffer
            conn.sock.send(head + body if method == "GET" else head)
        self._close(conn)
        return True

    def health(self) -> tuple[int, bytes]:
        """200, or 503 with one line when the collection loop has made no progress for long."""
        stalled = self.scraper.engine.stalled_seconds()
        threshold = self.limits.stall_threshold
        if stalled > threshold:
            self.warn(
                "the collection loop has made no progress: /-/healthy answers 503",
                stalled_seconds=round(stalled),
            )
            line = (
                f"Unhealthy: the collection loop has made no progress for {stalled:.0f}s "
                f"(threshold {threshold:g}s)\n"
            )
            return 503, line.encode()
        return 200, b"Healthy\n"

    # ------------------------------------------------------------------ worker threads

    def _finish(self, conn: _Conn, job: Callable[[_Conn], str]) -> None:
        """Run `job` on `conn` in a pool thread, then hand the connection back to the selector
        thread with what to do next: it alone touches the connection lists."""
        outcome = "close"
        try:
            outcome = job(conn)
        finally:  # a bug in `job` is logged by the pool; the connection is closed
            self._returned.put((conn, outcome))
            self._wake()

    def _work(self, conn: _Conn) -> str:
        """Serve the requests whose heads are in `conn.buf`: "keep" or "close" the connection."""
        if self._stopping.is_set():  # queued before the shutdown: nothing serves it any more
            return "close"
        keep = False
        try:
            for _ in range(16):  # pipelined requests; then others get their turn
                handler = _Handler(conn, self)
                handler.handle_one_request()
                keep = not handler.close_connection and not self._stopping.is_set()
                if not keep or not conn.head_complete():
                    break
        except (OSError, ValueError) as exc:  # the client hung up or was too slow; not news
            keep = False
            log.debug(
                "HTTP connection ended",
                extra={"client": conn.client_address[0], "error": str(exc) or type(exc).__name__},
            )
        finally:
            handler = None  # type: ignore[assignment]  # drop the response body now
        return "keep" if keep else "close"


LANDING = """<!doctype html>
<html><head><meta charset="utf-8"><title>device-cloud-exporter</title></head>
<body><h1>device-cloud-exporter</h1>
<p>Prometheus exporter for ParqEx controllers and LaMetric clocks, version {version}.</p>
<ul><li><a href="metrics">Metrics</a></li><li><a href="-/healthy">Health</a></li></ul>
</body></html>
"""
MAX_POST_BODY = 64 * 1024  # /-/reload takes no body; a small one is read and ignored


class _Reader:
    """The connection's bytes for BaseHTTPRequestHandler: the head the selector read, then the
    socket, within the read timeout. What a request leaves unread stays in `conn.buf` for the
    next one, so nothing is lost in a buffer when the connection goes back to the selector."""

    def __init__(self, conn: _Conn, timeout: float) -> None:
        self._conn = conn
        self._timeout = timeout
        self._deadline: float | None = None
        self._eof = False

    def _fill(self) -> None:
        if self._deadline is None:
            self._deadline = time.monotonic() + self._timeout
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request body not sent in time")
        self._conn.sock.settimeout(remaining)
        data = self._conn.sock.recv(65536)
        if data:
            self._conn.buf += data
        else:
            self._eof = True

    def _take(self, n: int) -> bytes:
        buf = self._conn.buf
        out = bytes(buf[:n])
        del buf[:n]
        return out

    def readline(self, limit: int = -1) -> bytes:
        while True:
            buf = self._conn.buf
            end = buf.find(b"\n")
            if end >= 0 and (limit < 0 or end < limit):
                return self._take(end + 1)
            if 0 <= limit <= len(buf) or self._eof:
                return self._take(limit if limit >= 0 else len(buf))
            self._fill()

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            raise ValueError("a request body is read by its Content-Length only")
        while len(self._conn.buf) < n and not self._eof:
            self._fill()
        return self._take(n)


class _Writer:
    """Writes a response within the write timeout, counted from its first byte.

    A client that does not read is dropped when the time is up, and its worker and the body
    it held are free again. Chunks, because SSLSocket.sendall applies the timeout per send.
    """

    CHUNK = 1 << 20

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self._sock = sock
        self._timeout = timeout
        self._deadline: float | None = None

    def write(self, data: bytes) -> int:
        if self._deadline is None:
            self._deadline = time.monotonic() + self._timeout
        view = memoryview(data)
        for start in range(0, len(view), self.CHUNK):
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the client did not take the response in time")
            self._sock.settimeout(remaining)
            self._sock.sendall(view[start : start + self.CHUNK])
        return len(data)

    def flush(self) -> None:
        pass


class _Handler(BaseHTTPRequestHandler):
    """One request on a connection; the worker runs `handle_one_request` (see ExporterServer)."""

    server: ExporterServer  # type: ignore[assignment]
    protocol_version = "HTTP/1.1"
    server_version = f"device-cloud-exporter/{__version__}"
    # path -> (method name, HTTP methods it answers)
    routes: ClassVar[dict[str, tuple[str, tuple[str, ...]]]] = {
        "/": ("_landing", ("GET", "HEAD")),
        "/metrics": ("_metrics", ("GET", "HEAD")),
        "/probe": ("_probe", ("GET", "HEAD")),
        "/-/healthy": ("_healthy", ("GET", "HEAD")),
        "/-/reload": ("_reload", ("POST",)),
    }
    open_paths: ClassVar[frozenset[str]] = frozenset({"/-/healthy"})  # never behind basic auth

    def __init__(self, conn: _Conn, server: ExporterServer) -> None:
        # Not BaseRequestHandler.__init__, which would serve the connection until it closes.
        self.server = server
        self.request = self.connection = conn.sock
        self.client_address = conn.client_address
        self.rfile = _Reader(conn, server.limits.read_timeout)  # type: ignore[assignment]
        self.wfile = _Writer(conn.sock, server.limits.write_timeout)  # type: ignore[assignment]
        self.close_connection = True

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        # Any method may carry a body (a proxy forwards a GET's): read it here, or it would be
        # parsed as the next request on the connection.
        self._discard_body()
        path = self.path.split("?", 1)[0]
        try:
            authorized = path in self.open_paths or self._authorized()
        except AuthBusy as busy:
            self.server.warn(
                "too many password checks waiting: refusing more with 429/503",
                status=busy.status,
                client=self.client_address[0],
            )
            self.close_connection = True
            body = f"{busy}\n".encode()
            self._send(busy.status, body, "text/plain; charset=utf-8", {"Retry-After": "1"})
            return
        if not authorized:
            self._send(
                401,
                b"Unauthorized\n",
                "text/plain; charset=utf-8",
                {"WWW-Authenticate": f'Basic realm="{REALM}"'},
            )
            return
        route = self.routes.get(path)
        if route is None:
            self._send(404, b"Not found. Try /metrics\n", "text/plain; charset=utf-8")
            return
        name, methods = route
        if self.command not in methods:
            allowed = ", ".join(methods)
            body = f"Method not allowed; use {allowed}\n".encode()
            self._send(405, body, "text/plain; charset=utf-8", {"Allow": allowed})
            return
        getattr(self, name)()

    def _authorized(self) -> bool:
        web = self.server.web
        if web is None:
            return True
        users = web.current().users
        if not users:
            return True
        return self.server.basic_auth.check(
            users, self.headers.get("Authorization"), client=self.client_address[0]
        )

    def _discard_body(self) -> None:
        """Read a request body nobody needs, so the next request on the connection parses."""
        chunked = self.headers.get("Transfer-Encoding") is not None
        lengths = {value.strip() for value in self.headers.get_all("Content-Length") or ()}
        if not chunked and not lengths:
            return
        # One length, in ASCII digits ("\xb2" is a digit to isdigit(), not to int()), small.
        # Chunked or two different lengths: unreadable, so the connection ends after the answer.
        length = lengths.pop() if len(lengths) == 1 else ""
        size = int(length) if length.isascii() and length.isdigit() and len(length) <= 9 else -1
        if chunked or not 0 <= size <= MAX_POST_BODY:
            self.close_connection = True
        elif size > 0:
            self.rfile.read(size)

    def _landing(self) -> None:
        body = LANDING.format(version=html.escape(__version__)).encode()
        self._send(200, body, "text/html; charset=utf-8")

    def _healthy(self) -> None:
        """Reached only by a request pipelined behind another; see ExporterServer.health."""
        status, body = self.server.health()
        self._send(status, body, "text/plain; charset=utf-8")

    def _reload(self) -> None:
        if self.server.reload is None:
            self._send(404, b"Not found. Try /metrics\n", "text/plain; charset=utf-8")
            return
        ok, lines = self.server.reload()
        body = "".join(f"{line}\n" for line in lines).encode()
        self._send(200 if ok else 500, body, "text/plain; charset=utf-8")

    def _metrics(self, probe: tuple[str, str | None] | None = None) -> None:
        try:
            body, headers = self.server.scraper.render(
                accept=self.headers.get("Accept"),
                accept_encoding=self.headers.get("Accept-Encoding"),
                timeout_header=self.headers.get("X-Prometheus-Scrape-Timeout-Seconds"),
                probe=probe,
            )
        except UnknownTarget as exc:
            self._send(400, f"{exc}\n".encode(), "text/plain; charset=utf-8")
            return
        except concurrent.futures.CancelledError:  # the engine closed under it: shutting down
            self.close_connection = True
            self._send(503, b"shutting down\n", "text/plain; charset=utf-8")
            return
        except Exception:
            log.exception("scrape failed")
            self._send(500, b"scrape failed; see the exporter's log\n", "text/plain")
            return
        content_type = headers.pop("Content-Type")
        size = len(body)
        try:
            self._send(200, body, content_type, headers)
        finally:
            del body  # this worker's hold on a body other scrapes may share
            memory.release_after(size)

    def _probe(self) -> None:
        """One account, the way blackbox_exporter probes one target: for sharded fleets."""
        query = parse_qs(urlsplit(self.path).query)
        target = query.get("target", [""])[0]  # missing: the engine's 400 lists the accounts
        source = query.get("source", [""])[0] or None
        if source not in (None, "parqex", "lametric"):
            self._send(400, b"source must be parqex or lametric\n", "text/plain; charset=utf-8")
            return
        self._metrics(probe=(target, source))

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("http %s", format % args, extra={"client": self.client_address[0]})
