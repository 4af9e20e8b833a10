"""`jifen report P --experiment ID`: the comparison's table and offline page from the insight API's own example
answer (and a skewed one), the URL it asks, and its refusals as one line and exit 1."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from cli import report
from cli.main import main
from services.insight.api import ExperimentOut

HOSTILE = '</td><script>alert(1)</script>'


def answer() -> dict[str, Any]:
    return copy.deepcopy(ExperimentOut.model_json_schema()["examples"][0])


def test_the_table_shows_each_arm_against_the_control_with_its_interval() -> None:
    text = report.experiment_terminal(answer())
    lines = text.splitlines()
    assert lines[0] == "experiment referral-50 of programme default: Invite a friend: 20 or 50 points"
    assert "running · control a" in lines[1]
    assert "— ✔ the split matches the declared shares" in text and "p = 0.81" in text
    row = next(line for line in lines if line.lstrip().startswith("b *"))
    # b: 54.4% of 702 referrals rewarded, 9.3 points above a, interval excluding 0, lift 20.6%.
    assert row.split() == ["b", "*", "702", "54.4%", "1.9%", "+9.3", "pp", "[+3.2", "pp,", "+15.3", "pp]", "✔",
                           "+20.6%"]
    control = next(line for line in lines if "referral_conversion" in line)
    assert control.split() == ["referral_conversion", "a", "410", "45.1%", "2.5%"]


def test_a_mismatched_split_and_a_missing_interval_are_said() -> None:
    doc = answer()
    doc["sample_ratio"].update(flagged=True, p_value=1.5e-23, chi_square="100.0000")
    doc["metrics"][0]["arms"][1]["versus_control"].update(ci_low=None, ci_high=None, significant=None)
    text = report.experiment_terminal(doc)
    assert "p = 1.5e-23 — ✘ mismatch (p < 0.001): the arms were not exposed alike" in text
    assert "the split matches" not in text
    assert "no interval" in text


def test_the_page_is_offline_and_escapes_the_ids(tmp_path: Path) -> None:
    doc = answer()
    doc["arms"][1]["arm"] = HOSTILE
    doc["metrics"][0]["arms"][1]["arm"] = HOSTILE
    page = report.experiment_html(doc)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "default-src 'none'" in page and "http://" not in page and "https://" not in page
    assert "+9.3 pp" in page and "[+3.2 pp, +15.3 pp] ✔" in page


def test_the_experiment_is_asked_by_its_url_and_printed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    asked: list[tuple[str, str]] = []

    def request_json(url: str, token: str) -> tuple[int, Any]:
        asked.append((url, token))
        return 200, answer()

    monkeypatch.setattr(report.points, "request_json", request_json)
    out = tmp_path / "x.html"
    assert main(["report", "p/1", "--experiment", "referral-50", "--key", "k", "--url", "http://insight:8106/",
                 "--html", str(out)]) == 0
    assert asked == [("http://insight:8106/v1/programs/p%2F1/experiments/referral-50", "k")]
    printed = capsys.readouterr().out
    assert printed.startswith("experiment referral-50 of programme default") and "HTML report:" in printed
    assert "referral_conversion" in out.read_text()


@pytest.mark.parametrize(("status", "body", "line"), [
    (404, {"error": "unknown_experiment", "detail": "programme 'default' declares no experiment 'x'"},
     "✘ unknown_experiment: programme 'default' declares no experiment 'x'"),
    (404, {"error": "unknown_program", "detail": "no programme 'nope'"}, "✘ unknown_program: no programme 'nope'"),
    (500, "Internal Server Error", "✘ http_500 (HTTP 500 from experiments)"),
])
def test_a_refusal_is_one_line_and_exit_1(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                          status: int, body: Any, line: str) -> None:
    monkeypatch.setattr(report.points, "request_json", lambda *_: (status, body))
    assert main(["report", "nope", "--experiment", "x", "--key", "k"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.strip().splitlines() == [line]


def test_a_service_that_is_not_there_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "default", "--experiment", "x", "--url", "http://127.0.0.1:1", "--key", "k"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("✘ unreachable") and "make up" in err[0]
