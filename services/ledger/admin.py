"""What a person may do to points, over HTTP with an `admin` key: adjust a balance, award goodwill points, reverse
an entry, move points between members, block or unblock a member. Each call is a ledger command (or a member event)
like any other, sent through the outbox, its key derived from the caller's key and the request's `Idempotency-Key`;
the caller's key name is recorded in the entry's cause. The answer is the entries the command posted (201), the
reason the ledger refused it (409), or 202 while it is still on its way. A call retried with the same
`Idempotency-Key` sends nothing again: it answers what became of the first call's command. The models are in
api.py.
"""

from __future__ import annotations

import uuid
from typing import Annotated

import asyncpg
from fastapi import FastAPI, Path, Response

from services.ledger.api import (
    COMMAND_ERRORS,
    MEMBER_EVENT_ERRORS,
    Adjustment,
    Award,
    Blocking,
    Done,
    IdemKey,
    PostedEntry,
    Reversal,
    Sent,
    Transfer,
    Wait,
    command_answers,
    refused_detail,
)
from services.ledger.domain import ADMIN_SOURCE
from services.ledger.repository import commands
from shared import keys
from shared.auth import ApiKey
from shared.contracts.ledger_commands import (
    AdjustPoints,
    Cause,
    LedgerCommand,
    PostCredit,
    ReverseEntry,
    TransferPoints,
)
from shared.contracts.members import MemberBlocked, MemberUnblocked
from shared.http import ApiError, PathId, ProgramPath
from shared.programmes import Catalogue, ProgrammeVersion
from shared.refusal import Refusal
from shared.service import Runtime
from shared.uow import UnitOfWork


async def answer(db: asyncpg.Connection, key: str) -> Done | None:
    """What became of a command: posted with its entries, or rejected with the ledger's reason; None while the
    ledger has not applied it."""
    found, rows = await commands.command_outcome(db, key)
    if found is None:
        return None
    return Done(status=found["outcome"], idempotency_key=key, reason=found["reason"],
                entries=[PostedEntry(entry_id=r["id"], member_id=r["member_id"], seq=r["seq"], kind=r["kind"],
                                     amount=r["amount"], balance_after=r["balance_after"]) for r in rows])


async def command_status(db: asyncpg.Connection, key: str) -> Done:
    """`answer`, `pending` for a command an admin call sent that the ledger has not applied yet, and the refusal
    `unknown_command` for a key neither knows."""
    done = await answer(db, key)
    if done is not None:
        return done
    if not await commands.admin_command_sent(db, key):
        raise Refusal("unknown_command", f"the ledger has no command {key!r}: no admin call sent it and the ledger "
                                         "never received it")
    return Done(status="pending", idempotency_key=key)


