"""Benchmark the exporter as it runs in production: separate processes, scraped over HTTP.

    python bench/run.py           # the full run, about 10 minutes; writes bench/results/
    python bench/run.py --quick   # a smoke run of about 3 minutes; writes bench/results/quick/

See bench/README.md for what is measured, and the targets. Scrapes ask for gzip, as
Prometheus does, and the simulator answers the exporter gzipped, as the real clouds do.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
from procs import (
    ROOT,
    Process,
    cpu_seconds,
    exporter,
    exporter_config,
    memory_bytes,
    sim_call,
    simulator,
)
from reference import Kind, PlainClient, account_fetches

BENCH = Path(__file__).resolve().parent
SYNC_PATH = "/oauth/v1/endpoints/sync"
MIB = 1024 * 1024
MB = 1_000_000
SCRAPE_TIMEOUT = 60.0  # seconds: the client's timeout, also sent as Prometheus's header
T = TypeVar("T")


# ---------------------------------------------------------------------------- results


@dataclass
class Stat:
    """Repeated measurements of one quantity."""

    values: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def deciles(self) -> tuple[float, float]:
        if len(self.values) < 2:
            return self.values[0], self.values[0]
        cuts = statistics.quantiles(self.values, n=10, method="inclusive")
        return cuts[0], cuts[-1]

    def cell(self, spec: str = ".3f") -> str:
        """`median [p10, p90]` formatted with `spec`; a single value without the spread."""
        low, high = self.deciles()
        median = format(self.median, spec)
        return median if len(self.values) < 2 else f"{median} [{low:{spec}}, {high:{spec}}]"


@dataclass
class Target:
    """A measured value that must not exceed `limit` (NaN: not measured, which fails)."""

    name: str
    measured: float
    limit: float

    @property
    def passed(self) -> bool:
        return self.measured <= self.limit

    def row(self) -> list[str]:
        verdict = "**PASS**" if self.passed else "**FAIL**"
        if math.isnan(self.measured):
            return [self.name, "not measured", f"<= {self.limit:g}", verdict, "see the notes"]
        ratio = self.measured / self.limit if self.limit else math.inf
        margin = (
            ("at the limit" if ratio == 1 else f"{(1 - ratio) * 100:.1f}% under the limit")
            if self.passed
            else (
                f"{ratio:.2f}x the limit ({(ratio - 1) * 100:.1f}% over)"
                if self.limit
                else "over the limit"
            )
        )
        measured = (
            f"{self.measured:g}"
            if self.measured == int(self.measured)
            else (f"{self.measured:#.4g}")
        )
        return [self.name, measured, f"<= {self.limit:g}", verdict, margin]


@dataclass
class Table:
    """A table of a section, with a caption when a section has more than one."""

    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    caption: str = ""


@dataclass
class Section:
    """One measurement: its tables, the targets it checks, and notes on how it was measured."""

    title: str
    tables: list[Table]
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DoorPlan:
    """One fleet size of section 2 and how much to measure it."""

    devices: int
    scrapes: int  # gzip scrapes: the targets' series
    identity_scrapes: int  # plain-text scrapes for the identity figure; 0: none
    floor_iterations: int
    max_response_bytes: int | None = None  # None: the exporter's default


@dataclass(frozen=True)
class Plan:
    """How much to measure: the full run, or a quick smoke run."""

    name: str = "full"
    latency_scrapes: int = 10
    reference_rounds: int = 5
    doors: tuple[DoorPlan, ...] = (
        DoorPlan(1, 50, 20, 20),
        DoorPlan(100, 50, 20, 20),
        DoorPlan(1_000, 50, 20, 20),
        DoorPlan(10_000, 50, 10, 10),  # ~1.6 s per scrape: 1.5 of the 10 minutes
        DoorPlan(40_000, 5, 0, 3),  # next to the default max_response_bytes (64 MiB)
        DoorPlan(100_000, 3, 0, 3, max_response_bytes=256 * MIB),  # 150 MB: raised limit
    )
    load_scrapers: tuple[int, ...] = (2, 10)
    load_seconds: int = 30
    idle_seconds: float = 30.0


FULL = Plan()
QUICK = Plan(
    name="quick",
    latency_scrapes=3,
    reference_rounds=2,
    doors=(
        DoorPlan(1, 5, 5, 3),
        DoorPlan(100, 5, 5, 3),
        DoorPlan(1_000, 5, 5, 3),
        DoorPlan(10_000, 2, 1, 2),
        DoorPlan(40_000, 1, 0, 1),
        DoorPlan(100_000, 1, 0, 1, max_response_bytes=256 * MIB),
    ),
    load_seconds=5,
    idle_seconds=5.0,
)
CPU_DEVICES = 10_000  # where the CPU and memory targets are checked
HEADROOM_DEVICES = 40_000  # 4x the answer at CPU_DEVICES, under the default limit
SCALE_DEVICES = 100_000  # the scale point: within a 60 s scrape


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- scraping


class ScrapeFailed(Exception):
    """A scrape that did not answer, or answered without every account up."""


@contextmanager
def scrape_client(gzip: bool = True) -> Iterator[httpx.Client]:
    """A client that asks for gzip (like Prometheus) or for plain text, with a 60 s timeout.

    It sends the timeout as X-Prometheus-Scrape-Timeout-Seconds, as Prometheus does.
    """
    headers = {
        "Accept-Encoding": "gzip" if gzip else "identity",
        "X-Prometheus-Scrape-Timeout-Seconds": f"{SCRAPE_TIMEOUT:g}",
    }
    with httpx.Client(timeout=SCRAPE_TIMEOUT, headers=headers) as client:
        yield client


def scrape(client: httpx.Client, exp: Process) -> tuple[float, bytes]:
    """One scrape: its wall time and the body (decompressed), in the encoding asked for."""
    start = time.perf_counter()
    try:
        response = client.get(f"{exp.url}/metrics")
    except httpx.TimeoutException:
        raise ScrapeFailed(f"no answer within {SCRAPE_TIMEOUT:g} s") from None
    except httpx.HTTPError as exc:  # the exporter died (out of memory?) or hung up
        raise ScrapeFailed(f"scrape failed: {exc!r}") from None
    wall = time.perf_counter() - start
    if response.status_code != 200:
        raise ScrapeFailed(f"scrape answered HTTP {response.status_code}")
    asked = client.headers["Accept-Encoding"]
    got = response.headers.get("Content-Encoding", "identity")
    if asked in ("gzip", "identity") and got != asked:  # section 3 takes httpx's default
        raise ScrapeFailed(f"asked for Accept-Encoding: {asked}, got Content-Encoding: {got}")
    return wall, response.content


def up_lines(body: bytes) -> list[bytes]:
    """The parqex_up and lametric_up sample lines, found without splitting a large body."""
    lines: list[bytes] = []
    start = 0
    while (found := body.find(b"_up{", start)) != -1:
        begin = body.rfind(b"\n", 0, found) + 1
        end = body.find(b"\n", found)
        end = len(body) if end == -1 else end
        if body.startswith((b"parqex_up{", b"lametric_up{"), begin):
            lines.append(body[begin:end])
        start = end
    return lines


def check_up(body: bytes, accounts: int) -> None:
    up = up_lines(body)
    if len(up) != accounts or not all(line.endswith(b" 1.0") for line in up):
        shown = ", ".join(line.decode(errors="replace") for line in up[:3])
        raise ScrapeFailed(f"not every one of {accounts} account(s) up: {shown or 'no _up line'}")


def count_samples(body: bytes) -> int:
    """parqex_device_* and parqex_door_* samples."""
    return body.count(b"\nparqex_device_") + body.count(b"\nparqex_door_")


@dataclass
class Scrapes:
    """A series of scrapes of one exporter, in batches."""

    wall: Stat  # seconds, per scrape
    cpu: Stat  # the exporter's CPU seconds per scrape, one value per batch
    rss: list[int]  # the exporter's VmRSS after each batch

    @property
    def count(self) -> int:
        return len(self.wall.values)


def scrape_many(
    client: httpx.Client, exp: Process, count: int, accounts: int, batches: int = 10
) -> Scrapes:
    """Scrape `count` times in a row, each checked for every account up.

    /proc counts CPU in 10 ms ticks, so CPU is read around batches of scrapes (`batches` of
    them) and divided: small scrapes would otherwise read as 0 or 10 ms.
    """
    batch = max(1, count // batches)
    walls: list[float] = []
    cpu: list[float] = []
    rss: list[int] = []
    for first in range(0, count, batch):
        size = min(batch, count - first)
        before = cpu_seconds(exp.pid)
        for _ in range(size):
            wall, body = scrape(client, exp)
            walls.append(wall)
            check_up(body, accounts)  # in this process: costs the exporter nothing
        cpu.append((cpu_seconds(exp.pid) - before) / size)
        rss.append(memory_bytes(exp.pid))
    return Scrapes(Stat(walls), Stat(cpu), rss)


def tokens(source: str, count: int) -> list[str]:
    return [f"{source}-token-{i}" for i in range(count)]


def mib(value: float) -> str:
    return f"{value / MIB:.1f}"


# ---------------------------------------------------------------------------- 1. latency


@dataclass(frozen=True)
class LatencyCase:
    """One run of section 1: how many accounts, how slow the simulated clouds are."""

    label: str
    parqex: int
    lametric: int
    latency: float
    latency_max: float | None
    limit: float

    @property
    def accounts(self) -> int:
        return self.parqex + self.lametric

    @property
    def requests(self) -> int:
        return self.parqex + 2 * self.lametric  # a LaMetric account makes two


LATENCY_CASES = (
    LatencyCase("(a) 100 accounts, 200 ms", 50, 50, 0.2, None, 1.2),
    LatencyCase("(b) 400 accounts, 200 ms", 200, 200, 0.2, None, 1.3),
    LatencyCase("(c) 100 accounts, 100-300 ms", 50, 50, 0.1, 0.3, 1.2),
)


@dataclass
class LatencyRun:
    case: LatencyCase
    walls: list[float]
    slowest: list[float]  # the slowest upstream latency applied during each scrape
    requests: list[int]  # upstream requests the simulator served during each scrape
    exporter_cpu: float  # mean per scrape
    simulator_cpu: float  # mean per scrape
    rss: int
    references: dict[Kind, Stat]  # plain clients: wall / slowest latency, per round

    @property
    def ratios(self) -> Stat:
        return Stat([w / s for w, s in zip(self.walls, self.slowest, strict=True)])


def timed_round(sim: Process, run: Callable[[], T]) -> tuple[T, dict[str, Any]]:
    """Reset the simulator's counters, run one round of requests, read them back."""
    sim_call(sim, "POST", "reset_stats")
    result = run()
    return result, sim_call(sim, "GET", "stats")


