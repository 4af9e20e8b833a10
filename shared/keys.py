"""Every key Jifen derives, built and parsed here only: ledger commands' idempotency keys, hold ids, causes and
the ids of the events the services emit.

A key is derived from its cause (`earn:{event_id}:{rule_id}`), so a command derived again after a crash is the same
command to the ledger, and a consumer of the ledger's outcomes can tell from the key alone whose command it was and
why. The shapes are a protocol between services: a key built here is parsed here, and the one place SQL builds a key
(the sweeper's `'expire:' || lot.id`) is checked against `lot_expiry` by a test.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal, get_args

# What redemption asks the ledger, and about which of its objects (a redemption or a points payment).
Command = Literal["hold", "capture", "void", "cancel", "refund"]
Owner = Literal["redeem", "pay"]
# The side of a referral a credit pays.
Role = Literal["referrer", "referee", "bonus"]

COMMANDS: frozenset[str] = frozenset(get_args(Command))
OWNERS: frozenset[str] = frozenset(get_args(Owner))
LOT_EXPIRY = "expire:"  # the sweeper's SQL builds `LOT_EXPIRY || lot.id` to find lots not yet expired
REVERSAL = ":reversal"  # a referral reversal's key is its credit's key and this
_LONG = 100  # an upstream id past this is hashed, so a key stays within an id's 200 characters


# --- earn --------------------------------------------------------------------------------------------------------


def earn_credit(event_id: str, rule_id: str) -> str:
    """The credit a rule gives for an inbound event."""
    return f"earn:{event_id}:{rule_id}"


def refund_reversal(refund_event_id: str, rule_id: str) -> str:
    """The reversal of what a rule gave for a purchase, taken back by a refund event."""
    return f"refund:{refund_event_id}:{rule_id}"


def birthday_credit(program_id: str, member_id: str, year: int) -> str:
    """Once per member and year."""
    return f"birthday:{program_id}:{member_id}:{year}"


# --- ledger ------------------------------------------------------------------------------------------------------

HOLD_EXPIRY = "hold-expire:"  # the sweeper's SQL builds `HOLD_EXPIRY || hold.hold_id` likewise


def lot_expiry(lot_id: int) -> str:
    return f"{LOT_EXPIRY}{lot_id}"


def parse_lot_expiry(key: str) -> int | None:
    """The lot a sweeper's expiry command names (`expire:{lot_id}`), or None for any other key."""
    if not key.startswith(LOT_EXPIRY):
        return None
    rest = key[len(LOT_EXPIRY):]
    return int(rest) if rest.isdigit() else None


def hold_expiry(hold_id: str) -> str:
    return f"{HOLD_EXPIRY}{hold_id}"


def lot_expiry_cause(source: str, lot_id: int) -> str:
    """The cause of the sweeper's expiry of a lot."""
    return cause_of(source, f"lot:{lot_id}")


def hold_expiry_cause(source: str, hold_id: str) -> str:
    """The cause of the sweeper's expiry of a hold past its TTL."""
    return cause_of(source, f"hold:{hold_id}")


def admin_command(key_id: str, client_key: str) -> str:
    """An operator's command: the caller's API key id and the request's `Idempotency-Key` (or a fresh one), so the
    same key retried by the same caller is the same command."""
    return f"admin:{key_id}:{client_key}"


def admin_event(key_id: str, event_id: str) -> str:
    return f"admin:{key_id}:{event_id}"


def posted_event(entry_id: int) -> str:
    """The id of the `points.entry.posted` event of a ledger entry."""
    return f"entry:{entry_id}"


def rejected_event(command_event_id: str) -> str:
    """The id of the `command.rejected` event answering a command event."""
    return f"rejected:{command_event_id}"


def hold_placed_event(hold_id: str) -> str:
    """The id of the `hold.placed` event of a hold: a hold is placed once."""
    return f"hold-placed:{hold_id}"


def hold_resolved_event(hold_id: str) -> str:
    """The id of the `hold.resolved` event of a hold: a hold resolves once."""
    return f"hold-resolved:{hold_id}"


def admin_rule(caller_name: str) -> str:
    """The rule id an operator's entry records: the name of the caller's API key."""
    return f"admin:{caller_name}"


# --- redemption --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Held:
    """Whose hold or command a key names: a redemption's or a payment's, and which command."""

    owner: Owner
    owner_id: str
    command: Command | None = None  # None for a hold id


def hold_of(owner: Owner, owner_id: str) -> str:
    """The ledger hold of a redemption (`redeem:{id}`) or a points payment (`pay:{id}`)."""
    return f"{owner}:{owner_id}"


def redemption_command(owner: Owner, owner_id: str, command: Command, refund_id: str = "") -> str:
    """The key of one of redemption's commands; a refund's names the refund, hashed when long."""
    if len(refund_id) > _LONG:
        refund_id = "sha256-" + hashlib.sha256(refund_id.encode()).hexdigest()
    return f"{owner}:{owner_id}:{command}" + (f":{refund_id}" if refund_id else "")


def parse_hold(hold_id: str) -> Held | None:
    """The owner of a hold id; None for another service's holds."""
    owner, _, owner_id = hold_id.partition(":")
    if owner not in OWNERS or not owner_id or ":" in owner_id:
        return None
    return Held(owner, owner_id)  # type: ignore[arg-type]  # checked against OWNERS just above


