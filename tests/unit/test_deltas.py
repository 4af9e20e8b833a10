"""A programme version stated as only what changes (`based_on: N`): every service loads the same merged version,
errors name the file and the line (in the delta, or in the base it came from), fingerprints judge the merged
content, and the shipped examples merge as their comments say."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from services.earn.programme import Programme as EarnProgramme
from services.insight.programme import InsightProgramme
from services.redemption.programme import RedemptionProgramme
from services.referral.programme import ReferralProgramme
from services.tiers.programme import TiersProgramme
from shared.experiments import arm_of
from shared.programmes import (
    Catalogue,
    ProgrammeError,
    ProgrammeVersion,
    fingerprints,
    history_rewrites,
    load_file,
    load_folder,
)
from shared.settings import Settings
from tests.support import REPO
from tests.support import in_process as jifen

SHIPPED = Settings().programmes_dir
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "programmes"
# Every service's model of a programme file (the ledger reads the header only).
MODELS: list[type[ProgrammeVersion]] = [EarnProgramme, TiersProgramme, ReferralProgramme, RedemptionProgramme,
                                        InsightProgramme, ProgrammeVersion]
V2 = """\
program_id: retail
based_on: 1
version: 2
effective_from: "2027-01-01T00:00:00+08:00"
"""


def shipped(tmp_path: Path, **extra: str) -> Path:
    """A copy of programmes/ with extra files (name -> text)."""
    folder = tmp_path / "programmes"
    shutil.copytree(SHIPPED, folder)
    for name, text in extra.items():
        (folder / name).write_text(text)
    return folder


def refusal(folder: Path, model: type[ProgrammeVersion] = EarnProgramme) -> str:
    with pytest.raises(ProgrammeError) as refused:
        load_folder(folder, model)
    return str(refused.value)


def test_a_delta_changes_only_what_it_states_and_inherits_the_rest(tmp_path: Path) -> None:
    folder = shipped(tmp_path, **{"retail.v2.yaml": V2 + """\
name: FreshMart Rewards 2027
purchase:
  base: {points_per_unit: "2"}         # merged into version 1's base rule
  bonuses:
    - rule_id: spring-tea              # a new rule, after version 1's
      skus: [TEA-GREEN-100]
      points: 10
