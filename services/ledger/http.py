"""The ledger's routes: a member's balance and entries, a programme's summary (the `read` scope), and the admin
calls (services/ledger/admin.py, the `admin` scope). Thin: parse, read through `runtime.read`, answer."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any

import asyncpg
import orjson
from fastapi import FastAPI, Query

from services.ledger import admin, totals
from services.ledger.api import (
    READ_ERRORS,
    Balance,
    EntriesPage,
    EntryView,
    Expiring,
    HoldOut,
    LotOut,
    NextExpiry,
    Reloaded,
    Summary,
)
from services.ledger.domain import MemberBook
from services.ledger.repository import books, entries
from shared.http import BIGINT_MAX, PathId, ProgramPath
from shared.programmes import Catalogue, ProgrammeVersion, UnknownProgram
from shared.service import Runtime

MEMBER = "/v1/programs/{program_id}/members/{member_id:path}"
CENT = Decimal("0.01")


def routes(catalogue: Catalogue[ProgrammeVersion]) -> Callable[[FastAPI, Runtime], None]:
    def install(app: FastAPI, runtime: Runtime) -> None:
        _member_routes(app, runtime, catalogue)
        admin.routes(app, runtime, catalogue)
        _summary_route(app, runtime, catalogue)

    return install


def known(catalogue: Catalogue[ProgrammeVersion], program_id: str, now: datetime) -> None:
    """A programme some file defines, in effect or not yet: a typo in the programme is 404 `unknown_program`, not
    a member with nothing."""
    if program_id not in catalogue.versions:
        raise UnknownProgram(catalogue.why_not(program_id, now))


def _member_routes(app: FastAPI, runtime: Runtime, catalogue: Catalogue[ProgrammeVersion]) -> None:
    read = [runtime.requires("read")]

    @app.get(f"{MEMBER}/balance", response_model=Balance, tags=["ledger"], dependencies=read,
             responses=READ_ERRORS, summary="A member's points: available, pending, held, lifetime earned, next expiry")
    async def get_balance(program_id: ProgramPath, member_id: PathId) -> Balance:
        """The member's points now, from the ledger's own tables: `available` is spendable (less any debt),
        `pending` waits for its return window, `held` is reserved by open holds (a redemption or a points payment),
        `awaiting_expiry` has expired and waits for the sweeper. A member with nothing posted has zeros; a programme
        no file defines and nothing was posted to is 404 `unknown_program`. Needs the `read` scope."""
        now = runtime.spec.clock()

        async def book_of(db: asyncpg.Connection) -> MemberBook | None:
            return await books.member_book(db, program_id, member_id)

        book = await runtime.read(book_of)
        if book is None:  # a member who never earned has nothing, which is not an error; a typo in the programme is
            known(catalogue, program_id, now)
            return Balance(program_id=program_id, member_id=member_id, available=0, pending=0, held=0,
                           lifetime_earned=0, next_expiry=None, balance=0, awaiting_expiry=0, debt=0)
        expiry = book.next_expiry(now)
        return Balance(
            program_id=program_id, member_id=member_id, available=book.available(now), pending=book.pending(now),
            held=book.held(), lifetime_earned=book.account.lifetime_earned,
            next_expiry=NextExpiry(points=expiry[0], date=expiry[1]) if expiry else None,
            balance=book.account.balance, awaiting_expiry=book.awaiting_expiry(now), debt=book.account.debt)

    @app.get(f"{MEMBER}/entries", response_model=EntriesPage, tags=["ledger"], dependencies=read,
             responses=READ_ERRORS,
             summary="A member's entries, newest first, with the lots each made and the open holds")
    async def get_entries(program_id: ProgramPath, member_id: PathId,
                          limit: Annotated[int, Query(ge=1, le=500)] = 50,
                          before_seq: Annotated[int | None, Query(ge=1, le=BIGINT_MAX)] = None) -> EntriesPage:
        """The member's entries, newest first, `limit` at a time (at most 500): pass `next_before_seq` as
        `before_seq` for the next page. Each entry shows its signed amount, the balance after it, its cause and the
        lots it made with what is left of each; `open_holds` lists the holds reserving points now. A correction is a
        new entry naming the one it corrects (`corrects_entry_id`). An unknown programme with nothing posted is 404
        `unknown_program`. Needs the `read` scope."""

        async def page(db: asyncpg.Connection) -> EntriesPage:
            rows, lots = await entries.entries_page(db, program_id, member_id, before_seq, limit)
            holds = await entries.open_holds_of(db, program_id, member_id)
            if not rows:
                known(catalogue, program_id, runtime.spec.clock())
            views = [EntryView(
                entry_id=r["id"], seq=r["seq"], kind=r["kind"], amount=r["amount"] if r["incoming"] else -r["amount"],
                balance_after=r["balance_after"], idempotency_key=r["command_key"],
                source_event_id=r["source_event_id"], rule_id=r["rule_id"], rule_version=r["rule_version"],
                reason=r["reason"], arms=_json(r["arms"]), tier=r["tier"], details=r["details"],
                occurred_at=r["occurred_at"], posted_at=r["posted_at"],
                corrects_entry_id=r["corrects_entry_id"], hold_id=r["hold_id"],
                lots=[LotOut(lot_id=lot["id"], amount=lot["amount"], unspent=lot["unspent"],
                             available_at=lot["available_at"], expires_at=lot["expires_at"])
                      for lot in lots.get(r["id"], [])],
                hash=bytes(r["hash"]).hex()) for r in rows]
            more = len(rows) == limit and rows[-1]["seq"] > 1
            return EntriesPage(entries=views, next_before_seq=rows[-1]["seq"] if more else None,
                               open_holds=[HoldOut(**dict(h)) for h in holds])

        return await runtime.read(page)


def _summary_route(app: FastAPI, runtime: Runtime, catalogue: Catalogue[ProgrammeVersion]) -> None:
    @app.get("/v1/programs/{program_id}/summary", response_model=Summary, tags=["programme"],
             dependencies=[runtime.requires("read")], responses=READ_ERRORS,
             summary="A programme's points as a whole: issued, redeemed, expired, adjusted, outstanding (exact), "
                     "pending, the liability, what expires month by month")
    async def summary(program_id: ProgramPath, month: Annotated[str | None, Query(
            pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$", description="only this month's expiring points (YYYY-MM)")] = None
                      ) -> Summary:
        """A programme's points as a whole, from the ledger's own tables: issued, redeemed, expired and adjusted,
        what members hold (`outstanding`, exact) and how much of it is still pending, the liability (outstanding ×
        the programme's `point_value`, none without one), the points expiring in every month from now on (months of the
        programme's time zone; `?month=YYYY-MM` for one), each with its value and currency, and those never expiring.
        `last_reload` says when the ledger last read the programme folder and whether that worked. A programme not
        in force is 404 `unknown_program`. Needs the `read` scope."""
        now = runtime.spec.clock()
        programme = catalogue.in_force(program_id, now)

        async def figures(db: asyncpg.Connection) -> tuple[totals.Figures, int, list[tuple[str, int]], int, int]:
            found = [f for f in await totals.programme_figures(db) if f.program_id == program_id]
            pending, expiring, never = await totals.pending_and_expiring(db, program_id, now, programme.timezone,
                                                                          month)
            return (found[0] if found else totals.figures(program_id, []), pending, expiring, never,
                    await totals.members_of(db, program_id))

        counted, pending, expiring, never, members = await runtime.read(figures)
        value = programme.point_value
        reload = catalogue.last_reload
        return Summary(
            program_id=program_id, version=programme.version, currency=programme.currency, point_value=value,
            issued=counted.issued, redeemed=counted.redeemed, expired=counted.expired, adjusted=counted.adjusted,
            outstanding=counted.outstanding, pending=pending, entries=counted.entries, members=members,
            liability=(counted.outstanding * value).quantize(CENT, ROUND_HALF_UP) if value is not None else None,
            expiring=[Expiring(month=m, points=p, currency=programme.currency,
                               value=(p * value).quantize(CENT, ROUND_HALF_UP) if value is not None else None)
                      for m, p in expiring], without_expiry=never,
            last_reload=Reloaded(at=reload.at, ok=reload.ok, detail=reload.detail) if reload else None)


def _json(value: Any) -> Any:
    """A jsonb column as read: text on a bare asyncpg connection, already decoded on an engine's."""
    return orjson.loads(value) if isinstance(value, str | bytes) else value
