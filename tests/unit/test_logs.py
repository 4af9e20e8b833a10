"""A client library that repeats itself while the broker is down is said once, then counted."""

from __future__ import annotations

import io
import logging

import orjson
from prometheus_client import CollectorRegistry

from shared.logs import JsonFormatter, Repeats, RepeatsCollector


def test_a_flood_of_the_same_broker_error_is_one_line_then_a_count_a_minute() -> None:
    now = [0.0]
    repeats = Repeats(clock=lambda: now[0])
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter("earn"))
    handler.addFilter(repeats)
    logger = logging.getLogger("aiokafka.test-flood")
    logger.propagate = False
    logger.addHandler(handler)
    ours = logging.getLogger("shared.consumer.test-flood")
    ours.propagate = False
    ours.addHandler(handler)
    try:
        # 60 lines a second for two minutes and a half, as aiokafka does with the broker down (1,521 lines in 20 s
        # measured on this machine), two kinds of them; Jifen's own lines are never held back.
        for tick in range(150 * 60):
            now[0] = tick / 60
            logger.error("Unable connect to node with id %s: %s", 1, "Connect call failed")
            if tick % 2:
                logger.error("Unable to update metadata from %s", [1])
        ours.warning("transient failure; batch will be retried")
        ours.warning("transient failure; batch will be retried")
        now[0] = 150 + 301  # quiet for longer than five minutes: the next one is news again
        logger.error("Unable connect to node with id %s: %s", 1, "Connect call failed")
    finally:
        logger.removeHandler(handler)
        ours.removeHandler(handler)
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    connect = [line for line in lines if line["msg"].startswith("Unable connect")]
    assert [line.get("repeated") for line in connect] == [None, 3600, 3600, None]  # first, at 60 s, at 120 s, news
    assert sum(1 for line in lines if line["msg"].startswith("Unable to update")) == 3
    assert [line["logger"] for line in lines].count("shared.consumer.test-flood") == 2
    assert len(lines) == 4 + 3 + 2
    registry = CollectorRegistry()
    registry.register(RepeatsCollector("earn", repeats))
    held = registry.get_sample_value("jifen_log_repeats_suppressed_total", {"service": "earn",
                                                                            "logger": "aiokafka.test-flood"})
    sent = 150 * 60 + 150 * 30 + 1
    assert held == sent - 7  # every aiokafka line but the seven that went through
