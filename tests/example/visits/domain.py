"""Visits: pure rules. No I/O, no clock: what a check-in changes, given what the member had."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True, slots=True)
class Visits:
    days: int
    last_day: date

    def after(self, day: date) -> Visits:
        """A check-in on `day`: a new day counts once, a day already counted (or an older one) changes nothing."""
        if day <= self.last_day:
            return self
        return Visits(self.days + 1, day)


FIRST = Visits(0, date.min)