def reference_rounds(
    sim: Process, case: LatencyCase, parqex: list[str], lametric: list[str], rounds: int
) -> dict[Kind, Stat]:
    """Each plain client's wall time / slowest latency, fetching the scrape's answers at once."""
    fetches = account_fetches(parqex, lametric)
    result: dict[Kind, Stat] = {}
    kinds: tuple[Kind, ...] = ("raw", "httpx")
    for kind in kinds:
        ratios = []
        with PlainClient(sim.url, fetches, kind) as client:
            for _ in range(rounds):
                wall, stats = timed_round(sim, client.round)
                if stats["requests"] != case.requests:
                    raise RuntimeError(f"{kind} client: {stats['requests']} requests served")
                ratios.append(wall / stats["max_latency_applied"])
        result[kind] = Stat(ratios)
    return result


def measure_latency_case(case: LatencyCase, plan: Plan) -> LatencyRun:
    progress(f"1. latency {case.label}: {plan.latency_scrapes} scrapes")
    parqex, lametric = tokens("parqex", case.parqex), tokens("lametric", case.lametric)
    with simulator(
        latency=case.latency,
        latency_max=case.latency_max,
        parqex=case.parqex,
        lametric=case.lametric,
    ) as sim:
        config = exporter_config(sim.url, parqex=parqex, lametric=lametric)
        with exporter(config) as exp, scrape_client() as client:
            check_up(scrape(client, exp)[1], case.accounts)  # warm-up: opens the connections
            walls: list[float] = []
            slowest: list[float] = []
            requests: list[int] = []
            exporter_before, simulator_before = cpu_seconds(exp.pid), cpu_seconds(sim.pid)
            for _ in range(plan.latency_scrapes):
                (wall, body), stats = timed_round(sim, lambda: scrape(client, exp))
                check_up(body, case.accounts)
                walls.append(wall)
                slowest.append(stats["max_latency_applied"])
                requests.append(stats["requests"])
            exporter_cpu = (cpu_seconds(exp.pid) - exporter_before) / plan.latency_scrapes
            simulator_cpu = (cpu_seconds(sim.pid) - simulator_before) / plan.latency_scrapes
            rss = memory_bytes(exp.pid)
        # with the exporter stopped: the plain clients have both cores to themselves
        references = reference_rounds(sim, case, parqex, lametric, plan.reference_rounds)
    return LatencyRun(case, walls, slowest, requests, exporter_cpu, simulator_cpu, rss, references)


