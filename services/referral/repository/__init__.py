"""The referral service's tables, one module per aggregate: `members` (members, fingerprints, purchases, refunds),
`referrals` (referrals and their verdicts), `credits` (what the service asked of the ledger), `codes`, and the
read side's `stats` and `invariants`. Every write is one multi-row statement per table and batch.

Here: what every module shares, and the programme lock that serialises judging."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import asyncpg

from shared import keys
from shared.db import advisory_key


def columns(rows: Sequence[tuple[object, ...]], width: int) -> list[list[object]]:
    """Rows as columns, for `unnest`."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


async def lock(db: asyncpg.Connection, schema: str, program_ids: Iterable[str]) -> None:
    """Judging is serialised per programme, across processes: a referrer's referrals arrive on several partitions
    (each keyed by its referee), and the cap, the bonus and velocity by device count across members. Taken before
    a batch stores its facts, so what one batch stores is seen by the next batch's judging. In name order, so two
    batches of several programmes cannot deadlock."""
    for program_id in sorted(set(program_ids)):
        await db.execute("SELECT pg_advisory_xact_lock($1)", advisory_key(keys.referral_lock(schema, program_id)))
