"""The programme folder is judged the same way by every service: a change to any section of a version in effect is
refused by all of them, not only by the service that reads that section; `jifen programme check` says so first."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from cli.programme import MODELS
from shared.programmes import Catalogue, ProgrammeError, ProgrammeVersion, UnknownProgram, load_file
from shared.settings import Settings
from tests.support import in_process as jifen

STARBUCKS = Settings().programmes_dir / "starbucks.yaml"
LATER = datetime(2026, 11, 9, 10, tzinfo=UTC)  # version 1 of the example is in effect since 2026-01-01


def edited(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    os.utime(path, (time.time() + 5, time.time() + 5))  # a new stamp even within the file system's resolution


def catalogues(folder: Path) -> dict[str, Catalogue[ProgrammeVersion]]:
    loaded: dict[str, Catalogue[ProgrammeVersion]] = {}
    for service, model in MODELS.items():
        catalogue = Catalogue.load(folder, model)
        catalogue.check_every_s, catalogue.clock = 0, lambda: LATER
        loaded[service] = catalogue
    return loaded



@pytest.mark.parametrize(("section", "old", "new"), [
    ("rewards (redemption's)", "    points: 25\n", "    points: 30\n"),
    ("purchase (earn's)", 'points_per_unit: "0.2"', 'points_per_unit: "0.4"'),
    ("tiers (tiers')", "threshold: 300", "threshold: 200"),
])
def test_a_version_in_effect_changed_in_any_section_is_refused_by_every_service(
        tmp_path: Path, section: str, old: str, new: str) -> None:
    shutil.copy(STARBUCKS, tmp_path)
    services = catalogues(tmp_path)
    before = {service: c.at("starbucks", LATER) for service, c in services.items()}
    edited(tmp_path / "starbucks.yaml", old, new)
    for service, catalogue in services.items():
        assert catalogue.at("starbucks", LATER) == before[service], (section, service)  # the version in force stays
        assert catalogue.reloads == {True: 0, False: 1}, (section, service)
        assert catalogue.last_reload is not None and "version 1 is in effect already" in catalogue.last_reload.detail


def test_a_comment_or_a_future_version_is_taken_by_every_service(tmp_path: Path) -> None:
    shutil.copy(STARBUCKS, tmp_path)
    services = catalogues(tmp_path)
    edited(tmp_path / "starbucks.yaml", "# A coffee-chain example", "# A coffee-shop example")  # no content change
    v2 = (tmp_path / "starbucks.yaml").read_text().replace("version: 1", "version: 2").replace(
        '"2026-01-01T00:00:00+08:00"', '"2027-01-01T00:00:00+08:00"')
    (tmp_path / "starbucks.v2.yaml").write_text(v2)
    for service, catalogue in services.items():
        found = catalogue.at("starbucks", datetime(2027, 2, 1, tzinfo=UTC))
        assert found is not None and found.version == 2, service
        assert catalogue.reloads == {True: 1, False: 0}, service


def test_programme_check_refuses_an_edit_of_a_version_in_effect_as_the_services_do(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    in_force, draft = tmp_path / "in-force", tmp_path / "draft"
    in_force.mkdir()
    shutil.copy(STARBUCKS, in_force)
    shutil.copytree(in_force, draft)
    code, out, err = jifen(capfd, "programme", "check", str(draft), "--in-force", str(in_force))
    assert code == 0 and "every service takes these files" in out, out + err
    edited(draft / "starbucks.yaml", "    points: 25\n", "    points: 30\n")  # a section only redemption reads
    code, out, err = jifen(capfd, "programme", "check", str(draft), "--in-force", str(in_force))
    assert code == 1, out + err
    assert "every service would refuse the folder" in err
    assert "'starbucks' version 1 is in effect already" in err and "add a new version instead" in err
    # A version added with a start in the past is refused too.
    (draft / "starbucks.yaml").write_text(STARBUCKS.read_text())
    (draft / "v2.yaml").write_text(STARBUCKS.read_text().replace("version: 1", "version: 2").replace(
        '"2026-01-01T00:00:00+08:00"', '"2026-02-01T00:00:00+08:00"'))
    code, out, err = jifen(capfd, "programme", "check", str(draft), "--in-force", str(in_force))
    assert code == 1 and "would take effect in the past" in err, out + err
    code, _, err = jifen(capfd, "programme", "check", str(draft), "--in-force", "no-such-revision")
    assert code == 1 and "neither a folder nor a git revision" in err and "Traceback" not in err


def test_programme_check_compares_with_git_head_by_default(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """In a git work tree (as programmes/ is), the committed files are taken as the versions in force."""
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(STARBUCKS, repo)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for command in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "v1"]):
        subprocess.run([*git, *command], check=True)
    edited(repo / "starbucks.yaml", "threshold: 300", "threshold: 200")
    code, out, err = jifen(capfd, "programme", "check", str(repo))
    assert code == 1 and "(git HEAD)" in err and "version 1 is in effect already" in err, out + err


@pytest.mark.parametrize("path", sorted(Settings().programmes_dir.glob("*.yaml")), ids=lambda p: p.name)
def test_a_shipped_programme_promises_only_benefits_its_rules_give(path: Path) -> None:
    """A level's benefits are text shown to members: a birthday treat needs a birthday rule, a multiplier its
    tier's earn_multiplier, a double-points day or a campaign a campaign the level gets, a free item a reward."""
    earn, tiers, rewards = (load_file(path, MODELS[s]) for s in ("earn", "tiers", "redemption"))
    if tiers.tiers is None:  # type: ignore[attr-defined]
        return
    campaigns = earn.purchase.campaigns if earn.purchase else []  # type: ignore[attr-defined]
    items = {r.name.lower(): r for r in rewards.rewards}  # type: ignore[attr-defined]
    for level in tiers.tiers.levels:  # type: ignore[attr-defined]
        for benefit in level.benefits:
            text = benefit.lower()
            if "birthday" in text:
                assert earn.activity.birthday is not None, (level.tier, benefit)  # type: ignore[attr-defined]
            if match := re.search(r"×(\d+(?:\.\d+)?) (points|stars)", text):
                assert Decimal(match[1]) == level.earn_multiplier, (level.tier, benefit)
            if "double" in text or "campaign" in text:
                assert any((not c.tiers or level.tier in c.tiers) and ("double" not in text or c.multiplier == 2)
                           for c in campaigns), (level.tier, benefit)
            if match := re.search(r"free (\w+) every (\d+)", text):
                assert any(match[1] in name and r.points == int(match[2]) for name, r in items.items()), benefit


