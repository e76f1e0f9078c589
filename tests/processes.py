"""Real processes for system tests: the exporter as a user starts it, on a loopback port."""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

# The plain line in logfmt mode, the "listening" log record's url field in JSON mode.
READY = re.compile(r'(?:Serving metrics on |"url": ")(https?://[^\s"]+)/metrics')


@dataclass
class ExporterProcess:
    """A running `python -m exporter`; `output` collects everything it wrote to stderr."""

    process: subprocess.Popen[str]
    url: str
    output: list[str] = field(default_factory=list)

    def scrape(self, **headers: str) -> httpx.Response:
        return httpx.get(f"{self.url}/metrics", headers=headers, timeout=30)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    @property
    def log(self) -> str:
        return "".join(self.output)


def start_exporter(
    args: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    nofile: int | None = None,
) -> ExporterProcess:
    """Start the exporter on a free loopback port and wait until it says where it serves.

    `nofile` sets the child's RLIMIT_NOFILE (soft and hard), as `ulimit -n` would.
    """

    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    process = subprocess.Popen(
        [sys.executable, "-m", "exporter", "--web.listen-address", "127.0.0.1:0", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        preexec_fn=limit if nofile is not None else None,
    )
    assert process.stderr is not None
    output: list[str] = []
    deadline = time.monotonic() + 30
    url = None
    while url is None:
        line = process.stderr.readline()
        if not line:
            raise AssertionError(f"exporter exited before serving:\n{''.join(output)}")
        output.append(line)
        if match := READY.search(line):
            url = match.group(1)
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"exporter did not start in 30 s:\n{''.join(output)}")
    exporter = ExporterProcess(process, url, output)
    # keep draining stderr so the process never blocks on a full pipe
    threading.Thread(target=lambda: output.extend(process.stderr), daemon=True).start()
    return exporter