def measure_latency(plan: Plan) -> Section:
    runs = [measure_latency_case(case, plan) for case in LATENCY_CASES]
    rows = [
        ["upstream requests per scrape"]
        + [Stat([float(n) for n in r.requests]).cell(".0f") for r in runs],
        ["**scrape wall time / slowest upstream latency of the scrape**"]
        + [r.ratios.cell(".2f") for r in runs],
        ["scrape wall time, s"] + [Stat(r.walls).cell() for r in runs],
        ["slowest upstream latency of the scrape, s"] + [Stat(r.slowest).cell() for r in runs],
        ["exporter CPU per scrape, s (mean)"] + [f"{r.exporter_cpu:.3f}" for r in runs],
        ["simulator CPU per scrape, s (mean)"] + [f"{r.simulator_cpu:.3f}" for r in runs],
        ["exporter RSS after the scrapes, MiB"] + [mib(r.rss) for r in runs],
        ["reference: raw asyncio client, same requests at once: wall / slowest latency"]
        + [r.references["raw"].cell(".2f") for r in runs],
        ["reference: httpx.AsyncClient per account, same requests at once: wall / slowest latency"]
        + [r.references["httpx"].cell(".2f") for r in runs],
    ]
    wrong = [r for r in runs if any(n != r.case.requests for n in r.requests)]
    return Section(
        title="1. Scrape latency: many accounts behind slow clouds, gzip scrapes",
        tables=[Table(["quantity"] + [r.case.label for r in runs], rows)],
        targets=[
            Target(
                f"latency {r.case.label}: median scrape wall time / slowest upstream latency",
                r.ratios.median,
                r.case.limit,
            )
            for r in runs
        ],
        notes=[
            f"Cells are median [p10, p90] over {plan.latency_scrapes} scrapes (references: "
            f"{plan.reference_rounds} rounds), after one warm-up scrape that opens the "
            "connections and checks every account is up; every scrape is checked too.",
            "Accounts are half ParqEx, half LaMetric, 5 devices each; a ParqEx account makes "
            "one upstream request per scrape, a LaMetric account two at once. Scrapes ask "
            "Accept-Encoding: gzip (and get gzip), the simulator answers gzipped.",
            "(a), (b): the simulator delays every request by 200 ms. (c): each request draws "
            "its delay uniformly in [100, 300] ms, as real clouds do not answer in lockstep.",
            "The divisor is, for each scrape, the slowest delay the simulator applied to any "
            "request of that scrape (GET /_sim/stats max_latency_applied, reset before each "
            "scrape): a scrape cannot end before its slowest answer. In (a) and (b) it is "
            "0.2 s.",
            "References, measured after the exporter has stopped: plain clients sending the "
            "same requests (paths, tokens, Accept-Encoding: gzip) all at once over connections "
            "opened beforehand (bench/reference.py). The raw client reads the bytes and "
            "nothing else: it is the floor this simulator and machine allow. The httpx one is "
            "the exporter's HTTP library, one client per account, answers gunzipped but not "
            "parsed.",
            "Simulator CPU per scrape shows how much of the machine the simulated clouds take "
            "(both processes share 2 cores).",
            "What the raw client, the floor, already uses of each target: "
            + ", ".join(
                f"{r.case.label.split(')')[0]}) {r.references['raw'].median:.2f} of "
                f"{r.case.limit:g}"
                for r in runs
            )
            + ". The rest is what the exporter may add.",
            *(
                [
                    "**Some scrapes did not make the expected number of upstream requests "
                    f"({', '.join(r.case.label for r in wrong)}): their ratio means little.**"
                ]
                if wrong
                else []
            ),
        ],
    )