def routes(app: FastAPI, runtime: Runtime, catalogue: Catalogue[ProgrammeVersion]) -> None:
    admin = runtime.requires("admin")

    def known(program_id: str) -> None:
        catalogue.in_force(program_id, runtime.spec.clock())

    def key_of(caller: ApiKey, idempotency_key: str | None) -> str:
        return keys.admin_command(caller.key_id, idempotency_key or uuid.uuid4().hex)

    def cause(key: str, reason: str, caller: ApiKey, rule_id: str | None = None) -> Cause:
        return Cause(source_event_id=keys.cause_of(ADMIN_SOURCE, key), rule_id=rule_id or keys.admin_rule(caller.name),
                     reason=reason)

    def audit(caller: ApiKey, why: str | None = None) -> dict[str, str]:
        """What every admin command's details record: who, by key, and why when the reason is not the cause's."""
        return {**({"why": why} if why else {}), "by": caller.name, "key_id": caller.key_id}

    async def send(cmd: LedgerCommand, wait: float, response: Response) -> Done:
        """Send the command unless its key was sent before (a retry is the same command: sent again it would carry
        another request time, and the ledger would refuse it as a conflict), then wait for the ledger's answer: the
        ledger announces each admin command it applies (LISTEN/NOTIFY), so the wait holds no connection."""
        key = cmd.idempotency_key

        async def note_and_emit(uow: UnitOfWork) -> None:
            if await commands.record_admin_command(uow.db, key, cmd.program_id, cmd.occurred_at):
                uow.emit(cmd, at=cmd.occurred_at, subject=cmd.member_id, source=ADMIN_SOURCE)

        async def read() -> Done:
            async def look(db: asyncpg.Connection) -> Done:
                return await answer(db, key) or Done(status="pending", idempotency_key=key)

            return await runtime.read(look)

        await runtime.transaction(note_and_emit, ADMIN_SOURCE)
        done = await runtime.waiting.until(key, read, lambda found: found.status != "pending", wait)
        if done.status == "rejected":
            raise ApiError(409, done.reason or "rejected", refused_detail(done.reason, done.idempotency_key))
        response.status_code = 201 if done.status == "posted" else 202
        return done

    member = "/v1/programs/{program_id}/members/{member_id:path}"

    @app.get("/v1/programs/{program_id}/commands/{idempotency_key}", response_model=Done, tags=["admin"],
             responses=COMMAND_ERRORS,
             summary="What became of a command sent by an admin call that answered 202 (pending)")
    async def command(program_id: ProgramPath, idempotency_key: Annotated[str, Path(max_length=300)],
                      caller: ApiKey = admin) -> Done:
        """What became of the command an admin call sent, by the `idempotency_key` its answer gave
        (`admin:<key id>:<Idempotency-Key>`): `posted` with the entries it made, `rejected` with the ledger's
        reason, or `pending` while an admin call has sent it and the ledger has not applied it yet. A key the ledger
        never received and no admin call sent is 404 `unknown_command`. It looks once and does not wait. Needs the
        `admin` scope."""
        known(program_id)

        async def look(db: asyncpg.Connection) -> Done:
            return await command_status(db, idempotency_key)

        return await runtime.read(look)

    @app.post(f"{member}/adjustments", response_model=Done, tags=["admin"], status_code=201,
              responses=command_answers("insufficient_points", "negative_balance"),
              summary="Adjust a member's points by hand (a correction; the reason and your key's name are recorded)")
    async def adjust(program_id: ProgramPath, member_id: PathId, body: Adjustment, response: Response,
                     caller: ApiKey = admin, idempotency_key: IdemKey = None, wait: Wait = 5) -> Done:
        """A correction by hand, sent to the ledger as `jifen.ledger.adjust.v1` through the outbox: a `credit` adds
        a lot (expiring at `expires_at` when given), a `debit` takes the soonest-expiring points first (refused with
        `insufficient_points`, or `negative_balance` while the member owes points). The entry records the reason and
        your key's name. `?wait` (default 5 s, at most 10) waits for the ledger: 201 with the entries posted, 409
        with its reason, 202 `pending` if it has not answered; the same `Idempotency-Key` posts nothing again and
        answers the first call's outcome. Needs the `admin` scope."""
        known(program_id)
        key = key_of(caller, idempotency_key)
        cmd = AdjustPoints(idempotency_key=key, program_id=program_id, member_id=member_id,
                           occurred_at=runtime.spec.clock(), cause=cause(key, body.reason, caller),
                           direction=body.direction, amount=body.points, reason=body.reason, actor=caller.name,
                           expires_at=body.expires_at, details=audit(caller))
        return await send(cmd, wait, response)

    @app.post(f"{member}/awards", response_model=Done, tags=["admin"], status_code=201,
              responses=command_answers("insufficient_points"),
              summary="Award goodwill points (earned points: they count for tiers; your key's name is recorded)")
    async def award(program_id: ProgramPath, member_id: PathId, body: Award, response: Response,
                    caller: ApiKey = admin, idempotency_key: IdemKey = None, wait: Wait = 5) -> Done:
        """Goodwill points, sent to the ledger as an earn credit (`jifen.ledger.credit.v1`, rule `goodwill`):
        available at once, expiring at `expires_at` when given, counted in lifetime earned and by the tiers service;
        the entry records the reason and your key's name. `?wait` (default 5 s, at most 10) waits for the ledger:
        201 with the entry, 202 `pending` if it has not answered. A credit is never refused: a 409 comes only from
        an `Idempotency-Key` first used for a command the ledger refused (the same key answers the first call's
        outcome). Needs the `admin` scope."""
        known(program_id)
        key = key_of(caller, idempotency_key)
        now = runtime.spec.clock()
        cmd = PostCredit(idempotency_key=key, program_id=program_id, member_id=member_id, amount=body.points,
                         occurred_at=now, available_at=now, expires_at=body.expires_at,
                         cause=cause(key, "goodwill", caller, rule_id="goodwill"), details=audit(caller, body.reason))
        return await send(cmd, wait, response)

    @app.post(f"{member}/entries/{{entry_id}}/reversal", response_model=Done, tags=["admin"], status_code=201,
              responses=command_answers("entry_not_found", "not_reversible", "reversal_exceeds_entry"),
              summary="Reverse an entry of a member's, in whole or in part (a correction: a new entry naming it)")
    async def reverse(program_id: ProgramPath, member_id: PathId, entry_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
                      body: Reversal, response: Response, caller: ApiKey = admin, idempotency_key: IdemKey = None,
                      wait: Wait = 5) -> Done:
        """Take back `points` of entry `entry_id` of this member (all that is not reversed yet when not given),
        sent to the ledger as `jifen.ledger.reverse.v1`: a new entry naming the one it corrects. Earn and adjustment
        credits (pending points are cancelled; spent ones are taken from the member's other points, the rest becoming
        debt) and redemption and adjustment debits (the points come back with their expiry) can be reversed;
        refusals: `entry_not_found`, `not_reversible`, `reversal_exceeds_entry`. `?wait` and `Idempotency-Key` work
        as for adjustments (201, 409, 202). Needs the `admin` scope."""
        known(program_id)
        key = key_of(caller, idempotency_key)
        cmd = ReverseEntry(idempotency_key=key, program_id=program_id, member_id=member_id, entry_id=entry_id,
                           amount=body.points, occurred_at=runtime.spec.clock(), cause=cause(key, body.reason, caller),
                           details=audit(caller, body.reason))
        return await send(cmd, wait, response)

    @app.post("/v1/programs/{program_id}/transfers", response_model=Done, tags=["admin"], status_code=201,
              responses=command_answers("insufficient_points", "negative_balance",
                                        invalid="a transfer needs two different members"),
              summary="Move points from one member to another (they keep their expiry)")
    async def transfer(program_id: ProgramPath, body: Transfer, response: Response, caller: ApiKey = admin,
                       idempotency_key: IdemKey = None, wait: Wait = 5) -> Done:
        """Move points between two members of one programme, sent to the ledger as `jifen.ledger.transfer.v1`: a
        `transfer_out` entry on the giver and a `transfer_in` on the receiver, whose points keep their expiry. The
        giver's points must cover it (`insufficient_points`, `negative_balance`); the same member on both sides is
        422. `?wait` and `Idempotency-Key` work as for adjustments (201 with both entries, 409, 202). Needs the
        `admin` scope."""
        known(program_id)
        if body.from_member_id == body.to_member_id:
            raise ApiError(422, "invalid_request", "a transfer needs two different members")
        key = key_of(caller, idempotency_key)
        cmd = TransferPoints(idempotency_key=key, program_id=program_id, member_id=body.from_member_id,
                             to_member_id=body.to_member_id, amount=body.points, occurred_at=runtime.spec.clock(),
                             cause=cause(key, body.reason, caller),
                             details=audit(caller, body.reason))
        return await send(cmd, wait, response)

    async def member_event(event: MemberBlocked | MemberUnblocked, caller: ApiKey) -> Sent:
        event_id = keys.admin_event(caller.key_id, uuid.uuid4().hex)

        async def emit(uow: UnitOfWork) -> None:
            uow.emit(event, at=runtime.spec.clock(), event_id=event_id, source=ADMIN_SOURCE)

        await runtime.transaction(emit, ADMIN_SOURCE)
        return Sent(status="sent", event_id=event_id)

    @app.post(f"{member}/block", response_model=Sent, tags=["admin"], status_code=202, responses=MEMBER_EVENT_ERRORS,
              summary="Block a member from redeeming (jifen.member.blocked.v1 from source jifen.admin)")
    async def block(program_id: ProgramPath, member_id: PathId, body: Blocking, caller: ApiKey = admin) -> Sent:
        """Announce `jifen.member.blocked.v1` on jifen.members, from source `jifen.admin`, through the outbox; 202
        with the event's id once it is stored to send. The redemption service then refuses the member's redemptions
        and points payments (`blocked_member`) in programmes whose `redemption.block_sources` list `jifen.admin`;
        elsewhere it dead-letters the event as `untrusted_source`. Each call is a new event. Needs the `admin`
        scope."""
        known(program_id)
        return await member_event(MemberBlocked(program_id=program_id, member_id=member_id, reason=body.reason,
                                                blocked_by=caller.name), caller)

    @app.post(f"{member}/unblock", response_model=Sent, tags=["admin"], status_code=202, responses=MEMBER_EVENT_ERRORS,
              summary="Unblock a member (jifen.member.unblocked.v1 from source jifen.admin)")
    async def unblock(program_id: ProgramPath, member_id: PathId, body: Blocking, caller: ApiKey = admin) -> Sent:
        """Announce `jifen.member.unblocked.v1` on jifen.members, from source `jifen.admin`, through the outbox;
        202 with the event's id once it is stored to send. The redemption service lets the member redeem again in
        programmes whose `redemption.block_sources` list `jifen.admin`. Each call is a new event. Needs the `admin`
        scope."""
        known(program_id)
        return await member_event(MemberUnblocked(program_id=program_id, member_id=member_id, reason=body.reason,
                                                  unblocked_by=caller.name), caller)
