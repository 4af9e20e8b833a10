"""JSON logs, one object per line, with whatever `extra=` fields the call site gave.

Client libraries repeat themselves while a dependency is down: aiokafka writes the same few errors 40-70 times a
second for as long as the broker is away. `Repeats` lets the first line of each kind through, then counts the
repeats (`jifen_log_repeats_suppressed_total`) and says how many there were once a minute while they go on.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import orjson
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
THROTTLED = ("aiokafka", "faststream", "kafka")  # third-party clients; Jifen's own lines say what they mean once


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class Repeats(logging.Filter):
    """Say a repeated line once, then count: a line of the same logger, level and message template as one seen in
    the last `quiet_s` seconds is suppressed, and every `report_s` seconds one of them goes through saying how many
    were held back. After `quiet_s` without it, the next one is news again."""

    def __init__(self, prefixes: tuple[str, ...] = THROTTLED, report_s: float = 60.0, quiet_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.prefixes = prefixes
        self.report_s = report_s
        self.quiet_s = quiet_s
        self.clock = clock
        self.suppressed: dict[str, int] = {}  # by logger, since the process started
        self._seen: dict[tuple[str, int, str], list[float]] = {}  # key -> [last seen, last reported, held back]

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefixes):
            return True
        now = self.clock()
        key = (record.name, record.levelno, str(record.msg))
        seen = self._seen.get(key)
        if seen is None or now - seen[0] > self.quiet_s:
            self._seen[key] = [now, now, 0]
            return True
        seen[0] = now
        if now - seen[1] < self.report_s:
            seen[2] += 1
            self.suppressed[record.name] = self.suppressed.get(record.name, 0) + 1
            return False
        record.repeated = int(seen[2]) + 1  # this line and those held back since the last report
        record.repeated_over_s = round(now - seen[1])
        seen[1], seen[2] = now, 0
        return True


class RepeatsCollector(Collector):
    """`jifen_log_repeats_suppressed_total{service,logger}` from the process's `Repeats` filter."""

    def __init__(self, service: str, repeats: Repeats) -> None:
        self.service = service
        self.repeats = repeats

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("jifen_log_repeats_suppressed", "Repeated log lines of client libraries held "
                                     "back (the first of each kind is logged, then a count once a minute)",
                                     labels=["service", "logger"])
        for logger, count in sorted(self.repeats.suppressed.items()):
            family.add_metric([self.service, logger], count)
        yield family


REPEATS = Repeats()


def configure(service: str, level: str = "INFO") -> None:
    """Every line through one JSON handler: the root's. FastStream sets up a logger of its own at import (plain text
    with colour codes, on stderr, not propagating); it is taken over here."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    handler.addFilter(REPEATS)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("faststream", "faststream.access", "uvicorn", "uvicorn.error", "uvicorn.access"):
        own = logging.getLogger(name)
        own.handlers[:] = []
        own.propagate = True
    for noisy in ("aiokafka", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
