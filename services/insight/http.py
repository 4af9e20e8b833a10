"""Insight's routes: each reads the projection through `runtime.read` (503 with `Retry-After` while the database is
away). Periods are local days of the programme's time zone, `from` and `to` included; the default is the 30 days
ending today."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Literal

import asyncpg
from fastapi import FastAPI, Path, Query, Response

from services.insight import domain, experiments, queries
from services.insight.api import (
    ADMIN_ERRORS,
    EXPERIMENT_ERRORS,
    READ_ERRORS,
    SEGMENT_ERRORS,
    ArmFigure,
    Band,
    BandMember,
    BandMembersOut,
    CohortOut,
    CohortsOut,
    CurvePoint,
    ExperimentArm,
    ExperimentMetric,
    ExperimentOut,
    Finding,
    KpiOut,
    KpisOut,
    Leader,
    LeaderboardOut,
    LiabilityOut,
    MonthOut,
    Preference,
    PreferenceOut,
    Rebate,
    Referrals,
    RewardPoints,
    RulePoints,
    SampleRatioOut,
    SegmentsOut,
    SeriesPoint,
    TierMix,
    VersusControl,
    WatchOut,
)
from services.insight.programme import InsightProgramme
from shared.experiments import Experiment
from shared.http import ApiError, PathId, ProgramPath
from shared.programmes import Catalogue
from shared.service import Runtime
from shared.uow import UnitOfWork

From = Annotated[date | None, Query(alias="from", description="first local day (default: 29 days before `to`)")]
To = Annotated[date | None, Query(alias="to", description="last local day, included (default: today)")]
MAX_DAYS = 3660
ExperimentPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


def csv_answer(header: list[str], rows: list[list[object]], name: str) -> Response:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


def routes(catalogue: Catalogue[InsightProgramme]) -> Callable[[FastAPI, Runtime], None]:
    def add(app: FastAPI, runtime: Runtime) -> None:
        read = [runtime.requires("read")]

        def programme(program_id: str) -> tuple[InsightProgramme, datetime]:
            now = runtime.spec.clock()
            return catalogue.in_force(program_id, now), now

        def period(found: InsightProgramme, now: datetime, start: date | None, end: date | None) -> tuple[date, date]:
            end = end or now.astimezone(found.zone).date()
            start = start or end - timedelta(days=29)
            if start > end:
                raise ApiError(422, "invalid_period", f"`from` {start} is after `to` {end}")
            if (end - start).days >= MAX_DAYS:
                raise ApiError(422, "invalid_period", f"a period is at most {MAX_DAYS} days; {start} to {end} is "
                                                      f"{(end - start).days + 1}")
            return start, end

        @app.get("/v1/programs/{program_id}/kpis", response_model=KpisOut, response_model_by_alias=True,
                 tags=["insight"], dependencies=read, responses=READ_ERRORS,
                 summary="The programme's health indicators for a period, with verdicts and advice")
        async def get_kpis(program_id: ProgramPath, start: From = None, end: To = None,
                           granularity: Literal["day", "week", "month"] = "day") -> KpisOut:
            """Every indicator of docs/insight.md for the local days `from`–`to` (both included): the source
            documents' health indicators with their healthy range, a verdict (`ok`, `watch`, `act`) and the advice
            for a verdict other than ok; points issued by rule, redeemed by reward, tier mix, rebates, referrals,
            tasks by type; and a series per `granularity` (weeks start on Monday). 422 `invalid_period` when `from`
            is after `to`. Needs the `read` scope."""
            found, now = programme(program_id)
            first, last = period(found, now, start, end)

            async def work(db: asyncpg.Connection) -> KpisOut:
                sums = await queries.period(db, program_id, first, last, found.cheapest_reward, found.point_value)
                steps = await queries.series(db, program_id, first, last, granularity)
                tiers = await queries.tiers(db, program_id, first, last)
                rebates = await queries.rebates(db, program_id, first, last)
                return kpis_out(found, program_id, first, last, granularity, sums, steps, tiers, rebates)

            return await runtime.read(work)

        @app.get("/v1/programs/{program_id}/liability", response_model=LiabilityOut, tags=["insight"],
                 dependencies=read, responses=READ_ERRORS | {200: {"content": {"text/csv": {}}}},
                 summary="The liability roll-forward, month by month, in points and money (CSV with ?format=csv)")
        async def get_liability(program_id: ProgramPath, format: Literal["json", "csv"] = "json"
                                ) -> LiabilityOut | Response:
            """opening + issued − redeemed − expired ± adjusted (± transfers, which net to zero) = closing, for every
            month from the first entry to now, in points and at `point_value` (half up to the cent). The last
            closing equals the ledger's summary `outstanding`. `?format=csv` answers the same table as CSV. Needs
            the `read` scope."""
            found, _ = programme(program_id)
            months = await runtime.read(lambda db: queries.monthly(db, program_id))
            rows = domain.roll_forward(months)
            value = found.point_value

            def worth(points: int) -> Decimal | None:
                return domain.cents(points * value) if value is not None else None

            out = [MonthOut(month=r.month.strftime("%Y-%m"), opening=r.opening, issued=r.issued, redeemed=r.redeemed,
                            expired=r.expired, adjusted=r.adjusted, transferred=r.transferred, closing=r.closing,
                            closing_money=worth(r.closing)) for r in rows]
            if format == "csv":
                return csv_answer(["month", "opening", "issued", "redeemed", "expired", "adjusted", "transferred",
                                   "closing", "closing_money", "currency"],
                                  [[m.month, m.opening, m.issued, m.redeemed, m.expired, m.adjusted, m.transferred,
                                    m.closing, m.closing_money if m.closing_money is not None else "",
                                    found.currency or ""] for m in out], f"{program_id}-liability.csv")
            closing = rows[-1].closing if rows else 0
            return LiabilityOut(program_id=program_id, currency=found.currency, point_value=value, months=out,
                                closing=closing, closing_money=worth(closing))

        @app.get("/v1/programs/{program_id}/cohorts", response_model=CohortsOut, tags=["insight"], dependencies=read,
                 responses=READ_ERRORS, summary="Points by issue month: redeemed, expired and outstanding after 0, 1, "
                 "… months, and the estimated ultimate breakage")
        async def get_cohorts(program_id: ProgramPath) -> CohortsOut:
            """Each issue month's points (earned in it, plus points credited back in it), and cumulatively what of
            them was redeemed, expired, otherwise taken (reversed, transferred, adjusted) and is still outstanding
            after each month up to now; docs/insight.md says how points are charged to a cohort. The cohorts'
            outstanding adds up to what members hold. `ultimate_breakage` is estimated as `method` says. Needs the
            `read` scope."""
            found, now = programme(program_id)
            cohorts = await runtime.read(lambda db: queries.cohorts(db, program_id))
            this_month = now.astimezone(found.zone).date().replace(day=1)
            return CohortsOut(
                program_id=program_id, cohorts=[
                    CohortOut(month=c.month.strftime("%Y-%m"), issued=c.issued + c.credited,
                              curve=[CurvePoint(**p) for p in c.curve(max(domain.age_of(c.month, this_month),
                                                                          max(c.by_age, default=0)))])
                    for c in cohorts],
                ultimate_breakage=domain.ultimate_breakage(cohorts), method=domain.BREAKAGE_METHOD)

        @app.get("/v1/programs/{program_id}/leaderboard", response_model=LeaderboardOut, response_model_by_alias=True,
                 tags=["insight"], dependencies=read, responses=READ_ERRORS,
                 summary="Top earners of a period (points earned, not balance), without members who opted out")
        async def get_leaderboard(program_id: ProgramPath, start: From = None, end: To = None,
                                  limit: Annotated[int, Query(ge=1, le=1000)] = 10) -> LeaderboardOut:
            """Members by points earned in the local days `from`–`to` (earn credits; ties by member id), leaving out
            members who opted out (`PUT …/members/{member_id}/leaderboard`). Needs the `read` scope."""
            found, now = programme(program_id)
            first, last = period(found, now, start, end)
            top = await runtime.read(lambda db: queries.leaderboard(db, program_id, first, last, limit))
            return LeaderboardOut.model_validate({"program_id": program_id, "from": first, "to": last, "members": [
                Leader(rank=i + 1, member_id=m, points=p) for i, (m, p) in enumerate(top)]})

        @app.put("/v1/programs/{program_id}/members/{member_id:path}/leaderboard", response_model=PreferenceOut,
                 tags=["insight"], dependencies=[runtime.requires("admin")], responses=ADMIN_ERRORS,
                 summary="Leave a member out of leaderboards, or back in (the member's setting)")
        async def put_preference(program_id: ProgramPath, member_id: PathId, body: Preference) -> PreferenceOut:
            """`opt_out: true` leaves the member out of every leaderboard of the programme from now on; `false`
            puts them back. Needs the `admin` scope."""
            programme(program_id)

            async def work(uow: UnitOfWork) -> None:
                await queries.opt_out(uow.db, program_id, member_id, body.opt_out)

            await runtime.transaction(work)
            return PreferenceOut(program_id=program_id, member_id=member_id, opt_out=body.opt_out)

        def bands_of(found: InsightProgramme, program_id: str) -> int:
            cheapest = found.cheapest_reward
            if cheapest is None:
                raise ApiError(404, "no_rewards", f"programme {program_id!r} has no rewards: balance bands are "
                                                  "measured from the cheapest reward")
            return cheapest

        @app.get("/v1/programs/{program_id}/segments", response_model=SegmentsOut, tags=["insight"],
                 dependencies=read, responses=SEGMENT_ERRORS,
                 summary="Members by balance band, measured from the cheapest reward")
        async def get_segments(program_id: ProgramPath) -> SegmentsOut:
            """Members holding points, by balance now: below the cheapest reward, 1–2×, 2–3× and above 3×. 404
            `no_rewards` for a programme without rewards. Needs the `read` scope."""
            found, _ = programme(program_id)
            cheapest = bands_of(found, program_id)
            counted = await runtime.read(lambda db: queries.bands(db, program_id, cheapest))
            return SegmentsOut(program_id=program_id, cheapest_reward=cheapest, bands=[
                Band(band=name, low=low, high=high, members=n) for name, low, high, n in counted])

        @app.get("/v1/programs/{program_id}/segments/{band}/members", response_model=BandMembersOut,
                 tags=["insight"], dependencies=read,
                 responses=SEGMENT_ERRORS | {200: {"content": {"text/csv": {}}}},
                 summary="The members of one balance band, for a CRM push (CSV with ?format=csv)")
        async def get_band_members(program_id: ProgramPath, band: Annotated[str, Path(max_length=20)],
                                   after: Annotated[str, Query(max_length=200)] = "",
                                   limit: Annotated[int, Query(ge=1, le=100000)] = 10000,
                                   format: Literal["json", "csv"] = "json") -> BandMembersOut | Response:
            """The band's members and balances, by member id; `after` (the last id of a page, `next_after`) and
            `limit` page through a large band; `?format=csv` answers `member_id,balance` rows. 404 `unknown_band`.
            Needs the `read` scope."""
            found, _ = programme(program_id)
            cheapest = bands_of(found, program_id)
            bounds = {name: (low, high) for name, low, high in domain.band_bounds(cheapest)}
            if band not in bounds:
                raise ApiError(404, "unknown_band", f"no band {band!r} (the bands are {', '.join(bounds)})")
            low, high = bounds[band]
            rows = await runtime.read(lambda db: queries.band_members(db, program_id, low, high, after, limit))
            if format == "csv":
                return csv_answer(["member_id", "balance"], [[m, b] for m, b in rows], f"{program_id}-{band}.csv")
            return BandMembersOut(program_id=program_id, band=band, low=low, high=high,
                                  members=[BandMember(member_id=m, balance=b) for m, b in rows],
                                  next_after=rows[-1][0] if len(rows) == limit else None)

        @app.get("/v1/programs/{program_id}/watch", response_model=WatchOut, tags=["insight"], dependencies=read,
                 responses=READ_ERRORS, summary="The abuse watch (防羊毛): members far outside the norm, with reasons")
        async def get_watch(program_id: ProgramPath) -> WatchOut:
            """The last watch round's findings, each with its reason and detail. Blocking stays a person's decision
            (`POST` the ledger's `…/members/{member_id}/block`). Needs the `read` scope."""
            programme(program_id)
            rows = await runtime.read(lambda db: db.fetch(
                "SELECT member_id, reason, detail, found_at FROM watch WHERE program_id = $1 "
                "ORDER BY reason, member_id", program_id))
            return WatchOut(program_id=program_id, members=[Finding(**dict(r)) for r in rows])

        def declared(program_id: str, experiment_id: str, now: datetime) -> Experiment:
            """The experiment as the newest version in effect that declares it has it, else as the first (future)
            version that does."""
            versions = catalogue.versions.get(program_id, [])
            found = [(v.effective_from <= now, e) for v in versions for e in v.experiments
                     if e.experiment_id == experiment_id]
            in_effect = [e for effective, e in found if effective]
            if in_effect:
                return in_effect[-1]
            if found:
                return found[0][1]
            known = sorted({e.experiment_id for v in versions for e in v.experiments})
            raise ApiError(404, "unknown_experiment", f"programme {program_id!r} declares no experiment "
                                                      f"{experiment_id!r} (it declares {', '.join(known) or 'none'})")

        @app.get("/v1/programs/{program_id}/experiments/{experiment_id}", response_model=ExperimentOut,
                 tags=["insight"], dependencies=read, responses=EXPERIMENT_ERRORS,
                 summary="An experiment's arms against the control: each metric's difference with a 95% interval, "
                         "and the sample-ratio check")
        async def get_experiment(program_id: ProgramPath, experiment_id: ExperimentPath) -> ExperimentOut:
            """Every member seen with an event in the experiment's window is in the arm every service gives them
            (a stable hash of programme, experiment and member). Per arm: its members, and per metric the mean per
            member (or the proportion) with its standard error and, against the first arm (the control), the
            difference with a 95% interval (Welch for means, Newcombe for proportions), `touched` where the arm's
            overrides change a section that moves the metric; and a chi-square of the members per arm against the
            declared shares, `flagged` when p < 0.001. 404 `unknown_experiment` for an id no version of the
            programme declares. Needs the `read` scope."""
            _, now = programme(program_id)
            experiment = declared(program_id, experiment_id, now)
            figures = await runtime.read(lambda db: queries.experiment(db, program_id, experiment_id))
            return experiment_out(program_id, experiment, figures, now)

    return add


def _places(value: float, places: str = "0.0001") -> Decimal:
    """A statistic to four places, half up, as insight writes ratios."""
    return Decimal(repr(value)).quantize(Decimal(places), ROUND_HALF_UP)


def _maybe(value: float | None) -> Decimal | None:
    return None if value is None else _places(value)


def experiment_out(program_id: str, experiment: Experiment, figures: dict[str, experiments.ArmFigures],
                   now: datetime) -> ExperimentOut:
    arms = [(arm.name, sorted(arm.overrides)) for arm in experiment.arms]
    split = experiments.sample_ratio([figures[a.name].members if a.name in figures else 0 for a in experiment.arms],
                                     [a.share for a in experiment.arms])
    status: Literal["scheduled", "running", "ended"] = (
        "scheduled" if now < experiment.starts else "running" if experiment.running(now) else "ended")

    def versus(d: experiments.Difference | None) -> VersusControl | None:
        if d is None:
            return None
        return VersusControl(difference=_places(d.difference), ci_low=_maybe(d.low), ci_high=_maybe(d.high),
                             lift=_maybe(d.lift), significant=d.significant)

    return ExperimentOut(
        program_id=program_id, experiment_id=experiment.experiment_id, name=experiment.name,
        starts=experiment.starts, ends=experiment.ends, status=status, control=experiment.arms[0].name,
        arms=[ExperimentArm(arm=a.name, share=a.share, members=n, overrides=sections)
              for a, n, (_, sections) in zip(experiment.arms, split.observed, arms, strict=True)],
        metrics=[ExperimentMetric(metric=r.metric.metric, label=r.metric.label, kind=r.metric.kind,
                                  unit=r.metric.unit, arms=[
                                      ArmFigure(arm=a.arm, n=a.n, value=_maybe(a.value),
                                                standard_error=_maybe(a.standard_error), successes=a.successes,
                                                touched=a.touched, versus_control=versus(a.versus_control))
                                      for a in r.arms])
                 for r in experiments.compare(arms, figures)],
        sample_ratio=SampleRatioOut(
            observed={a.name: n for a, n in zip(experiment.arms, split.observed, strict=True)},
            expected={a.name: _places(e) for a, e in zip(experiment.arms, split.expected, strict=True)},
            chi_square=_places(split.chi_square), df=split.df,
            p_value=float(f"{split.p_value:.6g}") if split.p_value is not None else None, flagged=split.flagged),
        method=experiments.METHOD)


def kpis_out(found: InsightProgramme, program_id: str, first: date, last: date, granularity: str,
             sums: domain.Period, steps: list[tuple[date, domain.Movement, int, Decimal]],
             tiers: list[tuple[str, int, Decimal]], rebates: list[tuple[str, int, Decimal]]) -> KpisOut:
    redeemed = sums.by_dim("redeemed_reward")
    cancelled = sums.by_dim("cancelled_reward")
    rewards = sorted(((r, v[0] - cancelled.get(r, (0, Decimal(0), 0))[0], v[2]) for r, v in redeemed.items()),
                     key=lambda t: (-t[1], t[0]))
    value = found.point_value

    def cost(points: int) -> Decimal | None:
        return domain.cents(points * value) if value is not None else None

    rewarded, rejected = sums.count("referral_rewarded"), sums.count("referral_rejected")
    return KpisOut.model_validate({
        "program_id": program_id, "from": first, "to": last, "granularity": granularity,
        "timezone": found.timezone, "currency": found.currency, "point_value": value,
        "kpis": [KpiOut(**k.__dict__) for k in domain.kpis(sums)],
        "series": [SeriesPoint(period=when, issued=m.issued, redeemed=m.redeemed, expired=m.expired,
                               adjusted=m.adjusted, active_members=active, revenue=revenue)
                   for when, m, active, revenue in steps],
        "issued_by_rule": [RulePoints(rule_id=r or "(none)", points=v[0])
                           for r, v in sorted(sums.by_dim("issued_rule").items(), key=lambda t: -t[1][0])],
        "redeemed_by_reward": [RewardPoints(reward_id=r, points=p, count=n) for r, p, n in rewards],
        "tiers": [TierMix(tier=t, members=n, spend=s, spend_per_member=domain.cents(s / n) if n else None)
                  for t, n, s in tiers],
        "rebates": [Rebate(rule_id=r, points=p, cost=cost(p), revenue=rev,
                           cost_share=domain.ratio(c, rev) if (c := cost(p)) is not None and rev > 0 else None)
                    for r, p, rev in rebates],
        "referrals": Referrals(rewarded=rewarded, rejected=rejected,
                               rejected_by_reason={r: v[2] for r, v in sums.by_dim("referral_rejected").items()},
                               revoked=sums.count("referral_revoked"),
                               conversion=domain.ratio(rewarded, rewarded + rejected),
                               referee_spend_90d=sums.referee_spend_90d),
        "tasks_by_type": {t: v[2] for t, v in sorted(sums.by_dim("task").items())},
        "tasks_per_member_by_type": {t: per for t, v in sorted(sums.by_dim("task").items())
                                     if (per := domain.ratio(v[2], sums.members)) is not None},
    })
