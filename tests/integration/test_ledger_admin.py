"""The ledger's operator side on the fast harness (its real consumer and routes over real PostgreSQL): the programme
summary, whose outstanding points are the members' balances; admin calls that become ledger commands through the
outbox, audited with the caller's key name, and refused without the `admin` scope; a retried call that is the same
command; `?wait` answered when the ledger applies the command; command keys nobody sent; unknown programmes."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from cli import ledger as ledger_cli
from services.ledger.app import spec as ledger_spec
from shared import auth
from shared.contracts import topics
from shared.contracts.ledger_commands import Cause, PostCredit, PostDebit
from shared.contracts.ledger_entries import CommandRejected, PointsEntryPosted
from shared.testing import ServiceHarness, cloud_event
from tests.support import Infra

NOW = datetime.now(UTC).replace(microsecond=0)
MEMBERS = {"ann": 700, "bob": 250, "cy": 40}


@pytest.fixture
async def ledger(infra: Infra) -> AsyncIterator[ServiceHarness]:
    async with ServiceHarness(ledger_spec(), await infra.new_database("admin_")) as harness:
        for member, points in MEMBERS.items():
            cmd = PostCredit(idempotency_key=f"earn:{member}", program_id="default", member_id=member, amount=points,
                             occurred_at=NOW, expires_at=NOW + timedelta(days=40),
                             cause=Cause(source_event_id=f"test|{member}"))
            await harness.send(topics.LEDGER_COMMANDS, cloud_event(PostCredit, cmd.idempotency_key, NOW,
                                                                   cmd.model_dump(mode="json")), key=member)
        spend = PostDebit(idempotency_key="redeem:ann", program_id="default", member_id="ann", amount=100,
                          occurred_at=NOW, cause=Cause(source_event_id="test|spend"))
        await harness.send(topics.LEDGER_COMMANDS, cloud_event(PostDebit, "redeem:ann", NOW,
                                                               spend.model_dump(mode="json")), key="ann")
        yield harness


async def balances(ledger: ServiceHarness) -> dict[str, int]:
    rows = await ledger.query(
        "SELECT member_id, balance FROM accounts WHERE kind = 'member' AND program_id = 'default'")
    return {r["member_id"]: r["balance"] for r in rows}


async def settle(ledger: ServiceHarness) -> None:
    """What the admin calls put in the outbox, delivered to the ledger's own consumer, as Kafka would."""
    out = await ledger.drain()
    await ledger.deliver(out.messages)


async def test_the_summary_counts_exactly_and_outstanding_is_the_sum_of_the_balances(ledger: ServiceHarness) -> None:
    status, summary = await ledger.get("/v1/programs/default/summary")
    assert status == 200, summary
    held = await balances(ledger)
    assert summary["outstanding"] == sum(held.values()) == sum(MEMBERS.values()) - 100
    assert (summary["issued"], summary["redeemed"], summary["expired"], summary["adjusted"]) == (990, 100, 0, 0)
    assert summary["members"] == 3 and summary["version"] == 1
    # 890 points at the default programme's 0.01 a point.
    assert Decimal(summary["point_value"]) == Decimal("0.01") and Decimal(summary["liability"]) == Decimal("8.90")
    month = (NOW + timedelta(days=40)).strftime("%Y-%m")
    assert summary["expiring"] == [{"month": month, "points": 890, "value": "8.90", "currency": None}]
    assert summary["without_expiry"] == 0
    status, one = await ledger.get(f"/v1/programs/default/summary?month={month}")
    assert status == 200 and one["expiring"] == summary["expiring"]
    _, other = await ledger.get("/v1/programs/default/summary?month=2001-01")
    assert other["expiring"] == [] and other["outstanding"] == summary["outstanding"]
    status, bad = await ledger.get("/v1/programs/default/summary?month=2027-13")
    assert status == 422 and bad["error"] == "invalid_request"


async def test_the_expiry_months_run_past_a_year_and_points_without_expiry_are_counted(
        ledger: ServiceHarness) -> None:
    """The liability by expiry month is complete: a lot expiring in three years is listed, one that never expires
    is counted apart, and every month's points with what they are worth."""
    for key, expires in (("far", NOW + timedelta(days=3 * 365)), ("never", None)):
        cmd = PostCredit(idempotency_key=f"earn:{key}", program_id="default", member_id="dan", amount=100,
                         occurred_at=NOW, expires_at=expires, cause=Cause(source_event_id=f"test|{key}"))
        await ledger.send(topics.LEDGER_COMMANDS, cloud_event(PostCredit, cmd.idempotency_key, NOW,
                                                              cmd.model_dump(mode="json")), key="dan")
    _, summary = await ledger.get("/v1/programs/default/summary")
    far = (NOW + timedelta(days=3 * 365)).strftime("%Y-%m")
    assert {"month": far, "points": 100, "value": "1.00", "currency": None} in summary["expiring"]
    assert summary["without_expiry"] == 100
    assert sum(m["points"] for m in summary["expiring"]) + summary["without_expiry"] == summary["outstanding"]
    assert summary["last_reload"]["ok"] is True


