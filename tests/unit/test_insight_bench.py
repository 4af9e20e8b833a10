"""The insight bench's feed is what the ledger would publish, and insight's cohort buckets name the months a batch
moved (the only member-cohort rows the repository writes back)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime
from itertools import pairwise

from bench.insight import entries
from services.insight.cohorts import Buckets
from shared import keys
from shared.contracts.ledger_entries import PointsEntryPosted


def test_feed_is_a_ledgers_history() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    feed = [PointsEntryPosted.model_validate(e) for e in entries(5000, 300, seed=3, now=now)]
    assert [e.entry_id for e in feed] == list(range(1, 5001))
    assert all(a.occurred_at <= b.occurred_at for a, b in pairwise(feed))
    seq: dict[str, int] = defaultdict(int)
    balance: dict[str, int] = defaultdict(int)
    issued: set[int] = set()
    expired: set[int] = set()
    for e in feed:
        seq[e.member_id] += 1
        balance[e.member_id] += e.amount
        assert (e.seq, e.balance_after) == (seq[e.member_id], balance[e.member_id])
        assert e.balance_after >= 0
        if e.kind == "earn":
            assert e.amount > 0 and e.lots and e.lots[0].lot_id is not None
            issued.add(e.lots[0].lot_id)
        else:
            assert e.amount < 0 and e.kind in ("redeem", "expire")
        if e.kind == "expire":
            lot = keys.parse_lot_expiry(e.idempotency_key)
            assert lot in issued and lot not in expired
            expired.add(lot)
    kinds = {k: sum(e.kind == k for e in feed) for k in ("earn", "redeem", "expire")}
    assert all(kinds.values()), kinds


def test_buckets_name_the_months_they_moved() -> None:
    jan, feb, mar = date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1)
    buckets = Buckets(open={jan: 100, feb: 50})
    assert not buckets.changed
    buckets.take(100, mar)  # all of January, oldest first
    assert buckets.moved == {jan} and buckets.open == {feb: 50}
    buckets.add(mar, 30)
    assert buckets.moved == {jan, mar} and buckets.open == {feb: 50, mar: 30}
    assert buckets.changed
