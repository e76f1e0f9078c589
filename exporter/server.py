"""The HTTP server: `/metrics`, a landing page, `/-/healthy` and `/-/reload`, on the stdlib.

Each connection runs in its own thread; the collection itself runs on the engine's event loop,
so slow clouds never block `/-/healthy`. With `--web.config.file`, TLS and basic auth come from
the current `WebConfig`: every new connection is wrapped with the TLS context of the moment, and
the handshake runs in the connection's own thread with a timeout, so a slow or broken client
never holds up the accept loop.
"""

from __future__ import annotations

import html
import ipaddress
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

from exporter import __version__
from exporter.engine import UnknownTarget
from exporter.scrape import Scraper
from exporter.webconfig import REALM, BasicAuth, WebConfigWatcher

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
        inner = host[1:-1] if host.startswith("[") and host.endswith("]") else None
        try:
            ipaddress.IPv6Address(inner or "")
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
PLAIN_HTTP_TO_TLS = (
    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Connection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
)


class ExporterServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    handshake_timeout = 10.0  # seconds a client gets to complete the TLS handshake

    def __init__(
        self,
        address: tuple[str, int],
        scraper: Scraper,
        *,
        web: WebConfigWatcher | None = None,
        reload: Reload | None = None,
    ) -> None:
        host, port = address
        self.scraper = scraper
        self.web = web
        self.reload = reload
        self.basic_auth = BasicAuth()
        # HTTP or HTTPS is decided at start-up; a changed web config cannot switch it.
        self.tls = web is not None and web.current().tls is not None
        if host in ("", "::") or ":" in host:
            self.address_family = socket.AF_INET6
        try:
            super().__init__((host or "::", port), _Handler, bind_and_activate=False)
        except OSError:
            if host:
                raise
            # ':9862' on a kernel without IPv6: every IPv4 interface is what was meant.
            self.address_family = socket.AF_INET
            host = "0.0.0.0"
            super().__init__((host, port), _Handler, bind_and_activate=False)
        host = host or "::"
        if self.address_family == socket.AF_INET6 and host == "::":
            # ':9862' means every interface, IPv4 included.
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        try:
            self.server_bind()
            self.server_activate()
        except OSError:
            self.server_close()
            raise

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        if host in ("::", "0.0.0.0"):
            host = "localhost"
        elif ":" in str(host):
            host = f"[{host}]"
        return f"{'https' if self.tls else 'http'}://{host}:{port}"

    def process_request_thread(self, request: socket.socket, client_address: tuple) -> None:
        # Runs in the connection's own thread (ThreadingMixIn), so the handshake does too.
        if self.tls:
            wrapped = self._handshake(request, client_address)
            if wrapped is None:
                return
            request = wrapped
        super().process_request_thread(request, client_address)

    def _handshake(self, sock: socket.socket, client_address: tuple) -> ssl.SSLSocket | None:
        assert self.web is not None
        context = self.web.current().tls  # the certificate of the moment, for this connection
        assert context is not None
        try:
            sock.settimeout(self.handshake_timeout)
            first = sock.recv(1, socket.MSG_PEEK)
            if first == b"\x16":  # a TLS handshake record
                tls = context.wrap_socket(sock, server_side=True)  # the handshake happens here
                tls.settimeout(None)
                return tls
            if first:  # plain HTTP, most likely: say so, like Go's servers do
                sock.recv(65536)  # read the request, so closing does not reset the connection
                sock.sendall(PLAIN_HTTP_TO_TLS)
                problem = "plain HTTP sent to the HTTPS port"
            else:
                problem = "connection closed before the TLS handshake"
        except (OSError, ValueError) as exc:  # ssl.SSLError and TimeoutError are OSErrors
            problem = str(exc) or type(exc).__name__
        log.debug("TLS handshake failed", extra={"client": client_address[0], "error": problem})
        self.shutdown_request(sock)
        return None

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="http", daemon=True)
        thread.start()
        return thread


LANDING = """<!doctype html>
<html><head><meta charset="utf-8"><title>device-cloud-exporter</title></head>
<body><h1>device-cloud-exporter</h1>
<p>Prometheus exporter for ParqEx controllers and LaMetric clocks, version {version}.</p>
<ul><li><a href="metrics">Metrics</a></li><li><a href="-/healthy">Health</a></li></ul>
</body></html>
"""
MAX_POST_BODY = 64 * 1024  # /-/reload takes no body; a small one is read and ignored


class _Handler(BaseHTTPRequestHandler):
    server: ExporterServer
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

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._discard_body()
        self._dispatch()

    def _dispatch(self) -> None:
        path = self.path.split("?", 1)[0]
        if path not in self.open_paths and not self._authorized():
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
        return self.server.basic_auth.check(users, self.headers.get("Authorization"))

    def _discard_body(self) -> None:
        """Read a request body nobody needs, so the next request on the connection parses."""
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") or (length and not length.isdigit()):
            self.close_connection = True
        elif length and int(length) > 0:
            if int(length) > MAX_POST_BODY:
                self.close_connection = True
            else:
                self.rfile.read(int(length))

    def _landing(self) -> None:
        body = LANDING.format(version=html.escape(__version__)).encode()
        self._send(200, body, "text/html; charset=utf-8")

    def _healthy(self) -> None:
        self._send(200, b"Healthy\n", "text/plain; charset=utf-8")

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
        except Exception:
            log.exception("scrape failed")
            self._send(500, b"scrape failed; see the exporter's log\n", "text/plain")
            return
        content_type = headers.pop("Content-Type")
        self._send(200, body, content_type, headers)

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