# ---------------------------------------------------------------------------- 2. per door


@dataclass
class Floor:
    """What bench/floor.py measured for one saved answer."""

    samples: int
    answer_bytes: int  # the sync answer, decompressed
    gzip_bytes: int  # as it came over the wire
    gzip_cpu: Stat  # per gzip scrape's work
    identity_cpu: Stat  # per plain-text scrape's work
    peak_rss: int  # the floor process's peak RSS: nothing streamed
    memory_steps: dict[str, int]  # what each step holds when nothing is streamed, bytes


@dataclass
class DoorPoint:
    plan: DoorPlan
    floor: Floor
    failure: str | None = None  # why the exporter's scrapes could not be measured
    samples: int = 0  # parqex_device_* and parqex_door_* samples in a real scrape
    first_rss: int = 0  # VmRSS after the warm-up scrape
    gzip: Scrapes | None = None
    peak_rss: int = 0  # VmHWM after the gzip scrapes
    identity: Scrapes | None = None

    @property
    def devices(self) -> int:
        return self.plan.devices

    @property
    def doors(self) -> int:
        return self.devices * 3

    @property
    def answer_mib(self) -> float:
        return self.floor.answer_bytes / MIB

    @property
    def ratio(self) -> float:
        """Exporter CPU per gzip scrape / the gzip floor (medians); NaN when not measured."""
        if self.gzip is None or self.floor.gzip_cpu.median <= 0:
            return math.nan
        return self.gzip.cpu.median / self.floor.gzip_cpu.median

    @property
    def identity_ratio(self) -> float:
        if self.identity is None or self.floor.identity_cpu.median <= 0:
            return math.nan
        return self.identity.cpu.median / self.floor.identity_cpu.median


def save_sync_answer(sim: Process, token: str, path: Path) -> None:
    """The account's sync answer as it comes over the wire when asked for gzip: not inflated."""
    headers = {"Authorization": f"Bearer {token}", "Accept-Encoding": "gzip"}
    with httpx.stream("GET", f"{sim.url}{SYNC_PATH}", headers=headers, timeout=300) as response:
        response.raise_for_status()
        if response.headers.get("Content-Encoding") != "gzip":
            raise RuntimeError("the simulator did not gzip the sync answer")
        with path.open("wb") as file:
            for chunk in response.iter_raw():
                file.write(chunk)


def measure_floor(sim: Process, token: str, account: str, iterations: int, work: Path) -> Floor:
    """Save the account's sync answer once, then run bench/floor.py on it in its own process."""
    path = work / f"{token}.json.gz"
    save_sync_answer(sim, token, path)
    command = [sys.executable, str(BENCH / "floor.py"), str(path), "--account", account]

    def floor(*args: str) -> Any:
        run = subprocess.run(
            [*command, *args], capture_output=True, text=True, check=True, timeout=1200
        )
        return json.loads(run.stdout)

    measured = floor("--iterations", str(iterations))
    steps = floor("--memory")  # in a process of its own: it measures RSS deltas
    path.unlink()
    return Floor(
        samples=measured["samples"],
        answer_bytes=measured["answer_bytes"],
        gzip_bytes=measured["gzip_bytes"],
        gzip_cpu=Stat(measured["gzip_cpu_seconds"]),
        identity_cpu=Stat(measured["identity_cpu_seconds"]),
        peak_rss=measured["peak_rss_bytes"],
        memory_steps=steps,
    )


def measure_exporter(point: DoorPoint, config: dict[str, Any]) -> None:
    """The exporter's gzip series (then its identity series) at one size, into `point`."""
    with exporter(config) as exp:
        try:
            with scrape_client() as client:
                _, body = scrape(client, exp)  # warm-up, not counted
                check_up(body, 1)
                point.samples = count_samples(body)
                del body
                point.first_rss = memory_bytes(exp.pid)
                point.gzip = scrape_many(client, exp, point.plan.scrapes, accounts=1)
            point.peak_rss = memory_bytes(exp.pid, "VmHWM")
            if point.plan.identity_scrapes:
                with scrape_client(gzip=False) as client:
                    point.identity = scrape_many(
                        client, exp, point.plan.identity_scrapes, accounts=1, batches=1
                    )
        except ScrapeFailed as exc:
            logged = [line.strip() for line in exp.output if "level=" in line][-1:]
            point.failure = f"{exc}" + (f"; the exporter logged: {logged[0]}" if logged else "")
            with contextlib.suppress(OSError, KeyError):  # gone if it died
                point.peak_rss = memory_bytes(exp.pid, "VmHWM")


def measure_door_point(sim: Process, door: DoorPlan, work: Path) -> DoorPoint:
    token = f"doors-{door.devices}"
    progress(f"2. per door: {door.devices:,} devices, {door.scrapes} gzip scrapes")
    sim_call(sim, "POST", "parqex_account", {"token": token, "devices": door.devices})
    config = exporter_config(
        sim.url,
        parqex=[token],
        timeout_seconds=SCRAPE_TIMEOUT,
        max_response_bytes=door.max_response_bytes,
    )
    floor = measure_floor(sim, token, "parqex-0", door.floor_iterations, work)
    point = DoorPoint(door, floor)
    measure_exporter(point, config)
    if point.failure:
        progress(f"   {door.devices:,} devices: {point.failure}")
    return point


