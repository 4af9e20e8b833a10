"""Insight's answers: KPIs with verdicts, the liability roll-forward, cohorts, leaderboards, segments, the watch,
experiments' arms compared."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.http import error_responses, missing_scope

UNKNOWN_PROGRAM = {"unknown_program": "no programme 'defualt' (the programmes are default, retail, staff, starbucks)"}
READ_ERRORS = error_responses(401, 404, 422, 503, reasons={404: UNKNOWN_PROGRAM, 422: {
    "invalid_period": "`from` 2026-12-01 is after `to` 2026-11-01"}}) | {403: missing_scope("read")}
SEGMENT_ERRORS = error_responses(401, 404, 422, 503, reasons={404: UNKNOWN_PROGRAM | {
    "no_rewards": "programme 'staff' has no rewards: balance bands are measured from the cheapest reward",
    "unknown_band": "no band 'middle' (the bands are below, 1-2x, 2-3x, above)"}}) | {403: missing_scope("read")}
EXPERIMENT_ERRORS = error_responses(401, 404, 422, 503, reasons={404: UNKNOWN_PROGRAM | {
    "unknown_experiment": "programme 'default' declares no experiment 'referral-51' (it declares referral-50)"}}) | {
    403: missing_scope("read")}
ADMIN_ERRORS = error_responses(400, 401, 404, 422, 503, reasons={404: UNKNOWN_PROGRAM}) | {403: missing_scope("admin")}


class KpiOut(BaseModel):
    kpi: str
    label: str
    value: Decimal | None = Field(description="none when the period has nothing to measure it by")
    unit: Literal["ratio", "points", "members", "money", "share", "count"]
    verdict: Literal["ok", "watch", "act"] | None = Field(description="against the source documents' healthy range; "
                                                                      "none for figures without one")
    healthy: str | None
    advice: str | None = Field(description="what the source documents advise when the verdict is not ok")


class SeriesPoint(BaseModel):
    period: date = Field(description="the first day of the day, week (Monday) or month")
    issued: int
    redeemed: int
    expired: int
    adjusted: int
    active_members: int
    revenue: Decimal


class RulePoints(BaseModel):
    rule_id: str
    points: int


class RewardPoints(BaseModel):
    reward_id: str
    points: int = Field(description="points redeemed on it, less what cancellations gave back")
    count: int = Field(description="units redeemed")


class TierMix(BaseModel):
    tier: str = Field(description="'' for members with no tier announced")
    members: int
    spend: Decimal
    spend_per_member: Decimal | None


class Rebate(BaseModel):
    rule_id: str
    points: int
    cost: Decimal | None = Field(description="points × point_value; none without a point value")
    revenue: Decimal = Field(description="the baskets the rule paid on, less their refunds")
    cost_share: Decimal | None = Field(description="cost ÷ revenue")


class Referrals(BaseModel):
    rewarded: int
    rejected: int
    rejected_by_reason: dict[str, int]
    revoked: int
    conversion: Decimal | None
    referee_spend_90d: Decimal


class KpisOut(BaseModel):
    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True, json_schema_extra={"examples": [{
        "program_id": "retail", "from": "2026-11-01", "to": "2026-11-30", "granularity": "week",
        "timezone": "Asia/Shanghai", "currency": "CNY", "point_value": "0.01",
        "kpis": [{"kpi": "issue_redeem_ratio", "label": "Points issued per point redeemed", "value": "3.4000",
                  "unit": "ratio", "verdict": "act", "healthy": "≤ 3:1 (watch above 2.5)",
                  "advice": "Members earn far more than they redeem: award fewer points per unit, or add cheaper "
                            "rewards so points get used (above 3:1 the rules need adjusting)."}],
        "series": [{"period": "2026-11-02", "issued": 41200, "redeemed": 9800, "expired": 0, "adjusted": 50,
                    "active_members": 312, "revenue": "48210.50"}],
        "issued_by_rule": [{"rule_id": "base", "points": 38000}],
        "redeemed_by_reward": [{"reward_id": "coupon-5", "points": 6000, "count": 60}],
        "tiers": [{"tier": "gold", "members": 40, "spend": "21000.00", "spend_per_member": "525.00"}],
        "rebates": [{"rule_id": "base", "points": 38000, "cost": "380.00", "revenue": "48210.50",
                     "cost_share": "0.0079"}],
        "referrals": {"rewarded": 12, "rejected": 3, "rejected_by_reason": {"self_referral": 2, "expired": 1},
                      "revoked": 1, "conversion": "0.8000", "referee_spend_90d": "3120.00"},
        "tasks_by_type": {"survey": 40}, "tasks_per_member_by_type": {"survey": "0.1282"}}]})

    program_id: str
    from_: date = Field(alias="from")
    to: date
    granularity: Literal["day", "week", "month"]
    timezone: str
    currency: str | None
    point_value: Decimal | None
    kpis: list[KpiOut]
    series: list[SeriesPoint]
    issued_by_rule: list[RulePoints]
    redeemed_by_reward: list[RewardPoints]
    tiers: list[TierMix]
    rebates: list[Rebate]
    referrals: Referrals
    tasks_by_type: dict[str, int]
    tasks_per_member_by_type: dict[str, Decimal] = Field(description="tasks of each type ÷ members")


class MonthOut(BaseModel):
    month: str = Field(description="YYYY-MM, in the programme's time zone")
    opening: int
    issued: int
    redeemed: int
    expired: int
    adjusted: int
    transferred: int = Field(description="in less out; zero across a programme")
    closing: int
    closing_money: Decimal | None = Field(description="closing × point_value, half up to the cent")


class LiabilityOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "program_id": "retail", "currency": "CNY", "point_value": "0.01",
        "months": [{"month": "2026-11", "opening": 0, "issued": 41200, "redeemed": 9800, "expired": 0,
                    "adjusted": 50, "transferred": 0, "closing": 31450, "closing_money": "314.50"}],
        "closing": 31450, "closing_money": "314.50"}]})

    program_id: str
    currency: str | None
    point_value: Decimal | None
    months: list[MonthOut]
    closing: int = Field(description="what members hold now: equals the ledger's summary `outstanding`")
    closing_money: Decimal | None


class CurvePoint(BaseModel):
    age: int = Field(description="months after the issue month (0: the month itself)")
    redeemed: int
    expired: int
    other: int = Field(description="reversed, transferred or adjusted away")
    outstanding: int


class CohortOut(BaseModel):
    month: str
    issued: int
    curve: list[CurvePoint]


class CohortsOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "program_id": "retail", "cohorts": [{"month": "2026-10", "issued": 1200, "curve": [
            {"age": 0, "redeemed": 100, "expired": 0, "other": 0, "outstanding": 1100},
            {"age": 1, "redeemed": 400, "expired": 0, "other": 0, "outstanding": 800}]}],
        "ultimate_breakage": "0.1800", "method": "expired so far plus …"}]})

    program_id: str
    cohorts: list[CohortOut]
    ultimate_breakage: Decimal | None
    method: str


class Leader(BaseModel):
    rank: int
    member_id: str
    points: int = Field(description="points earned in the period (not the balance)")


class LeaderboardOut(BaseModel):
    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True, json_schema_extra={"examples": [{
        "program_id": "staff", "from": "2026-11-01", "to": "2026-11-30",
        "members": [{"rank": 1, "member_id": "emp-0042", "points": 1200}]}]})

    program_id: str
    from_: date = Field(alias="from")
    to: date
    members: list[Leader]


class Band(BaseModel):
    band: Literal["below", "1-2x", "2-3x", "above"]
    low: int = Field(description="lowest balance in the band")
    high: int | None = Field(description="first balance above the band; none for the top band")
    members: int


class SegmentsOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "program_id": "retail", "cheapest_reward": 100, "bands": [
            {"band": "below", "low": 1, "high": 100, "members": 210},
            {"band": "1-2x", "low": 100, "high": 200, "members": 60},
            {"band": "2-3x", "low": 200, "high": 300, "members": 25},
            {"band": "above", "low": 300, "high": None, "members": 13}]}]})

    program_id: str
    cheapest_reward: int
    bands: list[Band]


class Preference(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"opt_out": True}]})

    opt_out: bool = Field(description="true: the member is left out of leaderboards")


class PreferenceOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"program_id": "staff", "member_id": "emp-0042", "opt_out": True}]})

    program_id: str
    member_id: str
    opt_out: bool


class BandMember(BaseModel):
    member_id: str
    balance: int


class BandMembersOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "program_id": "retail", "band": "2-3x", "low": 200, "high": 300,
        "members": [{"member_id": "m-00017", "balance": 240}, {"member_id": "m-00230", "balance": 275}],
        "next_after": None}]})

    program_id: str
    band: str
    low: int
    high: int | None
    members: list[BandMember]
    next_after: str | None = Field(description="pass as `after` for the next page; none on the last page")


class Finding(BaseModel):
    member_id: str
    reason: Literal["earning_outlier", "redemption_outlier", "redeemed_soon_after_earning", "shared_fingerprint",
                    "points_received"]
    detail: str
    found_at: datetime


class WatchOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "program_id": "retail", "members": [{"member_id": "m-77", "reason": "shared_fingerprint",
                                             "detail": "device fingerprint shared by 6 members",
                                             "found_at": "2026-12-01T03:00:00Z"}]}]})

    program_id: str
    members: list[Finding]


class ExperimentArm(BaseModel):
    arm: str
    share: Decimal = Field(description="the share of members the programme file declares for the arm")
    members: int = Field(description="members seen with an event in the experiment's window, in this arm")
    overrides: list[str] = Field(description="the programme sections the arm's overrides change")


class VersusControl(BaseModel):
    difference: Decimal = Field(description="the arm's figure less the control's")
    ci_low: Decimal | None = Field(description="the 95% interval of the difference; none when the data cannot give "
                                               "one (fewer than 2 members in an arm, or no variation at all)")
    ci_high: Decimal | None
    lift: Decimal | None = Field(description="the difference ÷ the control's figure; none when that is 0")
    significant: bool | None = Field(description="the interval excludes 0")


class ArmFigure(BaseModel):
    arm: str
    n: int = Field(description="members; for referral_conversion, the referrals judged")
    value: Decimal | None = Field(description="the mean per member, or the proportion; none with n = 0")
    standard_error: Decimal | None = Field(description="of the value; none with fewer than 2 members")
    successes: int | None = Field(description="proportions only: members who redeemed, or referrals rewarded")
    touched: bool = Field(description="the arm's overrides change a section that moves this metric")
    versus_control: VersusControl | None = Field(description="none for the control (the first arm)")


class ExperimentMetric(BaseModel):
    metric: Literal["points_per_member", "spend_per_member", "orders_per_member", "referral_points_per_member",
                    "referral_conversion", "redeemer_share", "points_redeemed_per_member"]
    label: str
    kind: Literal["mean", "proportion"]
    unit: Literal["points", "money", "count", "share"]
    arms: list[ArmFigure]


class SampleRatioOut(BaseModel):
    observed: dict[str, int] = Field(description="members per arm")
    expected: dict[str, Decimal] = Field(description="members per arm under the declared shares")
    chi_square: Decimal
    df: int
    p_value: float | None = Field(description="P(chi-square ≥ the observed one); none before any member")
    flagged: bool = Field(description="p < 0.001: the arms were not exposed alike, so no metric is to be trusted")


class ExperimentOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "program_id": "default", "experiment_id": "referral-50", "name": "Invite a friend: 20 or 50 points",
        "starts": "2026-12-01T00:00:00Z", "ends": "2027-01-01T00:00:00Z", "status": "running", "control": "a",
        "arms": [{"arm": "a", "share": "0.5", "members": 5012, "overrides": []},
                 {"arm": "b", "share": "0.5", "members": 4988, "overrides": ["referral"]}],
        "metrics": [{"metric": "referral_conversion", "label": "Referrals rewarded ÷ referrals judged (the member "
                     "as referrer)", "kind": "proportion", "unit": "share", "arms": [
                         {"arm": "a", "n": 410, "value": "0.4512", "standard_error": "0.0246", "successes": 185,
                          "touched": False, "versus_control": None},
                         {"arm": "b", "n": 702, "value": "0.5442", "standard_error": "0.0188", "successes": 382,
                          "touched": True, "versus_control": {"difference": "0.0930", "ci_low": "0.0317",
                                                              "ci_high": "0.1530", "lift": "0.2061",
                                                              "significant": True}}]}],
        "sample_ratio": {"observed": {"a": 5012, "b": 4988}, "expected": {"a": "5000.0000", "b": "5000.0000"},
                         "chi_square": "0.0576", "df": 1, "p_value": 0.810328, "flagged": False},
        "method": "means: Welch's t interval …"}]})

    program_id: str
    experiment_id: str
    name: str | None
    starts: datetime
    ends: datetime
    status: Literal["scheduled", "running", "ended"] = Field(description="at the time of the answer")
    control: str = Field(description="the first arm, which every other arm is compared with")
    arms: list[ExperimentArm]
    metrics: list[ExperimentMetric]
    sample_ratio: SampleRatioOut
    method: str
