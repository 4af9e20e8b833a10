"""Check-ins and tasks through Kafka under the default programme: once a day, a streak bonus on the 7th day,
caps per period, and rules a programme does not have answered in the DLQ."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import pytest

from shared.contracts import topics
from tests.support import STRUCTURED, World, headers_of, read_all, send, wait_for

pytestmark = pytest.mark.e2e
FIRST_DAY = date(2026, 11, 10)


def event(kind: str, event_id: str, at: datetime, data: dict[str, Any]) -> bytes:
    return orjson.dumps({"specversion": "1.0", "id": event_id, "source": "app://member", "type": kind,
                         "time": at.isoformat().replace("+00:00", "Z"), "data": data})


async def test_checkins_and_tasks_earn_by_the_default_programme(world: World) -> None:
    ledger, _earn = await world.start_ledger_and_earn()
    member = "erin"
    checkins = []
    for n in range(7):
        day = FIRST_DAY + timedelta(days=n)
        at = datetime(day.year, day.month, day.day, 9, tzinfo=UTC)
        checkins.append(event("jifen.checkin.recorded.v1", f"c-{n}", at, {"member_id": member, "day": day.isoformat()}))
    checkins.append(event("jifen.checkin.recorded.v1", "c-again", datetime(2026, 11, 16, 20, tzinfo=UTC),
                          {"member_id": member, "day": "2026-11-16"}))  # a second check-in on the 7th day
    noon = datetime(2026, 11, 16, 12, tzinfo=UTC)
    tasks = [event("jifen.task.completed.v1", f"review-{n}", noon, {"member_id": member, "task_id": f"r{n}",
                                                                     "task_type": "review"}) for n in range(4)]
    tasks += [event("jifen.task.completed.v1", f"profile-{n}", noon, {"member_id": member, "task_id": "p",
                                                                       "task_type": "profile"}) for n in range(2)]
    tasks.append(event("jifen.task.completed.v1", "kpi-1", noon, {"member_id": member, "task_id": "k",
                                                                  "task_type": "kpi"}))
    await send(world.infra.bootstrap, world.topic(topics.CHECKINS),
               [(member.encode(), c, STRUCTURED) for c in checkins])
    await send(world.infra.bootstrap, world.topic(topics.TASKS), [(member.encode(), t, STRUCTURED) for t in tasks])

    async def balance() -> dict[str, Any] | None:
        status, body = ledger.get(f"/v1/programs/default/members/{member}/balance")
        return body if status == 200 and body["lifetime_earned"] >= 52 else None

    # 7 check-ins + 10 for the 7-day streak + 3 reviews of 5 (the 4th capped) + the profile once.
    found = await wait_for(balance, what="check-ins and tasks to be credited")
    assert found["lifetime_earned"] == 7 + 10 + 15 + 20
    status, page = ledger.get(f"/v1/programs/default/members/{member}/entries?limit=100")
    assert status == 200
    rules = sorted(e["rule_id"] for e in page["entries"])
    assert rules == sorted(["checkin"] * 7 + ["checkin-streak-7", "profile-completed"] + ["review"] * 3)
    dlq = await read_all(world.infra.bootstrap, world.topic(topics.dlq(topics.TASKS)), expect=1)
    assert [headers_of(r)["jifen-dlq-reason"] for r in dlq] == ["no_rule"]
    conn = await world.db()
    try:
        capped = await conn.fetch("SELECT rule_id, why FROM earn.capped ORDER BY event_id")
    finally:
        await conn.close()
    assert [(r["rule_id"], r["why"]) for r in capped] == [("profile-completed", "cap reached: 1 per ever"),
                                                          ("review", "cap reached: 3 per day")]
