"""A simulated ParqEx + LaMetric cloud: a real HTTP server on loopback.

The exporter reads two vendor clouds that need real accounts and real hardware. This package
imitates the parts of both APIs the exporter uses (ParqEx ``/sync`` and token refresh,
LaMetric ``users/me`` endpoints and token refresh) closely enough that demo mode, system tests
and benchmarks run the real exporter code against it with only a different base URL. Tests
can also change device state, inject latency and faults, and observe the traffic (concurrency
included), either from Python through :class:`SimulatedCloud` or, from another process, over
HTTP under ``/_sim/``. Only the standard library is used, so it runs wherever the exporter does.

Modules: :mod:`.cloud` (the simulation), :mod:`.server` (HTTP plumbing), :mod:`.control` (the
``/_sim/`` API), :mod:`.data` (seed and generated devices), :mod:`.cli` (``python -m``).
"""

from exporter.simulator.cli import main
from exporter.simulator.cloud import SimulatedCloud
from exporter.simulator.server import RecordedRequest

__all__ = ["RecordedRequest", "SimulatedCloud", "main"]
