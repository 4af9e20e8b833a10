"""The birthday bonus against real PostgreSQL: once a year, on the day in the programme's time zone, never for a
birthday set within the last 30 days, and never twice however often the job runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
import pytest

from services.earn import repository
from services.earn.activity import Birthday, birthday_pays, birthday_today
from services.earn.birthdays import BirthdayBonus
from services.earn.programmes import Catalogue
from services.earn.settings import EarnSettings
from shared import db as shared_db
from shared.settings import Settings
from tests.support import Infra

MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "earn" / "migrations"
BIRTHDAY_NOON = datetime(2026, 11, 23, 12, tzinfo=UTC)


@pytest.mark.parametrize(("birthday", "today", "expected"), [
    ("11-23", date(2026, 11, 23), True), ("11-24", date(2026, 11, 23), False),
    ("02-29", date(2027, 2, 28), True), ("02-29", date(2028, 2, 28), False), ("02-29", date(2028, 2, 29), True),
])
def test_birthday_today(birthday: str, today: date, expected: bool) -> None:
    assert birthday_today(birthday, today) is expected


def test_a_birthday_set_less_than_30_days_before_does_not_pay() -> None:
    rule = Birthday(points=100)
    assert birthday_pays(rule, "11-23", BIRTHDAY_NOON - timedelta(days=30), BIRTHDAY_NOON, UTC)  # type: ignore[arg-type]
    assert not birthday_pays(rule, "11-23", BIRTHDAY_NOON - timedelta(days=29), BIRTHDAY_NOON, UTC)  # type: ignore[arg-type]


@pytest.fixture
async def dsn(infra: Infra) -> AsyncIterator[str]:
    yield await infra.new_database("earn_", "earn", MIGRATIONS)


async def test_the_job_pays_each_due_birthday_once(dsn: str) -> None:
    engine = shared_db.make_engine(Settings(database_url=dsn), "earn", pool_size=2)
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "earn"})
    try:
        long_ago = BIRTHDAY_NOON - timedelta(days=400)
        await repository.enrol(conn, "default", "today-old", "11-23", long_ago, long_ago)
        await repository.enrol(conn, "default", "today-fresh", "11-23", long_ago, BIRTHDAY_NOON - timedelta(days=3))
        await repository.enrol(conn, "default", "tomorrow", "11-24", long_ago, long_ago)
        await repository.enrol(conn, "default", "no-birthday", None, long_ago, long_ago)
        await repository.enrol(conn, "default", "changed", "01-01", long_ago, long_ago)
        await repository.enrol(conn, "default", "changed", "11-23", long_ago, BIRTHDAY_NOON - timedelta(days=1))
        job = BirthdayBonus(engine, "earn", Catalogue.load(EarnSettings().programmes_dir), "commands",
                            lambda: BIRTHDAY_NOON)
        assert await job.pay_due() == 1
        assert await job.pay_due() == 0  # the same day again: already paid
        rows = await conn.fetch("SELECT key, value FROM outbox ORDER BY id")
        credits = [orjson.loads(r["value"])["data"] for r in rows]
        assert [(c["member_id"], c["amount"], c["idempotency_key"]) for c in credits] == [
            ("today-old", 100, "birthday:default:today-old:2026")]
        paid = {(r["member_id"], r["year"]) for r in await conn.fetch("SELECT member_id, year FROM birthdays_paid")}
        # The fresh and the changed birthdays are settled for this year without pay.
        assert paid == {("today-old", 2026), ("today-fresh", 2026), ("changed", 2026)}
    finally:
        await conn.close()
        await engine.dispose()
