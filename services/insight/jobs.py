"""Insight's periodic jobs: the KPI gauges Prometheus alerts on, and the abuse watch's round."""

from __future__ import annotations

from datetime import datetime, timedelta

from services.insight import domain, queries, repository, watch
from services.insight.metrics import InsightMetrics
from services.insight.programme import InsightProgramme
from shared import keys
from shared.contracts.insight import MemberFlagged
from shared.jobs import Job, Page
from shared.programmes import Catalogue
from shared.uow import UnitOfWork

VERDICT_VALUE = {"ok": 0, "watch": 1, "act": 2}


def in_force(catalogue: Catalogue[InsightProgramme], now: datetime) -> list[InsightProgramme]:
    found = (catalogue.at(p, now) for p in sorted(catalogue.versions))
    return [p for p in found if p is not None]


def gauges(catalogue: Catalogue[InsightProgramme], metrics: InsightMetrics, interval_s: float, days: int) -> Job:
    """Every programme's KPIs over the last `days` local days, as gauges with their verdicts (0 ok, 1 watch, 2 act)."""

    async def page(uow: UnitOfWork, now: datetime, cursor: object) -> Page:
        programmes = in_force(catalogue, now)
        for programme in programmes:
            end = now.astimezone(programme.zone).date()
            sums = await queries.period(uow.db, programme.program_id, queries.days_back(end, days), end,
                                        programme.cheapest_reward, programme.point_value)
            for kpi in domain.kpis(sums):
                labels = (programme.program_id, kpi.kpi)
                if kpi.unit not in ("ratio", "share", "members"):
                    continue
                # A KPI with nothing to measure it by now has no value and no verdict: its old ones would keep an
                # alert firing on a verdict that no longer holds.
                if kpi.value is None:
                    metrics.kpi.remove(*labels)
                else:
                    metrics.kpi.labels(*labels).set(float(kpi.value))
                if kpi.verdict is None:
                    metrics.verdict.remove(*labels)
                else:
                    metrics.verdict.labels(*labels).set(VERDICT_VALUE[kpi.verdict])
        return Page(len(programmes))

    return Job("kpi-gauges", page, interval_s)


def abuse_watch(catalogue: Catalogue[InsightProgramme], metrics: InsightMetrics, interval_s: float,
                days: int = 30) -> Job:
    """Members far outside their programme's norm over the last `days`: the watch table is replaced, and each new
    finding is announced once (`jifen.insight.member.flagged.v1`) for the risk desk."""

    async def page(uow: UnitOfWork, now: datetime, cursor: object) -> Page:
        if not await repository.share_projection(uow.db, uow.schema):
            return Page(0)  # a rebuild is running: judged on half a replay, findings would drop and be announced again
        programmes = in_force(catalogue, now)
        total = 0
        for programme in programmes:
            p = programme.program_id
            end = now.astimezone(programme.zone).date()
            start = end - timedelta(days=days - 1)
            rows = await uow.db.fetch(
                "SELECT member_id, sum(earned) AS earned, sum(redeemed) AS redeemed, sum(received) AS received, "
                "sum(redeemed_soon) AS soon FROM member_days WHERE program_id = $1 AND day BETWEEN $2 AND $3 "
                "GROUP BY member_id", p, start, end)
            activity = [watch.Activity(r["member_id"], int(r["earned"]), int(r["redeemed"]), int(r["received"]),
                                       int(r["soon"])) for r in rows]
            shared: dict[tuple[str, str], list[str]] = {}
            for r in await uow.db.fetch(
                    "SELECT kind, hash, array_agg(member_id ORDER BY member_id) AS members FROM fingerprints "
                    "WHERE program_id = $1 GROUP BY kind, hash HAVING count(*) >= $2", p, watch.SHARED_BY):
                shared[(r["kind"], r["hash"])] = list(r["members"])
            found = {(f.member_id, f.reason): f for f in watch.findings(activity, shared)}
            before = {(r["member_id"], r["reason"]) for r in await uow.db.fetch(
                "SELECT member_id, reason FROM watch WHERE program_id = $1", p)}
            await uow.db.execute("DELETE FROM watch WHERE program_id = $1", p)
            if found:
                items = list(found.values())
                await uow.db.execute(
                    "INSERT INTO watch SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[]), "
                    "LATERAL (SELECT $5::timestamptz) t", p, [f.member_id for f in items],
                    [f.reason for f in items], [f.detail for f in items], now)
            for (member_id, reason), f in sorted(found.items()):
                if (member_id, reason) not in before:
                    uow.emit(MemberFlagged(program_id=p, member_id=member_id, reason=reason,
                                           detail=f.detail, window_start=start, window_end=end),
                             at=now, event_id=keys.watch_finding(p, member_id, reason, end))
            by_reason: dict[str, int] = {}
            for _, reason in found:
                by_reason[reason] = by_reason.get(reason, 0) + 1
            for reason in ("earning_outlier", "redemption_outlier", "redeemed_soon_after_earning",
                           "shared_fingerprint", "points_received"):
                metrics.abuse.labels(p, reason).set(by_reason.get(reason, 0))
            total += len(found)
        return Page(total)

    return Job("abuse-watch", page, interval_s)
