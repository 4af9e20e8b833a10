"""The tiers service's routes: a member's tier and its history, the programme's levels. Each reads through
`runtime.read` (503 with `Retry-After` while the database is away); an unknown programme or one without tiers is a
domain refusal the edge answers as 404."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import asyncpg
from fastapi import FastAPI, Query

from services.tiers import domain, repository
from services.tiers.api import ERRORS, ChangeOut, HistoryOut, Keep, LevelOut, LevelsOut, NextTier, Qualifying, TierOut
from services.tiers.domain import Member, reach
from services.tiers.programme import TiersProgramme, in_force
from shared.http import PathId, ProgramPath
from shared.programmes import Catalogue
from shared.service import Runtime


def routes(catalogue: Catalogue[TiersProgramme]) -> Callable[[FastAPI, Runtime], None]:
    def add(app: FastAPI, runtime: Runtime) -> None:
        read = [runtime.requires("read")]

        @app.get("/v1/programs/{program_id}/members/{member_id:path}/tier", response_model=TierOut, tags=["tiers"],
                 dependencies=read, responses=ERRORS, summary="A member's tier, what qualifies it, what the next tier "
                 "and keeping this one need")
        async def get_tier(program_id: ProgramPath, member_id: PathId) -> TierOut:
            """Where the member stands now, any review due by now applied: the tier, since when and until when
            (`valid_until`, when the next review judges it), whether it was set by hand, the metric's value in the
            current window, what the next level needs in that window (`next`) and what keeping this tier needs in the
            window the review judges (`keep`). A member the service never saw is at the first level. 404
            `unknown_program`, or `no_tiers` for a programme without tiers. Needs the `read` scope."""
            now = runtime.spec.clock()
            programme, rules = in_force(catalogue, program_id, now)
            key = (program_id, member_id)

            async def member(db: asyncpg.Connection) -> Member | None:
                return (await repository.members(db, {key: (now, reach(rules))})).get(key)

            found = await runtime.read(member)
            seen = domain.standing(found or Member.new(rules), rules, programme.zone, now)
            level = rules.level(seen.tier)
            return TierOut(
                program_id=program_id, member_id=member_id, tier=seen.tier, since=seen.since,
                valid_until=seen.valid_until, manual=seen.manual,
                qualifying=Qualifying(metric=seen.metric, value=seen.value, window_start=seen.window.start,
                                      window_end=seen.window.end),
                next=NextTier(tier=seen.next_tier, needed=seen.next_needed)
                if seen.next_tier is not None and seen.next_needed is not None else None,
                keep=Keep(needed=seen.keep_needed, by=seen.keep_by)
                if seen.keep_needed is not None and seen.keep_by is not None else None,
                benefits=level.benefits, earn_multiplier=level.earn_multiplier)

        @app.get("/v1/programs/{program_id}/members/{member_id:path}/tier/history", response_model=HistoryOut,
                 tags=["tiers"], dependencies=read, responses=ERRORS, summary="Every tier change of a member, newest "
                 "first, as announced on jifen.tiers")
        async def get_history(program_id: ProgramPath, member_id: PathId,
                              limit: Annotated[int, Query(ge=1, le=500)] = 50,
                              before_seq: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None) -> HistoryOut:
            """The member's tier changes as announced on jifen.tiers (`jifen.tier.changed.v1`), newest first,
            `limit` at a time (at most 500; pass `next_before_seq` as `before_seq` for the next page): the tier and
            the one before, the reason (upgrade, downgrade, manual, expired_manual) and its detail, the end of the
            period and the metric's value that decided it. 404 `unknown_program` or `no_tiers`. Needs the `read`
            scope."""
            in_force(catalogue, program_id, runtime.spec.clock())
            rows = await runtime.read(lambda db: repository.history(db, program_id, member_id, limit, before_seq))
            more = len(rows) == limit and rows[-1]["seq"] > 1
            return HistoryOut(changes=[ChangeOut(**dict(r)) for r in rows],
                              next_before_seq=rows[-1]["seq"] if more else None)

        @app.get("/v1/programs/{program_id}/tiers", response_model=LevelsOut, tags=["tiers"], dependencies=read,
                 responses=ERRORS, summary="The programme's levels in force, with the members at each")
        async def get_levels(program_id: ProgramPath) -> LevelsOut:
            """The levels of the programme version in force, lowest first: threshold, earn multiplier, benefits and
            grace days, with how many members the service holds at each now; and the metric, its window and how a
            review lowers a tier (`downgrade`). 404 `unknown_program` or `no_tiers`. Needs the `read` scope."""
            programme, rules = in_force(catalogue, program_id, runtime.spec.clock())
            counts = await runtime.read(repository.counts)
            window = rules.window.kind + (f" {rules.window.months} months" if rules.window.kind == "rolling" else "")
            return LevelsOut(
                program_id=program_id, version=programme.version, metric=rules.metric, window=window,
                downgrade=rules.downgrade, warn_days=rules.warn_days,
                levels=[LevelOut(tier=lv.tier, threshold=lv.threshold, earn_multiplier=lv.earn_multiplier,
                                 benefits=lv.benefits, grace_days=lv.grace_days,
                                 members=counts.get((program_id, lv.tier), 0)) for lv in rules.levels])

    return add
