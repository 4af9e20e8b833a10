"""`jifen earn explain` and `jifen programme check`, run as a user runs them."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import orjson

from shared.settings import Settings
from tests.support import jifen

EVENT = {"specversion": "1.0", "id": "e-1", "source": "pos://store-9", "type": "jifen.purchase.completed.v1",
         "time": "2026-11-07T10:00:00+08:00",  # a Saturday in Shanghai: the example's weekend campaign runs
         "data": {"program_id": "retail", "member_id": "m1", "order_id": "o-1", "channel": "pos", "currency": "CNY",
                  "total": "125", "lines": [
                      {"sku": "FM-MILK-1L", "category": "dairy", "quantity": "2", "unit_price": "12.5", "total": "25"},
                      {"sku": "gc", "category": "gift_card", "quantity": "1", "unit_price": "100", "total": "100"}]}}


async def test_explain_prints_each_rule_and_the_total_without_posting(tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_bytes(orjson.dumps(EVENT))
    code, out, err = await jifen("earn", "explain", str(event))
    assert code == 0, err
    assert "programme retail version 1" in out
    rules = {line.split()[1]: int(line.split()[3]) for line in out.splitlines() if line.strip().startswith("✔")}
    # 25 yuan of own-brand milk: base 25, ×3 adds 50, the weekend ×2 adds 25; the gift card earns nothing.
    assert rules == {"base": 25, "own-brand-x3": 50, "weekend-double": 25}
    assert "= 100 points in 3 credit(s)" in out


async def test_explain_judges_the_event_as_for_a_member_of_a_given_tier(tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_bytes(orjson.dumps(EVENT))
    code, out, err = await jifen("earn", "explain", str(event), "--tier", "gold:1.5")
    assert code == 0, err
    rules = {line.split()[1]: int(line.split()[3]) for line in out.splitlines() if line.strip().startswith("✔")}
    assert rules == {"base": 25, "tier": 12, "own-brand-x3": 50, "weekend-double": 25}  # ×1.5 adds 12.5, floored
    assert "tier gold ×1.5" in out
    code, _, err = await jifen("earn", "explain", str(event), "--tier", "gold:half")
    assert code == 2 and "gold:1.5" in err


def award(source: str, points: int) -> dict[str, object]:
    return {"specversion": "1.0", "id": "a-1", "source": source, "type": "jifen.points.awarded.v1",
            "time": "2026-11-20T10:00:00+08:00",
            "data": {"program_id": "staff", "member_id": "sam", "award_id": "b-1", "points": points,
                     "reason": "Q3 launch", "awarded_by": "mgr-1"}}


async def test_explain_judges_tasks_and_manual_awards_and_says_what_would_be_refused(tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_bytes(orjson.dumps(award("hr://portal", 800)))
    code, out, err = await jifen("earn", "explain", str(event))
    assert code == 0, err
    assert "✔ manager-bonus" in out and "= 800 points in 1 credit(s)" in out
    assert "capped at 2000 points per member per month" in out  # named, since usage is not known here
    event.write_bytes(orjson.dumps(award("pos://store-1", 800)))
    code, out, _ = await jifen("earn", "explain", str(event))
    assert code == 1 and "DLQ as untrusted_source" in out
    task = {**award("hr://portal", 1), "type": "jifen.task.completed.v1",
            "data": {"program_id": "staff", "member_id": "sam", "task_id": "t", "task_type": "training"}}
    event.write_bytes(orjson.dumps(task))
    code, out, err = await jifen("earn", "explain", str(event))
    assert code == 0, err
    assert "✔ training-done" in out and "50 points" in out and "at most 2 per member per week" in out


async def test_explain_refuses_what_earn_refuses_before_any_rule(tmp_path: Path) -> None:
    """The dry run makes earn's checks: a USD purchase in a CNY programme, a programme that does not exist or was
    not yet in effect, an event from the future. Each is named as the DLQ reason earn would give."""
    event = tmp_path / "event.json"
    cases = [({"currency": "USD"}, {}, "currency_not_accepted", "earns on CNY, not USD"),
             ({"program_id": "nosuch"}, {}, "unknown_program", "no programme 'nosuch'"),
             ({}, {"time": "2020-01-01T00:00:00+08:00"}, "unknown_program", "was not in effect at 2020-01-01"),
             ({}, {"time": "2999-01-01T00:00:00+00:00"}, "future_event", "ahead of this clock")]
    for data, envelope, reason, detail in cases:
        event.write_bytes(orjson.dumps({**EVENT, **envelope, "data": {**EVENT["data"], **data}}))  # type: ignore[dict-item]
        code, out, err = await jifen("earn", "explain", str(event))
        assert code == 1, (data, envelope, out, err)
        assert f"DLQ as {reason}" in out and detail in out, (reason, out)
        assert "✔" not in out  # no rule is shown as earning


async def test_programme_check_accepts_the_shipped_files_and_names_the_line_of_a_broken_one(tmp_path: Path) -> None:
    shipped = sorted(str(p) for p in Settings().programmes_dir.glob("*.yaml"))
    code, out, _ = await jifen("programme", "check", *shipped)
    assert code == 0 and out.count("✔") == len(shipped) + 1  # each file, then the files against the ones in force
    assert "against the versions in force (git HEAD): every service takes these files" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("program_id: x\nname: y\nversion: 0\n")
    code, _, err = await jifen("programme", "check", str(bad))
    assert code == 1 and "bad.yaml: line 3: version" in err


async def test_programme_check_judges_the_files_given_together_as_the_services_load_a_folder(tmp_path: Path) -> None:
    """Two files each valid alone but claiming the same version: the services refuse such a folder, so must the
    check, whether given the two files or their folder."""
    shipped = Settings().programmes_dir / "retail.yaml"
    copy = tmp_path / "retail-copy.yaml"
    copy.write_text(shipped.read_text())
    code, out, err = await jifen("programme", "check", str(shipped), str(copy))
    assert code == 1 and out.count("✔") == 2, (out, err)  # each file alone is fine
    assert "together, as one folder" in err and "version 1 is already defined in retail.yaml" in err
    shutil.copy(shipped, tmp_path / "retail.yaml")
    code, _, err = await jifen("programme", "check", str(tmp_path))
    assert code == 1 and "already defined in" in err


async def test_explain_shows_every_time_in_the_programme_zone_to_the_second(tmp_path: Path) -> None:
    """The event is sent in UTC with microseconds; retail's zone is Asia/Shanghai: every time on the page is too."""
    event = tmp_path / "event.json"
    event.write_bytes(orjson.dumps({**EVENT, "time": "2026-11-07T02:00:00.123456+00:00"}))
    code, out, err = await jifen("earn", "explain", str(event))
    assert code == 0, err
    stamps = re.findall(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d|Z)", out)
    assert len(stamps) >= 4 and {zone for _, zone in stamps} == {"+08:00"}, out
    assert {fraction for fraction, _ in stamps} == {""}, out
    assert "at 2026-11-07T10:00:00+08:00" in out
