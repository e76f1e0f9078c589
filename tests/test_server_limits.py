"""The server's limits, in process with small values: slow, idle and non-reading clients,
the connection cap, running out of descriptors, the bcrypt queue and liveness."""

from __future__ import annotations

import os
import resource
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import httpx
import pytest
import trustme

from exporter.engine import Engine
from exporter.scrape import Scraper
from exporter.server import ExporterServer, Limits
from exporter.webconfig import AuthBusy, BcryptGate, WebConfigWatcher
from tests.support import make_config, two_cloud_config


def wait_for(condition: Callable[[], object], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class StubScraper:
    """What the server asks of a Scraper: a body, and an engine that is never stalled."""

    def __init__(self, body: bytes = b"metric 1\n") -> None:
        self.body = body
        self.engine = SimpleNamespace(stalled_seconds=lambda: 0.0)

    def render(self, **_: object) -> tuple[bytes, dict[str, str]]:
        return self.body, {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}


@pytest.fixture
def serve() -> Iterator[Callable[..., ExporterServer]]:
    servers: list[ExporterServer] = []

    def serve(scraper: object | None = None, **limits: float) -> ExporterServer:
        server = ExporterServer(
            ("127.0.0.1", 0),
            scraper or StubScraper(),  # type: ignore[arg-type]
            limits=Limits(**limits),  # type: ignore[arg-type]
        )
        server.serve_in_thread()
        servers.append(server)
        return server

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def connect(server: ExporterServer) -> socket.socket:
    sock = socket.create_connection(server.server_address[:2], timeout=10)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server closed `sock` (EOF or reset); reads nothing that matters."""
    if not select.select([sock], [], [], 0)[0]:
        return False
    try:
        return sock.recv(65536) == b""
    except OSError:
        return True


def read_response(sock: socket.socket, buffer: bytearray | None = None) -> bytes:
    """One whole response (head and Content-Length body); what follows it stays in `buffer`."""
    data = buffer if buffer is not None else bytearray()
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-response: {bytes(data)!r}"
        data += chunk
    end = data.index(b"\r\n\r\n") + 4
    lines = bytes(data[:end]).lower().split(b"\r\n")
    length = next(int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length:"))
    while len(data) < end + length:
        data += sock.recv(65536)
    response = bytes(data[: end + length])
    del data[: end + length]
    return response


# --------------------------------------------------------------------------- slow and idle clients


def test_a_client_that_sends_nothing_is_closed_after_the_header_timeout(serve) -> None:
    server = serve(header_timeout=0.5)
    sock = connect(server)
    started = time.monotonic()
    sock.settimeout(5)
    assert sock.recv(1) == b""  # closed by the server; the old server waited forever
    assert time.monotonic() - started < 3


def test_a_dribbled_request_head_is_cut_off_at_the_header_timeout(serve) -> None:
    server = serve(header_timeout=0.5)
    sock = connect(server)
    sock.sendall(b"GET /metrics HTTP/1.1\r\n")
    started = time.monotonic()
    closed = False
    while not closed and time.monotonic() - started < 5:
        try:
            sock.sendall(b"X-Slow: a\r\n")  # one header line every 0.1 s, never the end
        except OSError:
            closed = True
        closed = closed or closed_by_server(sock)
        time.sleep(0.1)
    assert closed, "a slowloris client kept its connection for 5 s"
    assert time.monotonic() - started < 3


def test_keep_alive_works_and_an_idle_connection_is_closed_after_the_idle_timeout(serve) -> None:
    server = serve(idle_timeout=1.0)
    sock = connect(server)
    for path in (b"/metrics", b"/", b"/-/reload-not-here"):  # three requests, one connection
        sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 ")
    answered = time.monotonic()
    sock.settimeout(10)
    assert sock.recv(1) == b""
    assert 0.8 < time.monotonic() - answered < 5


def test_pipelined_requests_are_all_answered_in_order(serve) -> None:
    server = serve()
    sock = connect(server)
    sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
    buffer = bytearray()
    first, second = read_response(sock, buffer), read_response(sock, buffer)
    assert first.startswith(b"HTTP/1.1 200") and first.endswith(b"metric 1\n")
    assert second.startswith(b"HTTP/1.1 404")


def test_idle_connections_hold_no_thread(serve) -> None:
    server = serve()
    threads = threading.active_count()
    idle = [connect(server) for _ in range(200)]
    try:
        wait_for(lambda: len(server._conns) == 200, "200 connections accepted")
        # the old server ran one thread per connection
        assert threading.active_count() - threads <= 2
        assert httpx.get(f"{server.url}/-/healthy", timeout=5).status_code == 200
    finally:
        for sock in idle:
            sock.close()


def test_the_connection_cap_closes_the_oldest_waiting_connection(serve) -> None:
    server = serve(max_connections=10)
    first = [connect(server) for _ in range(5)]
    wait_for(lambda: len(server._conns) == 5, "the first five connections accepted")
    later = [connect(server) for _ in range(10)]
    try:
        wait_for(lambda: all(closed_by_server(sock) for sock in first), "the oldest five closed")
        assert len(server._conns) <= 10
        assert not any(closed_by_server(sock) for sock in later[1:])
        assert httpx.get(f"{server.url}/-/healthy", timeout=5).status_code == 200
    finally:
        for sock in first + later:
            sock.close()


def test_a_client_that_never_reads_is_dropped_after_the_write_timeout(serve) -> None:
    server = serve(StubScraper(b"x" * (64 << 20)), workers=1, write_timeout=1.0)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(server.server_address[:2])
    sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")  # and never read the answer
    try:
        started = time.monotonic()
        wait_for(lambda: not server._conns, "the non-reading client to be dropped")
        assert time.monotonic() - started < 5
        # the only worker is free again
        assert httpx.get(f"{server.url}/", timeout=5).status_code == 200
    finally:
        sock.close()


def test_out_of_descriptors_the_accept_loop_backs_off_instead_of_spinning(serve) -> None:
    server = serve()
    waiting = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(20)]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fillers: list[int] = []
    try:
        highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1, hard))
        while True:  # take every descriptor left below the limit
            try:
                fillers.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                break
        for sock in waiting:
            sock.setblocking(False)
            sock.connect_ex(server.server_address[:2])
        cpu, started = time.process_time(), time.monotonic()
        time.sleep(2)  # a measurement window: how busy is the accept loop meanwhile?
        busy = (time.process_time() - cpu) / (time.monotonic() - started)
        assert busy < 0.2, f"the accept loop used {busy:.0%} of a core without descriptors"
        assert 1 <= server.stats["out_of_descriptors"] <= 20
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        wait_for(lambda: len(server._conns) == 20, "the waiting connections accepted")
        assert httpx.get(f"{server.url}/-/healthy", timeout=5).status_code == 200
    finally:
        for sock in waiting:
            sock.close()


# --------------------------------------------------------------------------- liveness


@pytest.fixture
def engines() -> Iterator[list[Engine]]:
    started: list[Engine] = []
    yield started
    for engine in started:
        engine.close()


def new_engine(engines: list[Engine]) -> Engine:
    engine = Engine(make_config(two_cloud_config()))
    engine.start()
    engines.append(engine)
    return engine


def test_healthy_fails_while_the_collection_loop_is_blocked(serve, engines) -> None:
    engine = new_engine(engines)
    scraper = Scraper(engine)
    server = serve(scraper, stall_threshold=2.0)
    url = f"{server.url}/-/healthy"
    assert httpx.get(url, timeout=5).text == "Healthy\n"
    release = threading.Event()
    engine._loop.call_soon_threadsafe(release.wait, 30)  # a blocking call on the loop
    try:
        wait_for(lambda: httpx.get(url, timeout=5).status_code == 503, "503", timeout=15)
        answer = httpx.get(url, timeout=5)
        assert answer.text.startswith("Unhealthy: the collection loop has made no progress")
        assert answer.text.count("\n") == 1 and "threshold 2s" in answer.text
        # a reload swaps the engine: the current one is what counts
        scraper.replace_engine(new_engine(engines))
        assert httpx.get(url, timeout=5).status_code == 200
        scraper.replace_engine(engine)
    finally:
        release.set()
    wait_for(lambda: httpx.get(url, timeout=5).status_code == 200, "healthy again")


def test_the_heartbeat_keeps_a_quiet_engine_healthy(engines) -> None:
    engine = new_engine(engines)
    beat = engine._beat
    wait_for(lambda: engine._beat > beat, "a heartbeat", timeout=5)
    assert engine.stalled_seconds() < 1


# --------------------------------------------------------------------------- bcrypt queue


def test_bcrypt_turns_go_round_robin_between_client_addresses() -> None:
    gate = BcryptGate(per_client=4, total=64)
    order: list[str] = []
    holding, release = threading.Event(), threading.Event()

    def first() -> None:
        with gate.turn("flood"):
            holding.set()
            assert release.wait(10)

    def check(client: str, name: str) -> None:
        with gate.turn(client):
            order.append(name)

    threads = [threading.Thread(target=first)]
    threads[0].start()
    assert holding.wait(10)
    for i in range(4):
        threads.append(threading.Thread(target=check, args=("flood", f"flood-{i}")))
        threads[-1].start()
        wait_for(lambda i=i: gate._waiting == i + 1, "a queued check")
    with pytest.raises(AuthBusy) as busy, gate.turn("flood"):  # a fifth from one address
        pass
    assert busy.value.status == 429
    threads.append(threading.Thread(target=check, args=("prometheus", "prometheus")))
    threads[-1].start()
    wait_for(lambda: gate._waiting == 5, "prometheus queued")
    release.set()
    for thread in threads:
        thread.join(10)
    # the other address's check runs second, not after the whole flood
    assert order == ["flood-0", "prometheus", "flood-1", "flood-2", "flood-3"]
    assert gate._waiting == 0 and not gate._busy


def test_bcrypt_queue_is_bounded_overall() -> None:
    gate = BcryptGate(per_client=10, total=2)
    holding, release = threading.Event(), threading.Event()

    def hold(client: str) -> None:
        with gate.turn(client):
            holding.set()
            assert release.wait(10)

    threads = [threading.Thread(target=hold, args=(f"c{i}",)) for i in range(3)]
    threads[0].start()
    assert holding.wait(10)
    for thread in threads[1:]:
        thread.start()
    wait_for(lambda: gate._waiting == 2, "two queued checks")
    with pytest.raises(AuthBusy) as busy, gate.turn("another"):
        pass
    assert busy.value.status == 503
    release.set()
    for thread in threads:
        thread.join(10)


# --------------------------------------------------------------------------- TLS


def test_tls_keep_alive_and_pipelining_lose_no_buffered_bytes(serve_tls) -> None:
    server, context = serve_tls
    raw = socket.create_connection(server.server_address[:2], timeout=10)
    with context.wrap_socket(raw, server_hostname="localhost") as tls:
        buffer = bytearray()
        # two requests in one TLS record: the second is decrypted and buffered with the first
        tls.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(tls, buffer).startswith(b"HTTP/1.1 200")
        assert read_response(tls, buffer).startswith(b"HTTP/1.1 200")
        for _ in range(3):  # and the connection goes on through the selector
            tls.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(tls, buffer).endswith(b"metric 1\n")
    assert httpx.get(f"{server.url}/-/healthy", verify=context, timeout=5).status_code == 200


@pytest.fixture
def serve_tls(tmp_path) -> Iterator[tuple[ExporterServer, ssl.SSLContext]]:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(tmp_path / "server.pem")
    web = tmp_path / "web.yml"
    web.write_text("tls_server_config:\n  cert_file: server.pem\n  key_file: server.pem\n")
    server = ExporterServer(
        ("127.0.0.1", 0), StubScraper(), web=WebConfigWatcher(web), limits=Limits()
    )  # type: ignore[arg-type]
    server.serve_in_thread()
    context = ssl.create_default_context()
    ca.configure_trust(context)
    yield server, context
    server.shutdown()
    server.server_close()


def test_a_request_head_over_64_kib_is_refused_without_a_worker(serve) -> None:
    server = serve(workers=1)
    sock = connect(server)
    start = b"GET /metrics HTTP/1.1\r\nX-Big: "
    sock.sendall(start + b"a" * (64 * 1024 + 1 - len(start)))  # one byte over, and no end
    response = read_response(sock)
    assert response.startswith(b"HTTP/1.1 431 ") and response.endswith(b"refused\n")
    sock.settimeout(5)
    assert sock.recv(1) == b""  # and the connection is closed


def test_a_request_head_over_64_kib_is_refused_even_when_its_end_follows(serve) -> None:
    """The end of the head arriving in the selector's second read must not let 100 KiB in."""
    server = serve(workers=1)
    sock = connect(server)
    head = b"GET /metrics HTTP/1.1\r\nX-A: " + b"a" * 50_000 + b"\r\nX-B: " + b"b" * 50_000
    sock.sendall(head + b"\r\n\r\n")  # over 64 KiB, complete, in one send
    response = read_response(sock)
    assert response.startswith(b"HTTP/1.1 431 "), response[:80]


@pytest.mark.parametrize(
    "length",
    [b"\xb2", b"9" * 5000, b"2\r\nContent-Length: 5"],
    ids=["superscript-two", "5000-digits", "two-different-lengths"],
)
def test_post_reload_with_an_odd_content_length_is_answered_and_closed(serve, length) -> None:
    """`\\xb2` passes str.isdigit() and 5,000 digits pass it too, but int() refuses both: the
    request was dropped without an answer. Two different lengths: answer, then close, so that
    no request can be smuggled in the body."""
    server = serve()
    server.reload = lambda: (True, ["reloaded"])
    sock = connect(server)
    sock.sendall(
        b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n\r\n"
        b"abGET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    buffer = bytearray()
    assert read_response(sock, buffer).startswith(b"HTTP/1.1 200 ")
    sock.settimeout(5)
    while not buffer:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buffer += chunk
    assert bytes(buffer) == b"", "a request after an unreadable body was served"


def test_a_body_sent_with_get_is_not_served_as_a_request_of_its_own(serve) -> None:
    """A proxy that lets only GET /metrics through forwards a GET's body with it: that body
    must not become a second request (POST /-/reload) on the exporter's side."""
    server = serve()
    reloads: list[int] = []
    server.reload = lambda: (reloads.append(1), (True, ["reloaded"]))[1]
    smuggled = b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    sock = connect(server)
    sock.sendall(
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: "
        + str(len(smuggled)).encode()
        + b"\r\n\r\n"
        + smuggled
        + b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    buffer = bytearray()
    assert read_response(sock, buffer).startswith(b"HTTP/1.1 200 ")
    assert read_response(sock, buffer).startswith(b"HTTP/1.1 404 "), "the body was served"
    assert reloads == []
