"""The server under abuse, measured (issue 8, section 2): figures, not pass/fail.

    python bench/abuse.py                 # this checkout
    python bench/abuse.py --code DIR      # another checkout's exporter package (before/after)

1. 1,100 idle TCP connections against an exporter with `nofile` 1024: /-/healthy latency,
   the exporter's CPU while they wait, and a /metrics scrape.
2. 100 clients request an 11.6 MB /metrics (2,300 controllers) and never read: RSS before,
   peak, and after they leave.
3. 200 clients send distinct wrong passwords (bcrypt cost 10): a correct login's latency from
   another address.

Processes run on 127.0.0.1 only; the simulated cloud runs in this process.
"""

from __future__ import annotations

import argparse
import base64
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path

import bcrypt
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from exporter.simulator import SimulatedCloud  # noqa: E402
from exporter.simulator.control import add_generated_parqex_account  # noqa: E402
from tests.processes import start_exporter  # noqa: E402
from tests.system.test_abuse import (  # noqa: E402
    address,
    cpu_seconds,
    open_idle,
    status_field,
)

FLEET = 2_300  # controllers of 3 doors: an 11.6 MB /metrics, the 11.5 MB


def config(workdir: Path, url: str, token: str) -> str:
    path = workdir / "config.yaml"
    path.write_text(
        f"parqex:\n  base_url: {url}\n  accounts:\n    - {{name: home, token: {token}}}\n"
        "collection:\n  timeout_seconds: 120\n"
    )
    return str(path)


def timed_get(url: str, timeout: float, **kwargs: object) -> str:
    started = time.monotonic()
    try:
        answer = httpx.get(url, timeout=timeout, **kwargs)  # type: ignore[arg-type]
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__} after {time.monotonic() - started:.2f}s"
    return f"{answer.status_code} in {time.monotonic() - started:.3f}s"


def idle_flood(env: dict[str, str], workdir: Path, cloud: SimulatedCloud) -> None:
    exporter = start_exporter(
        ["--config.file", config(workdir, cloud.url, "demo-parqex-token")],
        env=env,
        cwd=Path(env["PYTHONPATH"]),
        nofile=1024,
    )
    idle: list[socket.socket] = []
    try:
        open_idle(exporter, 1100, idle)
        cpu, started = cpu_seconds(exporter.process.pid), time.monotonic()
        for _ in range(3):
            print("  /-/healthy:", timed_get(f"{exporter.url}/-/healthy", 5))
        time.sleep(max(0.0, 3 - (time.monotonic() - started)))
        busy = (cpu_seconds(exporter.process.pid) - cpu) / (time.monotonic() - started)
        print(f"  exporter CPU while 1,100 connections wait: {busy:.0%} of a core")
        print("  /metrics:", timed_get(f"{exporter.url}/metrics", 10))
    finally:
        for sock in idle:
            sock.close()
        exporter.stop()


def non_readers(env: dict[str, str], workdir: Path, big: SimulatedCloud) -> None:
    exporter = start_exporter(
        ["--config.file", config(workdir, big.url, "big")], env=env, cwd=Path(env["PYTHONPATH"])
    )
    pid = exporter.process.pid
    try:
        body = httpx.get(f"{exporter.url}/metrics", timeout=120).content
        before = status_field(pid, "VmRSS")
        print(f"  /metrics is {len(body) / 1e6:.1f} MB; RSS before: {before:.0f} MiB")
        request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: identity\r\n\r\n"
        clients = []
        for _ in range(100):
            sock = socket.create_connection(address(exporter))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(request)
            clients.append(sock)
        quiet = 0
        deadline = time.monotonic() + 240
        while quiet < 2 and time.monotonic() < deadline:
            cpu = cpu_seconds(pid)
            time.sleep(1)
            quiet = quiet + 1 if cpu_seconds(pid) - cpu < 0.1 else 0
        print(f"  peak RSS with 100 non-readers: {status_field(pid, 'VmHWM'):.0f} MiB")
        for sock in clients:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        deadline = time.monotonic() + 60
        while status_field(pid, "VmRSS") > before * 1.2 and time.monotonic() < deadline:
            time.sleep(0.5)
        print(f"  RSS after they left: {status_field(pid, 'VmRSS'):.0f} MiB")
    finally:
        exporter.stop()


def password_flood(env: dict[str, str], workdir: Path, cloud: SimulatedCloud) -> None:
    def basic(password: str) -> str:
        return "Basic " + base64.b64encode(f"prometheus:{password}".encode()).decode()

    hashed = bcrypt.hashpw(b"right", bcrypt.gensalt(10)).decode()
    web = workdir / "web.yml"
    web.write_text(f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    exporter = start_exporter(
        [
            "--config.file",
            config(workdir, cloud.url, "demo-parqex-token"),
            "--web.config.file",
            str(web),
        ],
        env=env,
        cwd=Path(env["PYTHONPATH"]),
    )
    flood = []
    try:
        print(
            "  one wrong password, no flood (one bcrypt):",
            timed_get(
                f"{exporter.url}/-/reload-nope", 30, headers={"Authorization": basic("wrong")}
            ),
        )
        for i in range(200):
            sock = socket.create_connection(address(exporter))
            wrong = basic(f"w{i}")
            sock.sendall(f"GET /metrics HTTP/1.1\r\nAuthorization: {wrong}\r\n\r\n".encode())
            flood.append(sock)
        transport = httpx.HTTPTransport(local_address="127.0.0.2")
        with httpx.Client(transport=transport, timeout=60) as client:
            started = time.monotonic()
            answer = client.get(
                f"{exporter.url}/metrics", headers={"Authorization": basic("right")}
            )
            took = time.monotonic() - started
        print(
            f"  correct login (first, uncached) under 200 wrong passwords: "
            f"{answer.status_code} in {took:.3f}s"
        )
    finally:
        for sock in flood:
            sock.close()
        exporter.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--code", type=Path, default=ROOT, help="directory holding exporter/")
    parser.add_argument("--parts", default="123", help="which measurements to run (default 123)")
    args = parser.parse_args()
    env = {"PYTHONPATH": str(args.code.resolve())}
    with tempfile.TemporaryDirectory() as tmp, SimulatedCloud(live=True) as cloud:
        workdir = Path(tmp)
        if "1" in args.parts:
            print("1. idle flood, nofile 1024")
            idle_flood(env, workdir, cloud)
        if "3" in args.parts:
            print("3. password flood")
            password_flood(env, workdir, cloud)
        if "2" not in args.parts:
            return
        big = SimulatedCloud(live=True)
        add_generated_parqex_account(big, "big", FLEET, 3)
        big.start("127.0.0.1", 0)
        try:
            print("2. 100 clients that never read")
            non_readers(env, workdir, big)
        finally:
            big.stop()


if __name__ == "__main__":
    main()
