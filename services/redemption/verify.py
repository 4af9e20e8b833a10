"""The redemption service's own invariants, checked from its tables (the tests run it after each test, as they run
`jifen ledger verify`; a `jifen redemption verify` can call it the same way). Each problem is a sentence naming the
rows that break a rule; none means the state is consistent."""

from __future__ import annotations

import asyncpg

CHECKS: list[tuple[str, str]] = [
    ("stock left = initial + added − what pending and completed redemptions took",
     """SELECT s.program_id || '/' || s.reward_id || ': ' || s.remaining || ' left, expected '
               || (s.initial + coalesce(a.added, 0) - coalesce(t.taken, 0))
        FROM stock s
        LEFT JOIN (SELECT program_id, reward_id, sum(quantity) AS added FROM stock_additions
                   GROUP BY 1, 2) a USING (program_id, reward_id)
        LEFT JOIN (SELECT program_id, reward_id, sum(stock_taken) AS taken FROM redemptions
                   WHERE status IN ('pending', 'completed') GROUP BY 1, 2) t USING (program_id, reward_id)
        WHERE s.remaining <> s.initial + coalesce(a.added, 0) - coalesce(t.taken, 0)"""),
    ("a completed coupon redemption has its coupon",
     """SELECT r.redemption_id FROM redemptions r LEFT JOIN coupons c USING (redemption_id)
        WHERE r.kind = 'coupon' AND r.status = 'completed' AND c.coupon_id IS NULL"""),
    ("only a completed redemption's coupon can be valid or used",
     """SELECT c.coupon_id || ' (' || c.state || ') of ' || r.redemption_id || ' (' || r.status || ')'
        FROM coupons c JOIN redemptions r USING (redemption_id)
        WHERE c.state <> 'void' AND r.status NOT IN ('completed', 'pending')"""),
    ("a coupon is used on an order, with a time, or not at all",
     """SELECT coupon_id FROM coupons
        WHERE (state = 'used') <> (used_order_id IS NOT NULL AND used_at IS NOT NULL)"""),
    ("a settled redemption says when; a rejected one why; a completed one was held",
     """SELECT redemption_id || ' (' || status || ')' FROM redemptions
        WHERE (status IN ('completed', 'rejected') AND settled_at IS NULL)
           OR (status = 'rejected' AND reason IS NULL)
           OR (status IN ('completed', 'cancelled') AND held_at IS NULL)
           OR (status = 'cancelled' AND cancelled_at IS NULL)"""),
    ("a payment captures at most what was authorised, and refunds give back at most what was captured",
     """SELECT p.payment_id || ': authorised ' || p.points || ', captured ' || p.captured_points || ', returned '
               || coalesce(sum(f.points), 0)
        FROM payments p LEFT JOIN payment_refunds f USING (payment_id)
        GROUP BY p.payment_id, p.points, p.captured_points
        HAVING p.captured_points > p.points OR coalesce(sum(f.points), 0) > p.captured_points"""),
    ("only a captured payment has captured points",
     """SELECT payment_id || ' (' || status || ')' FROM payments
        WHERE (status = 'captured') <> (captured_points > 0)"""),
]


async def problems(db: asyncpg.Connection, schema: str = "redemption") -> list[str]:
    """Every broken rule, as `rule: rows`."""
    found = []
    await db.execute(f'SET search_path = "{schema}"')
    for rule, sql in CHECKS:
        rows = [r[0] for r in await db.fetch(sql + " LIMIT 20")]
        if rows:
            found.append(f"{rule}: {', '.join(rows)}")
    return found
