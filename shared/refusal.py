"""What every refusal carries: a stable reason code (what DLQ headers, outcomes and metrics use) and a detail
saying what was wrong."""

from __future__ import annotations


class Refusal(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
