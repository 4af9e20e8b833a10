"""`jifen whatif` end to end on a generated feed (no Kafka, no database): the options, the side-by-side table with
the verdicts, the assumption and the notes, and the forecast's cost table."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cli.main import main
from tests.unit.test_whatif_engine import PROGRAMME


def test_whatif_on_a_generated_feed_prints_both_sides_what_differs_the_assumption_and_the_cost_table(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "programmes"
    folder.mkdir()
    (folder / "tw.yaml").write_text(yaml.safe_dump(PROGRAMME))
    draft = tmp_path / "double.yaml"
    draft.write_text(yaml.safe_dump({"based_on": 1, "purchase": {"base": {"points_per_unit": "2"}}}))
    code = main(["whatif", "tw", "--draft", str(draft), "--programmes", str(folder), "--synthetic", "--members", "40",
                 "--spend", "100", "--frequency", "4", "--days", "20", "--from", "2026-10-01"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "What-if for tw: 2026-10-01T00:00:00+00:00 to 2026-10-21T00:00:00+00:00 (synthetic" in out
    base = next(line.split() for line in out.splitlines() if line.strip().startswith("base "))
    live, doubled = (int(n.replace(",", "")) for n in base[1:3])
    assert live > 0 and 2 * live <= doubled < 2 * live + 200  # floored per purchase: each gains a point at most
    assert "cost share, gross (every point redeemed)" in out and "Rules that differ most" in out
    assert "Assumption: members behave as they did" in out and "laid in as version 2" in out
    assert "Cost forecast" in out and "40.0% (default for a generated feed)" in out


def test_whatif_refuses_a_missing_draft_and_half_a_synthetic_feed_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["whatif", "tw", "--draft", str(tmp_path / "none.yaml")]) == 2
    assert "--draft" in capsys.readouterr().err
    (tmp_path / "d.yaml").write_text("based_on: 1\n")
    assert main(["whatif", "tw", "--draft", str(tmp_path / "d.yaml"), "--synthetic", "--members", "5"]) == 2
    assert "--synthetic needs --spend, --frequency" in capsys.readouterr().err
