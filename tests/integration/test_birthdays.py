"""The birthday bonus against real PostgreSQL: once a year, on the day in the programme's time zone, never for a
birthday set within the last 30 days, and never twice however often the job runs."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from services.earn import repository
from services.earn.activity import Birthday, birthday_pays, birthday_today
from services.earn.app import spec as earn_spec
from shared.contracts.ledger_commands import PostCredit
from shared.testing import ServiceHarness
from tests.support import Infra

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


async def test_the_job_pays_each_due_birthday_once(infra: Infra) -> None:
    async with ServiceHarness(earn_spec(clock=lambda: BIRTHDAY_NOON), await infra.new_database("earn_")) as earn:
        long_ago = BIRTHDAY_NOON - timedelta(days=400)
        async with earn.runtime.connection() as conn:
            await repository.enrol(conn, "default", "today-old", "11-23", long_ago, long_ago)
            await repository.enrol(conn, "default", "today-fresh", "11-23", long_ago,
                                   BIRTHDAY_NOON - timedelta(days=3))
            await repository.enrol(conn, "default", "tomorrow", "11-24", long_ago, long_ago)
            await repository.enrol(conn, "default", "no-birthday", None, long_ago, long_ago)
            await repository.enrol(conn, "default", "changed", "01-01", long_ago, long_ago)
            await repository.enrol(conn, "default", "changed", "11-23", long_ago, BIRTHDAY_NOON - timedelta(days=1))
        paid, sent = await earn.run_job("birthdays", BIRTHDAY_NOON)
        assert paid == 1
        again, sent_again = await earn.run_job("birthdays", BIRTHDAY_NOON)  # the same day again: already paid
        assert again == 0 and sent_again.messages == []
        assert [(c["member_id"], c["amount"], c["idempotency_key"]) for c in sent.of(PostCredit)] == [
            ("today-old", 100, "birthday:default:today-old:2026")]
        assert [m.event["source"] for m in sent.messages] == ["jifen.earn.birthdays"]
        rows = await earn.query("SELECT member_id, year FROM birthdays_paid")
        # The fresh and the changed birthdays are settled for this year without pay.
        assert {(r["member_id"], r["year"]) for r in rows} == {("today-old", 2026), ("today-fresh", 2026),
                                                              ("changed", 2026)}
