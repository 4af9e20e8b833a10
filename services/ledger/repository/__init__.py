"""The ledger's tables and queries, one module per aggregate: `commands` (the commands seen, their outcomes, the admin
calls' commands), `books` (accounts with their lots, holds and debts: what the handler loads and stores), `entries`
(a member's entries and open holds, for the HTTP side) and `expiry` (the sweeper's due lots and holds). Hot paths are
one multi-row statement per batch (unnest arrays).

Here: the SQL of a lot's remainder, which books, entries and expiry share (and totals.py)."""

from __future__ import annotations

# A lot's remainder is derived, never stored: what allocations took, and what open holds keep. One definition for
# the rules' reads and the sweeper (verify counts on its own, so that it checks rather than repeats).
LOT_USED = "coalesce((SELECT sum(a.amount) FROM allocations a WHERE a.lot_id = l.id), 0)"
LOT_RESERVED = """coalesce((SELECT sum(r.amount) FROM hold_reservations r WHERE r.lot_id = l.id
                     AND NOT EXISTS (SELECT 1 FROM hold_resolutions s WHERE s.hold_id = r.hold_id)), 0)"""