remove: [purchase.campaigns.gold-wine-week, purchase.rebates]
"""})
    v1, v2 = load_folder(folder, EarnProgramme)["retail"]
    assert (v2.version, v2.name, v2.timezone, v2.currency, v2.point_value) == (
        2, "FreshMart Rewards 2027", "Asia/Shanghai", "CNY", Decimal("0.01"))
    assert v2.effective_from == datetime(2026, 12, 31, 16, tzinfo=UTC)
    assert v1.purchase is not None and v2.purchase is not None
    assert (v2.purchase.base.points_per_unit, v2.purchase.base.rounding) == (Decimal(2), v1.purchase.base.rounding)
    assert [b.rule_id for b in v2.purchase.bonuses] == ["new-tea-bonus", "spring-tea"]
    assert [c.rule_id for c in v2.purchase.campaigns] == ["weekend-double"]
    assert v2.purchase.rebates == [] and v2.purchase.multipliers == v1.purchase.multipliers
    assert v2.pending == v1.pending and v2.expiry == v1.expiry and v2.activity == v1.activity
    # Every service sees the same merged version, and the base is untouched.
    tiers = load_folder(folder, TiersProgramme)["retail"]
    assert tiers[1].tiers == tiers[0].tiers is not None
    assert load_file(folder / "retail.v2.yaml", EarnProgramme) == v2
    assert v1 == load_file(SHIPPED / "retail.yaml", EarnProgramme)


def test_deltas_chain_each_over_the_merged_version_below(tmp_path: Path) -> None:
    folder = shipped(tmp_path, **{
        "retail.v2.yaml": V2 + 'purchase: {base: {points_per_unit: "2"}}\n',
        "retail.v3.yaml": V2.replace("based_on: 1", "based_on: 2").replace("version: 2", "version: 3").replace(
            "2027-01-01", "2027-06-01") + "pending: {days: 3}\n"})
    v1, _, v3 = load_folder(folder, EarnProgramme)["retail"]
    assert v3.purchase is not None
    assert (v3.version, v3.purchase.base.points_per_unit, v3.pending.days) == (3, Decimal(2), 3)
    assert v3.pending.by_channel == v1.pending.by_channel


@pytest.mark.parametrize(("files", "expected"), [
    ({"retail.v2.yaml": V2.replace("based_on: 1", "based_on: 7")},
     "retail.v2.yaml: line 2: based_on: programme 'retail' has no version 7 (its versions: 1)"),
    ({"retail.v2.yaml": V2.replace("based_on: 1", "based_on: 3"),
      "retail.v3.yaml": V2.replace("version: 2", "version: 3").replace("based_on: 1", "based_on: 2").replace(
          "2027-01-01", "2027-06-01")},
     "based_on: versions based on each other in a cycle ('retail'"),
    ({"retail.v2.yaml": V2.replace("based_on: 1", "based_on: 2")}, "in a cycle ('retail' 2 → 2)"),
    ({"staff.v3.yaml": V2.replace("retail", "staff").replace("based_on: 1", "based_on: 2").replace(
        "version: 2", "version: 3"),
      "default.v2.yaml": V2.replace("retail", "default").replace("based_on: 1\n", "")},
     "based_on: programme 'staff' has no version 2 (its versions: 1); version 2 of 'default' is another "
     "programme's"),
    ({"retail.v2.yaml": V2.replace("based_on: 1\n", "") + "remove: [purchase.rebates]\n"},
     "retail.v2.yaml: line 4: remove: only a version based_on another may remove"),
    ({"retail.v2.yaml": V2 + "remove: [purchase.no-such-rule]\n"},
     "retail.v2.yaml: line 5: remove: purchase.no-such-rule: nothing at purchase.no-such-rule"),
    ({"retail.v2.yaml": V2.replace("version: 2\n", "")}, "based_on: a version based_on another states its own "
                                                         "version"),
])
def test_a_delta_that_cannot_be_laid_is_refused_naming_file_and_line(
        tmp_path: Path, files: dict[str, str], expected: str) -> None:
    message = refusal(shipped(tmp_path, **files))
    assert expected in message, message


def test_an_error_names_the_delta_line_when_the_delta_states_the_field_else_the_base_file(tmp_path: Path) -> None:
    stated = shipped(tmp_path / "a", **{"retail.v2.yaml": V2 + "purchase:\n  bonuses:\n"
                                                               "    - rule_id: new-tea-bonus\n      points: -5\n"})
    message = refusal(stated)
    assert "retail.v2.yaml: line 8: purchase.bonuses.0.points" in message, message
    # A field the delta does not state but breaks (the base rate a purchase section needs, removed) is found in
    # the base file, and said so.
    message = refusal(shipped(tmp_path / "b", **{"retail.v2.yaml": V2 + "remove: [purchase.base]\n"}))
    assert "retail.v2.yaml: line 12 of retail.yaml (version 1, which this version is based on): purchase.base: " \
           "Field required" in message, message
    # An unknown section is named in the delta file, at its line.
    message = refusal(shipped(tmp_path / "c", **{"retail.v2.yaml": V2 + "purchses: {}\n"}))
    assert "retail.v2.yaml: line 5: purchses: not a section of a programme" in message, message


def test_fingerprints_are_of_the_merged_version_so_a_change_to_its_base_changes_it(tmp_path: Path) -> None:
    folder = shipped(tmp_path, **{"retail.v2.yaml": V2 + 'purchase: {base: {points_per_unit: "2"}}\n'})
    before = fingerprints(sorted(folder.glob("*.yaml")))
    base = folder / "retail.yaml"
    base.write_text(base.read_text().replace("      points: 20\n", "      points: 25\n", 1))
    after = fingerprints(sorted(folder.glob("*.yaml")))
    assert before[("retail", 2)].digest != after[("retail", 2)].digest
    assert before[("default", 1)] == after[("default", 1)]
    # Once version 2 is in effect, editing version 1 rewrites version 2 too: refused for both.
    problems = history_rewrites(before, after, datetime(2027, 2, 1, tzinfo=UTC))
    assert len(problems) == 2 and all("is in effect already" in p for p in problems), problems
    # The delta alone names its base: the same fingerprint as the folder gives it.
    alone = fingerprints([folder / "retail.v2.yaml"], sorted(folder.glob("*.yaml")))
    assert alone[("retail", 2)] == after[("retail", 2)]


def test_a_catalogue_reloads_a_delta_dropped_in_its_folder(tmp_path: Path) -> None:
    folder = shipped(tmp_path)
    catalogue = Catalogue.load(folder, EarnProgramme)
    catalogue.check_every_s, catalogue.clock = 0, lambda: datetime(2026, 12, 2, tzinfo=UTC)
    (folder / "retail.v2.yaml").write_text(V2 + 'purchase: {base: {points_per_unit: "2"}}\n')
    found = catalogue.in_force("retail", datetime(2027, 2, 1, tzinfo=UTC))
    assert found.version == 2 and found.purchase is not None and found.purchase.base.points_per_unit == 2
    assert catalogue.raws[("retail", 2)]["name"] == "FreshMart Rewards (example)"


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_the_weekend_example_merges_over_retail_for_every_service(tmp_path: Path,
                                                                    model: type[ProgrammeVersion]) -> None:
    folder = shipped(tmp_path, **{"retail-weekend.yaml": (EXAMPLES / "retail-weekend.yaml").read_text()})
    v1, v2 = Catalogue.load(folder, model).versions["retail"]
    assert v2.version == 2 and v2.effective_from == datetime(2026, 12, 31, 16, tzinfo=UTC)
    assert (v2.name, v2.timezone, v2.currency, v2.point_value) == (v1.name, v1.timezone, v1.currency, v1.point_value)
    for section in set(type(v2).model_fields) - {"version", "effective_from", "purchase"}:
        assert getattr(v2, section) == getattr(v1, section), section
    if isinstance(v2, EarnProgramme) and isinstance(v1, EarnProgramme):
        assert v1.purchase is not None and v2.purchase is not None
        added = [c for c in v2.purchase.campaigns if c not in v1.purchase.campaigns]
        assert [(c.rule_id, c.multiplier, c.weekdays) for c in added] == [
            ("weekend-double-2027", Decimal(2), {"sat", "sun"})]
        assert {b.rule_id: b.points for b in v2.purchase.bonuses} == {"new-tea-bonus": 30}
        assert v2.purchase.model_copy(update={"campaigns": v1.purchase.campaigns, "bonuses": v1.purchase.bonuses}) \
            == v1.purchase.model_copy(update={"bonuses": v1.purchase.bonuses})


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_the_invite_experiment_example_gives_half_the_members_50_while_it_runs(
        tmp_path: Path, model: type[ProgrammeVersion]) -> None:
    folder = shipped(tmp_path, **{"default-invite.yaml": (EXAMPLES / "default-invite-experiment.yaml").read_text()})
    catalogue = Catalogue.load(folder, model)
    running = datetime(2027, 2, 1, tzinfo=UTC)
    v2 = catalogue.in_force("default", running)
    assert v2.version == 2 and v2.effective_from == datetime(2027, 1, 1, tzinfo=UTC)
    (experiment,) = v2.experiments
    assert (experiment.experiment_id, experiment.starts, experiment.ends) == (
        "invite-50", datetime(2027, 1, 1, tzinfo=UTC), datetime(2027, 3, 1, tzinfo=UTC))
    assert [(a.name, a.share, a.overrides) for a in experiment.arms] == [
        ("control", Decimal("0.5"), {}), ("fifty", Decimal("0.5"), {"referral": {"referee_points": 50}})]
    members = [f"m-{i}" for i in range(400)]
    fifty = sum(arm_of("default", experiment, m).name == "fifty" for m in members)
    assert 160 < fifty < 240
    for member in members[:40]:
        programme, arms = catalogue.for_member("default", member, running)
        arm = arm_of("default", experiment, member).name
        assert arms == {"invite-50": arm}
        if isinstance(programme, ReferralProgramme):
            assert programme.referral is not None
            assert programme.referral.referee_points == (50 if arm == "fifty" else 20)
            assert programme.referral.referrer_points == 50
        assert programme.model_copy(update={"referral": None}) == v2.model_copy(update={"referral": None}) \
            if hasattr(programme, "referral") else programme == v2
    after, arms = catalogue.for_member("default", members[0], datetime(2027, 3, 1, tzinfo=UTC))
    assert arms == {} and after is v2



def test_programme_check_of_a_delta_file_finds_its_base_in_the_programmes_folder(
        tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # where a user runs it
    code, out, err = jifen(capfd, "programme", "check", str(EXAMPLES / "retail-weekend.yaml"))
    assert code == 0 and "programme retail version 2, based on version 1" in out, out + err
    broken = tmp_path / "broken.yaml"
    broken.write_text((EXAMPLES / "retail-weekend.yaml").read_text().replace("points: 30", "points: -1"))
    code, out, err = jifen(capfd, "programme", "check", str(broken), "--folder", str(SHIPPED))
    assert code == 1 and f"{broken}: line 18: purchase.bonuses.0.points" in err, out + err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = jifen(capfd, "programme", "check", str(EXAMPLES / "retail-weekend.yaml"),
                           "--folder", str(empty))
    assert code == 1 and "programme 'retail' has no version 1" in err and "Traceback" not in err, out + err