async def test_the_programme_totals_and_the_scheduled_verify_are_metrics_an_alert_can_watch(
        ledger: ServiceHarness) -> None:
    """jifen_ledger_points_total counts since the process started; the programme's exact figures, and whether the
    last scheduled verify found every rule holding, come from the ledger's tables, by two jobs."""
    await ledger.run_job("programme-totals", NOW)
    await ledger.run_job("ledger-verify", NOW)
    metrics = (await ledger.request("GET", "/metrics", token="")).text
    for measure, points in (("issued", 990), ("redeemed", 100), ("outstanding", 890)):
        assert (f'jifen_programme_points{{measure="{measure}",program_id="default",service="ledger"}} '
                f"{float(points)}") in metrics, measure
    assert 'jifen_programme_members{program_id="default",service="ledger"} 3.0' in metrics
    assert 'jifen_ledger_verify_ok{service="ledger"} 1.0' in metrics
    assert 'jifen_ledger_verify_problems{service="ledger"} 0.0' in metrics


async def test_admin_calls_post_entries_with_the_callers_name_and_the_summary_follows(ledger: ServiceHarness) -> None:
    conn = await asyncpg.connect(ledger.spec.settings.asyncpg_dsn)
    try:
        _, desk = await auth.create_key(conn, "support-desk", ["admin"])
        _, till = await auth.create_key(conn, "till-3", ["redeem"])
    finally:
        await conn.close()
    base = "/v1/programs/default"
    award = {"points": 60, "reason": "goodwill for a late delivery"}
    refused = await ledger.request("POST", f"{base}/members/cy/awards", json=award, token=till)
    assert (refused.status_code, refused.json()["error"]) == (403, "missing_scope")

    calls = [("members/cy/awards", award),
             ("members/bob/adjustments", {"direction": "debit", "points": 50, "reason": "double-scanned receipt"}),
             ("transfers", {"from_member_id": "ann", "to_member_id": "cy", "points": 100, "reason": "household"})]
    keys = []
    for n, (path, body) in enumerate(calls):
        response = await ledger.request("POST", f"{base}/{path}?wait=0", json=body, token=desk,
                                        headers={"Idempotency-Key": f"ticket-{n}"})
        assert response.status_code == 202 and response.json()["status"] == "pending", response.text
        keys.append(response.json()["idempotency_key"])
    await settle(ledger)
    for key in keys:
        status, done = await ledger.get(f"{base}/commands/{key}", token=desk)
        assert status == 200 and done["status"] == "posted" and done["entries"], done
    assert await balances(ledger) == {"ann": 500, "bob": 200, "cy": 200}
    audit = await ledger.query("SELECT rule_id, reason, details FROM entries WHERE command_key = $1", keys[1])
    assert audit[0]["rule_id"] == "admin:support-desk" and audit[0]["reason"] == "double-scanned receipt"

    # The same request again (same Idempotency-Key) is the same command: nothing posted twice.
    again = await ledger.request("POST", f"{base}/members/cy/awards?wait=0", json=award, token=desk,
                                 headers={"Idempotency-Key": "ticket-0"})
    assert again.json()["idempotency_key"] == keys[0]
    await settle(ledger)
    assert (await balances(ledger))["cy"] == 200

    # A debit the member cannot cover is refused by the ledger with its reason, not posted.
    response = await ledger.request("POST", f"{base}/members/cy/adjustments?wait=0", token=desk,
                                    json={"direction": "debit", "points": 10_000, "reason": "test"})
    await settle(ledger)
    status, done = await ledger.get(f"{base}/commands/{response.json()['idempotency_key']}", token=desk)
    assert done["status"] == "rejected" and done["reason"] and done["entries"] == []

    status, summary = await ledger.get(f"{base}/summary")
    assert summary["outstanding"] == sum((await balances(ledger)).values()) == 900
    assert summary["adjusted"] == -50 and summary["issued"] == 990 + 60


