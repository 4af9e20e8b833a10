"""The what-if engine on a hand-made history: a draft lowering the silver threshold moves the members who reach it
(under the draft, from the period's start) and multiplies their later purchases, and only theirs; the draft is laid
in at the period's start over a based_on delta."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli.whatif import engine
from shared.contracts.ledger_entries import PointsEntryPosted
from shared.contracts.members import MemberEnrolled
from shared.contracts.purchases import PurchaseCompleted
from shared.contracts.tiers import TierChanged
from shared.envelope import CloudEvent

PROGRAMME: dict[str, Any] = {
    "program_id": "tw", "name": "Tiers what-if", "version": 1, "effective_from": "2026-01-01T00:00:00Z",
    "timezone": "UTC", "currency": "CNY", "point_value": "0.01",
    "purchase": {"base": {"rule_id": "base", "points_per_unit": "1"}},
    "tiers": {"metric": "points_earned", "window": {"kind": "rolling", "months": 12},
              "levels": [{"tier": "normal", "threshold": 0, "earn_multiplier": "1"},
                         {"tier": "silver", "threshold": 100000, "earn_multiplier": "1.5"}]},
}
START = datetime(2026, 11, 10, tzinfo=UTC)
END = datetime(2026, 11, 20, tzinfo=UTC)


def history() -> list[CloudEvent]:
    events: list[CloudEvent] = []

    def buy(member: str, at: datetime, total: int) -> None:
        n = len(events)
        events.append(CloudEvent(f"p-{n}", "test://tw", PurchaseCompleted.TYPE, at, {
            "program_id": "tw", "member_id": member, "order_id": f"o-{n}", "currency": "CNY",
            "total": str(total), "channel": "pos"}))

    for member in "abcd":
        at = datetime(2026, 11, 1, tzinfo=UTC)
        events.append(CloudEvent(f"e-{member}", "test://tw", MemberEnrolled.TYPE, at,
                                 {"program_id": "tw", "member_id": member}))
    day = timedelta(days=1)
    buy("a", START - 3 * day, 600)   # 600 before the period
    buy("a", START + day, 600)       # 1,200: reaches silver under the draft here (this purchase is not multiplied)
    buy("a", START + 2 * day, 200)   # ×1.5: +100
    buy("b", START - 3 * day, 300)
    buy("b", START + day, 500)       # 800: stays below 1,000
    buy("c", START - 2 * day, 1500)  # over 1,000 before the period, under the version then in force (100,000)
    buy("c", START + 3 * day, 100)   # the first event under the draft's rules: silver from here
    buy("c", START + 4 * day, 200)   # +100
    buy("c", START + 5 * day, 301)   # +150 (the half point is floored)
    buy("d", START + day, 90)
    return sorted(events, key=lambda e: e.time)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    programmes = tmp_path / "programmes"
    programmes.mkdir()
    (programmes / "tw.yaml").write_text(yaml.safe_dump(PROGRAMME))
    return programmes


async def test_a_lower_silver_threshold_moves_the_members_who_reach_it_and_multiplies_their_later_points(
        folder: Path, tmp_path: Path) -> None:
    draft = tmp_path / "silver.yaml"
    draft.write_text(yaml.safe_dump({"based_on": 1, "tiers": {"levels": [{"tier": "silver", "threshold": 1000}]}}))
    found = await engine.run(history(), program_id="tw", folder=folder, draft=draft, start=START, end=END)
    assert found.live.members_by_tier == Counter({"normal": 4})
    assert found.draft.members_by_tier == Counter({"normal": 2, "silver": 2})
    assert found.live.issued_by_rule == Counter({"base": 600 + 200 + 500 + 100 + 200 + 301 + 90})
    assert found.draft.issued_by_rule == found.live.issued_by_rule + Counter({"tier": 100 + 100 + 150})
    assert {m: (a, b) for m, a, b in found.members_differing()} == {"c": (601, 851), "a": (800, 900)}
    assert any("changes tiers" in note for note in found.notes)


async def test_the_draft_laid_in_keeps_every_version_before_the_period_and_replaces_those_in_it(
        folder: Path, tmp_path: Path) -> None:
    later = {**PROGRAMME, "version": 2, "effective_from": (START + timedelta(days=2)).isoformat(),
             "purchase": {"base": {"rule_id": "base", "points_per_unit": "3"}}}
    (folder / "tw.v2.yaml").write_text(yaml.safe_dump(later))
    draft = tmp_path / "same.yaml"
    draft.write_text(yaml.safe_dump({"based_on": 1}))
    found = await engine.run(history(), program_id="tw", folder=folder, draft=draft, start=START, end=END)
    # In force: v1 until the 12th, then v2 (×3); the draft (v1 as it was) judges the whole period at ×1.
    assert found.draft.version == 3
    assert found.draft.issued_by_rule["base"] == 600 + 200 + 500 + 100 + 200 + 301 + 90
    assert found.live.issued_by_rule["base"] == 600 + 500 + 90 + 3 * (200 + 100 + 200 + 301)
    assert any("version(s) 2" in note for note in found.notes)


def _entry(n: int, member: str, at: datetime, amount: int, balance: int, kind: str) -> CloudEvent:
    return CloudEvent(f"l-{n}", "test://ledger", PointsEntryPosted.TYPE, at, {
        "entry_id": n, "program_id": "tw", "member_id": member, "seq": n, "amount": amount, "balance_after": balance,
        "kind": kind, "idempotency_key": f"k-{n}", "cause": {"source_event_id": f"s-{n}"}, "occurred_at": at,
        "posted_at": at, "hash": "0" * 64})


async def test_a_forecast_on_another_programmes_history_does_not_count_that_programmes_balances_as_its_own(
        folder: Path, tmp_path: Path) -> None:
    """--history-of: tw's ledger says a holds 50,000 points; a new programme replaying tw's events owes only what its
    own draft issued, less what tw's members redeemed in the period."""
    from cli.whatif.forecast import readdress

    events = [*history(), _entry(1, "a", START - timedelta(days=5), 50_000, 50_000, "earn"),
              _entry(2, "a", START + timedelta(days=2), -300, 49_700, "redeem")]
    events.sort(key=lambda e: e.time)
    fresh = {**PROGRAMME, "program_id": "fresh", "effective_from": "2026-11-10T00:00:00Z", "tiers": None}
    draft = tmp_path / "fresh.yaml"
    draft.write_text(yaml.safe_dump({k: v for k, v in fresh.items() if v is not None}))
    found = await engine.run(readdress(events, "fresh"), program_id="fresh", folder=folder, draft=draft,
                             start=START, end=END, borrowed=True)
    issued = 600 + 200 + 500 + 100 + 200 + 301 + 90
    assert found.draft.issued_by_rule == Counter({"base": issued})
    assert found.draft.redeemed == 300
    assert found.draft.liability == issued - 300
    assert found.live.liability == 0
    assert any("another programme's" in note for note in found.notes)


