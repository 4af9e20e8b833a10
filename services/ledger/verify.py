"""Checks the ledger's invariants from its tables: what `jifen ledger verify` and the tests rely on."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from services.ledger.domain import GENESIS_HASH, chain_hash


@dataclass
class Report:
    checked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


async def verify(db: asyncpg.Connection, program_id: str | None = None) -> Report:
    """Zero-sum per programme, stored balances equal to their entries, gapless sequences, hash chains."""
    report = Report()
    zero_sum = await db.fetch(
        """SELECT program_id, sum(delta) AS total FROM (
               SELECT program_id, amount AS delta FROM entries
               UNION ALL SELECT program_id, -amount FROM entries) AS legs
           WHERE $1::text IS NULL OR program_id = $1 GROUP BY program_id HAVING sum(delta) <> 0""", program_id)
    report.problems += [f"programme {r['program_id']}: accounts sum to {r['total']}, not 0" for r in zero_sum]
    report.checked.append("each programme's accounts sum to zero")

    balances = await db.fetch(
        """SELECT a.id, a.program_id, a.member_id, a.balance, a.last_seq,
                  coalesce(sum(CASE WHEN e.to_account_id = a.id THEN e.amount ELSE -e.amount END), 0) AS derived,
                  count(e.id) AS entries, coalesce(min(e.seq), 0) AS min_seq, coalesce(max(e.seq), 0) AS max_seq
           FROM accounts a LEFT JOIN entries e ON e.account_id = a.id
           WHERE a.kind = 'member' AND ($1::text IS NULL OR a.program_id = $1)
           GROUP BY a.id""", program_id)
    for r in balances:
        who = f"account {r['id']} ({r['program_id']}/{r['member_id']})"
        if r["balance"] != r["derived"]:
            report.problems.append(f"{who}: stored balance {r['balance']} but entries sum to {r['derived']}")
        if r["entries"] and (r["min_seq"] != 1 or r["max_seq"] != r["entries"] or r["last_seq"] != r["max_seq"]):
            report.problems.append(f"{who}: sequence not gapless (min {r['min_seq']}, max {r['max_seq']}, "
                                   f"{r['entries']} entries, account tip {r['last_seq']})")
    report.checked.append(f"{len(balances)} member balances equal the sum of their entries")
    report.checked.append("sequences are gapless from 1")

    entries = 0
    async with db.transaction():
        cursor = db.cursor(
            """SELECT e.id, e.account_id, e.seq, e.from_account_id, e.to_account_id, e.amount, e.balance_after,
                      e.kind, e.command_key, e.occurred_at, e.prev_hash, e.hash
               FROM entries e WHERE $1::text IS NULL OR e.program_id = $1 ORDER BY e.account_id, e.seq""",
            program_id, prefetch=5000)
        previous: tuple[int, bytes, int] | None = None  # (account, hash, balance)
        async for e in cursor:
            entries += 1
            if previous is None or previous[0] != e["account_id"]:
                prev_hash, prev_balance = GENESIS_HASH, 0
            else:
                prev_hash, prev_balance = previous[1], previous[2]
            signed = e["amount"] if e["to_account_id"] == e["account_id"] else -e["amount"]
            expected = chain_hash(prev_hash, account_id=e["account_id"], seq=e["seq"],
                                  from_account_id=e["from_account_id"], to_account_id=e["to_account_id"],
                                  amount=e["amount"], balance_after=e["balance_after"], kind=e["kind"],
                                  command_key=e["command_key"], occurred_at=e["occurred_at"])
            if bytes(e["prev_hash"]) != prev_hash or bytes(e["hash"]) != expected:
                report.problems.append(
                    f"entry {e['id']} (account {e['account_id']}, seq {e['seq']}): hash chain broken")
            if e["balance_after"] != prev_balance + signed:
                report.problems.append(f"entry {e['id']} (account {e['account_id']}, seq {e['seq']}): balance_after "
                                       f"{e['balance_after']} but previous {prev_balance} {signed:+d}")
            previous = (e["account_id"], bytes(e["hash"]), e["balance_after"])
    report.checked.append(f"{entries} entries: hash chains and running balances verify")
    return report
