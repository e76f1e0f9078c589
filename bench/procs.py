"""Processes for the benchmark: the simulator and the exporter, each a real `python -m` process.

Both listen on 127.0.0.1 only and are always stopped (SIGTERM, then SIGKILL) when their `with`
block ends. CPU time and memory are read from /proc, so this works on Linux only.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
SIMULATOR_READY = re.compile(r"listening on (http://\S+)")
EXPORTER_READY = re.compile(r"Serving metrics on (http://\S+)/metrics")
START_TIMEOUT = 120.0  # a simulator generating 10,000 devices on a busy machine takes a while
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Process:
    """A started process, the URL it announced, and everything it printed."""

    popen: subprocess.Popen[str]
    url: str
    output: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def _start(args: Sequence[str], ready: re.Pattern[str]) -> Process:
    """Start `python args...` in the repository and wait for the line that says where it serves."""
    popen = subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    assert popen.stdout is not None
    output: list[str] = []
    # readline() blocks: a timer kills a process that hangs without printing anything.
    watchdog = threading.Timer(START_TIMEOUT, popen.kill)
    watchdog.start()
    try:
        for line in popen.stdout:
            output.append(line)
            if match := ready.search(line):
                process = Process(popen, match.group(1), output)
                break
        else:
            raise RuntimeError(f"{args[1]} exited before serving:\n{''.join(output)}")
    finally:
        watchdog.cancel()
    # keep draining the pipe so the process never blocks on a full one
    stdout = popen.stdout
    threading.Thread(target=lambda: output.extend(stdout), daemon=True).start()
    return process


@contextmanager
def simulator(
    *,
    latency: float = 0.0,
    latency_max: float | None = None,
    parqex: int = 0,
    lametric: int = 0,
    devices: int = 5,
) -> Iterator[Process]:
    """`python -m exporter.simulator` with generated accounts (tokens parqex-token-N, ...).

    With `latency_max`, each request's delay is drawn uniformly in [latency, latency_max].
    """
    ranged = [] if latency_max is None else ["--latency-max", str(latency_max)]
    process = _start(
        [
            "-m",
            "exporter.simulator",
            "--listen",
            "127.0.0.1:0",
            "--latency",
            str(latency),
            *ranged,
            "--parqex-accounts",
            str(parqex),
            "--lametric-accounts",
            str(lametric),
            "--devices",
            str(devices),
            "--doors",
            "3",
        ],
        SIMULATOR_READY,
    )
    try:
        yield process
    finally:
        process.stop()


def exporter_config(
    base_url: str,
    *,
    parqex: Sequence[str] = (),
    lametric: Sequence[str] = (),
    cache_seconds: float = 0.0,
    timeout_seconds: float = 60.0,
    max_response_bytes: int | None = None,
) -> dict[str, Any]:
    """An exporter config with one account per token, all pointing at the simulator.

    `max_response_bytes` None leaves the exporter's default (part of what is measured).
    """
    collection: dict[str, Any] = {
        "timeout_seconds": timeout_seconds,
        "cache_seconds": cache_seconds,
    }
    if max_response_bytes is not None:
        collection["max_response_bytes"] = max_response_bytes
    config: dict[str, Any] = {"collection": collection}
    for source, tokens in (("parqex", parqex), ("lametric", lametric)):
        if tokens:
            accounts = [{"name": f"{source}-{i}", "token": t} for i, t in enumerate(tokens)]
            config[source] = {"base_url": base_url, "accounts": accounts}
    return config


@contextmanager
def exporter(config: dict[str, Any]) -> Iterator[Process]:
    """`python -m exporter` with `config` written to a temporary config.yaml."""
    with tempfile.TemporaryDirectory(prefix="bench-exporter-") as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        process = _start(
            [
                "-m",
                "exporter",
                "--config.file",
                str(path),
                "--web.listen-address",
                "127.0.0.1:0",
                "--log.level",
                "warn",
            ],
            EXPORTER_READY,
        )
        try:
            yield process
        finally:
            process.stop()


def sim_call(sim: Process, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
    """One request to the simulator's /_sim/ control API."""
    response = httpx.request(method, f"{sim.url}/_sim/{path}", json=payload, timeout=300)
    response.raise_for_status()
    return response.json()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (/proc/PID/stat utime + stime; 10 ms resolution)."""
    # the command name in field 2 may hold spaces: split after its closing parenthesis
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_bytes(pid: int, key: str = "VmRSS") -> int:
    """A /proc/PID/status memory line in bytes: VmRSS (resident now) or VmHWM (peak resident)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)
