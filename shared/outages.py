"""Outages said plainly: one line when the database or the broker stops answering, one when it answers again, with
how long it was away and how many retries and client errors there were in between (the retries themselves are
counted, not logged: `jifen_transient_failures_total`, `jifen_log_repeats_suppressed_total`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from shared.logs import REPEATS

log = logging.getLogger("jifen.outages")


@dataclass
class Dependency:
    """One thing the service needs: how to ask it whether it answers, and what the service has counted meanwhile."""

    name: str  # database, kafka
    answers: Callable[[], Awaitable[bool]]
    retries: Callable[[], float]  # a running count of retries and held-back client errors
    down_since: float | None = None
    retries_at_start: float = 0.0
    error: str = ""
    outages: int = field(default=0)

    async def check(self) -> None:
        try:
            ok = await asyncio.wait_for(self.answers(), 2.0)
            error = "" if ok else "did not answer"
        except Exception as exc:  # any failure to answer is the outage itself
            ok, error = False, f"{type(exc).__name__}: {exc}"[:300]
        now = time.monotonic()
        if not ok and self.down_since is None:
            self.down_since, self.retries_at_start, self.error = now, self.retries(), error
            self.outages += 1
            log.error(f"{self.name} unreachable: outage began", extra={"dependency": self.name, "error": error})
        elif ok and self.down_since is not None:
            lasted = now - self.down_since
            log.warning(f"{self.name} reachable again: outage ended after {lasted:.1f}s",
                        extra={"dependency": self.name, "outage_s": round(lasted, 1),
                               "retries": int(self.retries() - self.retries_at_start), "error": self.error})
            self.down_since = None


async def watch(dependencies: list[Dependency], interval_s: float = 2.0) -> None:
    """Ask each dependency every `interval_s` until cancelled, saying when an outage begins and ends."""
    while True:
        for dependency in dependencies:
            await dependency.check()
        await asyncio.sleep(interval_s)


def kafka_client_errors() -> float:
    """Client-library lines held back so far (aiokafka repeats itself while the broker is away)."""
    return float(sum(n for logger, n in REPEATS.suppressed.items() if logger.startswith("aiokafka")))
