"""`jifen programme show P [--version N] [--diff]`: the version every service reads (merged over its based_on) as
YAML, what changed from the version before it, and its experiments; one line and exit 2 for what is not there."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from cli.main import main
from shared.programmes import raw_file
from shared.settings import Settings
from tests.support import REPO

SHIPPED = Settings().programmes_dir
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "programmes"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """programmes/ with both examples dropped in."""
    shutil.copytree(SHIPPED, tmp_path / "programmes")
    for example in EXAMPLES.glob("*.yaml"):
        shutil.copy(example, tmp_path / "programmes")
    return tmp_path / "programmes"


def shown(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`jifen programme show ARGS…` in this process (the same parser and code as `jifen`, without the seconds a new
    interpreter costs); returns (exit code, stdout, stderr)."""
    code = main(["programme", "show", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_show_prints_the_merged_version_as_yaml(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = shown(capsys, "retail", "--version", "2", "--folder", str(folder))
    assert code == 0 and out.startswith("# programme retail version 2, in effect from 2027-01-01")
    printed = yaml.safe_load(out)
    assert printed == raw_file(folder / "retail-weekend.yaml")
    assert "based_on" not in printed and printed["name"] == "FreshMart Rewards (example)"  # inherited
    assert [b["points"] for b in printed["purchase"]["bonuses"]] == [30]
    assert [c["rule_id"] for c in printed["purchase"]["campaigns"]] == [
        "gold-wine-week", "weekend-double", "weekend-double-2027"]
    assert printed["tiers"] == yaml.safe_load((SHIPPED / "retail.yaml").read_text())["tiers"]
    # Without --version: the version in force now (version 2 takes effect in 2027).
    code, out, _ = shown(capsys, "retail", "--folder", str(folder))
    in_force = "retail.yaml" if datetime.now(UTC) < datetime(2026, 12, 31, 16, tzinfo=UTC) else "retail-weekend.yaml"
    assert code == 0 and yaml.safe_load(out) == raw_file(folder / in_force)


def test_show_diff_lists_what_changed_and_the_experiments(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = shown(capsys, "retail", "--version", "2", "--diff", "--folder", str(folder))
    assert code == 0
    assert out.splitlines()[:5] == [
        "# programme retail version 2 against version 1",
        "~ version: 1 → 2",
        "~ effective_from: '2026-01-01T00:00:00+08:00' → '2027-01-01T00:00:00+08:00'",
        "~ purchase.bonuses.new-tea-bonus.points: 20 → 30",
        "+ purchase.campaigns.weekend-double-2027: {rule_id: weekend-double-2027, multiplier: '2', starts: "
        "'2027-01-01T00:00:00+08:00', ends: '2027-04-01T00:00:00+08:00', weekdays: [sat, sun]}"]
    assert out.splitlines()[-1] == "experiments: none"
    code, out, _ = shown(capsys, "default", "--version", "2", "--diff", "--folder", str(folder))
    assert code == 0
    block = out[out.index("\nexperiments:\n") + 1:].splitlines()
    assert block == [
        "experiments:",
        "  invite-50 (Invite a friend, 20 → 50 points to the invited member): 2027-01-01T00:00:00+00:00 → "
        "2027-03-01T00:00:00+00:00 (not started)",
        "    control: share 0.5, no overrides",
        "    fifty: share 0.5",
        "      ~ referral.referee_points: 20 → 50"]
    code, out, _ = shown(capsys, "default", "--version", "1", "--diff", "--folder", str(folder))
    assert code == 0 and out.startswith("# programme default version 1 is its first: nothing before it")


def test_a_removal_shows_as_minus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(SHIPPED / "staff.yaml", tmp_path)
    staff = yaml.safe_load((SHIPPED / "staff.yaml").read_text())
    section = next(k for k in ("activity", "expiry", "pending") if k in staff)
    (tmp_path / "staff.v2.yaml").write_text(
        f'program_id: staff\nbased_on: 1\nversion: 2\neffective_from: "2030-01-01T00:00:00Z"\nremove: [{section}]\n')
    code, out, _ = shown(capsys, "staff", "--version", "2", "--diff", "--folder", str(tmp_path))
    assert code == 0 and f"- {section}" in out.splitlines(), out


@pytest.mark.parametrize(("args", "expected"), [
    (["nope"], "✘ no programme 'nope' (the programmes are default, retail, staff, starbucks)"),
    (["retail", "--version", "9"], "✘ programme 'retail' has no version 9 (its versions: 1, 2)"),
])
def test_an_unknown_programme_or_version_is_one_line_and_exit_2(
        folder: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: str) -> None:
    code, out, err = shown(capsys, *args, "--folder", str(folder))
    assert code == 2 and out == "" and err.startswith(expected) and err.count("\n") == 1, err


def test_show_runs_as_a_user_runs_it(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """From the repository, with its default folder (the console script as a process: test_cli_errors.py)."""
    monkeypatch.chdir(REPO)
    code, out, err = shown(capsys, "default", "--diff")
    assert code == 0 and out.startswith("# programme default version 1 is its first"), out + err


def test_the_docs_show_what_the_command_prints(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/programmes.md's printed diff and experiments block are the command's output."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "programmes.md").read_text()
    blocks = re.findall(r"(?s)```[a-z]*\n(.*?)```", doc)
    _, retail, _ = shown(capsys, "retail", "--version", "2", "--diff", "--folder", str(folder))
    _, default, _ = shown(capsys, "default", "--version", "2", "--diff", "--folder", str(folder))
    assert retail in blocks
    assert default[default.index("\nexperiments:\n") + 1:] in blocks
    weekend = (EXAMPLES / "retail-weekend.yaml").read_text()
    assert weekend[weekend.index("program_id:"):] in doc
