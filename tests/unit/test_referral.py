"""The referral rules as tables: every refusal and its reason, qualifying purchases, velocity, the cap per period in
the programme's time zone, the Kth bonus, revocation by refund, what a new verdict moves (plan), and the codes."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from services.referral.codes import ALPHABET, LENGTH, new_code, normalise
from services.referral.domain import (
    Decision,
    Group,
    Held,
    Member,
    Peer,
    Purchase,
    Referral,
    Refund,
    Role,
    Verdict,
    judge,
    period_of,
    plan,
    referral_id,
)
from services.referral.programme import ReferralProgramme, ReferralRules
from shared.programmes import load_folder

T0 = datetime(2026, 3, 2, 2, tzinfo=UTC)  # 10:00 in Shanghai
DAY = timedelta(days=1)
RULES: dict[str, Any] = {"referrer_points": 50, "referee_points": 20,
                         "qualifying": {"purchase": "first", "min_total": "50", "within_days": 30}}


def programme(**rules: Any) -> ReferralProgramme:
    return ReferralProgramme(program_id="p", name="test", version=3, effective_from=datetime(2020, 1, 1, tzinfo=UTC),
                             timezone="Asia/Shanghai", currency="CNY", referral=ReferralRules(**{**RULES, **rules}))


DEFAULT = programme()


def referral(rid: str, referrer: str = "rex", referee: str = "eve", at: datetime = T0,
             terms: ReferralProgramme = DEFAULT, **kw: Any) -> Referral:
    return Referral(rid, referrer, referee, at, terms, **kw)


def buy(order: str, at: datetime, total: str = "80", currency: str = "CNY", refunds: tuple[Refund, ...] = ()
        ) -> Purchase:
    return Purchase(order, f"pos|{order}", at, currency, Decimal(total), refunds)


def refund(rid: str, at: datetime, total: str) -> Refund:
    return Refund(rid, f"pos|{rid}", at, Decimal(total))


def member(*prints: tuple[str, str], purchases: tuple[Purchase, ...] = (), first: datetime | None = None) -> Member:
    first = first if first is not None else min((p.occurred_at for p in purchases), default=None)
    return Member(frozenset(prints), first, tuple(sorted(purchases, key=lambda p: (p.occurred_at, p.order_id))))


def group(*referrals: Referral, members: dict[str, Member] | None = None,
          peers: dict[str, list[Peer]] | None = None) -> Group:
    first: dict[str, tuple[datetime, str]] = {}
    for r in referrals:
        first[r.referee] = min(first.get(r.referee, r.order_key), r.order_key)
    return Group(list(referrals), members or {}, first, peers or {})


def verdict_of(g: Group, rid: str = "r1", now: datetime = T0 + 2 * DAY) -> Verdict:
    return judge(g, now)[rid]


# --- one referral, every check ------------------------------------------------------------------------------

QUALIFIES = member(purchases=(buy("o1", T0 + DAY),))

CASES: list[tuple[str, Group, tuple[str, str | None], str]] = [
    ("honest: first purchase of 80 the next day", group(referral("r1"), members={"eve": QUALIFIES}),
     ("rewarded", None), ""),
    ("one member on both sides", group(referral("r1", "eve", "eve"), members={"eve": QUALIFIES}),
     ("rejected", "self_referral"), "cannot refer themselves"),
    ("a shared payment fingerprint", group(referral("r1"), members={
        "eve": replace(QUALIFIES, fingerprints=frozenset({("payment", "h1"), ("device", "d1")})),
        "rex": member(("payment", "h1"), ("device", "d2"))}), ("rejected", "self_referral"), "shares the referrer's "
     "payment"),
    ("shared device and email, named both", group(referral("r1"), members={
        "eve": replace(QUALIFIES, fingerprints=frozenset({("email", "e"), ("device", "d")})),
        "rex": member(("email", "e"), ("device", "d"))}), ("rejected", "self_referral"), "device, email"),
    ("one hash under two kinds is no match", group(referral("r1"), members={
        "eve": replace(QUALIFIES, fingerprints=frozenset({("email", "same")})),
        "rex": member(("phone", "same"))}), ("rewarded", None), ""),
    ("an earlier referral of the referee by someone else", Group(
        [referral("r1")], {"eve": QUALIFIES}, {"eve": (T0 - DAY, "r0")}), ("rejected", "already_referred"),
     "referral r0 earlier"),
    ("the same time: the smaller id was first", Group(
        [referral("r1")], {"eve": QUALIFIES}, {"eve": (T0, "r0")}), ("rejected", "already_referred"), "r0"),
    ("bought before accepting", group(referral("r1"), members={
        "eve": member(purchases=(buy("o0", T0 - timedelta(minutes=1), "5"), buy("o1", T0 + DAY)))}),
     ("rejected", "existing_customer"), "bought before accepting"),
    ("bought at the moment of accepting: a new customer", group(referral("r1"), members={
        "eve": member(purchases=(buy("o1", T0),))}), ("rewarded", None), ""),
    ("first purchase too small: pending, the second cannot qualify", group(referral("r1"), members={
        "eve": member(purchases=(buy("o1", T0 + DAY, "49.99"), buy("o2", T0 + DAY * 1.5, "500")))}),
     ("pending", None), ""),
    ("exactly the minimum qualifies", group(referral("r1"), members={
        "eve": member(purchases=(buy("o1", T0 + DAY, "50.00"),))}), ("rewarded", None), ""),
    ("another currency does not qualify", group(referral("r1"), members={
        "eve": member(purchases=(buy("o1", T0 + DAY, "80", "USD"),))}), ("pending", None), ""),
    ("nothing yet, inside the 30 days", group(referral("r1"), members={}), ("pending", None), ""),
]


@pytest.mark.parametrize(("case", "g", "expected", "detail"), CASES, ids=[c[0] for c in CASES])
def test_each_check_gives_its_verdict_and_reason(case: str, g: Group, expected: tuple[str, str | None],
                                                 detail: str) -> None:
    found = verdict_of(g)
    assert (found.status, found.reason) == expected
    assert detail in found.detail


def test_a_verdict_never_shows_a_fingerprint() -> None:
    g = group(referral("r1"), members={"eve": member(("payment", "secret-hash-1")),
                                       "rex": member(("payment", "secret-hash-1"))})
    assert "secret-hash" not in verdict_of(g).detail


def test_any_purchase_mode_takes_the_first_purchase_that_meets_the_terms() -> None:
    terms = programme(qualifying={"purchase": "any", "min_total": "50", "within_days": 30})
    g = group(referral("r1", terms=terms), members={
        "eve": member(purchases=(buy("o1", T0 + DAY, "10"), buy("o2", T0 + 2 * DAY, "60")))})
    found = verdict_of(g, now=T0 + 3 * DAY)
    assert (found.status, found.order.order_id if found.order else None, found.at) == ("rewarded", "o2", T0 + 2 * DAY)


@pytest.mark.parametrize(("bought", "now", "status"), [
    (T0 + 30 * DAY, T0 + 40 * DAY, "rewarded"),  # the last moment of the 30 days
    (T0 + 30 * DAY + timedelta(seconds=1), T0 + 40 * DAY, "rejected"),  # too late: expired
    (None, T0 + 30 * DAY, "pending"),  # the deadline itself: not past yet
    (None, T0 + 30 * DAY + timedelta(seconds=1), "rejected"),
])
def test_expiry_is_judged_by_the_purchase_time_and_the_time_passed_in(bought: datetime | None, now: datetime,
                                                                     status: str) -> None:
    purchases = (buy("o1", bought),) if bought else ()
    found = verdict_of(group(referral("r1"), members={"eve": member(purchases=purchases)}), now=now)
    assert found.status == status
    if status == "rejected":
        assert (found.reason, found.at) == ("expired", T0 + 30 * DAY)


# --- revocation ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("refunds", "status"), [
    ((("f1", 1, "80"),), "revoked"),  # all of it, the next day
    ((("f1", 13, "30"),), "rewarded"),  # 50 kept: still the minimum
    ((("f1", 2, "20"), ("f2", 5, "20")), "revoked"),  # together they take it to 40
    ((("f1", 14, "80"),), "revoked"),  # the last day of the window (pending_days 14)
    ((("f1", 15, "80"),), "rewarded"),  # after the window: the rewards stand
])
def test_a_refund_inside_the_return_window_that_takes_the_order_below_the_minimum_revokes(
        refunds: tuple[tuple[str, int, str], ...], status: str) -> None:
    terms = programme(pending_days=14)
    bought = T0 + DAY
    order = buy("o1", bought, "80", refunds=tuple(refund(r, bought + d * DAY, t) for r, d, t in refunds))
    found = verdict_of(group(referral("r1", terms=terms), members={"eve": member(purchases=(order,))}),
                       now=T0 + 60 * DAY)
    assert found.status == status
    if status == "revoked":
        assert found.refund is not None and found.at == found.refund.occurred_at


def test_the_return_window_can_outlast_the_pending_period() -> None:
    terms = programme(pending_days=7, return_window_days=30)
    order = buy("o1", T0 + DAY, refunds=(refund("f1", T0 + 20 * DAY, "80"),))
    assert verdict_of(group(referral("r1", terms=terms), members={"eve": member(purchases=(order,))})).status == \
        "revoked"


# --- the referrer's referrals together ----------------------------------------------------------------------

def referees(n: int, terms: ReferralProgramme, spacing: timedelta = DAY, start: datetime = T0,
             refunded: frozenset[int] = frozenset()) -> Group:
    """`n` referrals by rex, each referee qualifying an hour after accepting, one a `spacing` apart."""
    referrals, members = [], {}
    for i in range(n):
        at = start + i * spacing
        referrals.append(referral(f"r{i}", "rex", f"e{i}", at, terms))
        back = (refund(f"f{i}", at + 2 * timedelta(hours=1), "80"),) if i in refunded else ()
        members[f"e{i}"] = member(purchases=(buy(f"o{i}", at + timedelta(hours=1), refunds=back),))
    return group(*referrals, members=members)


def outcomes(g: Group, now: datetime) -> list[tuple[str, str | None, int]]:
    found = judge(g, now)
    return [(found[f"r{i}"].status, found[f"r{i}"].reason, found[f"r{i}"].bonus) for i in range(len(g.referrals))]


def test_every_kth_place_earns_the_bonus_and_a_revoked_referral_keeps_its_place() -> None:
    terms = programme(bonus={"every": 2, "points": 100}, pending_days=14)
    assert outcomes(referees(5, terms, refunded=frozenset({2})), T0 + 90 * DAY) == [
        ("rewarded", None, 0), ("rewarded", None, 100), ("revoked", "refund", 0), ("rewarded", None, 100),
        ("rewarded", None, 0)]


def test_places_follow_the_qualifying_purchases_not_the_acceptances() -> None:
    terms = programme(bonus={"every": 2, "points": 100})
    g = group(referral("r0", "rex", "e0", T0, terms), referral("r1", "rex", "e1", T0 + DAY, terms), members={
        "e0": member(purchases=(buy("o0", T0 + 5 * DAY),)), "e1": member(purchases=(buy("o1", T0 + 2 * DAY),))})
    found = judge(g, T0 + 10 * DAY)
    assert (found["r1"].position, found["r1"].bonus, found["r0"].position, found["r0"].bonus) == (1, 0, 2, 100)


@pytest.mark.parametrize(("per", "spacing", "expected"), [
    ("year", 30 * DAY, ["rewarded", "rewarded", "rejected", "rejected"]),
    ("month", 10 * DAY, ["rewarded", "rewarded", "rejected", "rewarded"]),  # T0+30d is April in Shanghai
    ("ever", 200 * DAY, ["rewarded", "rewarded", "rejected", "rejected"]),
])
def test_the_cap_counts_places_per_period(per: str, spacing: timedelta, expected: list[str]) -> None:
    terms = programme(cap={"count": 2, "per": per})
    found = outcomes(referees(4, terms, spacing=spacing), T0 + 900 * DAY)
    assert [status for status, _, _ in found] == expected
    assert {reason for status, reason, _ in found if status == "rejected"} == {"referrer_cap"}


def test_the_cap_period_is_the_programmes_local_year() -> None:
    terms = programme(cap={"count": 1, "per": "year"})
    new_year_in_shanghai = datetime(2026, 12, 31, 17, tzinfo=UTC)  # 01:00 on 1 January 2027 there
    g = group(referral("r0", "rex", "e0", datetime(2026, 12, 1, tzinfo=UTC), terms),
              referral("r1", "rex", "e1", datetime(2026, 12, 2, tzinfo=UTC), terms), members={
                  "e0": member(purchases=(buy("o0", datetime(2026, 12, 5, tzinfo=UTC)),)),
                  "e1": member(purchases=(buy("o1", new_year_in_shanghai),))})
    assert [v.status for v in judge(g, datetime(2027, 2, 1, tzinfo=UTC)).values()] == ["rewarded", "rewarded"]
    assert period_of("year", new_year_in_shanghai, terms.zone) == "2027"
    assert period_of("month", new_year_in_shanghai, terms.zone) == "2027-01"
    assert period_of("year", new_year_in_shanghai, DEFAULT.zone.__class__("UTC")) == "2026"


def test_a_capped_referral_takes_no_place_and_earns_no_bonus() -> None:
    terms = programme(cap={"count": 2, "per": "ever"}, bonus={"every": 2, "points": 100})
    assert outcomes(referees(3, terms), T0 + 90 * DAY) == [
        ("rewarded", None, 0), ("rewarded", None, 100), ("rejected", "referrer_cap", 0)]


@pytest.mark.parametrize(("spacing", "expected"), [
    (DAY, ["rewarded", "rewarded", "review", "review"]),  # the 3rd and 4th within 7 days
    (4 * DAY, ["rewarded", "rewarded", "rewarded", "rewarded"]),  # never more than 2 in a 7-day window
    (3 * DAY, ["rewarded", "rewarded", "review", "review"]),  # +9d still sees +3d and +6d
    (3.5 * DAY, ["rewarded", "rewarded", "rewarded", "rewarded"]),  # 7 days before +7d is T0: outside the window
])
def test_velocity_per_referrer_holds_for_review(spacing: timedelta, expected: list[str]) -> None:
    terms = programme(velocity={"days": 7, "per_referrer": 2})
    found = outcomes(referees(4, terms, spacing=spacing), T0 + 90 * DAY)
    assert [status for status, _, _ in found] == expected


def test_velocity_per_device_counts_other_referrers_referees_on_the_device() -> None:
    terms = programme(velocity={"days": 7, "per_device": 2})
    g = Group([referral("r1", terms=terms)], {"eve": member(("device", "tablet"), purchases=(buy("o1", T0 + DAY),))},
              {"eve": (T0, "r1")}, {"tablet": [Peer(T0 - 3 * DAY, "x1", "amy"), Peer(T0 - 2 * DAY, "x2", "bob"),
                                               Peer(T0, "r1", "eve")]})
    found = verdict_of(g)
    assert (found.status, found.reason) == ("review", "velocity")
    assert "3 referees on one device" in found.detail
    older = replace(g, device_peers={"tablet": [Peer(T0 - 8 * DAY, "x1", "amy"), Peer(T0 - 2 * DAY, "x2", "bob")]})
    assert verdict_of(older).status == "rewarded"  # amy's referral left the 7 days


@pytest.mark.parametrize(("decision", "expected"), [
    (None, ("review", "velocity")), ("approved", ("rewarded", None)), ("rejected", ("rejected", "velocity"))])
def test_a_reviewer_decides_a_held_referral(decision: Decision | None, expected: tuple[str, str | None]) -> None:
    terms = programme(velocity={"per_referrer": 1})
    g = referees(2, terms)
    g = replace(g, referrals=[g.referrals[0], replace(g.referrals[1], decision=decision, decided_at=T0 + 9 * DAY)])
    found = judge(g, T0 + 10 * DAY)["r1"]
    assert (found.status, found.reason) == expected


def test_a_rejected_review_frees_its_place_under_the_cap() -> None:
    terms = programme(cap={"count": 2, "per": "ever"}, velocity={"per_referrer": 2})
    g = referees(4, terms)  # r2 and r3 over velocity; r3 also over the cap while r2 holds its place
    assert [s for s, _, _ in outcomes(g, T0 + 90 * DAY)] == ["rewarded", "rewarded", "rejected", "rejected"]
    assert [r for _, r, _ in outcomes(g, T0 + 90 * DAY)][2:] == ["referrer_cap", "referrer_cap"]
    terms = programme(cap={"count": 3, "per": "ever"}, velocity={"per_referrer": 2})
    g = referees(4, terms)
    assert [s for s, _, _ in outcomes(g, T0 + 90 * DAY)] == ["rewarded", "rewarded", "review", "rejected"]
    g = replace(g, referrals=[*g.referrals[:2], replace(g.referrals[2], decision="rejected"), g.referrals[3]])
    assert [(s, r) for s, r, _ in outcomes(g, T0 + 90 * DAY)][2:] == [("rejected", "velocity"), ("review", "velocity")]


# --- what a verdict moves -----------------------------------------------------------------------------------

REWARDED = Verdict("rewarded", T0, order=buy("o1", T0), position=1)
WITH_BONUS = replace(REWARDED, position=2, bonus=100)
PAID: dict[Role, int] = {"referrer": 50, "referee": 20}


@pytest.mark.parametrize(("held", "verdict", "step"), [
    (Held(None), Verdict("pending", T0), (set(), {}, None)),
    (Held(None), REWARDED, (set(), PAID, "rewarded")),
    (Held("rewarded", None, PAID), REWARDED, (set(), {}, None)),  # judged again: nothing moves
    (Held("rewarded", None, PAID), WITH_BONUS, (set(), {"bonus": 100}, "rewarded")),  # a bonus moved here
    (Held("rewarded", None, {**PAID, "bonus": 100}), REWARDED, ({"bonus"}, {}, "rewarded")),  # ... or away
    (Held("rewarded", None, PAID), Verdict("revoked", T0, "refund"), ({"referrer", "referee"}, {}, "revoked")),
    (Held("rewarded", None, PAID), Verdict("rejected", T0, "self_referral"),  # a late fact
     ({"referrer", "referee"}, {}, "rejected")),
    (Held("rewarded", None, PAID), Verdict("review", T0, "velocity"), ({"referrer", "referee"}, {}, None)),
    (Held("review", "velocity"), REWARDED, (set(), PAID, "rewarded")),  # approved
    (Held("pending"), Verdict("rejected", T0, "expired"), (set(), {}, "rejected")),
    (Held("rejected", "expired"), Verdict("rejected", T0, "expired"), (set(), {}, None)),
    (Held("rejected", "expired"), Verdict("rejected", T0, "self_referral"), (set(), {}, "rejected")),
    (Held("rejected", "referrer_cap"), REWARDED, (set(), PAID, "rewarded")),  # a place freed up
    (Held(None), Verdict("revoked", T0, "refund"), (set(), {}, "revoked")),  # refunded before it was ever paid
])
def test_plan_moves_points_side_by_side_and_announces_changes(
        held: Held, verdict: Verdict, step: tuple[set[str], dict[str, int], str | None]) -> None:
    found = plan(held, verdict, DEFAULT.referral)  # type: ignore[arg-type]
    assert (set(found.reverse), dict(found.credit), found.announce) == step


def test_a_side_with_no_points_gets_no_credit() -> None:
    terms = programme(referee_points=0)
    assert REWARDED.awards(terms.referral) == {"referrer": 50}  # type: ignore[arg-type]


# --- the section, ids and codes -----------------------------------------------------------------------------

@pytest.mark.parametrize(("change", "message"), [
    ({"velocity": {"days": 7}}, "per_referrer, per_device or both"),
    ({"expires_after_days": 14, "pending_days": 14}, "longer than pending_days"),
    ({"qualifying": {"min_total": 50.5, "within_days": 30}}, "decimal string"),
    ({"bonus": {"every": 5, "points": 0}}, "greater than 0"),
    ({"cap": {"count": 5, "per": "week"}}, "'month', 'year' or 'ever'"),
])
def test_the_section_refuses_what_cannot_work(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ReferralRules(**{**RULES, **change})


def test_the_shipped_programmes_carry_the_section() -> None:
    versions = load_folder(Path(__file__).resolve().parents[2] / "programmes", ReferralProgramme)
    default = versions["default"][-1].referral
    assert default is not None
    assert (default.referrer_points, default.referee_points, default.qualifying.min_total,
            default.qualifying.within_days, default.qualifying.purchase) == (50, 20, Decimal(50), 30, "first")
    assert default.cap is not None and (default.cap.count, default.cap.per) == (20, "year")
    assert versions["retail"][-1].referral is not None


def test_a_referral_id_is_the_same_however_often_it_is_announced() -> None:
    assert referral_id("default", "rex", "eve") == referral_id("default", "rex", "eve")
    assert len({referral_id("default", "rex", "eve"), referral_id("default", "eve", "rex"),
                referral_id("retail", "rex", "eve")}) == 3


def test_codes_are_typeable_and_normalised_as_typed() -> None:
    rng = random.Random(3)
    codes = {new_code(rng.choice) for _ in range(500)}
    assert len(codes) == 500
    assert all(len(c) == LENGTH and set(c) <= set(ALPHABET) for c in codes)
    assert not set(ALPHABET) & set("01OIL")
    code = next(iter(codes))
    assert normalise(f" {code[:4].lower()}-{code[4:]} ") == code
    assert [normalise(t) for t in ("ABCDEFG", "ABCDEFGHJ", "0BCDEFGH", "")] == [None, None, None, None]
