"""What a person may do to points, over HTTP with an `admin` key: adjust a balance, award goodwill points, reverse
an entry, move points between members, block or unblock a member. Each call is a ledger command (or a member event)
like any other, sent through the outbox, its key derived from the caller's key and the request's `Idempotency-Key`;
the caller's key name is recorded in the entry's cause. The answer is the entries the command posted (201), the
reason the ledger refused it (409), or 202 while it is still on its way.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Header, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from services.ledger import totals
from shared.auth import ApiKey
from shared.contracts.base import Id, NonBlank
from shared.contracts.ledger_commands import (
    AdjustPoints,
    Cause,
    LedgerCommand,
    PostCredit,
    ReverseEntry,
    TransferPoints,
)
from shared.contracts.members import MemberBlocked, MemberUnblocked
from shared.http import ApiError, PathId, ProgramPath, error_responses
from shared.programmes import Catalogue, ProgrammeVersion
from shared.service import Runtime

SOURCE = "jifen.admin"  # the CloudEvents source of what an admin sends: trust it in a programme to honour blocks
POLL_S = 0.05
CENT = Decimal("0.01")
# Module-level: the routes' annotations are strings here (`from __future__ import annotations`), resolved in the
# module's namespace.
Wait = Annotated[float, Query(ge=0, le=10, description="seconds to wait for the ledger's answer")]
IdemKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200, pattern=r"^[\x21-\x7e]+$",
                                       description="the same key again is the same command")]


class Adjustment(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"direction": "credit", "points": 120, "reason": "the till double-charged order 8812"}]})

    direction: Literal["credit", "debit"]
    points: int = Field(gt=0, le=10_000_000)
    reason: NonBlank = Field(examples=["the till double-charged order 8812"])
    expires_at: datetime | None = None


class Award(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"points": 50, "reason": "goodwill for a late delivery", "expires_at": "2027-12-31T23:59:59Z"}]})

    points: int = Field(gt=0, le=10_000_000)
    reason: NonBlank = Field(examples=["goodwill for a late delivery"])
    expires_at: datetime | None = None


class Reversal(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"points": 100, "reason": "order o-20261120-0042 was refunded at the desk"}]})

    points: int | None = Field(default=None, gt=0, description="how much to take back (default: all not reversed)")
    reason: NonBlank


class Transfer(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"from_member_id": "m-00001", "to_member_id": "m-00002", "points": 300,
         "reason": "household pooling asked for by both members"}]})

    from_member_id: Id
    to_member_id: Id
    points: int = Field(gt=0, le=10_000_000)
    reason: NonBlank


class Blocking(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"reason": "twelve accounts on one device"}]})

    reason: NonBlank = Field(examples=["twelve accounts on one device"])


class PostedEntry(BaseModel):
    entry_id: int
    member_id: str
    seq: int
    kind: str
    amount: int = Field(description="as the member sees it: positive when points come in")
    balance_after: int


class Done(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"status": "posted", "idempotency_key": "admin:3f9c2a7b1e04:adj-2026-0001", "reason": None,
         "entries": [{"entry_id": 48250, "member_id": "m-00001", "seq": 13, "kind": "adjust_credit", "amount": 120,
                      "balance_after": 1400}]}]})

    status: Literal["posted", "rejected", "pending"]
    idempotency_key: str
    reason: str | None = None
    entries: list[PostedEntry] = Field(default_factory=list)


class Sent(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"status": "sent", "event_id": "admin:3f9c2a7b1e04:5b1f0c2e9a7d4e3f8a6b1c0d2e3f4a5b"}]})

    status: Literal["sent"]
    event_id: str


UNKNOWN_PROGRAM = {"unknown_program": "no programme 'defualt' is in force: the programmes are default, retail, staff, "
                                      "starbucks"}
PENDING: dict[str, Any] = {"status": "pending", "idempotency_key": "admin:3f9c2a7b1e04:adj-2026-0002", "reason": None,
                           "entries": []}


def command_answers(*reasons: str, invalid: str | None = None) -> dict[int | str, dict[str, Any]]:
    """What an admin call that sends a ledger command answers besides its 201: 202 while the ledger has not answered,
    409 with each of the ledger's `reasons` (worded as `send` words them), and the errors, with a 422 of the route's
    own (`invalid`)."""
    key = "admin:3f9c2a7b1e04:adj-2026-0003"
    refused = {reason: f"the ledger refused the command ({reason}); its key is {key}" for reason in reasons}
    pending = {"model": Done, "description": "the ledger has not answered within ?wait: ask GET …/commands/{key}",
               "content": {"application/json": {"example": PENDING}}}
    return {202: pending, **error_responses(400, 401, 403, 404, 409, 422, 503, reasons={
        404: UNKNOWN_PROGRAM, 409: refused, **({422: {"invalid_request": invalid}} if invalid else {})})}


def routes(app: FastAPI, runtime: Runtime, catalogue: Catalogue[ProgrammeVersion]) -> None:
    admin = runtime.requires("admin")

    def known(program_id: str) -> None:
        known_program(catalogue, program_id, runtime.spec.clock())

    def key_of(caller: ApiKey, idempotency_key: str | None) -> str:
        return f"admin:{caller.key_id}:{idempotency_key or uuid.uuid4().hex}"

    def cause(key: str, reason: str, caller: ApiKey, rule_id: str | None = None) -> Cause:
        return Cause(source_event_id=f"{SOURCE}|{key}", rule_id=rule_id or f"admin:{caller.name}", reason=reason)

    def audit(caller: ApiKey, why: str | None = None) -> dict[str, str]:
        """What every admin command's details record: who, by key, and why when the reason is not the cause's."""
        return {**({"why": why} if why else {}), "by": caller.name, "key_id": caller.key_id}

    async def send(cmd: LedgerCommand, wait: float, response: Response) -> Done:
        async with runtime.unit_of_work(SOURCE) as uow:
            uow.emit(cmd, at=cmd.occurred_at, subject=cmd.member_id, source=SOURCE)
            await uow.commit()
        done = await outcome(cmd.idempotency_key, wait)
        if done.status == "rejected":
            raise ApiError(409, done.reason or "rejected", f"the ledger refused the command ({done.reason}); "
                                                            f"its key is {done.idempotency_key}")
        response.status_code = 201 if done.status == "posted" else 202
        return done

    async def outcome(key: str, wait: float) -> Done:
        deadline = time.monotonic() + wait
        while True:
            async with runtime.connection() as db:
                found = await db.fetchrow("SELECT outcome, reason FROM commands WHERE idempotency_key = $1", key)
                if found is not None:
                    rows = await db.fetch(
                        """SELECT e.id, a.member_id, e.seq, e.kind, e.balance_after,
                                  CASE WHEN e.to_account_id = e.account_id THEN e.amount ELSE -e.amount END AS amount
                           FROM entries e JOIN accounts a ON a.id = e.account_id
                           WHERE e.command_key = $1 ORDER BY e.id""", key)
                    return Done(status=found["outcome"], idempotency_key=key, reason=found["reason"],
                                entries=[PostedEntry(entry_id=r["id"], member_id=r["member_id"], seq=r["seq"],
                                                     kind=r["kind"], amount=r["amount"],
                                                     balance_after=r["balance_after"]) for r in rows])
            if time.monotonic() >= deadline:
                return Done(status="pending", idempotency_key=key)
            await asyncio.sleep(POLL_S)

    member = "/v1/programs/{program_id}/members/{member_id:path}"

    @app.get("/v1/programs/{program_id}/commands/{idempotency_key}", response_model=Done, tags=["admin"],
             responses=error_responses(401, 403, 404, 422, 503, reasons={404: UNKNOWN_PROGRAM}),
             summary="What became of a command sent by an admin call that answered 202 (pending)")
    async def command(program_id: ProgramPath, idempotency_key: Annotated[str, Path(max_length=300)],
                      caller: ApiKey = admin) -> Done:
        """What became of the command an admin call sent, by the `idempotency_key` its answer gave
        (`admin:<key id>:<Idempotency-Key>`): `posted` with the entries it made, `rejected` with the ledger's
        reason, or `pending` while the ledger has not stored an outcome, which is also the answer for a key it never
        saw. It looks once and does not wait. Needs the `admin` scope."""
        known(program_id)
        return await outcome(idempotency_key, 0)

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

    member_errors = error_responses(400, 401, 403, 404, 422, 503, reasons={404: UNKNOWN_PROGRAM})

    async def member_event(event: MemberBlocked | MemberUnblocked, caller: ApiKey) -> Sent:
        event_id = f"admin:{caller.key_id}:{uuid.uuid4().hex}"
        async with runtime.unit_of_work(SOURCE) as uow:
            uow.emit(event, at=runtime.spec.clock(), event_id=event_id, source=SOURCE)
            await uow.commit()
        return Sent(status="sent", event_id=event_id)

    @app.post(f"{member}/block", response_model=Sent, tags=["admin"], status_code=202, responses=member_errors,
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

    @app.post(f"{member}/unblock", response_model=Sent, tags=["admin"], status_code=202, responses=member_errors,
              summary="Unblock a member (jifen.member.unblocked.v1 from source jifen.admin)")
    async def unblock(program_id: ProgramPath, member_id: PathId, body: Blocking, caller: ApiKey = admin) -> Sent:
        """Announce `jifen.member.unblocked.v1` on jifen.members, from source `jifen.admin`, through the outbox;
        202 with the event's id once it is stored to send. The redemption service lets the member redeem again in
        programmes whose `redemption.block_sources` list `jifen.admin`. Each call is a new event. Needs the `admin`
        scope."""
        known(program_id)
        return await member_event(MemberUnblocked(program_id=program_id, member_id=member_id, reason=body.reason,
                                                  unblocked_by=caller.name), caller)


class Expiring(BaseModel):
    month: str = Field(examples=["2027-01"])
    points: int


class Reloaded(BaseModel):
    at: datetime
    ok: bool
    detail: str


class Summary(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"program_id": "default", "version": 1, "currency": None, "point_value": "0.01", "issued": 412000,
         "redeemed": 21500, "expired": 4200, "adjusted": 300, "outstanding": 386600, "pending": 0,
         "liability": "3866.00", "entries": 43716, "members": 308,
         "expiring": [{"month": "2027-01", "points": 1250}, {"month": "2027-02", "points": 2310}],
         "last_reload": {"at": "2026-11-24T08:00:02.113000Z", "ok": True, "detail": "loaded at start"}}]})

    program_id: str
    version: int | None = Field(description="the programme version in force now")
    currency: str | None
    point_value: Decimal | None = Field(description="what one point is worth, from the programme file")
    issued: int = Field(description="earned, less reversals and cancels of earning")
    redeemed: int = Field(description="spent, less what cancelled redemptions gave back")
    expired: int
    adjusted: int = Field(description="manual credits less manual debits")
    outstanding: int = Field(description="what members hold: the sum of their balances (debts included)")
    pending: int = Field(description="held by members but not yet available (a return window still open)")
    liability: Decimal | None = Field(description="outstanding × point_value, rounded half up to the cent; none "
                                                  "when the programme gives its points no value")
    entries: int
    members: int
    expiring: list[Expiring] = Field(description="points of open lots expiring per month, the next 12 months")
    last_reload: Reloaded | None = Field(description="the last time the ledger read the programme folder")


def summary_routes(app: FastAPI, runtime: Runtime, catalogue: Catalogue[ProgrammeVersion]) -> None:
    read = [runtime.requires("read")]

    @app.get("/v1/programs/{program_id}/summary", response_model=Summary, tags=["programme"], dependencies=read,
             responses=error_responses(401, 403, 404, 422, 503, reasons={404: UNKNOWN_PROGRAM}),
             summary="A programme's points as a whole: issued, redeemed, expired, adjusted, outstanding (exact), "
                     "pending, the liability, what expires month by month")
    async def summary(program_id: ProgramPath) -> Summary:
        """A programme's points as a whole, from the ledger's own tables: issued, redeemed, expired and adjusted,
        what members hold (`outstanding`, exact) and how much of it is still pending, the liability (outstanding ×
        the programme's `point_value`, none without one), and the points expiring in each of the next 12 months.
        `last_reload` says when the ledger last read the programme folder and whether that worked. A programme not
        in force is 404 `unknown_program`. Needs the `read` scope."""
        now = runtime.spec.clock()
        known_program(catalogue, program_id, now)
        programme = catalogue.at(program_id, now)
        async with runtime.connection() as db:
            found = [f for f in await totals.programme_figures(db) if f.program_id == program_id]
            pending, expiring = await totals.pending_and_expiring(db, program_id, now)
            members = await totals.members_of(db, program_id)
        figures = found[0] if found else totals.figures(program_id, [])
        value = programme.point_value if programme is not None else None
        reload = catalogue.last_reload
        return Summary(
            program_id=program_id, version=programme.version if programme else None,
            currency=programme.currency if programme else None, point_value=value,
            issued=figures.issued, redeemed=figures.redeemed, expired=figures.expired, adjusted=figures.adjusted,
            outstanding=figures.outstanding, pending=pending, entries=figures.entries, members=members,
            liability=(figures.outstanding * value).quantize(CENT, ROUND_HALF_UP) if value is not None else None,
            expiring=[Expiring(month=m, points=p) for m, p in expiring],
            last_reload=Reloaded(at=reload.at, ok=reload.ok, detail=reload.detail) if reload else None)


def known_program(catalogue: Catalogue[ProgrammeVersion], program_id: str, now: datetime | None) -> None:
    """404 `unknown_program` for a programme no file in the folder defines, or (given `now`) none in force then."""
    known = catalogue.at(program_id, now) is not None if now is not None else program_id in catalogue.versions
    if not known:
        raise ApiError(404, "unknown_program", f"no programme {program_id!r}{' is in force' if now else ''}: the "
                                               f"programmes are {', '.join(sorted(catalogue.versions)) or 'none'}")
