"""Profile the exporter's scrape of one ParqEx account with N devices, in-process.

    python bench/profile_scrape.py --devices 10000 --renders 3

The simulated cloud runs in this process (a loopback HTTP server on a free port) and the real
`Engine` and `Scraper` render `/metrics` K times under cProfile. Collection runs on the
engine's own thread, so that thread gets a profiler of its own and the two statistics are
added up. Prints the top functions by cumulative time.

cProfile's default clock is wall time, so each thread's waits for the other show too: in
`{method 'poll' of 'select.epoll' objects}` (the engine's thread while `/metrics` is rendered, or
while the simulator answers) and in `{method 'acquire' of '_thread.lock' objects}` (the scrape
waiting for the collection). A CPU clock (time.thread_time) would avoid that, but costs a system
call per event and slowed the profiled run tenfold.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import threading
import time
from typing import Any

from exporter.config import Config
from exporter.engine import Engine
from exporter.scrape import Scraper
from exporter.simulator import SimulatedCloud

TOKEN = "profile-token"


def new_scraper(url: str) -> Scraper:
    config = Config.model_validate(
        {
            "parqex": {"base_url": url, "accounts": [{"name": "profile", "token": TOKEN}]},
            "collection": {"timeout_seconds": 120.0},
        }
    )
    engine = Engine(config)
    engine.start()
    return Scraper(engine)


def render(scraper: Scraper) -> int:
    body, _ = scraper.render(accept=None, accept_encoding=None, timeout_header=None)
    return len(body)


def profile_collector_thread(profiler: cProfile.Profile) -> None:
    """Profile the next thread named "collector" (the engine's) from its first call on."""

    def hook(*_: Any) -> None:
        sys.setprofile(None)
        if threading.current_thread().name == "collector":
            profiler.enable()  # replaces this hook in that thread

    threading.setprofile(hook)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000, help="N devices, 3 doors each")
    parser.add_argument("--renders", type=int, default=3, help="K profiled renders")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()

    cloud = SimulatedCloud(parqex_token=None, lametric_token=None)
    cloud.add_parqex_account(TOKEN, SimulatedCloud.generate_parqex_devices(args.devices, 3))
    url = cloud.start("127.0.0.1", 0)
    try:
        warm = new_scraper(url)  # imports and first-use costs stay out of the profile
        size = render(warm)
        warm.engine.close()

        main_profiler = cProfile.Profile()
        collector_profiler = cProfile.Profile()
        profile_collector_thread(collector_profiler)
        scraper = new_scraper(url)
        threading.setprofile(None)  # only the engine's thread, not the simulator's

        wall = time.perf_counter()
        cpu = time.process_time()
        main_profiler.enable()
        for _ in range(args.renders):
            render(scraper)
        main_profiler.disable()
        cpu = time.process_time() - cpu  # the simulator's threads included
        wall = time.perf_counter() - wall
        scraper.engine.close()  # ends the collector thread, and its profile
    finally:
        cloud.stop()

    print(
        f"{args.devices:,} devices, {size:,} bytes per scrape; {args.renders} renders: "
        f"{wall / args.renders:.2f} s wall and {cpu / args.renders:.2f} s CPU each "
        "(the in-process simulator included; the profile below is the exporter's threads only)"
    )
    stats = pstats.Stats(main_profiler)
    stats.add(collector_profiler)
    stats.sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
