"""An outage is said twice: when it begins and when it ends, with its length and the retries counted meanwhile."""

from __future__ import annotations

import logging

import pytest

from shared.outages import Dependency


async def test_an_outage_is_one_line_when_it_begins_and_one_when_it_ends(caplog: pytest.LogCaptureFixture) -> None:
    up = [True, False, False, False, True, True, False, True]
    retries = [0.0]

    async def answers() -> bool:
        retries[0] += 3  # the service's retries go on meanwhile
        if not up.pop(0):
            raise OSError("connection refused")
        return True

    db = Dependency("database", answers, lambda: retries[0])
    with caplog.at_level(logging.INFO, logger="jifen.outages"):
        for _ in range(8):
            await db.check()
    said = [(r.levelname, r.getMessage().split(":")[0]) for r in caplog.records]
    assert said == [("ERROR", "database unreachable"), ("WARNING", "database reachable again"),
                    ("ERROR", "database unreachable"), ("WARNING", "database reachable again")]
    ended = caplog.records[1]
    assert ended.retries == 9 and "OSError: connection refused" in ended.error  # type: ignore[attr-defined]
    assert db.outages == 2 and db.down_since is None
