"""Referrals as upstream systems send them, for the simulator (`jifen simulate` after `make up`): referrers and
referees enrolling with fingerprints, honest referrals whose referee buys, self-referrals whose referee enrols on the
referrer's own device, and one qualifying order refunded; and the summary of what the referral service made of a
run, read from its tables."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

import asyncpg
import orjson

from shared.contracts import topics
from shared.contracts.members import MemberEnrolled
from shared.contracts.purchases import PurchaseRefunded
from shared.contracts.referrals import ReferralAccepted
from shared.envelope import encode
from shared.simulation import STRUCTURED, Message, purchase_event


@dataclass
class ReferralFeed:
    """Messages by topic, in the order to send them (members, then referrals, then purchases and the refund), and
    the outcomes the referral service should reach."""

    messages: dict[str, list[Message]] = field(default_factory=dict)
    expected: Counter[str] = field(default_factory=Counter)  # `rewarded`, `revoked`, `rejected:self_referral`

    def add(self, topic: str, key: str, value: bytes) -> None:
        self.messages.setdefault(topic, []).append(Message(key.encode(), value, STRUCTURED, "valid", member_id=key))


def fingerprint(run_id: str, what: str) -> str:
    """An opaque hash, as a sender would make one (Jifen only compares them)."""
    return hashlib.sha256(f"{run_id}:{what}".encode()).hexdigest()[:32]


def build_referral_feed(run_id: str, now: datetime, honest: int = 6, self_referrals: int = 3,
                        program_id: str = "default") -> ReferralFeed:
    """`honest` referrals rewarded (the first one's qualifying order then refunded: revoked) and `self_referrals`
    refused, all in the default programme's terms (a first purchase of 88 within days of accepting)."""
    feed = ReferralFeed()
    source = f"sim://{run_id}/referrals"
    enrolled, accepted, bought = now - timedelta(days=3), now - timedelta(days=2), now - timedelta(days=1)

    def enrol(member: str, device: str, payment: str) -> None:
        feed.add(topics.MEMBERS, member, encode(f"{run_id}-enrol-{member}", source, MemberEnrolled.TYPE, enrolled, {
            "program_id": program_id, "member_id": member, "enrolled_at": enrolled.isoformat(),
            "fingerprints": {"device": fingerprint(run_id, device), "payment": fingerprint(run_id, payment)}}))

    for i in range(honest + self_referrals):
        referrer, referee = f"{run_id}-inviter-{i}", f"{run_id}-friend-{i}"
        enrol(referrer, f"device-{referrer}", f"card-{referrer}")
        # A self-referral: the "friend" signs up on the inviter's own phone.
        enrol(referee, f"device-{referrer}" if i >= honest else f"device-{referee}", f"card-{referee}")
        feed.add(topics.REFERRALS, referee, encode(f"{run_id}-accept-{i}", source, ReferralAccepted.TYPE, accepted, {
            "program_id": program_id, "referrer_member_id": referrer, "referee_member_id": referee}))
        order = f"{run_id}-first-order-{i}"
        feed.add(topics.PURCHASES, referee, orjson.dumps(purchase_event(
            f"{run_id}-buy-{i}", source, bought, referee, order, Decimal("88.00"), [], program_id=program_id)))
        if i == 0 and honest:
            feed.add(topics.PURCHASES, referee, encode(
                f"{run_id}-refund-{i}", source, PurchaseRefunded.TYPE, bought + timedelta(hours=12), {
                    "program_id": program_id, "member_id": referee, "order_id": order, "refund_id": f"{order}-r",
                    "currency": "CNY", "total": "88.00"}))
            feed.expected["revoked"] += 1
        else:
            feed.expected["rewarded" if i < honest else "rejected:self_referral"] += 1
    return feed


async def summary(conn: asyncpg.Connection, run_id: str, schema: str = "referral") -> Counter[str]:
    """What the referral service made of a run's referrals: `status` or `rejected:reason`, counted."""
    rows = await conn.fetch(
        f"SELECT status, reason FROM {schema}.referrals WHERE referee_id LIKE $1", f"{run_id}-friend-%")
    return Counter(r["status"] if r["status"] != "rejected" else f"rejected:{r['reason']}" for r in rows)
