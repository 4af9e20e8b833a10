"""The tiers service's HTTP answers with their OpenAPI examples, and the error answers its routes document."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.http import error_responses

# A programme no file defines (the one wording of `Catalogue.why_not`), and one without a `tiers` section.
ERRORS: dict[int | str, dict[str, Any]] = error_responses(401, 403, 404, 422, 503, reasons={404: {
    "unknown_program": "no programme 'defualt' (the programmes are default, retail, staff, starbucks)",
    "no_tiers": "programme 'staff' has no tiers"}})


class Qualifying(BaseModel):
    metric: str = Field(description="points_earned, spend or purchases")
    value: Decimal
    window_start: datetime
    window_end: datetime


class NextTier(BaseModel):
    tier: str
    needed: Decimal = Field(description="how much more of the metric, in the current window, reaches it")


class Keep(BaseModel):
    needed: Decimal = Field(description="how much more of the metric, in the window the review judges, keeps the tier")
    by: datetime = Field(description="the end of the tier period, when the review judges it")


class TierOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"program_id": "default", "member_id": "vip-0", "tier": "gold", "since": "2026-06-02T11:20:00Z",
         "valid_until": "2027-06-02T11:20:00Z", "manual": False,
         "qualifying": {"metric": "points_earned", "value": "6420", "window_start": "2025-11-24T08:00:00Z",
                        "window_end": "2026-11-24T08:00:00Z"},
         "next": {"tier": "diamond", "needed": "13580"}, "keep": {"needed": "1900", "by": "2027-06-02T11:20:00Z"},
         "benefits": ["×1.5 points", "priority service", "event invitations"], "earn_multiplier": "1.5"}]})

    program_id: str
    member_id: str
    tier: str
    since: datetime | None = Field(description="when the member reached the tier (none: never changed)")
    valid_until: datetime | None = Field(description="the end of the tier period (none: never reviewed)")
    manual: bool = Field(description="set by hand (jifen.tier.assigned.v1) until valid_until")
    qualifying: Qualifying
    next: NextTier | None
    keep: Keep | None
    benefits: list[str]
    earn_multiplier: Decimal


class ChangeOut(BaseModel):
    seq: int
    at: datetime
    tier: str
    previous_tier: str
    reason: str
    detail: str | None
    valid_until: datetime | None
    qualifying_value: Decimal


class HistoryOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"changes": [
        {"seq": 2, "at": "2026-06-02T11:20:00Z", "tier": "gold", "previous_tier": "silver", "reason": "upgrade",
         "detail": None, "valid_until": "2027-06-02T11:20:00Z", "qualifying_value": "5030"},
        {"seq": 1, "at": "2026-02-10T09:05:00Z", "tier": "silver", "previous_tier": "normal", "reason": "upgrade",
         "detail": None, "valid_until": "2027-02-10T09:05:00Z", "qualifying_value": "1010"}],
        "next_before_seq": None}]})

    changes: list[ChangeOut]
    next_before_seq: int | None


class LevelOut(BaseModel):
    tier: str
    threshold: Decimal
    earn_multiplier: Decimal
    benefits: list[str]
    grace_days: int
    members: int = Field(description="members the tiers service knows at this tier")


class LevelsOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"program_id": "default", "version": 1, "metric": "points_earned", "window": "rolling 12 months",
         "downgrade": "to_qualifying", "warn_days": 30, "levels": [
             {"tier": "normal", "threshold": "0", "earn_multiplier": "1", "grace_days": 0, "members": 6175,
              "benefits": ["1 point per yuan", "birthday bonus"]},
             {"tier": "silver", "threshold": "1000", "earn_multiplier": "1.25", "grace_days": 0, "members": 207,
              "benefits": ["×1.25 points", "member prices"]},
             {"tier": "gold", "threshold": "5000", "earn_multiplier": "1.5", "grace_days": 30, "members": 76,
              "benefits": ["×1.5 points", "priority service", "event invitations"]},
             {"tier": "diamond", "threshold": "20000", "earn_multiplier": "2", "grace_days": 30, "members": 8,
              "benefits": ["×2 points", "priority service", "event invitations", "a personal shopper"]}]}]})

    program_id: str
    version: int
    metric: str
    window: str
    downgrade: str
    warn_days: int
    levels: list[LevelOut]
