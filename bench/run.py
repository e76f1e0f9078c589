"""Benchmark the exporter as it runs in production: separate processes, scraped over HTTP.

    python bench/run.py           # the full run, 4 to 7 minutes; writes bench/results/
    python bench/run.py --quick   # a smoke run of about a minute; writes bench/results/quick/

See bench/README.md for what is measured, and the targets.
"""

from __future__ import annotations

import argparse
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

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

BENCH = Path(__file__).resolve().parent
SYNC_PATH = "/oauth/v1/endpoints/sync"
MIB = 1024 * 1024


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
    """A measured value that must not exceed `limit`."""

    name: str
    measured: float
    limit: float

    @property
    def passed(self) -> bool:
        return self.measured <= self.limit

    def row(self) -> list[str]:
        ratio = self.measured / self.limit
        margin = (
            ("at the limit" if ratio == 1 else f"{(1 - ratio) * 100:.1f}% under the limit")
            if self.passed
            else f"{ratio:.2f}x the limit ({(ratio - 1) * 100:.1f}% over)"
        )
        verdict = "**PASS**" if self.passed else "**FAIL**"
        measured = (
            f"{self.measured:g}"
            if self.measured == int(self.measured)
            else (f"{self.measured:#.4g}")
        )
        return [self.name, measured, f"<= {self.limit:g}", verdict, margin]


@dataclass
class Section:
    """One measurement: a table, the targets it checks, and notes on how it was measured."""

    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Plan:
    """How much to measure: the full run, or a quick smoke run."""

    latency_scrapes: int = 10
    door_sizes: tuple[int, ...] = (1, 100, 1_000, 10_000)
    door_scrapes: int = 50
    door_scrapes_largest: int = 50  # ~4 s each at 10,000 devices: 3 of the 7 minutes
    gzip_scrapes: int = 3
    floor_iterations: int = 20
    load_scrapers: tuple[int, ...] = (2, 10)
    load_seconds: int = 30
    idle_seconds: float = 30.0


FULL = Plan()
QUICK = Plan(
    latency_scrapes=3,
    door_scrapes=5,
    door_scrapes_largest=1,
    gzip_scrapes=1,
    floor_iterations=3,
    load_seconds=5,
    idle_seconds=5.0,
)


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- scraping


@contextmanager
def scrape_client(gzip: bool = False) -> Iterator[httpx.Client]:
    """A client that asks for plain text (like the floor writes) or gzip (like Prometheus)."""
    headers = {"Accept-Encoding": "gzip" if gzip else "identity"}
    with httpx.Client(timeout=120, headers=headers) as client:
        yield client


def scrape(client: httpx.Client, exp: Process) -> tuple[float, bytes]:
    """One scrape: its wall time and the body."""
    start = time.perf_counter()
    response = client.get(f"{exp.url}/metrics")
    wall = time.perf_counter() - start
    response.raise_for_status()
    return wall, response.content


def checked_scrape(client: httpx.Client, exp: Process, accounts: int) -> int:
    """Scrape once and fail unless every account is up; the number of device and door samples."""
    _, body = scrape(client, exp)
    lines = body.decode().splitlines()
    up = [line for line in lines if line.startswith(("parqex_up{", "lametric_up{"))]
    if len(up) != accounts or not all(line.endswith(" 1.0") for line in up):
        raise RuntimeError(f"expected {accounts} accounts up, got: {up[:5]}...")
    return sum(1 for line in lines if line.startswith(("parqex_device_", "parqex_door_")))


@dataclass
class Scrapes:
    """A series of scrapes of one exporter, in batches of a tenth of them."""

    wall: Stat  # seconds, per scrape
    cpu: Stat  # the exporter's CPU seconds per scrape, one value per batch
    rss: list[int]  # the exporter's VmRSS after each batch

    @property
    def count(self) -> int:
        return len(self.wall.values)