async def test_a_purchase_earns_the_tier_its_ledger_entries_say_earn_applied_even_when_the_announcement_came_first(
        folder: Path) -> None:
    """Tier changes reach earn asynchronously: the tiers service announced silver (×1.5) for a at 10:00, but earn
    credited a's 10:05 purchase before hearing it (its entries name no tier) and her 11:00 one after (they name
    silver). The what-if of the live programme earns as earn did: no tier points, then +50."""
    at = START + timedelta(days=1, hours=10)
    silver = {"program_id": "tw", "member_id": "a", "tier": "silver", "earn_multiplier": "1.5", "reason": "upgrade"}

    def buy(n: int, when: datetime) -> CloudEvent:
        return CloudEvent(f"p-{n}", "test://tw", PurchaseCompleted.TYPE, when, {
            "program_id": "tw", "member_id": "a", "order_id": f"o-{n}", "currency": "CNY", "total": "100",
            "channel": "pos"})

    def credited(n: int, purchase: CloudEvent, tier: str | None) -> CloudEvent:
        entry = _entry(n, "a", purchase.time + timedelta(seconds=2), 100, 100 * n, "earn")
        entry.data["cause"] = {"source_event_id": purchase.event_id, "rule_id": "base",
                               **({"tier": tier} if tier else {})}
        return entry

    early, late = buy(1, at + timedelta(minutes=5)), buy(2, at + timedelta(hours=1))
    events = [CloudEvent("e-a", "test://tw", MemberEnrolled.TYPE, START, {"program_id": "tw", "member_id": "a"}),
              CloudEvent("t-1", "test://tiers", TierChanged.TYPE, at, silver),
              early, credited(1, early, None), late, credited(2, late, "silver")]
    found = await engine.run(sorted(events, key=lambda e: e.time), program_id="tw", folder=folder, draft=None,
                             start=START, end=END)
    assert found.live.issued_by_rule == Counter({"base": 200, "tier": 50})
    assert any("2 of 2 purchase(s)" in note for note in found.notes)