def parse_redemption_command(key: str) -> Held | None:
    """The owner and command of one of redemption's command keys; None for any other key."""
    parts = key.split(":", 3)
    if len(parts) < 3 or parts[0] not in OWNERS or not parts[1] or parts[2] not in COMMANDS:
        return None
    return Held(parts[0], parts[1], parts[2])  # type: ignore[arg-type]  # checked against the Literals above


def redemption_event(what: Literal["redemption-completed", "redemption-rejected", "redemption-cancelled",
                                   "payment-captured", "payment-voided", "coupon-used"], subject_id: str) -> str:
    return f"{what}:{subject_id}"


def refund_subject(payment_id: str, refund_id: str) -> str:
    """The subject of the cause of what a refund gives back (`cause_of(source, refund_subject(...))`)."""
    return f"{payment_id}|{refund_id}"


def stock_addition(client_key: str | None) -> str:
    """The key of an admin's stock addition: the request's `Idempotency-Key`, or a fresh one (a retry adds again)."""
    return client_key or f"unkeyed:{secrets.token_hex(8)}"


# --- referral ----------------------------------------------------------------------------------------------------


def referral_credit(referral_id: str, role: Role, grant_no: int = 1) -> str:
    """A side's first grant is `referral:{id}:{role}`; a later one (paid again after a verdict took the first
    back) names its number, `referral:{id}:{role}:{n}`."""
    return f"referral:{referral_id}:{role}" if grant_no == 1 else f"referral:{referral_id}:{role}:{grant_no}"


def referral_reversal(credit_key: str) -> str:
    return credit_key + REVERSAL


def reversed_credit(key: str) -> str | None:
    """The credit key a referral reversal's key names; None for a key that is no reversal."""
    return key.removesuffix(REVERSAL) if key.endswith(REVERSAL) else None


def is_referral_credit(key: str) -> bool:
    return key.startswith("referral:")


def referral_outcome_event(referral_id: str, announced: int) -> str:
    """The id of a referral's n-th outcome event: the same outcome announced again is the same event."""
    return f"{referral_id}:{announced}"


def referral_lock(schema: str, program_id: str) -> str:
    """The name of the advisory lock (`shared.db.advisory_key`) that serialises judging one programme's referrals
    in one schema, across processes."""
    return f"referral:{schema}:{program_id}"


# --- tiers -------------------------------------------------------------------------------------------------------


def tier_event(program_id: str, member_id: str, change_no: int) -> str:
    """The id of a member's n-th tier change: the same change announced again is the same event."""
    return f"tier:{program_id}:{member_id}:{change_no}"


def tier_warning(program_id: str, member_id: str, period_end: datetime) -> str:
    """The id of the warning before a review lowers a tier: once per member and tier period."""
    return f"tier-expiring:{program_id}:{member_id}:{period_end.isoformat()}"


def tiers_projection_lock(schema: str) -> str:
    """The name of the advisory lock (`shared.db.advisory_key`) of a schema's tier projection: held exclusively by
    `jifen tiers rebuild`, shared by the live service's batches and review pages."""
    return f"tiers-projection:{schema}"


Contribution = Literal["entry", "order", "refund"]


def contribution(kind: Contribution, ref: str | int) -> str:
    """What a tier metric's contribution came from: a ledger entry, a purchase's order or a refund."""
    return f"{kind}:{ref}"


def contribution_kind(key: str) -> Contribution | None:
    kind = key.partition(":")[0]
    return kind if kind in ("entry", "order", "refund") else None  # type: ignore[return-value]


# --- causes ------------------------------------------------------------------------------------------------------


def cause_of(source: str, subject: str) -> str:
    """A cause's `source_event_id` for what no inbound event caused (a job, an operator, a redemption): the
    emitting service's source and the subject, as `{source}|{subject}`."""
    return f"{source}|{subject}"


def watch_finding(program_id: str, member_id: str, reason: str, day: date) -> str:
    """The event id of a member's finding on the abuse watch: once per member, reason and day it is first found."""
    return f"insight:watch:{program_id}:{member_id}:{reason}:{day.isoformat()}"


def insight_projection_lock(schema: str) -> str:
    """The advisory lock of a schema's insight projection: held exclusively by `jifen insight rebuild`, shared by
    the live service's batches and abuse-watch rounds."""
    return f"insight-projection:{schema}"


def insight_rebuild_lock(schema: str) -> str:
    """The advisory lock one `jifen insight rebuild` holds, so a second one is told at once rather than waiting."""
    return f"insight-rebuild:{schema}"


# --- the kit's advisory locks ------------------------------------------------------------------------------------


def job_lock(schema: str, job: str) -> str:
    """The advisory lock one process takes to run a round of a periodic job."""
    return f"job:{schema}:{job}"


def outbox_lock(schema: str) -> str:
    """The advisory lock of a service's outbox relay leader."""
    return f"outbox:{schema}"


def migration_lock(schema: str) -> str:
    return f"migrate:{schema}"


# --- the bench's own commands --------------------------------------------------------------------------------------


def bench_command(run_id: str, phase: str, n: int | str) -> str:
    """A command the bench plans (`bench:{run}:{phase}:{n}`); `bench_commands(run, phase)` is their SQL LIKE pattern."""
    return f"bench:{run_id}:{phase}:{n}"


def bench_commands(run_id: str, phase: str) -> str:
    return bench_command(run_id, phase, "%")
