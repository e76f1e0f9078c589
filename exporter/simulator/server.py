"""HTTP plumbing for the simulator: a threaded loopback server that knows nothing of the clouds.

It turns each request into a :class:`RecordedRequest`, asks the simulation for a
:class:`Response` and writes it (gzipped when the client accepts gzip), over keep-alive
HTTP/1.1 as the real clouds do.

Benchmarks send it hundreds of requests at once and time the exporter's scrape against the
simulated latency, so the CPU it spends per request is kept small: request headers are parsed
without the `email` package, an answer is written in one system call, and a response is
gzipped once however often it is sent (the simulation reuses unchanged answers).
"""

from __future__ import annotations

import contextlib
import gzip
import ipaddress
import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

CONTROL_PREFIX = "/_sim/"
_GZIP_LEVEL = 1  # the simulator must not be a benchmark's bottleneck; the ratio does not matter
_MAX_LINE = 65536  # the longest request or header line, as http.server allows
_MAX_HEADERS = 100  # as http.client allows
_ONE_WRITE = 64 * 1024  # smaller bodies go out in the same write as the headers


@dataclass(frozen=True)
class RecordedRequest:
    """One request to a simulated cloud endpoint, kept so tests can check what a client sent."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    started: float  # time.monotonic() on arrival
    token: str | None  # the bearer token, if the request carried one
    client_port: int = 0  # the client's source port: equal ports mean a reused connection


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str | None = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    verbatim: bool = False  # sent exactly as given, never gzipped (raw fault bodies)
    _gzipped: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def gzipped(self) -> bytes:
        """The body gzipped, compressed on first use only: answers are sent again and again."""
        if self._gzipped is None:  # two threads may both compress: the same bytes, no harm
            self._gzipped = gzip.compress(self.body, compresslevel=_GZIP_LEVEL)
        return self._gzipped


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(payload, separators=(",", ":")).encode())


# Cloud requests are served inside a context so the simulation knows when a request is done.
ServeCloud = Callable[[RecordedRequest], AbstractContextManager[Response]]
ServeControl = Callable[[str, str, bytes], Response]


def loopback_host(host: str) -> str:
    """The control API has no authentication, so the simulator never listens beyond loopback."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None
    if not address.is_loopback:
        raise ValueError(
            f"refusing to listen on {host}: not a loopback address "
            "(the simulator's /_sim/ control API has no authentication)"
        )
    return host


class LoopbackServer(ThreadingHTTPServer):
    """Threaded server that can also hang up kept-alive connections when it stops."""

    daemon_threads = True
    block_on_close = False  # idle keep-alive clients must not make stopping hang
    request_queue_size = 1024  # benchmarks open 600 connections at once

    def __init__(
        self, address: tuple[str, int], serve_cloud: ServeCloud, serve_control: ServeControl
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.serve_cloud = serve_cloud
        self.serve_control = serve_control
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"http://[{host}]:{port}" if ":" in str(host) else f"http://{host}:{port}"

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake handler threads blocked on idle keep-alive sockets so they exit."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # the client may already be gone
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up (timeouts, stopping) are normal; only report real bugs."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real clouds and the exporter use
    disable_nagle_algorithm = True  # large bodies follow the headers in a second write
    server: LoopbackServer
    fields: dict[str, str]  # the request's headers by lower-case name (the last one wins)
    raw_requestline: bytes  # set by handle_one_request before parse_request

    def parse_request(self) -> bool:
        """The request line and headers into `command`, `path` and `fields`; False after a 400.

        Replaces http.server's parse, whose `email`-package header parsing was a third of the
        simulator's CPU per request. `self.headers` is left unset: use `fields`.
        """
        self.request_version = self.protocol_version  # so that an error still gets a status line
        self.requestline = self.raw_requestline.decode("iso-8859-1").rstrip("\r\n")
        words = self.requestline.split()
        if len(words) != 3 or not words[2].startswith("HTTP/1."):
            self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request line {self.requestline!r}")
            return False
        self.command, self.path, self.request_version = words
        fields: dict[str, str] = {}
        for _ in range(_MAX_HEADERS):
            line = self.rfile.readline(_MAX_LINE + 1)
            if len(line) > _MAX_LINE:
                self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long")
                return False
            if line in (b"\r\n", b"\n", b""):
                break
            name, colon, value = line.decode("iso-8859-1").partition(":")
            if not colon or not name.strip():
                self.send_error(HTTPStatus.BAD_REQUEST, f"Bad header line {line!r}")
                return False
            fields[name.strip().lower()] = value.strip()
        else:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers")
            return False
        self.fields = fields
        connection = fields.get("connection", "").lower()
        self.close_connection = connection == "close" or (
            self.request_version == "HTTP/1.0" and connection != "keep-alive"
        )
        return True

    def _serve(self) -> None:
        url = urlsplit(self.path)
        body = self.rfile.read(int(self.fields.get("content-length") or 0))
        if url.path.startswith(CONTROL_PREFIX):
            self._send(self.server.serve_control(self.command, url.path, body))
            return
        request = RecordedRequest(
            method=self.command,
            path=url.path,
            query=dict(parse_qsl(url.query, keep_blank_values=True)),
            headers=dict(self.fields),
            body=body,
            started=time.monotonic(),
            token=self._bearer_token(),
            client_port=self.client_address[1],
        )
        with self.server.serve_cloud(request) as response:
            self._send(response)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: an access log line per request would drown test and benchmark output."""

    def _bearer_token(self) -> str | None:
        scheme, _, token = self.fields.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        return token.strip() or None

    def _send(self, response: Response) -> None:
        """Status line, headers and body, in one write unless the body is large."""
        body = response.body
        headers = {"Content-Type": response.content_type} if response.content_type else {}
        if not response.verbatim and "gzip" in self.fields.get("accept-encoding", ""):
            body = response.gzipped()
            headers["Content-Encoding"] = "gzip"
        headers.update(response.headers)
        headers["Content-Length"] = str(len(body))
        phrase = self.responses.get(response.status, ("",))[0]
        lines = [
            f"{self.protocol_version} {response.status} {phrase}",
            f"Server: {self.version_string()}",
            f"Date: {self.date_time_string()}",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        if any(n.lower() == "connection" and v.lower() == "close" for n, v in headers.items()):
            self.close_connection = True
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "strict")
        if len(body) < _ONE_WRITE:
            self.wfile.write(head + body)
        else:
            self.wfile.write(head)
            self.wfile.write(body)
