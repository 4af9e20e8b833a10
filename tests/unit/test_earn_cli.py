"""`jifen earn explain` and `jifen programme check`, run as a user runs them."""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import yaml

from shared.experiments import Experiment, arm_of
from shared.settings import Settings
from tests.support import in_process as jifen

EVENT = {"specversion": "1.0", "id": "e-1", "source": "pos://store-9", "type": "jifen.purchase.completed.v1",
         "time": "2026-11-07T10:00:00+08:00",  # a Saturday in Shanghai: the example's weekend campaign runs
         "data": {"program_id": "retail", "member_id": "m1", "order_id": "o-1", "channel": "pos", "currency": "CNY",
                  "total": "125", "lines": [
                      {"sku": "FM-MILK-1L", "category": "dairy", "quantity": "2", "unit_price": "12.5", "total": "25"},
                      {"sku": "gc", "category": "gift_card", "quantity": "1", "unit_price": "100", "total": "100"}]}}



def test_explain_prints_each_rule_and_the_total_without_posting(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    event = tmp_path / "event.json"
    event.write_bytes(orjson.dumps(EVENT))
    code, out, err = jifen(capsys, "earn", "explain", str(event))
    assert code == 0, err
    assert "programme retail version 1" in out
    rules = {line.split()[1]: int(line.split()[3]) for line in out.splitlines() if line.strip().startswith("✔")}
    # 25 yuan of own-brand milk: base 25, ×3 adds 50, the weekend ×2 adds 25; the gift card earns nothing.
    assert rules == {"base": 25, "own-brand-x3": 50, "weekend-double": 25}
    assert "= 100 points in 3 credit(s)" in out


def test_explain_judges_the_event_as_for_a_member_of_a_given_tier(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    event = tmp_path / "event.json"
    event.write_bytes(orjson.dumps(EVENT))
    code, out, err = jifen(capsys, "earn", "explain", str(event), "--tier", "gold:1.5")
    assert code == 0, err
    rules = {line.split()[1]: int(line.split()[3]) for line in out.splitlines() if line.strip().startswith("✔")}
    assert rules == {"base": 25, "tier": 12, "own-brand-x3": 50, "weekend-double": 25}  # ×1.5 adds 12.5, floored
    assert "tier gold ×1.5" in out
    code, _, err = jifen(capsys, "earn", "explain", str(event), "--tier", "gold:half")
    assert code == 2 and "gold:1.5" in err


def award(source: str, points: int) -> dict[str, object]:
    return {"specversion": "1.0", "id": "a-1", "source": source, "type": "jifen.points.awarded.v1",
            "time": "2026-11-20T10:00:00+08:00",
            "data": {"program_id": "staff", "member_id": "sam", "award_id": "b-1", "points": points,
                     "reason": "Q3 launch", "awarded_by": "mgr-1"}}


def test_explain_judges_tasks_and_manual_awards_and_says_what_would_be_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    event = tmp_path / "event.json"
    event.write_bytes(orjson.dumps(award("hr://portal", 800)))
    code, out, err = jifen(capsys, "earn", "explain", str(event))
    assert code == 0, err
    assert "✔ manager-bonus" in out and "= 800 points in 1 credit(s)" in out
    assert "capped at 2000 points per member per month" in out  # named, since usage is not known here
    event.write_bytes(orjson.dumps(award("pos://store-1", 800)))
    code, out, _ = jifen(capsys, "earn", "explain", str(event))
    assert code == 1 and "DLQ as untrusted_source" in out
    task = {**award("hr://portal", 1), "type": "jifen.task.completed.v1",
            "data": {"program_id": "staff", "member_id": "sam", "task_id": "t", "task_type": "training"}}
    event.write_bytes(orjson.dumps(task))
    code, out, err = jifen(capsys, "earn", "explain", str(event))
    assert code == 0, err
    assert "✔ training-done" in out and "50 points" in out and "at most 2 per member per week" in out


def test_explain_refuses_what_earn_refuses_before_any_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The dry run makes earn's checks: a USD purchase in a CNY programme, a programme that does not exist or was
    not yet in effect, an event from the future. Each is named as the DLQ reason earn would give."""
    event = tmp_path / "event.json"
    cases = [({"currency": "USD"}, {}, "currency_not_accepted", "earns on CNY, not USD"),
             ({"program_id": "nosuch"}, {}, "unknown_program", "no programme 'nosuch'"),
             ({}, {"time": "2020-01-01T00:00:00+08:00"}, "unknown_program", "was not in effect at 2020-01-01"),
             ({}, {"time": "2999-01-01T00:00:00+00:00"}, "future_event", "ahead of this clock")]
    for data, envelope, reason, detail in cases:
        event.write_bytes(orjson.dumps({**EVENT, **envelope, "data": {**EVENT["data"], **data}}))  # type: ignore[dict-item]
        code, out, err = jifen(capsys, "earn", "explain", str(event))
        assert code == 1, (data, envelope, out, err)
        assert f"DLQ as {reason}" in out and detail in out, (reason, out)
        assert "✔" not in out  # no rule is shown as earning


def test_programme_check_accepts_the_shipped_files_and_names_the_line_of_a_broken_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shipped = sorted(str(p) for p in Settings().programmes_dir.glob("*.yaml"))
    code, out, _ = jifen(capsys, "programme", "check", *shipped)
    assert code == 0 and out.count("✔") == len(shipped) + 1  # each file, then the files against the ones in force
    assert "against the versions in force (git HEAD): every service takes these files" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("program_id: x\nname: y\nversion: 0\n")
    code, _, err = jifen(capsys, "programme", "check", str(bad))
    assert code == 1 and "bad.yaml: line 3: version" in err


def test_programme_check_judges_the_files_given_together_as_the_services_load_a_folder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two files each valid alone but claiming the same version: the services refuse such a folder, so must the
    check, whether given the two files or their folder."""
    shipped = Settings().programmes_dir / "retail.yaml"
    copy = tmp_path / "retail-copy.yaml"
    copy.write_text(shipped.read_text())
    code, out, err = jifen(capsys, "programme", "check", str(shipped), str(copy))
    assert code == 1 and out.count("✔") == 2, (out, err)  # each file alone is fine
    assert "together, as one folder" in err and "version 1 is already defined in retail.yaml" in err
    shutil.copy(shipped, tmp_path / "retail.yaml")
    code, _, err = jifen(capsys, "programme", "check", str(tmp_path))
    assert code == 1 and "already defined in" in err


def test_explain_shows_every_time_in_the_programme_zone_to_the_second(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The event is sent in UTC with microseconds; retail's zone is Asia/Shanghai: every time on the page is too."""
    event = tmp_path / "event.json"
    event.write_bytes(orjson.dumps({**EVENT, "time": "2026-11-07T02:00:00.123456+00:00"}))
    code, out, err = jifen(capsys, "earn", "explain", str(event))
    assert code == 0, err
    stamps = re.findall(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d|Z)", out)
    assert len(stamps) >= 4 and {zone for _, zone in stamps} == {"+08:00"}, out
    assert {fraction for fraction, _ in stamps} == {""}, out
    assert "at 2026-11-07T10:00:00+08:00" in out


# Preview, --at, refunds and experiments.

def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """`jifen earn explain ARGS…` as a user runs it; returns (exit code, stdout, stderr)."""
    return jifen(capsys, "earn", "explain", *(str(a) for a in args))


def points(out: str, mark: str = "✔") -> dict[str, int]:
    """The points per rule of the lines marked `mark` (✔ earned, ↩ taken back)."""
    return {line.split()[1]: int(line.split()[2 if mark == "↩" else 3]) for line in out.splitlines()
            if line.strip().startswith(mark)}


def written(folder: Path, name: str, event: Mapping[str, object]) -> Path:
    path = folder / name
    path.write_bytes(orjson.dumps(event))
    return path


def purchase_at(when: datetime, **data: object) -> dict[str, object]:
    return {**EVENT, "time": when.isoformat(), "data": {**EVENT["data"], **data}}  # type: ignore[dict-item]


RETAIL = yaml.safe_load((Settings().programmes_dir / "retail.yaml").read_text())


@pytest.fixture
def launch(tmp_path: Path) -> tuple[Path, datetime]:
    """A programmes folder with retail version 1 and a version 2 taking effect in a week, whose launch campaign
    doubles every categorised line from day 8 to day 12; and a time within the campaign."""
    now = datetime.now(UTC).replace(microsecond=0)
    folder = tmp_path / "programmes"
    folder.mkdir()
    shutil.copy(Settings().programmes_dir / "retail.yaml", folder)
    campaign = {"rule_id": "launch-double", "multiplier": "2", "starts": (now + timedelta(days=8)).isoformat(),
                "ends": (now + timedelta(days=12)).isoformat()}
    v2 = {**RETAIL, "version": 2, "effective_from": (now + timedelta(days=7)).isoformat(),
          "purchase": {**RETAIL["purchase"], "campaigns": [*RETAIL["purchase"]["campaigns"], campaign]}}
    (folder / "retail-2.yaml").write_text(yaml.safe_dump(v2))
    return folder, now + timedelta(days=10)


async def test_a_future_event_is_refused_without_a_flag_and_names_preview(
        tmp_path: Path, launch: tuple[Path, datetime], capsys: pytest.CaptureFixture[str]) -> None:
    folder, when = launch
    event = written(tmp_path, "event.json", purchase_at(when))
    code, out, _ = run(capsys, event, "--programmes", folder)
    assert code == 1 and "DLQ as future_event" in out and "ahead of this clock" in out
    assert "--preview judges it under the version that will be in force then" in out
    assert "✔" not in out


async def test_preview_judges_a_future_event_under_the_version_in_force_at_its_time(
        tmp_path: Path, launch: tuple[Path, datetime], capsys: pytest.CaptureFixture[str]) -> None:
    """A campaign of a version not yet in force can be tried before it runs: version 2's launch campaign pays."""
    folder, when = launch
    event = written(tmp_path, "event.json", purchase_at(when))
    code, out, err = run(capsys, event, "--programmes", folder, "--preview")
    assert code == 0, err
    assert "programme retail version 2" in out
    assert re.search(r"preview: the event is dated 10 days ahead of this clock; judged under version 2, in force "
                     r"from \S+, as the folder stands; earn refuses it as future_event until then", out), out
    # 25 yuan of own-brand milk: base 25, ×3 adds 50, the launch ×2 adds 25; November's weekend-double is over.
    assert points(out) == {"base": 25, "own-brand-x3": 50, "launch-double": 25}
    assert "= 100 points in 3 credit(s)" in out
    # Before version 2 takes effect, the preview judges by version 1, which has no launch campaign.
    early = written(tmp_path, "early.json", purchase_at(when - timedelta(days=5)))
    code, out, err = run(capsys, early, "--programmes", folder, "--preview")
    assert code == 0, err
    assert "version 1, the version in force now too" in out and "launch-double" not in out
    assert points(out) == {"base": 25, "own-brand-x3": 50}


async def test_at_judges_as_if_the_time_now_were_given(
        tmp_path: Path, launch: tuple[Path, datetime], capsys: pytest.CaptureFixture[str]) -> None:
    folder, when = launch
    event = written(tmp_path, "event.json", purchase_at(when))
    code, out, err = run(capsys, event, "--programmes", folder, "--at", (when + timedelta(hours=1)).isoformat())
    assert code == 0, err
    assert "programme retail version 2" in out and "as at " in out and "preview" not in out
    assert points(out) == {"base": 25, "own-brand-x3": 50, "launch-double": 25}
    # A clock set before the event still refuses it, as earn's would.
    code, out, _ = run(capsys, event, "--programmes", folder, "--at", (when - timedelta(hours=1)).isoformat())
    assert code == 1 and "DLQ as future_event" in out and "ahead of --at" in out
    code, _, err = run(capsys, event, "--at", "tomorrow")
    assert code == 2 and "2026-11-07T12:00:00+08:00" in err  # the form it takes
    code, _, err = run(capsys, event, "--at", when.isoformat(), "--preview")
    assert code == 2 and "not allowed with" in err


def refund(total: str, *lines: tuple[str, str], **data: object) -> dict[str, object]:
    """A refund of EVENT's order; lines are (sku, total)."""
    return {"specversion": "1.0", "id": f"r-{total}", "source": "pos://store-9", "type": "jifen.purchase.refunded.v1",
            "time": "2026-11-09T10:00:00+08:00",
            "data": {"program_id": "retail", "member_id": "m1", "order_id": "o-1", "refund_id": f"rf-{total}",
                     "currency": "CNY", "total": total, **data,
                     **({"lines": [{"sku": sku, "quantity": "1", "unit_price": amount, "total": amount}
                                   for sku, amount in lines]} if lines else {})}}


async def test_a_refund_takes_back_per_rule_and_line_what_earn_would(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """EVENT's order earned base 25, own-brand 50, weekend 25 on its milk (2 × 12.5); the gift card earned nothing.
    One milk back takes half of each rule, floored; the rest after it takes what is left, so the order is at 0."""
    order = written(tmp_path, "order.json", EVENT)
    first = written(tmp_path, "first.json", refund("12.5", ("FM-MILK-1L", "12.5")))
    code, out, err = run(capsys, first, "--order", order)
    assert code == 0, err
    assert points(out, "↩") == {"base": 12, "own-brand-x3": 25, "weekend-double": 12}
    assert "reverses earn:pos://store-9|e-1:base" in out and "lines: FM-MILK-1L: 12.5 of its 25" in out
    assert "= 49 points taken back in 3 reversal(s); in all 12.5 of 125 CNY refunded" in out
    rest = written(tmp_path, "rest.json", refund("112.5"))  # a total only: spread over what is left
    code, out, err = run(capsys, rest, "--order", order, "--earlier", first)
    assert code == 0, err
    assert "refunded before: 12.5 CNY in 1 refund(s) (rf-12.5)" in out
    assert points(out, "↩") == {"base": 13, "own-brand-x3": 25, "weekend-double": 13}  # 49 + 51: all 100 back
    assert "in all 125 of 125 CNY refunded" in out
    # As for a gold member: the tier's 12 points come back in the same proportion.
    code, out, err = run(capsys, first, "--order", order, "--tier", "gold:1.5")
    assert code == 0, err
    assert points(out, "↩") == {"base": 12, "tier": 6, "own-brand-x3": 25, "weekend-double": 12}
    assert "tier gold ×1.5" in out


async def test_a_refund_is_refused_with_earns_reasons_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    order = written(tmp_path, "order.json", EVENT)
    half = written(tmp_path, "half.json", refund("100", ("gc", "100")))
    cases: list[tuple[dict[str, object], list[str | Path], str, str]] = [
        (refund("10", order_id="o-2"), [], "unknown_order", "no order 'o-2' in programme 'retail'"),
        (refund("10", member_id="m2"), [], "member_mismatch", "order 'o-1' belongs to another member"),
        (refund("200"), [], "refund_exceeds_order", "refunds of 200 exceed order o-1's total of 125"),
        (refund("30"), ["--earlier", half], "refund_exceeds_order", "refunds of 130 exceed"),
        (refund("5", ("TEA-OOLONG-100", "5")), [], "unknown_line", "no line with SKU 'TEA-OOLONG-100'"),
    ]
    for event, extra, reason, detail in cases:
        code, out, err = run(capsys, written(tmp_path, "refund.json", event), "--order", order, *extra)
        assert code == 1, (reason, out, err)
        assert out.splitlines() == [out.strip()] and out.startswith("✘ takes back nothing"), out  # one line
        assert f"DLQ as {reason}: " in out and detail in out, (reason, out)
    # An order earn refused (a USD purchase in a CNY programme) is no order earn knows.
    usd = written(tmp_path, "usd.json", {**EVENT, "data": {**EVENT["data"], "currency": "USD"}})  # type: ignore[dict-item]
    code, out, _ = run(capsys, written(tmp_path, "refund.json", refund("10")), "--order", usd)
    assert code == 1 and "DLQ as unknown_order: order 'o-1' earned nothing here" in out
    assert "its purchase would go to the DLQ as currency_not_accepted" in out
    # An earlier refund earn would have refused is named as such.
    code, out, _ = run(capsys, written(tmp_path, "refund.json", refund("10")), "--order", order,
                       "--earlier", written(tmp_path, "big.json", refund("200")))
    assert code == 1 and "DLQ as refund_exceeds_order" in out and "would have been refused itself" in out
    # Without the order, the refund cannot be judged: explain says what it needs.
    code, out, err = run(capsys, written(tmp_path, "refund.json", refund("10")))
    assert code == 2 and out == "" and "give the purchase of order 'o-1' with --order PURCHASE.json" in err
    code, _, err = run(capsys, order, "--order", order)
    assert code == 2 and "--order and --earlier are for a refund" in err


async def test_a_members_experiment_arm_is_shown_and_judges_the_event(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An experiment running in November doubles the base rate in its `double` arm: a member of that arm earns
    (and a refund takes back) twice the base and what multiplies it; a member of `control` earns as before."""
    experiment = Experiment.model_validate({
        "experiment_id": "base-x2", "starts": "2026-11-01T00:00:00+08:00", "ends": "2026-12-01T00:00:00+08:00",
        "arms": [{"name": "control", "share": "0.5"},
                 {"name": "double", "share": "0.5", "overrides": {"purchase": {"base": {"points_per_unit": "2"}}}}]})
    folder = tmp_path / "programmes"
    folder.mkdir()
    (folder / "retail.yaml").write_text(yaml.safe_dump({**RETAIL, "experiments": [experiment.model_dump(mode="json")]}))
    members = {arm: next(m for m in (f"m{i}" for i in range(100)) if arm_of("retail", experiment, m).name == arm)
               for arm in ("control", "double")}
    control = written(tmp_path, "control.json", purchase_at(datetime.fromisoformat(str(EVENT["time"])),
                                                            member_id=members["control"]))
    code, out, err = run(capsys, control, "--programmes", folder)
    assert code == 0, err
    assert "experiment base-x2: arm control (no changes)" in out
    assert points(out) == {"base": 25, "own-brand-x3": 50, "weekend-double": 25}
    double = written(tmp_path, "double.json", purchase_at(datetime.fromisoformat(str(EVENT["time"])),
                                                          member_id=members["double"]))
    code, out, err = run(capsys, double, "--programmes", folder)
    assert code == 0, err
    assert 'experiment base-x2: arm double (changes {"purchase":{"base":{"points_per_unit":"2"}}})' in out
    assert points(out) == {"base": 50, "own-brand-x3": 100, "weekend-double": 50}
    back = written(tmp_path, "refund.json", refund("12.5", ("FM-MILK-1L", "12.5"), member_id=members["double"]))
    code, out, err = run(capsys, back, "--order", double, "--programmes", folder)
    assert code == 0, err
    assert "experiment base-x2: arm double" in out
    assert points(out, "↩") == {"base": 25, "own-brand-x3": 50, "weekend-double": 25}
    # After the experiment ends, no arm applies.
    december = written(tmp_path, "december.json", purchase_at(datetime(2026, 12, 2, 10, tzinfo=UTC),
                                                              member_id=members["double"]))
    code, out, err = run(capsys, december, "--programmes", folder, "--at", "2026-12-03T00:00:00+00:00")
    assert code == 0, err
    assert "experiment" not in out and points(out) == {"base": 25, "own-brand-x3": 50}
