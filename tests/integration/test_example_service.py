"""The example service of docs/new-service.md runs on the kit as the page says, and the page quotes its files as
they are, so the page cannot go stale."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from shared.contracts import topics
from shared.contracts.checkins import CheckinRecorded
from shared.testing import ServiceHarness, cloud_event
from tests.example.visits.app import spec
from tests.support import REPO, Infra

NOW = datetime.now(UTC).replace(microsecond=0)
PAGE = REPO / "docs" / "new-service.md"


@pytest.fixture
async def visits(infra: Infra) -> AsyncIterator[ServiceHarness]:
    async with ServiceHarness(spec(), await infra.new_database("visits_")) as harness:
        yield harness


def checkin(event_id: str, member: str, day: str, program: str = "default") -> bytes:
    return cloud_event(CheckinRecorded, event_id, NOW, {"program_id": program, "member_id": member, "day": day})


async def test_check_ins_count_a_day_once_and_an_unknown_programme_is_dead_lettered(
        visits: ServiceHarness) -> None:
    sent = await visits.send(topics.CHECKINS, checkin("c1", "ann", "2026-11-01"), checkin("c2", "ann", "2026-11-01"),
                             checkin("c3", "ann", "2026-11-02"), checkin("c4", "bob", "2026-11-02"),
                             checkin("c5", "cy", "2026-11-02", program="nosuch"))
    assert [(d.reason, d.detail) for d in sent.dead] == [("unknown_program", "no programme 'nosuch' (the programmes "
                                                          "are default, retail, staff, starbucks)")]
    assert await visits.send(topics.CHECKINS, checkin("c3", "ann", "2026-11-02")) == type(sent)()  # a duplicate
    assert await visits.get("/v1/programs/default/members/ann/visits") == (
        200, {"member_id": "ann", "days": 2, "last_day": "2026-11-02"})
    assert (await visits.get("/v1/programs/default/members/bob/visits"))[1]["days"] == 1
    status, body = await visits.get("/v1/programs/nosuch/members/ann/visits")
    assert status == 404 and body["error"] == "unknown_program"


async def test_the_write_route_needs_admin_and_goes_through_the_transaction_recipe(visits: ServiceHarness) -> None:
    await visits.send(topics.CHECKINS, checkin("c1", "ann", "2026-11-01"))
    read_only = await visits.runtime.read(lambda db: db.fetchval("SELECT count(*) FROM visits"))
    assert read_only == 1
    assert (await visits.request("DELETE", "/v1/programs/default/members/ann/visits")).status_code == 204
    assert (await visits.get("/v1/programs/default/members/ann/visits"))[1]["days"] == 0
    refused = await visits.request("DELETE", "/v1/programs/default/members/ann/visits", token="nope")
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_api_key"


def test_every_code_block_the_page_quotes_is_in_its_file_as_it_stands() -> None:
    text = PAGE.read_text()
    quoted = re.findall(r"<!-- quote: (\S+) -->\n```python\n(.*?)```", text, flags=re.S)
    assert len(quoted) >= 4, "the page quotes the example service's files"
    for path, block in quoted:
        source = (REPO / path).read_text()
        assert block in source, f"docs/new-service.md quotes {path}, but the file no longer reads so:\n{block}"
