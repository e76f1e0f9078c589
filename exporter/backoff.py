"""When not to call a cloud again: after a 429 (for its Retry-After) and after repeated 5xx.

Neither vendor documents rate limits; comparable clouds lock a client out for an hour after
hammering. So a 429 is honoured to the second, and a cloud that keeps failing with 5xx is asked
less and less often (exponential, with jitter so HA pairs and many accounts do not synchronise).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from exporter.clients.http import UpstreamError

RETRY_AFTER_CAP_SECONDS = 3600.0  # a Retry-After beyond an hour is more likely a bug than a plan


@dataclass
class Backoff:
    base_seconds: float
    max_seconds: float
    rng: random.Random = field(default_factory=random.Random)
    streak: int = 0  # consecutive 429/5xx answers
    until: float = 0.0  # monotonic time before which the cloud is not called
    until_wall: float = 0.0  # the same moment as a Unix time, for the metric
    reason: str | None = None

    def active(self, now: float) -> str | None:
        """The reason to skip the cloud now, or None when it may be called."""
        return self.reason if now < self.until else None

    def failed(self, error: UpstreamError, now: float, now_wall: float) -> None:
        if error.reason == "rate_limited":
            self.streak += 1
            delay = (
                min(error.retry_after, RETRY_AFTER_CAP_SECONDS)
                if error.retry_after is not None
                else self._exponential(self.streak)
            )
        elif error.reason == "http_5xx":
            self.streak += 1
            if self.streak < 2:  # one 5xx is common; back off when it repeats
                return
            delay = self._exponential(self.streak - 1)
        else:
            self.streak = 0
            return
        self.until, self.until_wall, self.reason = now + delay, now_wall + delay, error.reason

    def succeeded(self) -> None:
        self.streak = 0
        self.until = self.until_wall = 0.0
        self.reason = None

    def _exponential(self, attempt: int) -> float:
        ceiling: float = min(self.max_seconds, self.base_seconds * 2 ** (attempt - 1))
        return ceiling * self.rng.uniform(0.5, 1.0)