def growth_exponent(points: list[DoorPoint], cpu: Callable[[DoorPoint], float]) -> float:
    """Slope of log(cpu(point)) over log(doors): 1 is linear."""
    if len(points) < 2:
        return math.nan
    fit = statistics.linear_regression(
        [math.log(p.doors) for p in points], [math.log(cpu(p)) for p in points]
    )
    return fit.slope


def exporter_gzip_cpu(point: DoorPoint) -> float:
    return point.gzip.cpu.median if point.gzip is not None else math.nan


def default_max_response_bytes() -> int | None:
    """The exporter's default collection.max_response_bytes, asked of its own code."""
    code = (
        "from exporter.config import CollectionConfig; print(CollectionConfig().max_response_bytes)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    text = result.stdout.strip()
    return int(text) if result.returncode == 0 and text.isdigit() else None


def door_targets(points: dict[int, DoorPoint], exponent: float, fitted: str) -> list[Target]:
    targets: list[Target] = []
    if (cpu := points.get(CPU_DEVICES)) is not None:
        scrapes = cpu.plan.scrapes
        rss = cpu.gzip.rss[-1] / MIB if cpu.gzip else math.nan
        peak = cpu.peak_rss / MIB if cpu.gzip else math.nan
        targets += [
            Target(
                f"CPU per gzip scrape at {CPU_DEVICES:,} devices / gzip floor (median / median)",
                cpu.ratio,
                2.0,
            ),
            Target(f"RSS after {scrapes} gzip scrapes at {CPU_DEVICES:,} devices, MiB", rss, 100),
            Target(f"peak RSS (VmHWM) at {CPU_DEVICES:,} devices, MiB", peak, 200),
        ]
    if fitted:
        targets.append(
            Target(f"growth of gzip CPU with doors: log-log exponent, {fitted}", exponent, 1.05)
        )
    if (room := points.get(HEADROOM_DEVICES)) is not None:
        failed = 0.0 if room.gzip is not None and room.failure is None else 1.0
        targets.append(
            Target(
                f"headroom: {HEADROOM_DEVICES:,} devices ({room.floor.answer_bytes / MB:.1f} MB "
                "answer) with the default collection.max_response_bytes: failed scrapes",
                failed,
                0,
            )
        )
    if (scale := points.get(SCALE_DEVICES)) is not None:
        slowest = max(scale.gzip.wall.values) if scale.gzip and not scale.failure else math.nan
        targets.append(
            Target(
                f"scale: slowest gzip scrape wall time at {SCALE_DEVICES:,} devices, s",
                slowest,
                SCRAPE_TIMEOUT,
            )
        )
    return targets


def cpu_cell(scrapes: Scrapes | None, spec: str = ".3g") -> str:
    return scrapes.cpu.cell(spec) if scrapes is not None else "-"


def per_mib(rss: int, point: DoorPoint) -> str:
    """RSS per MiB of answer: meaningless while the process's baseline outweighs the answer."""
    return f"{rss / MIB / point.answer_mib:.1f}" if point.answer_mib >= 1 else "-"


def ratio_cell(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def measure_doors(plan: Plan, work: Path) -> tuple[Section, list[DoorPoint]]:
    with simulator() as sim:
        points = [measure_door_point(sim, door, work) for door in plan.doors]
    by_devices = {p.devices: p for p in points}
    fitted_points = [p for p in points if p.devices >= 100 and p.gzip is not None]
    exponent = growth_exponent(fitted_points, exporter_gzip_cpu)
    floor_exponent = growth_exponent(fitted_points, lambda p: p.floor.gzip_cpu.median)
    fitted = (
        f"{fitted_points[0].devices:,}..{fitted_points[-1].devices:,} devices"
        if len(fitted_points) >= 2
        else ""
    )
    cpu_table = Table(
        caption="CPU: exporter per scrape against the floor doing the same work",
        headers=[
            "devices",
            "doors",
            "samples: exporter / floor",
            "gzip scrapes",
            "exporter CPU s/gzip scrape",
            "floor CPU s/gzip iteration",
            "**gzip CPU ratio**",
            "identity scrapes",
            "exporter CPU s/identity scrape",
            "floor CPU s/identity iteration",
            "identity CPU ratio",
        ],
        rows=[
            [
                f"{p.devices:,}",
                f"{p.doors:,}",
                f"{p.samples:,} / {p.floor.samples:,}" if p.gzip else f"- / {p.floor.samples:,}",
                str(p.gzip.count) if p.gzip else "0",
                cpu_cell(p.gzip),
                p.floor.gzip_cpu.cell(".3g"),
                ratio_cell(p.ratio),
                str(p.identity.count) if p.identity else "0",
                cpu_cell(p.identity),
                p.floor.identity_cpu.cell(".3g"),
                ratio_cell(p.identity_ratio),
            ]
            for p in points
        ],
    )
    memory_table = Table(
        caption="Wall time and memory (gzip scrapes)",
        headers=[
            "devices",
            "answer MB (gzipped MB)",
            "scrape wall s",
            "RSS MiB after 1 / all scrapes",
            "peak RSS MiB",
            "peak RSS per MiB of answer",
            "floor peak RSS MiB (per MiB of answer)",
        ],
        rows=[
            [
                f"{p.devices:,}",
                f"{p.floor.answer_bytes / MB:.2f} ({p.floor.gzip_bytes / MB:.2f})",
                p.gzip.wall.cell() if p.gzip else "-",
                f"{mib(p.first_rss)} / {mib(p.gzip.rss[-1])}" if p.gzip else "-",
                mib(p.peak_rss) if p.peak_rss else "-",
                per_mib(p.peak_rss, p) if p.gzip else "-",
                f"{mib(p.floor.peak_rss)} ({per_mib(p.floor.peak_rss, p)})",
            ]
            for p in points
        ],
    )
    section = Section(
        title="2. CPU and memory per door: one ParqEx account, 3 doors per device",
        tables=[cpu_table, memory_table],
        targets=door_targets(by_devices, exponent, fitted),
        notes=door_notes(plan, points, exponent, floor_exponent),
    )
    return section, points


def door_notes(
    plan: Plan, points: list[DoorPoint], exponent: float, floor_exponent: float
) -> list[str]:
    default = default_max_response_bytes()
    notes = [
        "Cells are median [p10, p90]. A fresh exporter per size; one warm-up scrape (which "
        "also counts the samples) is not counted; every scrape is checked for parqex_up 1 "
        "and for the encoding asked for.",
        "Scrapes per size: "
        + ", ".join(
            f"{d.scrapes} gzip + {d.identity_scrapes} identity at {d.devices:,}" for d in plan.doors
        )
        + ". Scrapes ask Accept-Encoding: gzip like Prometheus (and send "
        f"X-Prometheus-Scrape-Timeout-Seconds: {SCRAPE_TIMEOUT:g}, with a {SCRAPE_TIMEOUT:g} s "
        "client timeout); the identity series, after the gzip one, asks for plain text. The "
        f"exporter's collection.timeout_seconds is {SCRAPE_TIMEOUT:g}.",
        "Exporter CPU is utime+stime of its process from /proc/PID/stat around batches of "
        "scrapes (a tenth of the gzip series each; the identity series as one batch; 10 ms "
        "clock ticks), divided by the batch size.",
        "Floor: bench/floor.py in its own process on the sync answer saved as it came over the "
        "wire (gzipped), time.process_time per iteration. A gzip iteration gunzips the answer, "
        "json.loads it, writes one `name{labels} value` line per sample with the exporter's "
        "metric names and label sets and gzips the text at compresslevel 1 (the exporter's "
        "level); an identity iteration only parses and writes. The exporter's identity scrape "
        "still gunzips its upstream answer, which the identity floor does not: the identity "
        "ratio is defined as in earlier reports. The exporter wrote "
        + (
            "as many samples as the floor at every size."
            if all(p.samples == p.floor.samples for p in points if p.gzip)
            else "**NOT as many samples as the floor**: see the table."
        ),
        f"Exponent of gzip CPU per scrape over doors: {exponent:.3f} (1 = linear; below 1, "
        "fixed per-scrape costs still show at the small sizes). The gzip floor's own, over "
        f"the same sizes: {floor_exponent:.3f} (Python's allocator and garbage collector are "
        "not quite linear either).",
    ]
    measured = [p for p in points if p.gzip is not None and p.devices >= 1_000]
    if len(measured) >= 2:
        fit = statistics.linear_regression(
            [p.answer_mib for p in measured], [p.peak_rss / MIB for p in measured]
        )
        notes.append(
            f"Peak RSS against the answer's size, least squares over {measured[0].devices:,}.."
            f"{measured[-1].devices:,} devices: {fit.intercept:.0f} MiB + {fit.slope:.2f} MiB "
            "per MiB of (decompressed) answer. A memory limit must allow for the peak at the "
            "largest answer collection.max_response_bytes lets in."
        )
    limits = [
        f"{d.devices:,} devices: {d.max_response_bytes:,} bytes"
        for d in plan.doors
        if d.max_response_bytes is not None
    ]
    notes.append(
        "collection.max_response_bytes is the exporter's default"
        + (f" ({default:,} bytes = {default / MIB:g} MiB)" if default else " (not readable)")
        + " except at "
        + ("; ".join(limits) if limits else "no size")
        + "."
    )
    shown = {p.devices: p for p in points if p.devices == CPU_DEVICES or p is points[-1]}
    notes += [memory_note(p) for p in shown.values()]
    if (base := next((p for p in points if p.devices == CPU_DEVICES), None)) is not None:
        notes += [
            f"The answer at {p.devices:,} devices is "
            f"{p.floor.answer_bytes / base.floor.answer_bytes:.1f}x the one at {CPU_DEVICES:,} "
            "devices"
            + (f" and {p.floor.answer_bytes / default:.2f}x the default limit." if default else ".")
            for p in points
            if p.devices > CPU_DEVICES
        ]
        if base.gzip is not None:
            notes.append(
                f"RSS at {CPU_DEVICES:,} devices after the warm-up and after each batch of "
                f"{max(1, base.gzip.count // 10)} gzip scrapes, MiB: {mib(base.first_rss)}, "
                + ", ".join(mib(rss) for rss in base.gzip.rss)
                + "."
            )
    notes += [f"**{p.devices:,} devices: {p.failure}**" for p in points if p.failure]
    return notes


def memory_note(point: DoorPoint) -> str:
    """What the peak is made of: the floor's steps, held at once, against both peaks."""
    steps = point.floor.memory_steps
    exporter = f"the exporter's at {mib(point.peak_rss)} MiB" if point.gzip else "the exporter's"
    return (
        f"What a gzip scrape at {point.devices:,} devices holds when nothing is streamed "
        "(bench/floor.py --memory, every result kept), MiB: "
        + ", ".join(f"{name} {mib(size)}" for name, size in steps.items())
        + f"; {mib(sum(steps.values()))} in all. The floor, which drops the parsed answer and "
        f"the lines as it goes, peaked at {mib(point.floor.peak_rss)} MiB, {exporter}."
    )


def plot_doors(points: list[DoorPoint], path: Path) -> bool:
    """cpu_per_door.png, when matplotlib is importable (it is not a dependency)."""
    try:
        import matplotlib  # type: ignore[import-not-found]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found]
    except ImportError:
        return False
    measured = [p for p in points if p.gzip is not None]
    doors = [p.doors for p in measured]
    figure, axes = plt.subplots(figsize=(7, 4.5))
    axes.loglog(
        doors,
        [p.gzip.cpu.median for p in measured if p.gzip],
        "o-",
        label="exporter, CPU s per gzip scrape",
    )
    axes.loglog(
        doors, [p.floor.gzip_cpu.median for p in measured], "s--", label="gzip floor, CPU s"
    )
    axes.set_xlabel("doors (3 per device, one account)")
    axes.set_ylabel("CPU seconds (median)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


# ---------------------------------------------------------------------------- 3. upstream load


@dataclass
class LoadRun:
    scrapers: int
    cache_seconds: float
    walls: list[float]
    failures: int
    requests: int  # sync requests the simulator served
    max_in_flight: int
    seconds: float


def scrape_every_second(
    exp: Process, start: float, seconds: int, walls: list[float], failures: list[int]
) -> None:
    """One scraper: a scrape each second from `start` on, `seconds` times (10 s timeout each)."""
    with httpx.Client(timeout=10) as client:
        for i in range(seconds):
            time.sleep(max(0.0, start + i - time.monotonic()))
            try:
                walls.append(scrape(client, exp)[0])
            except ScrapeFailed:
                failures.append(i)


def load_run(sim: Process, scrapers: int, cache: float, seconds: int) -> LoadRun:
    progress(f"3. upstream load: {scrapers} scrapers, cache_seconds {cache:g}, {seconds} s")
    with exporter(exporter_config(sim.url, parqex=["parqex-token-0"], cache_seconds=cache)) as exp:
        sim_call(sim, "POST", "reset_stats")
        walls: list[float] = []
        failures: list[int] = []
        began = time.monotonic() + 0.2
        threads = [
            # scrapers spread over the second, so some arrive while a fetch is in flight
            threading.Thread(
                target=scrape_every_second,
                args=(exp, began + k / scrapers, seconds, walls, failures),
            )
            for k in range(scrapers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=seconds + 30)
        ended = time.monotonic()
        stats = sim_call(sim, "GET", "stats")
    return LoadRun(
        scrapers,
        cache,
        walls,
        len(failures),
        stats["by_path"].get(SYNC_PATH, 0),
        stats["max_in_flight"].get(SYNC_PATH, 0),
        ended - began,
    )


def measure_load(plan: Plan) -> Section:
    with simulator(latency=0.5, parqex=1) as sim:
        runs = [
            load_run(sim, scrapers, cache, plan.load_seconds)
            for cache in (0.0, 30.0)
            for scrapers in plan.load_scrapers
        ]
    targets = [
        Target(f"cache 0, {r.scrapers} scrapers: max sync requests in flight", r.max_in_flight, 1)
        if r.cache_seconds == 0
        else Target(
            f"cache 30, {r.scrapers} scrapers: sync requests in {plan.load_seconds} s",
            r.requests,
            2,
        )
        for r in runs
    ]
    return Section(
        title="3. Upstream load: one ParqEx account, 500 ms per upstream request",
        tables=[
            Table(
                headers=[
                    "scrapers",
                    "cache_seconds",
                    "scrapes ok / failed",
                    "scrape wall s",
                    "sync requests",
                    "max in flight",
                    "run s",
                ],
                rows=[
                    [
                        str(r.scrapers),
                        f"{r.cache_seconds:g}",
                        f"{len(r.walls)} / {r.failures}",
                        Stat(r.walls).cell() if r.walls else "-",
                        str(r.requests),
                        str(r.max_in_flight),
                        f"{r.seconds:.1f}",
                    ]
                    for r in runs
                ],
            )
        ],
        targets=targets,
        notes=[
            f"Each scraper scrapes once a second, {plan.load_seconds} times; the scrapers start "
            "spread over the first second. A fresh exporter per run; the simulator's counters "
            "(GET /_sim/stats, path /oauth/v1/endpoints/sync) are reset before each.",
            "Scrape wall time is median [p10, p90] over all scrapers' scrapes.",
        ],
    )


# ---------------------------------------------------------------------------- 4. idle


def measure_idle(plan: Plan) -> Section:
    progress(f"4. idle: 100 accounts, {plan.idle_seconds:g} s without scrapes")
    with simulator(parqex=50, lametric=50) as sim:
        config = exporter_config(
            sim.url, parqex=tokens("parqex", 50), lametric=tokens("lametric", 50)
        )
        with exporter(config) as exp:
            startup = cpu_seconds(exp.pid)
            time.sleep(1.0)  # let start-up finish
            before = cpu_seconds(exp.pid)
            time.sleep(plan.idle_seconds)
            idle = cpu_seconds(exp.pid) - before
            rss, peak = memory_bytes(exp.pid), memory_bytes(exp.pid, "VmHWM")
    return Section(
        title="4. Idle footprint: 100 accounts configured, never scraped",
        tables=[
            Table(
                headers=["quantity", "value"],
                rows=[
                    ["CPU s to start (until it served)", f"{startup:.2f}"],
                    [f"CPU s over {plan.idle_seconds:g} s idle", f"{idle:.2f}"],
                    ["idle CPU, % of one core", f"{idle / plan.idle_seconds * 100:.2f}"],
                    ["RSS, MiB", mib(rss)],
                    ["peak RSS, MiB", mib(peak)],
                ],
            )
        ],
        notes=["No target; single readings from /proc (CPU in 10 ms ticks)."],
    )


# ---------------------------------------------------------------------------- report


def machine() -> list[str]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    return [
        f"date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"CPUs: {os.cpu_count()} ({model})",
        f"Python: {platform.python_implementation()} {platform.python_version()} on "
        f"{platform.platform()}",
    ]


def source_state() -> str:
    """Which exporter code the processes run: git revision, uncommitted files, content hash."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout

    revision = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    changed = [line[3:] for line in git("status", "--porcelain", "--", "exporter").splitlines()]
    digest = hashlib.sha256()
    for path in sorted((ROOT / "exporter").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return (
        f"git {revision}"
        + (f" with uncommitted changes to {', '.join(changed)}" if changed else "")
        + f" (exporter/ content sha256 {digest.hexdigest()[:12]})"
    )


def _content(source: str) -> str:
    """A `source_state` without its git revision: a commit of other files changes nothing."""
    return source.split(" ", 2)[2] if source.startswith("git ") else source


@dataclass(frozen=True)
class Snapshot:
    """The machine's load and the exporter's code, taken at the start and at the end."""

    load: float
    source: str

    @staticmethod
    def take() -> Snapshot:
        return Snapshot(os.getloadavg()[0], source_state())


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def report(
    sections: list[Section], command: str, elapsed: float, start: Snapshot, end: Snapshot
) -> str:
    targets = [t for s in sections for t in s.targets]
    passed = sum(t.passed for t in targets)
    target_headers = ["target", "measured", "limit", "result", "margin"]
    lines = [
        "# Benchmark report",
        "",
        f"Written by `{command}` in {elapsed / 60:.1f} minutes. "
        f"{passed} of {len(targets)} targets pass.",
        "",
        *(f"- {line}" for line in machine()),
        f"- exporter source: {start.source}",
        *(
            [
                f"- **WARNING: the exporter's source changed during the run (at the end: "
                f"{end.source}); these results mix versions: run again.**"
            ]
            if _content(end.source) != _content(start.source)
            else []
        ),
        f"- load average (1 min) at start and end: {start.load:.2f} / {end.load:.2f} (the "
        "machine is shared: wall times suffer from other work, CPU times much less)",
        "",
        "## Targets",
        "",
        *table(target_headers, [t.row() for t in targets]),
    ]
    for section in sections:
        lines += ["", f"## {section.title}"]
        for part in section.tables:
            lines += ["", *([f"{part.caption}:", ""] if part.caption else [])]
            lines += table(part.headers, part.rows)
        if section.targets:
            lines += ["", *table(target_headers, [t.row() for t in section.targets])]
        lines += ["", *(f"- {note}" for note in section.notes)]
    return "\n".join(lines) + "\n"


SECTIONS = ("latency", "doors", "load", "idle")


def main() -> int:
    parser = argparse.ArgumentParser(description="Benchmark device-cloud-exporter.")
    parser.add_argument("--quick", action="store_true", help="a ~3-minute smoke run")
    parser.add_argument("--out", type=Path, help="output folder (default: bench/results[/quick])")
    parser.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        help="run only this section (repeatable); the report then goes to results/quick/",
    )
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(n) for n in text.split(",")],
        help="section 2 at these device counts only, e.g. 100000 (each must be in the plan)",
    )
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    if args.sizes:
        known = {d.devices: d for d in plan.doors}
        unknown = [n for n in args.sizes if n not in known]
        if unknown:
            parser.error(f"--sizes: not in the {plan.name} plan: {unknown}")
        plan = replace(plan, doors=tuple(known[n] for n in args.sizes))
    partial = bool(args.only or args.sizes)
    out = args.out or BENCH / "results" / ("quick" if args.quick or partial else "")
    out.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join(["bench/run.py", *sys.argv[1:]])
    started, start = time.monotonic(), Snapshot.take()
    chosen = args.only or list(SECTIONS)
    sections: list[Section] = []
    points: list[DoorPoint] = []
    with tempfile.TemporaryDirectory(prefix="bench-") as work:
        if "latency" in chosen:
            sections.append(measure_latency(plan))
        if "doors" in chosen:
            doors, points = measure_doors(plan, Path(work))
            sections.append(doors)
    if "load" in chosen:
        sections.append(measure_load(plan))
    if "idle" in chosen:
        sections.append(measure_idle(plan))
    text = report(sections, command, time.monotonic() - started, start, Snapshot.take())
    (out / "REPORT.md").write_text(text, encoding="utf-8")
    plotted = bool(points) and plot_doors(points, out / "cpu_per_door.png")
    progress(f"wrote {out / 'REPORT.md'}" + (" and cpu_per_door.png" if plotted else ""))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