INVITE = """\
program_id: default
based_on: 1
version: 2
effective_from: "2027-01-01T00:00:00Z"
experiments:
  - experiment_id: invite-50
    starts: "2027-01-01T00:00:00Z"
    ends: "2027-03-01T00:00:00Z"
    arms:
      - {name: control, share: "0.5"}
      - name: fifty
        share: "0.5"
        overrides: {referral: {referee_points: OVERRIDE}}
"""
DEFAULT = Settings().programmes_dir / "default.yaml"
RUNNING = datetime(2027, 2, 1, tzinfo=UTC)


def invite_folder(tmp_path: Path, override: str = "50") -> Path:
    shutil.copy(DEFAULT, tmp_path)
    (tmp_path / "default.v2.yaml").write_text(INVITE.replace("OVERRIDE", override))
    return tmp_path


def test_for_member_gives_each_member_their_arms_overrides_while_the_experiment_runs(tmp_path: Path) -> None:
    from services.referral.programme import ReferralProgramme
    from shared.experiments import arm_of

    catalogue = Catalogue.load(invite_folder(tmp_path), ReferralProgramme)
    plain = catalogue.in_force("default", RUNNING)
    experiment = plain.experiments[0]
    members = {arm: next(f"m-{i}" for i in range(100) if arm_of("default", experiment, f"m-{i}").name == arm)
               for arm in ("control", "fifty")}
    control, arms = catalogue.for_member("default", members["control"], RUNNING)
    assert control is plain and arms == {"invite-50": "control"}
    fifty, arms = catalogue.for_member("default", members["fifty"], RUNNING)
    assert arms == {"invite-50": "fifty"} and fifty.version == 2
    assert fifty.referral is not None and plain.referral is not None
    assert (fifty.referral.referee_points, plain.referral.referee_points) == (50, 20)
    assert fifty.referral.referrer_points == plain.referral.referrer_points  # only the override changes
    assert catalogue.for_member("default", members["fifty"], RUNNING)[0] is fifty  # built once, then looked up
    # Before the experiment starts and after it ends, every member gets the version itself and no arm.
    for when in (datetime(2026, 12, 31, tzinfo=UTC), datetime(2027, 3, 1, tzinfo=UTC)):
        version, arms = catalogue.for_member("default", members["fifty"], when)
        assert arms == {} and version is catalogue.in_force("default", when)
    with pytest.raises(UnknownProgram) as refused:
        catalogue.for_member("nope", members["fifty"], RUNNING)
    assert refused.value.detail == catalogue.why_not("nope", RUNNING)


def test_an_arm_whose_overrides_do_not_validate_is_refused_at_load_naming_file_and_experiment(tmp_path: Path) -> None:
    from services.referral.programme import ReferralProgramme

    folder = invite_folder(tmp_path, '"lots"')
    with pytest.raises(ProgrammeError) as refused:
        Catalogue.load(folder, ReferralProgramme)
    message = str(refused.value)
    assert "default.v2.yaml" in message and "experiment 'invite-50' arm 'fifty'" in message
    assert "referral.referee_points" in message and "line 13" in message, message
    # The earn service does not read referral, but the override is as wrong there: each model judges its own sections.
    assert Catalogue.load(folder, MODELS["earn"]).in_force("default", RUNNING).version == 2
