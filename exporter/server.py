"""The HTTP server: `/metrics`, a landing page and `/-/healthy`, on the standard library.

Each request runs in its own thread; the collection itself runs on the engine's event loop, so
slow clouds never block `/-/healthy`.
"""

from __future__ import annotations

import html
import ipaddress
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

from exporter import __version__
from exporter.scrape import Scraper

log = logging.getLogger(__name__)


class ListenAddressError(ValueError):
    pass


def parse_listen_address(value: str) -> tuple[str, int]:
    """`:9862`, `0.0.0.0:9862`, `[::]:9862`, `127.0.0.1:9862`, `localhost:9862` -> (host, port)."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ListenAddressError(
            f"--web.listen-address {value!r}: expected HOST:PORT such as :9862 or 127.0.0.1:9862"
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ListenAddressError(f"--web.listen-address {value!r}: bad IPv6 address") from None
    return host, int(port_text)


class ExporterServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], scraper: Scraper) -> None:
        host, port = address
        self.scraper = scraper
        if host in ("", "::") or ":" in host:
            self.address_family = socket.AF_INET6
            host = host or "::"
        super().__init__((host, port), _Handler, bind_and_activate=False)
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
        return f"http://{host}:{port}"

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


class _Handler(BaseHTTPRequestHandler):
    server: ExporterServer
    protocol_version = "HTTP/1.1"
    server_version = f"device-cloud-exporter/{__version__}"
    routes: ClassVar[dict[str, str]] = {
        "/": "_landing",
        "/metrics": "_metrics",
        "/-/healthy": "_healthy",
    }

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        route = self.routes.get(path)
        if route is None:
            self._send(404, b"Not found. Try /metrics\n", "text/plain; charset=utf-8")
            return
        getattr(self, route)()

    def do_HEAD(self) -> None:
        self.do_GET()

    def _landing(self) -> None:
        body = LANDING.format(version=html.escape(__version__)).encode()
        self._send(200, body, "text/html; charset=utf-8")

    def _healthy(self) -> None:
        self._send(200, b"Healthy\n", "text/plain; charset=utf-8")

    def _metrics(self) -> None:
        try:
            body, headers = self.server.scraper.render(
                accept=self.headers.get("Accept"),
                accept_encoding=self.headers.get("Accept-Encoding"),
                timeout_header=self.headers.get("X-Prometheus-Scrape-Timeout-Seconds"),
            )
        except Exception:
            log.exception("scrape failed")
            self._send(500, b"scrape failed; see the exporter's log\n", "text/plain")
            return
        content_type = headers.pop("Content-Type")
        self._send(200, body, content_type, headers)

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
