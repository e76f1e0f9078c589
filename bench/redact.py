"""What log masking costs: `redact()` on a typical line with few and many secrets registered,
and a LaMetric scrape of an account whose devices all carry an `api_key`.

    python bench/redact.py                      # redact() with 10 and 10,000 secrets held
    python bench/redact.py --devices 50000 --scrapes 4   # plus scrapes of a big LaMetric fleet

In-process, on loopback (exporter.simulator). Not part of the test suite; timings depend on the
machine. Works against older versions of exporter.secret too (for before/after figures).
"""

from __future__ import annotations

import argparse
import secrets
import time
import timeit

from exporter import secret
from exporter.secret import Secret, redact

LINE = (
    'level=warn logger=exporter.engine msg="collection failed" source=parqex account=home '
    'reason=http_5xx error="HTTP 502 from GET /oauth/v1/endpoints/sync: an HTML page (502 Bad '
    'Gateway)" next_attempt_seconds=30'
)


def redact_cost(held: int, repeat: int = 2_000) -> tuple[float, float]:
    """(seconds to register `held` secrets, microseconds per redact() of LINE)."""
    start = time.perf_counter()
    keep = [Secret(secrets.token_hex(32)) for _ in range(held)]
    redact(LINE)  # the first call after a change pays for rebuilding what masks
    registered = time.perf_counter() - start
    per_call = min(timeit.repeat(lambda: redact(LINE), number=repeat, repeat=5)) / repeat
    del keep
    return registered, per_call * 1e6


def scrape_times(devices: int, scrapes: int) -> list[float]:
    from exporter.config import Config
    from exporter.engine import Engine
    from exporter.scrape import Scraper
    from exporter.simulator import SimulatedCloud
    from exporter.simulator.data import generate_lametric_devices, generate_lametric_user

    token = "bench-lametric-token-7Qx9"
    times = []
    with SimulatedCloud(parqex_token=None, lametric_token=None) as sim:
        fleet = generate_lametric_devices(devices)
        sim.add_lametric_account(token, user=generate_lametric_user(devices), devices=fleet)
        config = Config.model_validate(
            {
                "lametric": {"base_url": sim.url, "accounts": [{"name": "big", "token": token}]},
                "collection": {"timeout_seconds": 120, "max_response_bytes": 1 << 30},
            }
        )
        engine = Engine(config)
        engine.start()
        try:
            for _ in range(scrapes):
                started = time.perf_counter()
                Scraper(engine).render(accept=None, accept_encoding=None, timeout_header="130")
                times.append(time.perf_counter() - started)
        finally:
            engine.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=0, help="LaMetric devices (0: skip)")
    parser.add_argument("--scrapes", type=int, default=3)
    args = parser.parse_args()
    for held in (10, 10_000):
        registered, micros = redact_cost(held)
        print(f"{held:>6} secrets held: registering {registered:.2f} s, redact() {micros:.1f} µs")
    if hasattr(secret, "registered"):
        print(f"registered after they were dropped: {secret.registered()}")
    if args.devices:
        times = scrape_times(args.devices, args.scrapes)
        print(f"{args.devices} devices: scrape seconds " + ", ".join(f"{t:.2f}" for t in times))


if __name__ == "__main__":
    main()
