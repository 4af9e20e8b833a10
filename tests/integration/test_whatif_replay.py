"""The what-if against the ledger, on the fast tier: a generated feed with a weekly cap, a daily budget, check-in
streaks, a tier change and refunds spanning the period's start goes through earn and the ledger (shared/testing.py
Pipeline); the same events given to the what-if with the live programme as its own draft reproduce, for the period,
exactly the points per rule and per member the ledger holds. A draft doubling one rule's rate doubles that rule's
points and changes nothing else."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import yaml

from cli.whatif import engine
from services.earn.app import spec as earn_spec
from services.earn.settings import EarnSettings
from services.ledger.app import spec as ledger_spec
from services.ledger.settings import LedgerSettings
from shared.contracts import topics
from shared.contracts.checkins import CheckinRecorded
from shared.contracts.purchases import PurchaseRefunded
from shared.contracts.tasks import TaskCompleted
from shared.contracts.tiers import TierChanged
from shared.envelope import CloudEvent, parse
from shared.simulation import purchase_event
from shared.testing import Pipeline, ServiceHarness, cloud_event
from tests.conftest import check_ledger_invariants
from tests.support import Infra

PROGRAMME: dict[str, Any] = {
    "program_id": "wi", "name": "What-if", "version": 1, "effective_from": "2026-01-01T00:00:00Z",
    "timezone": "UTC", "currency": "CNY", "point_value": "0.01",
    "purchase": {"base": {"rule_id": "base", "points_per_unit": "1"},
                 "bonuses": [{"rule_id": "tea-bonus", "skus": ["TEA"], "points": 20, "per": "unit"}]},
    "activity": {"checkin": {"rule_id": "checkin", "points": 1, "streaks": [{"days": 5, "bonus": 10}]},
                 "tasks": [{"rule_id": "review", "task_type": "review", "points": 5,
                            "cap": {"per": "day", "count": 2}}]},
    "caps": [{"rule_id": "base", "per": "week", "points": 900}],  # a week of Monday 2 November spans the start
    "budget": {"per": "day", "points": 2500},  # binding on the burst day only, in the warm-up
}
MEMBERS = [f"m{n}" for n in range(1, 7)]
FIRST = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday
START = datetime(2026, 11, 5, 12, tzinfo=UTC)  # mid-week, mid-day: caps, budget and streaks carry over
END = datetime(2026, 11, 10, tzinfo=UTC)
SOURCE = "test://whatif"


def line(sku: str, total: int, quantity: int = 1) -> dict[str, str]:
    return {"sku": sku, "category": "tea" if sku == "TEA" else "grocery", "quantity": str(quantity),
            "unit_price": str(Decimal(total) / quantity), "total": str(total)}


def feed(seed: int = 19) -> list[tuple[str, str, bytes]]:
    """(topic, member, CloudEvent bytes), oldest first."""
    rng = random.Random(seed)
    out: list[tuple[datetime, str, str, bytes]] = []
    n = 0

    def add(topic: str, member: str, at: datetime, value: bytes) -> None:
        out.append((at, topic, member, value))

    for day in range(8):
        midnight = FIRST + timedelta(days=day)
        for member in MEMBERS:
            for _ in range(rng.randint(1, 3)):
                n += 1
                at = midnight + timedelta(hours=rng.uniform(8, 20))
                lines = [line("RICE", rng.choice([40, 80, 150, 220]))]
                if rng.random() < 0.5:
                    lines.append(line("TEA", 30 * (k := rng.randint(1, 2)), k))
                total = sum(int(ln["total"]) for ln in lines)
                order = f"o-{n}"
                add(topics.PURCHASES, member, at, orjson.dumps(purchase_event(
                    f"p-{n}", SOURCE, at, member, order, Decimal(total), lines, program_id="wi")))
                if rng.random() < 0.15:  # refunded 1-3 days later: some across the period's start
                    back = at + timedelta(days=rng.uniform(1, 3))
                    add(topics.PURCHASES, member, back, cloud_event(PurchaseRefunded, f"r-{n}", back, {
                        "program_id": "wi", "member_id": member, "order_id": order, "refund_id": f"rf-{n}",
                        "currency": "CNY", "total": str(total), "lines": lines}, source=SOURCE))
            if member in ("m1", "m2", "m3") or rng.random() < 0.5:  # streaks of some, broken runs of others
                at = midnight + timedelta(hours=7)
                add(topics.CHECKINS, member, at, cloud_event(CheckinRecorded, f"c-{member}-{day}", at, {
                    "program_id": "wi", "member_id": member, "day": at.date().isoformat()}, source=SOURCE))
            if member == "m2":
                for k in range(3):  # the third a day is capped
                    at = midnight + timedelta(hours=21, minutes=k)
                    add(topics.TASKS, member, at, cloud_event(TaskCompleted, f"t-{day}-{k}", at, {
                        "program_id": "wi", "member_id": member, "task_id": f"rv-{day}-{k}",
                        "task_type": "review"}, source=SOURCE))
    # A burst on the first day that the budget cuts.
    for k, member in enumerate(MEMBERS):
        at = FIRST + timedelta(hours=22, minutes=k)
        add(topics.PURCHASES, member, at, orjson.dumps(purchase_event(
            f"burst-{k}", SOURCE, at, member, f"burst-{k}", Decimal(600), [line("RICE", 600)], program_id="wi")))
    # m3 reaches silver (×1.5) on the 4th; an order resent under a new id is refused.
    silver = FIRST + timedelta(days=2)
    add(topics.TIERS, "m3", silver, cloud_event(TierChanged, "tier-m3-1", silver, {
        "program_id": "wi", "member_id": "m3", "tier": "silver", "earn_multiplier": "1.5"}, source="jifen.tiers"))
    resent = START + timedelta(hours=1)
    add(topics.PURCHASES, "m1", resent, orjson.dumps(purchase_event(
        "p-again", SOURCE, resent, "m1", "o-1", Decimal(40), [line("RICE", 40)], program_id="wi")))
    out.sort(key=lambda row: row[0])
    return [(topic, member, value) for _, topic, member, value in out]


async def ledger_and_history(infra: Infra, folder: Path) -> tuple[list[CloudEvent], list[dict[str, Any]]]:
    """The feed through earn and the ledger, one event a batch (as it would arrive); the history as the what-if
    reads it (the inbound events and the tiers' announcement, then the ledger's entries), and the entries."""
    dsn = await infra.new_database("whatif_")
    history: list[CloudEvent] = []
    posted: list[CloudEvent] = []
    async with Pipeline(ServiceHarness(earn_spec(EarnSettings(programmes_dir=folder)), dsn),
                        ServiceHarness(ledger_spec(LedgerSettings(programmes_dir=folder)), dsn)) as pipeline:
        for topic, member, value in feed():
            out = await pipeline.send(topic, value, key=member)
            history.append(parse(value, []))
            posted += [parse(m.value, m.headers) for m in out.on(topics.LEDGER_ENTRIES)]
        rows = await pipeline["ledger"].query(
            "SELECT e.kind, CASE WHEN e.to_account_id = e.account_id THEN e.amount ELSE -e.amount END AS amount, "
            "e.occurred_at, e.rule_id, a.member_id, "
            "(SELECT o.occurred_at FROM entries o WHERE o.id = e.corrects_entry_id) AS credited_at "
            "FROM entries e JOIN accounts a ON a.id = e.account_id "
            "WHERE a.program_id = 'wi' AND a.kind = 'member'")
    await check_ledger_invariants(dsn)
    history += sorted(posted, key=lambda e: e.time)
    return history, [dict(r) for r in rows]


async def test_the_live_programme_as_its_own_draft_reproduces_the_ledger_and_doubling_a_rule_doubles_it(
        infra: Infra, tmp_path: Path) -> None:
    folder = tmp_path / "programmes"
    folder.mkdir()
    (folder / "wi.yaml").write_text(yaml.safe_dump(PROGRAMME))
    history, entries = await ledger_and_history(infra, folder)
    in_period = [e for e in entries if START <= e["occurred_at"] < END]
    issued, taken_back, by_member = Counter[str](), Counter[str](), Counter[str]()
    for e in in_period:
        if e["kind"] == "earn":
            issued[e["rule_id"]] += e["amount"]
        elif e["kind"] == "reversal":
            taken_back[e["rule_id"]] -= e["amount"]
        by_member[e["member_id"]] += e["amount"]
    # The feed did reach every rule, the cap, the budget, a streak, the tier and refunds in the period.
    # (The 5-day streak ends on the 6th: four of its days are before the period.)
    assert {"base", "tea-bonus", "checkin", "checkin-streak-5", "review", "tier"} <= set(issued)
    assert taken_back["base"] > 0
    capped = [e for e in entries if e["kind"] == "earn" and e["occurred_at"] >= FIRST + timedelta(hours=22)
              and e["occurred_at"] < FIRST + timedelta(days=1)]
    assert sum(e["amount"] for e in capped) < 6 * 600  # the budget and the weekly cap cut the burst

    same = await engine.run(history, program_id="wi", folder=folder, draft=folder / "wi.yaml", start=START, end=END)
    assert +same.draft.issued_by_rule == issued and +same.live.issued_by_rule == issued
    assert +same.draft.taken_back_by_rule == taken_back and +same.live.taken_back_by_rule == taken_back
    assert +same.draft.by_member == +by_member and +same.live.by_member == +by_member
    assert same.rules_differing() == [] and same.members_differing() == []
    # Liability at the end: every member's balance, as the ledger holds it (nothing was redeemed).
    assert same.live.liability == same.draft.liability == sum(e["amount"] for e in entries
                                                              if e["occurred_at"] < END)
    assert same.live.revenue > 0 and any("version 2" in note for note in same.notes)

    # The tea bonus's rate doubled: that rule's points double, every other rule's stay.
    (tmp_path / "double.yaml").write_text(yaml.safe_dump({
        "based_on": 1, "purchase": {"bonuses": [{"rule_id": "tea-bonus", "points": 40}]}}))
    doubled = await engine.run(history, program_id="wi", folder=folder, draft=tmp_path / "double.yaml",
                               start=START, end=END)
    assert doubled.draft.issued_by_rule["tea-bonus"] == 2 * issued["tea-bonus"]
    # A refund in the period of an order bought before it takes back what the version then in force gave.
    assert doubled.draft.taken_back_by_rule["tea-bonus"] == sum(
        -e["amount"] * (2 if e["credited_at"] >= START else 1) for e in in_period
        if e["kind"] == "reversal" and e["rule_id"] == "tea-bonus")
    assert 0 < taken_back["tea-bonus"] < doubled.draft.taken_back_by_rule["tea-bonus"]
    others = set(issued) - {"tea-bonus"}
    assert {r: doubled.draft.issued_by_rule[r] for r in others} == {r: issued[r] for r in others}
    assert {r: doubled.draft.taken_back_by_rule[r] for r in others} == {r: taken_back[r] for r in others}
    assert doubled.live.issued_by_rule == same.live.issued_by_rule
    assert [rule for rule, _, _ in doubled.rules_differing()] == ["tea-bonus"]
    assert doubled.draft.liability - doubled.live.liability == doubled.draft.net_issued - doubled.live.net_issued > 0
