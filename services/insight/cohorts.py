"""Cohorts by issue month, pure: each member's points still open per issue month, spent oldest first.

The ledger spends a member's soonest-expiring lots first; insight sees each entry's amount but not the lots it
took, so it charges an expiry to the issue month of the lot that expired (named by the sweeper's key) and every
other debit to the member's oldest open months first. Where expiry follows the issue date (a fixed validity, or a
yearly reset) that is the ledger's own order. A debit beyond what is open is debt, charged to the month it happened
in and repaid by the member's next credits, as the ledger repays it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

# What a debit's kind makes of the points it takes from a cohort.
OUTCOMES = {"redeem": "redeemed", "expire": "expired", "transfer_out": "transferred", "reversal": "reversed",
            "cancel": "reversed", "adjust_debit": "adjusted"}


def outcome_of(kind: str) -> str:
    return OUTCOMES.get(kind, "other")


@dataclass
class Buckets:
    """A member's open points by issue month (first of the month). Negative: debt charged to that month."""

    open: dict[date, int] = field(default_factory=dict)
    # The months whose open points this batch moved: only their rows are written back (a zeroed one is deleted).
    moved: set[date] = field(default_factory=set)

    @property
    def changed(self) -> bool:
        return bool(self.moved)

    def add(self, month: date, amount: int) -> list[tuple[date, int]]:
        """New points of `month`: they repay debts first (oldest first), as the ledger does; returns the repaid
        (debt month, points)."""
        repaid = []
        for debt_month in sorted(m for m, v in self.open.items() if v < 0):
            part = min(-self.open[debt_month], amount)
            if part <= 0:
                break
            self._move(debt_month, part)
            repaid.append((debt_month, part))
            amount -= part
        if amount:
            self._move(month, amount)
        return repaid

    def take(self, amount: int, month: date, first: date | None = None) -> list[tuple[date, int]]:
        """Take `amount`: from `first` (an expiring lot's own month) when given, then oldest open months; what is
        left is debt charged to `month`. Returns (cohort, points) taken."""
        order = sorted(m for m, v in self.open.items() if v > 0)
        if first is not None and first in order:
            order.remove(first)
            order.insert(0, first)
        taken = []
        for cohort in order:
            if amount <= 0:
                break
            part = min(self.open[cohort], amount)
            self._move(cohort, -part)
            taken.append((cohort, part))
            amount -= part
        if amount > 0:
            self._move(month, -amount)
            taken.append((month, amount))
        return taken

    def _move(self, month: date, amount: int) -> None:
        self.moved.add(month)
        value = self.open.get(month, 0) + amount
        if value:
            self.open[month] = value
        else:
            self.open.pop(month, None)