def scrape_many(client: httpx.Client, exp: Process, count: int) -> Scrapes:
    """Scrape `count` times in a row.

    /proc counts CPU in 10 ms ticks, so CPU is read around batches of scrapes (a tenth of
    them each) and divided: small scrapes would otherwise read as 0 or 10 ms.
    """
    batch = max(1, count // 10)
    walls: list[float] = []
    cpu: list[float] = []
    rss: list[int] = []
    for first in range(0, count, batch):
        size = min(batch, count - first)
        before = cpu_seconds(exp.pid)
        walls.extend(scrape(client, exp)[0] for _ in range(size))
        cpu.append((cpu_seconds(exp.pid) - before) / size)
        rss.append(memory_bytes(exp.pid))
    return Scrapes(Stat(walls), Stat(cpu), rss)


def tokens(source: str, count: int) -> list[str]:
    return [f"{source}-token-{i}" for i in range(count)]


def mib(value: float) -> str:
    return f"{value / MIB:.1f}"


# ---------------------------------------------------------------------------- 1. latency


def measure_latency(plan: Plan) -> Section:
    latency = 0.2
    progress(f"1. latency: 100 accounts, {latency * 1000:.0f} ms per upstream request")
    with simulator(latency=latency, parqex=50, lametric=50) as sim:
        config = exporter_config(
            sim.url, parqex=tokens("parqex", 50), lametric=tokens("lametric", 50)
        )
        with exporter(config) as exp, scrape_client() as client:
            checked_scrape(client, exp, accounts=100)  # warm-up: opens the connections
            run = scrape_many(client, exp, plan.latency_scrapes)
    ratio = Stat([wall / latency for wall in run.wall.values])
    return Section(
        title="1. Scrape latency: 100 accounts, 200 ms per upstream request",
        headers=["quantity", "n", "median [p10, p90]"],
        rows=[
            ["scrape wall time / upstream latency", str(run.count), ratio.cell(".2f")],
            ["scrape wall time, s", str(run.count), run.wall.cell()],
            ["exporter CPU per scrape, s", str(len(run.cpu.values)), run.cpu.cell()],
            ["exporter RSS after the scrapes, MiB", "1", mib(run.rss[-1])],
        ],
        targets=[Target("latency: median scrape wall time / 0.2 s", ratio.median, 1.5)],
        notes=[
            "50 ParqEx + 50 LaMetric accounts of 5 devices each; the simulator sleeps 200 ms "
            "in every request (a LaMetric account makes two, concurrently).",
            "One warm-up scrape (it also checks that every account is up) is not counted.",
        ],
    )


# ---------------------------------------------------------------------------- 2. per door


@dataclass
class DoorPoint:
    devices: int
    samples: int  # parqex_device_* and parqex_door_* samples in a real scrape
    first_rss: int  # VmRSS after the warm-up scrape
    run: Scrapes
    peak_rss: int  # VmHWM after them
    floor_samples: int
    floor_cpu: Stat
    gzip: Scrapes | None = None  # asking for gzip, like Prometheus

    @property
    def doors(self) -> int:
        return self.devices * 3

    @property
    def ratio(self) -> float:
        floor = self.floor_cpu.median
        return self.run.cpu.median / floor if floor > 0 else math.nan


def measure_floor(sim: Process, token: str, account: str, iterations: int, work: Path) -> dict:
    """Save the account's sync answer once, then run bench/floor.py on it in its own process."""
    response = httpx.get(
        f"{sim.url}{SYNC_PATH}", headers={"Authorization": f"Bearer {token}"}, timeout=120
    )
    response.raise_for_status()
    path = work / f"{token}.json"
    path.write_bytes(response.content)
    result = subprocess.run(
        [
            sys.executable,
            str(BENCH / "floor.py"),
            str(path),
            "--account",
            account,
            "--iterations",
            str(iterations),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(result.stdout)


def measure_door_point(sim: Process, devices: int, plan: Plan, work: Path) -> DoorPoint:
    token = f"doors-{devices}"
    sim_call(sim, "POST", "parqex_account", {"token": token, "devices": devices})
    largest = devices == max(plan.door_sizes)
    scrapes = plan.door_scrapes_largest if largest else plan.door_scrapes
    progress(f"2. per door: {devices} devices, {scrapes} scrapes")
    config = exporter_config(sim.url, parqex=[token])
    with exporter(config) as exp:
        with scrape_client() as client:
            samples = checked_scrape(client, exp, accounts=1)  # warm-up, not counted
            first_rss = memory_bytes(exp.pid)
            run = scrape_many(client, exp, scrapes)
        peak = memory_bytes(exp.pid, "VmHWM")
        gzip = None
        if largest and plan.gzip_scrapes:
            with scrape_client(gzip=True) as client:
                gzip = scrape_many(client, exp, plan.gzip_scrapes)
    iterations = max(3, plan.floor_iterations // (2 if largest else 1))
    floor = measure_floor(sim, token, "parqex-0", iterations, work)
    return DoorPoint(
        devices=devices,
        samples=samples,
        first_rss=first_rss,
        run=run,
        peak_rss=peak,
        floor_samples=floor["samples"],
        floor_cpu=Stat(floor["cpu_seconds"]),
        gzip=gzip,
    )


def growth_exponent(points: list[DoorPoint]) -> float:
    """Slope of log(CPU per scrape) over log(doors): 1 is linear."""
    fit = statistics.linear_regression(
        [math.log(p.doors) for p in points], [math.log(p.run.cpu.median) for p in points]
    )
    return fit.slope


def measure_doors(plan: Plan, work: Path) -> tuple[Section, list[DoorPoint]]:
    with simulator() as sim:
        points = [measure_door_point(sim, n, plan, work) for n in plan.door_sizes]
    big = points[-1]
    fitted = [p for p in points if p.devices >= 100]
    exponent = growth_exponent(fitted) if len(fitted) >= 2 else float("nan")
    section = Section(
        title="2. CPU and memory per door: one ParqEx account, 3 doors per device",
        headers=[
            "devices",
            "doors",
            "samples",
            "scrapes",
            "exporter CPU s/scrape",
            "floor CPU s/iteration",
            "CPU ratio",
            "scrape wall s",
            "RSS MiB after 1 / all scrapes",
            "peak RSS MiB",
        ],
        rows=[
            [
                f"{p.devices:,}",
                f"{p.doors:,}",
                f"{p.samples:,}",
                str(p.run.count),
                p.run.cpu.cell(".3g"),
                p.floor_cpu.cell(".3g"),
                f"{p.ratio:.1f}",
                p.run.wall.cell(),
                f"{mib(p.first_rss)} / {mib(p.run.rss[-1])}",
                mib(p.peak_rss),
            ]
            for p in points
        ],
        targets=[
            Target(
                f"CPU per scrape at {big.devices:,} devices / floor (median / median)",
                big.ratio,
                3.0,
            ),
            Target(
                f"RSS after the scrapes at {big.devices:,} devices, MiB", big.run.rss[-1] / MIB, 150
            ),
            Target(
                f"growth of CPU with doors: exponent of the log-log fit, "
                f"{fitted[0].devices:,}..{big.devices:,} devices",
                exponent,
                1.1,
            ),
        ],
        notes=[
            "Cells are median [p10, p90]. A fresh exporter per size; one warm-up scrape (which "
            "also counts the samples and checks parqex_up is 1) is not counted.",
            (
                f"{plan.door_scrapes} scrapes per size"
                if plan.door_scrapes == plan.door_scrapes_largest
                else f"{plan.door_scrapes} scrapes per size, but only "
                f"{plan.door_scrapes_largest} at {big.devices:,} devices (to keep the run short)"
            )
            + "; RSS (VmRSS) is read after the warm-up scrape and after them all, peak RSS "
            "(VmHWM) at the end.",
            "Exporter CPU is utime+stime of its process from /proc/PID/stat around batches of "
            "scrapes (a tenth of them each, 10 ms clock ticks), divided by the batch size. "
            "Scrapes ask for plain text (Accept-Encoding: identity), like the floor writes.",
            "Floor: bench/floor.py in its own process, time.process_time per iteration: "
            "json.loads of the same sync bytes plus one `name{labels} value` line per sample "
            "with the exporter's metric names and label sets. 'samples' counts the exporter's "
            "parqex_device_* and parqex_door_* samples; the floor wrote "
            + (
                "as many at every size."
                if all(p.samples == p.floor_samples for p in points)
                else ", ".join(f"{p.floor_samples:,}" for p in points) + " (NOT the same)."
            ),
            f"Exponent of CPU per scrape over doors: {exponent:.2f} (1 = linear; below 1, "
            "fixed per-scrape costs still show at the small sizes).",
            f"Peak RSS at {big.devices:,} devices was {mib(big.peak_rss)} MiB: the whole "
            "exposition is built in memory during a scrape, so a memory limit must allow for "
            "the peak, not for the RSS between scrapes that the target checks.",
            f"RSS at {big.devices:,} devices after the warm-up and after each batch of "
            f"{max(1, big.run.count // 10)} scrapes, MiB: {mib(big.first_rss)}, "
            + ", ".join(mib(rss) for rss in big.run.rss)
            + ".",
        ],
    )
    if big.gzip is not None:
        section.notes.append(
            f"With Accept-Encoding: gzip, as Prometheus asks, the exporter used "
            f"{big.gzip.cpu.cell()} CPU s per scrape at {big.devices:,} devices "
            f"({big.gzip.count} scrapes): compression comes on top of the above."
        )
    return section, points


def plot_doors(points: list[DoorPoint], path: Path) -> bool:
    """cpu_per_door.png, when matplotlib is importable (it is not a dependency)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    doors = [p.doors for p in points]
    figure, axes = plt.subplots(figsize=(7, 4.5))
    axes.loglog(doors, [p.run.cpu.median for p in points], "o-", label="exporter, CPU s per scrape")
    axes.loglog(doors, [p.floor_cpu.median for p in points], "s--", label="floor, CPU s")
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
            except httpx.HTTPError:
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
        headers=["quantity", "value"],
        rows=[
            ["CPU s to start (until it served)", f"{startup:.2f}"],
            [f"CPU s over {plan.idle_seconds:g} s idle", f"{idle:.2f}"],
            ["idle CPU, % of one core", f"{idle / plan.idle_seconds * 100:.2f}"],
            ["RSS, MiB", mib(rss)],
            ["peak RSS, MiB", mib(peak)],
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
    sections: list[Section], plan: Plan, elapsed: float, start: Snapshot, end: Snapshot
) -> str:
    targets = [t for s in sections for t in s.targets]
    passed = sum(t.passed for t in targets)
    lines = [
        "# Benchmark report",
        "",
        f"Written by `python bench/run.py{' --quick' if plan == QUICK else ''}` "
        f"in {elapsed / 60:.1f} minutes. {passed} of {len(targets)} targets pass.",
        "",
        *(f"- {line}" for line in machine()),
        f"- exporter source: {start.source}",
        *(
            [
                f"- **WARNING: the exporter's source changed during the run (at the end: "
                f"{end.source}); these results mix versions: run again.**"
            ]
            if end.source != start.source
            else []
        ),
        f"- load average (1 min) at start and end: {start.load:.2f} / {end.load:.2f} (the "
        "machine is shared: wall times suffer from other work, CPU times much less)",
        "",
        "## Targets",
        "",
        *table(["target", "measured", "limit", "result", "margin"], [t.row() for t in targets]),
    ]
    for section in sections:
        lines += ["", f"## {section.title}", "", *table(section.headers, section.rows)]
        if section.targets:
            lines += [
                "",
                *table(
                    ["target", "measured", "limit", "result", "margin"],
                    [t.row() for t in section.targets],
                ),
            ]
        lines += ["", *(f"- {note}" for note in section.notes)]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description="Benchmark device-cloud-exporter.")
    parser.add_argument("--quick", action="store_true", help="a ~1-minute smoke run")
    parser.add_argument("--out", type=Path, help="output folder (default: bench/results[/quick])")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    out = args.out or BENCH / "results" / ("quick" if args.quick else "")
    out.mkdir(parents=True, exist_ok=True)
    started, start = time.monotonic(), Snapshot.take()
    with tempfile.TemporaryDirectory(prefix="bench-") as work:
        latency = measure_latency(plan)
        doors, points = measure_doors(plan, Path(work))
    sections = [latency, doors, measure_load(plan), measure_idle(plan)]
    text = report(sections, plan, time.monotonic() - started, start, Snapshot.take())
    (out / "REPORT.md").write_text(text, encoding="utf-8")
    plotted = plot_doors(points, out / "cpu_per_door.png")
    progress(f"wrote {out / 'REPORT.md'}" + (" and cpu_per_door.png" if plotted else ""))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
