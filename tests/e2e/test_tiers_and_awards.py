"""Tier multipliers and manual awards through Kafka, under the shipped example programmes.

A member's purchases earn the multiplier of the tier the tiers service had announced for the time each purchase
happened (a late purchase is judged by its own time), a refund takes the tier's points back with the rest, and
manual awards are paid only from sources the programme trusts, within its limit per award and its monthly cap,
once per award id."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest

from shared.contracts import topics
from shared.contracts.tiers import TierChanged
from shared.simulation import purchase_event
from tests.support import STRUCTURED, World, headers_of, read_all, send, wait_for

pytestmark = pytest.mark.e2e
SHANGHAI = timezone(timedelta(hours=8))
SILVER_FROM = datetime(2026, 10, 1, tzinfo=SHANGHAI)
GOLD_FROM = datetime(2026, 10, 10, tzinfo=SHANGHAI)
AWARD = "jifen.points.awarded.v1"


def cloud_event(kind: str, event_id: str, source: str, at: datetime, data: dict[str, Any]) -> bytes:
    return orjson.dumps({"specversion": "1.0", "id": event_id, "source": source, "type": kind,
                         "time": at.isoformat(), "data": data})


def tier(event_id: str, at: datetime, name: str, multiplier: str) -> tuple[bytes, bytes, Any]:
    data = {"program_id": "retail", "member_id": "gus", "tier": name, "earn_multiplier": multiplier}
    return b"gus", cloud_event(TierChanged.TYPE, event_id, "jifen.tiers", at, data), STRUCTURED


def purchase(event_id: str, at: datetime) -> tuple[bytes, bytes, Any]:
    # A weekday purchase without categories: the example's weekend and wine campaigns do not apply.
    body = purchase_event(event_id, "pos://store-1", at, "gus", f"order-{event_id}", Decimal("100.00"), [],
                          program_id="retail")
    return b"gus", orjson.dumps(body), STRUCTURED


def award(event_id: str, source: str, member: str, program: str, award_id: str, points: int,
          at: datetime) -> tuple[bytes, bytes, Any]:
    data = {"program_id": program, "member_id": member, "award_id": award_id, "points": points,
            "reason": "goodwill for a late delivery", "awarded_by": "agent-7"}
    return member.encode(), cloud_event(AWARD, event_id, source, at, data), STRUCTURED


async def test_tier_multipliers_follow_the_tier_held_at_purchase_time(world: World) -> None:
    ledger, _earn = await world.start_ledger_and_earn()
    await send(world.infra.bootstrap, world.topic(topics.TIERS), [tier("t-1", SILVER_FROM, "silver", "1.2"),
                                                                  tier("t-2", GOLD_FROM, "gold", "1.5")])

    async def tiers_known() -> bool:
        conn = await world.db()
        try:
            return await conn.fetchval("SELECT count(*) FROM earn.member_tiers WHERE member_id = 'gus'") == 2
        finally:
            await conn.close()

    await wait_for(tiers_known, what="earn to record gus's tiers")
    await send(world.infra.bootstrap, world.topic(topics.PURCHASES), [
        purchase("p-0", SILVER_FROM - timedelta(days=1, hours=-10)),  # before any tier: ×1
        purchase("p-1", SILVER_FROM + timedelta(days=5, hours=10)),  # silver: +20
        purchase("p-2", GOLD_FROM + timedelta(days=2, hours=10)),  # gold: +50
        purchase("p-3", SILVER_FROM + timedelta(days=6, hours=10)),  # sent late, happened while silver: +20
    ])

    async def entries(expected: int) -> list[dict[str, Any]] | None:
        status, page = ledger.get("/v1/programs/retail/members/gus/entries?limit=100")
        return page["entries"] if status == 200 and len(page["entries"]) >= expected else None

    found = await wait_for(lambda: entries(7), what="gus's purchase credits")
    earned = sorted((e["source_event_id"].split("|")[1], e["rule_id"], e["amount"]) for e in found)
    assert earned == [("p-0", "base", 100), ("p-1", "base", 100), ("p-1", "tier", 20), ("p-2", "base", 100),
                      ("p-2", "tier", 50), ("p-3", "base", 100), ("p-3", "tier", 20)]
    gold = next(e for e in found if e["rule_id"] == "tier" and e["amount"] == 50)
    assert gold["details"]["rule"]["why"] == "×1.5 for tier gold"

    # Refunding the gold purchase takes back its base and its tier points; the other orders keep theirs.
    refund = {"specversion": "1.0", "id": "r-2", "source": "pos://store-1", "type": "jifen.purchase.refunded.v1",
              "time": (GOLD_FROM + timedelta(days=3)).isoformat(),
              "data": {"program_id": "retail", "member_id": "gus", "order_id": "order-p-2", "refund_id": "r-2",
                       "currency": "CNY", "total": "100.00"}}
    await send(world.infra.bootstrap, world.topic(topics.PURCHASES), [(b"gus", orjson.dumps(refund), STRUCTURED)])
    after = await wait_for(lambda: entries(9), what="the refund's reversals")
    reversed_ = sorted((e["rule_id"], e["amount"]) for e in after if e["kind"] == "reversal")
    assert reversed_ == [("base", -100), ("tier", -50)]
    status, balance = ledger.get("/v1/programs/retail/members/gus/balance")
    assert status == 200 and balance["available"] == 100 + 120 + 120


async def test_manual_awards_are_paid_only_from_trusted_sources_within_limits(world: World) -> None:
    ledger, _earn = await world.start_ledger_and_earn()
    at = datetime(2026, 11, 20, 10, tzinfo=SHANGHAI)
    await send(world.infra.bootstrap, world.topic(topics.TASKS), [
        award("a-1", "crm://service-desk", "gus", "retail", "case-1", 300, at),  # paid
        award("a-2", "pos://store-1", "gus", "retail", "case-2", 50, at),  # a till may not award points
        award("a-3", "crm://service-desk", "gus", "retail", "case-3", 600, at),  # over the 500 per award
        award("a-4", "crm://service-desk", "gus", "retail", "case-1", 300, at),  # case-1 resubmitted
        # Staff: a manager's bonus is capped at 2000 per person per month.
        award("s-1", "hr://portal", "sam", "staff", "bonus-1", 1000, at),
        award("s-2", "hr://portal", "sam", "staff", "bonus-2", 800, at),
        award("s-3", "hr://portal", "sam", "staff", "bonus-3", 500, at),  # only 200 of it fit
    ])

    async def lifetime(program: str, member: str, expected: int) -> bool:
        status, body = ledger.get(f"/v1/programs/{program}/members/{member}/balance")
        return status == 200 and body["lifetime_earned"] == expected

    await wait_for(lambda: lifetime("retail", "gus", 300), what="gus's goodwill points")
    await wait_for(lambda: lifetime("staff", "sam", 2000), what="sam's capped bonuses")
    dlq = await read_all(world.infra.bootstrap, world.topic(topics.dlq(topics.TASKS)), expect=3)
    assert sorted(headers_of(r)["jifen-dlq-reason"] for r in dlq) == ["award_too_large", "duplicate_award",
                                                                     "untrusted_source"]
    status, page = ledger.get("/v1/programs/staff/members/sam/entries?limit=10")
    assert status == 200
    last = next(e for e in page["entries"] if e["source_event_id"] == "hr://portal|s-3")
    assert (last["amount"], last["details"]["capped"]["wanted"], last["details"]["awarded_by"]) == (200, 500, "agent-7")
