"""Redemption's rules, pure: prices per tier, limits per period in the programme's time zone, eligibility, the
catalogue's validation (stock, terms of each kind), the idempotency key's notion of "the same request",
cancellation windows, coupon states and expiry, coupon codes, points as payment (value, share, minimum), what a
refund gives back, and how the ledger's answers move redemptions and payments."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from services.redemption import codes, domain, paying
from services.redemption.domain import Coupon, MemberView, Past, Redemption, Usage
from services.redemption.handlers import Answer
from services.redemption.paying import Payment
from services.redemption.payments import PaymentAsk
from services.redemption.programme import PointsPayment, RedemptionProgramme, RedemptionRules, Reward
from services.redemption.redeem import Ask
from shared.contracts.ledger_entries import CommandRejected, HoldPlaced, HoldResolved
from shared.programmes import DEFAULT_FOLDER, ProgrammeError, load_file

UTC_ZONE, SHANGHAI = ZoneInfo("UTC"), ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 3, 11, 4, 0, tzinfo=UTC)  # Wednesday, 12:00 in Shanghai


def reward(**over: Any) -> Reward:
    return Reward.model_validate({"reward_id": "mug", "name": "Mug", "kind": "goods", "points": 300, **over})


def rules(**limits: Any) -> RedemptionRules:
    return RedemptionRules.model_validate({"limits": limits})


def past(at: datetime, reward_id: str = "mug", quantity: int = 1, points: int = 300) -> Past:
    return Past(reward_id, quantity, points, at)


def test_a_member_pays_the_price_of_their_tier_and_the_base_price_without_one() -> None:
    r = reward(points_by_tier={"gold": 250, "diamond": 200})
    assert [r.price(t) for t in (None, "normal", "silver", "gold", "diamond")] == [300, 300, 300, 250, 200]


@pytest.mark.parametrize(("per", "at", "start"), [
    # 01:30 on Thursday 12 March in Shanghai is still Wednesday 11 March in UTC
    ("day", datetime(2026, 3, 11, 17, 30, tzinfo=UTC), datetime(2026, 3, 12, tzinfo=SHANGHAI)),
    ("week", datetime(2026, 3, 11, 17, 30, tzinfo=UTC), datetime(2026, 3, 9, tzinfo=SHANGHAI)),  # Monday
    ("week", datetime(2026, 3, 15, 16, 30, tzinfo=UTC), datetime(2026, 3, 16, tzinfo=SHANGHAI)),  # Sunday in UTC
    ("month", datetime(2026, 2, 28, 16, 0, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=SHANGHAI)),
    ("year", datetime(2026, 12, 31, 16, 0, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=SHANGHAI)),
    ("ever", T0, None),
])
def test_periods_are_calendar_periods_of_the_programmes_time_zone(per: Any, at: datetime,
                                                                  start: datetime | None) -> None:
    assert domain.period_start(per, at, SHANGHAI) == start


def test_usage_counts_the_local_day_the_velocity_window_and_the_rewards_own_period() -> None:
    r = reward(limit={"count": 2, "per": "week"})
    limits = rules(velocity={"count": 3, "minutes": 10}, per_day={"redemptions": 5})
    history = [past(datetime(2026, 3, 9, 1, tzinfo=UTC)),  # Monday this week (local), not today
               past(datetime(2026, 3, 10, 15, 59, tzinfo=UTC), "coupon", points=100),  # 23:59 yesterday, local
               past(datetime(2026, 3, 10, 16, 0, tzinfo=UTC), "coupon", points=100),  # local midnight: today
               past(T0 - timedelta(minutes=10)),  # just outside the 10 minutes
               past(T0 - timedelta(minutes=9), quantity=2, points=600)]
    assert domain.usage(history, r, limits, T0, SHANGHAI) == Usage(today=3, today_points=1000, recent=1, of_reward=4)
    assert domain.usage(history, r, limits, T0, UTC_ZONE).today == 2  # in UTC, local midnight was yesterday
    assert domain.history_since(r, limits, T0, SHANGHAI) == datetime(2026, 3, 9, tzinfo=SHANGHAI)
    assert domain.history_since(reward(limit={"count": 1, "per": "ever"}), limits, T0, SHANGHAI) is None


@pytest.mark.parametrize(("over", "limits", "member", "used", "quantity", "reason"), [
    ({}, {}, MemberView(), Usage(), 1, None),
    ({}, {}, MemberView(blocked=True), Usage(), 1, "blocked_member"),
    ({"available": {"starts": "2026-04-01T00:00:00+08:00"}}, {}, MemberView(), Usage(), 1, "reward_not_available"),
    ({"available": {"ends": "2026-03-11T12:00:00+08:00"}}, {}, MemberView(), Usage(), 1, "reward_not_available"),
    ({"tiers": ["gold"]}, {}, MemberView(), Usage(), 1, "not_eligible_tier"),
    ({"tiers": ["gold"]}, {}, MemberView(tier="silver"), Usage(), 1, "not_eligible_tier"),
    ({"tiers": ["gold"]}, {}, MemberView(tier="gold"), Usage(), 1, None),
    ({}, {"velocity": {"count": 3, "minutes": 5}}, MemberView(), Usage(recent=3), 1, "too_fast"),
    ({}, {"per_day": {"redemptions": 3}}, MemberView(), Usage(today=3), 1, "daily_limit"),
    ({}, {"per_day": {"points": 1000}}, MemberView(), Usage(today_points=701), 1, "daily_limit"),
    ({}, {"per_day": {"points": 1000}}, MemberView(), Usage(today_points=700), 1, None),
    ({}, {"per_day": {"points": 1000}}, MemberView(), Usage(), 4, "daily_limit"),  # 4 × 300 at once
    ({"points_by_tier": {"gold": 200}}, {"per_day": {"points": 800}}, MemberView(tier="gold"), Usage(), 4, None),
    ({"limit": {"count": 2, "per": "month"}}, {}, MemberView(), Usage(of_reward=1), 2, "member_limit"),
    ({"limit": {"count": 2, "per": "month"}}, {}, MemberView(), Usage(of_reward=1), 1, None),
])
def test_each_refusal_has_one_reason(over: dict[str, Any], limits: dict[str, Any], member: MemberView, used: Usage,
                                     quantity: int, reason: str | None) -> None:
    refused = domain.refusal(reward(**over), "mug", quantity, member, used, rules(**limits), T0)
    assert (refused.reason if refused else None) == reason
    assert refused is None or refused.detail


def test_an_unknown_reward_is_refused_before_anything_else() -> None:
    refused = domain.refusal(None, "nothing", 1, MemberView(blocked=True), Usage(), rules(), T0)
    assert refused is not None and refused.reason == "unknown_reward" and "nothing" in refused.detail


def test_the_catalogue_is_validated_terms_of_each_kind_stock_and_unique_ids(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="coupon reward needs"):
        reward(kind="coupon")
    with pytest.raises(ValidationError, match="coupon reward needs"):
        reward(coupon={"value": "5.00", "currency": "CNY", "valid_days": 30})
    with pytest.raises(ValidationError, match="cashback reward needs"):
        reward(kind="cashback")
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        reward(stock=-1)
    with pytest.raises(ValidationError, match="decimal string"):  # money is never a float
        reward(kind="coupon", coupon={"value": 5.0, "currency": "CNY", "valid_days": 30})
    with pytest.raises(ValidationError, match="end after it starts"):
        reward(available={"starts": "2026-03-02T00:00:00Z", "ends": "2026-03-01T00:00:00Z"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("program_id: x\nname: X\nversion: 1\neffective_from: '2026-01-01T00:00:00Z'\nrewards:\n"
                   "  - {reward_id: a, name: A, kind: goods, points: 1}\n  - {reward_id: a, name: B, kind: goods, "
                   "points: 2}\nredemption:\n  points_payment: {points_per_unit: '0', currency: CNY}\n")
    with pytest.raises(ProgrammeError) as caught:
        load_file(bad, RedemptionProgramme)
    assert "line 9: redemption.points_payment.points_per_unit" in str(caught.value)
    for shipped in DEFAULT_FOLDER.glob("*.yaml"):
        assert load_file(shipped, RedemptionProgramme).rewards, shipped  # every shipped programme has rewards


def test_the_seeds_tiered_coupons_are_in_the_default_catalogue() -> None:
    default = load_file(DEFAULT_FOLDER / "default.yaml", RedemptionProgramme)
    coupons = {r.points: r.coupon for r in default.rewards or () if r.coupon is not None}
    assert {p: (c.value, c.currency) for p, c in coupons.items()} == {100: (Decimal("5.00"), "CNY"),
                                                                       500: (Decimal("30.00"), "CNY")}


def test_one_idempotency_key_means_one_request_body_with_its_defaults_filled_in() -> None:
    one = Ask("default", "ann", "coupon-5", 1, "k")
    assert one.digest == Ask("default", "ann", "coupon-5", 1, "another key").digest
    assert one.digest != Ask("default", "ann", "coupon-5", 2, "k").digest
    assert one.digest != Ask("default", "bob", "coupon-5", 1, "k").digest
    paid = PaymentAsk("default", "ann", "o-1", 500, Decimal("10.0"), None, "k")
    assert paid.digest == PaymentAsk("default", "ann", "o-1", 500, Decimal("10.00"), None, "k").digest
    assert paid.digest != PaymentAsk("default", "ann", "o-1", 500, Decimal("10.01"), None, "k").digest


def redemption(status: domain.Status = "completed", cancel_hours: int | None = 24, **over: Any) -> Redemption:
    times = {"created_at": T0, "settled_at": T0, "held_at": T0, **over}
    return Redemption(redemption_id="rd_1", program_id="default", member_id="ann", reward_id="mug", kind="goods",
                      quantity=1, points=300, status=status, reward=reward(cancel_hours=cancel_hours),
                      timezone="UTC", **times)


def coupon(state: domain.CouponState = "active", expires_at: datetime = T0 + timedelta(days=30),
           used_order_id: str | None = None) -> Coupon:
    return Coupon("cp_1", "rd_1", "default", "ann", Decimal("5.00"), "CNY", T0, expires_at, state, used_order_id)


@pytest.mark.parametrize(("r", "c", "at", "reason"), [
    (redemption(), None, T0 + timedelta(hours=24), None),  # the last moment of the window
    (redemption(), None, T0 + timedelta(hours=24, seconds=1), "cancel_window_closed"),
    (redemption(cancel_hours=None), None, T0, "not_cancellable"),
    (redemption(cancel_hours=0), None, T0 + timedelta(seconds=1), "cancel_window_closed"),
    (redemption("pending"), None, T0, "redemption_pending"),
    (redemption("rejected"), None, T0, "redemption_rejected"),
    (redemption(), coupon("used", used_order_id="o-1"), T0, "coupon_used"),
    (redemption(), coupon(), T0, None),
])
def test_cancellation_windows(r: Redemption, c: Coupon | None, at: datetime, reason: str | None) -> None:
    refused = domain.cancel_refusal(r, c, at)
    assert (refused.reason if refused else None) == reason


def test_coupon_states_and_their_use() -> None:
    fresh, end = coupon(), T0 + timedelta(days=30)
    assert [fresh.status(t) for t in (T0, end - timedelta(seconds=1), end)] == ["valid", "valid", "expired"]
    assert domain.use_refusal(fresh, "o-1", T0) is None
    used = coupon("used", used_order_id="o-1")
    assert domain.use_refusal(used, "o-1", T0) is None  # the same order again: a replay
    refusals = [domain.use_refusal(c, "o-2", at) for c, at in ((used, T0), (coupon("void"), T0), (fresh, end))]
    assert [r.reason for r in refusals if r is not None] == ["coupon_used", "coupon_void", "coupon_expired"]
    # Valid to the end of the 30th day after issue, local time: issued at 23:30 on 10 March in Shanghai.
    issued = datetime(2026, 3, 10, 15, 30, tzinfo=UTC)
    assert domain.coupon_expiry(issued, 30, SHANGHAI) == datetime(2026, 4, 10, tzinfo=SHANGHAI)
    assert domain.coupon_expiry(issued, 30, UTC_ZONE) == datetime(2026, 4, 10, tzinfo=UTC)


def test_coupon_codes_carry_100_random_bits_are_found_by_hash_and_sealed_until_shown() -> None:
    made = {codes.new_code() for _ in range(2000)}
    assert len(made) == 2000
    code = made.pop()
    assert len(code) == 23 and code.count("-") == 3 and set(code.replace("-", "")) <= set(codes.ALPHABET)
    assert len(codes.ALPHABET) ** codes.LENGTH >= 2**100
    typed = code.lower().replace("-", " ").replace("0", "o").replace("1", "l")
    assert codes.code_hash(typed) == codes.code_hash(code)
    sealed = codes.seal(code, "cp_1", b"key")
    assert code.replace("-", "").encode() not in sealed
    assert codes.unseal(sealed, "cp_1", b"key") == code
    assert codes.unseal(sealed, "cp_1", b"another key") != code  # garbage, or None when not even text
    assert codes.seal(code, "cp_2", b"key") != sealed  # a pad per coupon


def test_the_coupon_key_is_made_once_and_shared(tmp_path: Path) -> None:
    key_file = tmp_path / "run" / "coupon-key"
    first = codes.load_key("", key_file)
    assert len(first) == 32 and codes.load_key("", key_file) == first
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert codes.load_key("given", key_file) == b"given"


def payment_rules(**over: Any) -> PointsPayment:
    return PointsPayment.model_validate({"points_per_unit": "100", "currency": "CNY", "min_points": 100,
                                         "max_share": "0.5", **over})


def test_points_pay_their_value_rounded_down_within_the_share_of_the_basket() -> None:
    assert paying.points_value(1999, Decimal(100), 2) == Decimal("19.99")
    assert paying.points_value(10, Decimal(3), 2) == Decimal("3.33")  # 3.333…: the member never gets more
    assert paying.points_value(150, Decimal(100), 0) == Decimal("1")
    cases = [(5000, "100.00", "CNY", None), (5001, "100.00", "CNY", "exceeds_basket_share"),
             (99, "100.00", "CNY", "below_minimum_points"), (100, "100.00", "USD", "currency_not_accepted")]
    for points, basket, currency, reason in cases:
        refused = paying.payment_refusal(points, Decimal(basket), currency, payment_rules())
        assert (refused.reason if refused else None) == reason, (points, basket)
    refused = paying.payment_refusal(100, Decimal(10), "CNY", None)
    assert refused is not None and refused.reason == "points_payment_not_offered"


def test_refunds_give_back_the_captured_points_in_proportion_adding_up_to_all_of_them() -> None:
    basket, captured = Decimal("99.99"), 1001
    back, refunded, returned = [], Decimal(0), 0
    for part in ("33.33", "33.33", "33.33", "10.00"):
        n = paying.points_to_return(captured, basket, refunded, Decimal(part), returned)
        back.append(n)
        refunded += Decimal(part)
        returned += n
    assert back == [333, 334, 334, 0] and returned == captured
    assert paying.points_to_return(1500, Decimal(100), Decimal(0), Decimal(50), 0) == 750


def test_the_ledgers_answers_move_a_redemption_once() -> None:
    pending = redemption("pending", held_at=None, settled_at=None)
    assert domain.step_of(pending, "placed", "hold") == "capture"
    pending.held_at = T0
    assert domain.step_of(pending, "placed", "hold") is None  # a second sighting captures nothing again
    assert domain.step_of(pending, "captured", "capture") == "complete"
    rejecting: list[tuple[domain.Outcome, domain.Command]] = [("refused", "hold"), ("refused", "capture"),
                                                              ("expired", "hold"), ("released", "hold")]
    assert [domain.step_of(pending, o, c) for o, c in rejecting] == ["reject"] * 4
    assert domain.step_of(pending, "refused", "cancel") is None
    for settled in ("completed", "rejected", "cancelled"):
        assert domain.step_of(redemption(settled), "captured", "capture") is None


def test_the_ledgers_answers_move_a_payment() -> None:
    def after(status: paying.PaymentStatus, outcome: domain.Outcome, command: domain.Command = "hold") -> Any:
        p = Payment("pm_1", "default", "ann", "o-1", 500, Decimal(10), "CNY", Decimal(100), 2, status, T0)
        return paying.payment_after(p, outcome, command)

    assert [after("pending", "placed"), after("capturing", "placed"), after("capturing", "captured", "capture"),
            after("voiding", "released", "void"), after("authorised", "expired"), after("pending", "refused"),
            after("capturing", "refused", "capture"), after("captured", "expired")] == [
        "authorised", None, "captured", "voided", "expired", "rejected", None, None]


def test_only_our_holds_and_commands_are_ours() -> None:
    at = datetime(2026, 3, 11, tzinfo=UTC)
    placed = HoldPlaced(hold_id="redeem:rd_1", program_id="p", member_id="m", amount=5, expires_at=at,
                        idempotency_key="redeem:rd_1:hold")
    assert Answer.placed(placed) == Answer("redeem", "rd_1", "hold", "placed", expires_at=at)
    resolved = HoldResolved(hold_id="pay:pm_1", program_id="p", member_id="m", outcome="captured", captured=4,
                            released=1, idempotency_key="pay:pm_1:capture")
    assert Answer.resolved(resolved) == Answer("pay", "pm_1", "capture", "captured", captured=4)
    refused = CommandRejected(program_id="p", member_id="m", idempotency_key="pay:pm_1:refund:r:1",
                              command_type="x", reason="entry_not_found", detail="d")
    assert Answer.refused(refused) == Answer("pay", "pm_1", "refund", "refused", "entry_not_found", "d")
    other = HoldPlaced(hold_id="bench-7", program_id="p", member_id="m", amount=5, expires_at=at,
                       idempotency_key="bench:7")
    assert Answer.placed(other) is None
    assert Answer.refused(refused.model_copy(update={"idempotency_key": "earn:e1:base"})) is None
    assert Payment("pm_1", "p", "m", "o", 1, Decimal(1), "CNY", Decimal(1), 2, "captured", at).key(
        "refund", "r" * 300).startswith("pay:pm_1:refund:sha256-")