async def test_a_retried_admin_call_is_the_same_command_answered_again_and_the_ledger_refuses_nothing(
        ledger: ServiceHarness) -> None:
    """A till or a script whose first answer was lost sends the same call with the same Idempotency-Key: it gets the
    first call's entries again, and the ledger publishes no `command.rejected idempotency_conflict` for it."""
    award = {"points": 60, "reason": "goodwill for a late delivery"}
    path = "/v1/programs/default/members/cy/awards?wait=0"
    first = await ledger.request("POST", path, json=award, headers={"Idempotency-Key": "lost-answer-1"})
    assert first.status_code == 202, first.text
    await settle(ledger)
    status, posted = await ledger.get(f"/v1/programs/default/commands/{first.json()['idempotency_key']}")
    assert status == 200 and posted["status"] == "posted"

    again = await ledger.request("POST", path, json=award, headers={"Idempotency-Key": "lost-answer-1"})
    assert again.status_code == 201 and again.json() == posted
    out = await ledger.drain()
    assert out.messages == []  # nothing was sent again
    delivered = await ledger.deliver(out.messages)
    assert delivered.of(CommandRejected) == [] and delivered.of(PointsEntryPosted) == []
    assert await ledger.query("SELECT idempotency_key FROM commands WHERE outcome = 'rejected'") == []
    assert (await balances(ledger))["cy"] == 40 + 60


async def test_a_command_key_nobody_sent_is_404_unknown_command_and_one_on_its_way_is_pending(
        ledger: ServiceHarness) -> None:
    status, body = await ledger.get("/v1/programs/default/commands/admin:3f9c2a7b1e04:never-sent")
    assert (status, body["error"]) == (404, "unknown_command") and "never-sent" in body["detail"]
    response = await ledger.request("POST", "/v1/programs/default/members/bob/adjustments?wait=0",
                                    json={"direction": "credit", "points": 5, "reason": "till rounding"})
    key = response.json()["idempotency_key"]
    # Sent by the admin call, not yet applied: pending, not unknown.
    status, body = await ledger.get(f"/v1/programs/default/commands/{key}")
    assert (status, body["status"]) == (200, "pending")
    await settle(ledger)
    status, body = await ledger.get(f"/v1/programs/default/commands/{key}")
    assert (status, body["status"], [e["amount"] for e in body["entries"]]) == (200, "posted", [5])
    # A command another service sent is known by its outcome once the ledger has it.
    status, body = await ledger.get("/v1/programs/default/commands/redeem:ann")
    assert (status, body["status"]) == (200, "posted")


async def test_an_admin_call_that_waits_is_answered_as_soon_as_the_ledger_applies_its_command(
        ledger: ServiceHarness) -> None:
    call = asyncio.create_task(ledger.request(
        "POST", "/v1/programs/default/members/ann/awards?wait=8", json={"points": 7, "reason": "a kind word"},
        headers={"Idempotency-Key": "waiting-1"}))
    sent = (await ledger.drain()).messages
    for _ in range(200):  # until the call has committed its command
        if sent:
            break
        await asyncio.sleep(0.02)
        sent = (await ledger.drain()).messages
    await asyncio.sleep(0.2)  # the call is waiting now
    applied = time.monotonic()
    await ledger.deliver(sent)
    response = await call
    assert response.status_code == 201 and [e["amount"] for e in response.json()["entries"]] == [7], response.text
    assert time.monotonic() - applied < 3  # woken by the ledger, not by the end of ?wait


async def test_an_unknown_programme_is_a_404_for_the_summary_and_admin_calls(ledger: ServiceHarness) -> None:
    status, body = await ledger.get("/v1/programs/nosuch/summary")
    assert (status, body["error"]) == (404, "unknown_program") and "default" in body["detail"]
    response = await ledger.request("POST", "/v1/programs/nosuch/members/ann/awards",
                                    json={"points": 1, "reason": "x"})
    assert (response.status_code, response.json()["error"]) == (404, "unknown_program")
    # Read too: a typo in the programme must not read as a member with nothing; a known programme's member who
    # never earned has a zero balance and no entries.
    for path in ("/v1/programs/nosuch/members/ann/balance", "/v1/programs/nosuch/members/ann/entries"):
        status, body = await ledger.get(path)
        assert (status, body["error"]) == (404, "unknown_program"), path
    status, body = await ledger.get("/v1/programs/default/members/nobody/balance")
    assert (status, body["available"]) == (200, 0)
    status, body = await ledger.get("/v1/programs/default/members/nobody/entries")
    assert (status, body["entries"]) == (200, [])


async def test_ledger_verify_of_a_programme_the_ledger_never_saw_is_an_error(
        ledger: ServiceHarness, capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(program="nosuch", database_url=ledger.spec.settings.database_url, schema="ledger")
    assert await ledger_cli.run(args) == 2
    said = capsys.readouterr()
    assert "no programme 'nosuch'" in said.err and "(it holds: default)" in said.err
    assert "every rule holds" not in said.out
    args.program = "default"
    assert await ledger_cli.run(args) == 0
    assert "every rule holds" in capsys.readouterr().out
