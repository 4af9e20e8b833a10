"""`jifen report`'s terminal table and offline HTML from a realistic insight document written here (decimals as the
service writes them, strings; hostile member and reward ids), and from an empty one; the fetch's error handling
against a service that is not there."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from cli import report
from cli.main import main
from cli.report import html, terminal

HOSTILE = '</script><img src=x onerror="alert(1)">'


def document() -> dict[str, Any]:
    series = [{"period": f"2026-11-{d:02d}", "issued": 1200 + 37 * d, "redeemed": 300 + 21 * d, "expired": 10 * (d % 3),
               "adjusted": 0, "active_members": 80 + d, "revenue": f"{4100 + 13 * d}.50"} for d in range(1, 15)]
    months = []
    opening = 0
    for i, (issued, redeemed, expired, adjusted) in enumerate(
            [(52000, 9000, 0, 100), (48000, 21000, 1500, -50), (51000, 26000, 2400, 0), (20500, 9100, 800, 0)]):
        closing = opening + issued - redeemed - expired + adjusted
        months.append({"month": f"2026-{8 + i:02d}", "opening": opening, "issued": issued, "redeemed": redeemed,
                       "expired": expired, "adjusted": adjusted, "transferred": 0, "closing": closing,
                       "closing_money": f"{closing * 0.01:.2f}"})
        opening = closing
    return {
        "kpis": {
            "program_id": "default", "from": "2026-11-01", "to": "2026-11-14", "granularity": "day",
            "timezone": "Asia/Shanghai", "currency": "CNY",
            "kpis": [
                {"kpi": "issue_redeem_ratio", "label": "Points issued per point redeemed", "value": "3.4200",
                 "unit": "ratio", "verdict": "act", "healthy": "≤ 3:1 (watch above 2.5)",
                 "advice": "Members earn far more than they redeem: award fewer points per unit, or add cheaper "
                           "rewards so points get used (above 3:1 the rules need adjusting)."},
                {"kpi": "holding_vs_cheapest_reward", "label": "Average points held ÷ cheapest reward",
                 "value": 2.4, "unit": "ratio", "verdict": "ok", "healthy": "2–3× the cheapest reward",
                 "advice": None},
                {"kpi": "top3_reward_share", "label": "Points on the top 3 rewards ÷ points on all rewards",
                 "value": "0.5100", "unit": "share", "verdict": "watch",
                 "healthy": "the top 3 rewards take ≥ 60% of redemptions",
                 "advice": "Redemptions are spread thin: feature the rewards members want and retire the ones they "
                           "ignore."},
                {"kpi": "points_cost_share", "label": "Points cost ÷ revenue", "value": "0.0045", "unit": "share",
                 "verdict": "ok", "healthy": "0.3%–0.8% of revenue", "advice": None},
                {"kpi": "task_completion", "label": "Members who completed a task ÷ members", "value": None,
                 "unit": "share", "verdict": None, "healthy": "≥ 20% of members complete a task", "advice": None},
                {"kpi": "issued", "label": "Points issued (earn less reversals)", "value": "21398", "unit": "points",
                 "verdict": None, "healthy": None, "advice": None},
                {"kpi": "active_members", "label": "Members who earned or redeemed", "value": 1234,
                 "unit": "members", "verdict": None, "healthy": None, "advice": None},
                {"kpi": "revenue", "label": "Purchases less refunds", "value": "58765.25", "unit": "money",
                 "verdict": None, "healthy": None, "advice": None},
            ],
            "series": series,
            "issued_by_rule": [{"rule_id": "base", "points": 18000}, {"rule_id": "double-weekend", "points": 3398}],
            "redeemed_by_reward": [
                {"reward_id": "coffee", "points": 4200, "count": 42},
                {"reward_id": HOSTILE, "points": 900, "count": 3},
                {"reward_id": "tote-bag", "points": 2500, "count": 5},
                {"reward_id": "voucher-50", "points": 1000, "count": 2},
            ],
            "tiers": [{"tier": "", "members": 17, "spend": "120.00", "spend_per_member": "7.06"},
                      {"tier": "base", "members": 900, "spend": "30000.00", "spend_per_member": "33.33"},
                      {"tier": "silver", "members": 250, "spend": "18000.00", "spend_per_member": "72.00"},
                      {"tier": "gold", "members": 84, "spend": "10765.25", "spend_per_member": "128.16"}],
            "referrals": {"rewarded": 12, "rejected": 3, "revoked": 1, "conversion": "0.8000",
                          "referee_spend_90d": "2400.00"},
        },
        "liability": {"program_id": "default", "currency": "CNY", "point_value": "0.01", "months": months,
                      "closing": months[-1]["closing"], "closing_money": months[-1]["closing_money"]},
        "cohorts": {"program_id": "default", "cohorts": [
            {"month": "2026-08", "issued": 52000, "curve": [
                {"age": 0, "redeemed": 5000, "expired": 0, "outstanding": 47000},
                {"age": 1, "redeemed": 15000, "expired": 0, "outstanding": 37000},
                {"age": 2, "redeemed": 22000, "expired": 1500, "outstanding": 28500},
                {"age": 3, "redeemed": 24000, "expired": 2000, "outstanding": 26000}]},
            {"month": "2026-09", "issued": 48000, "curve": [
                {"age": 0, "redeemed": 6000, "expired": 0, "outstanding": 42000},
                {"age": 1, "redeemed": 14000, "expired": 500, "outstanding": 33500},
                {"age": 2, "redeemed": 19000, "expired": 900, "outstanding": 28100}]},
            {"month": "2026-10", "issued": 51000, "curve": [
                {"age": 0, "redeemed": 8000, "expired": 0, "outstanding": 43000},
                {"age": 1, "redeemed": 17000, "expired": 300, "outstanding": 33700}]},
        ], "ultimate_breakage": "0.1830", "method": "chain-ladder on monthly cohorts"},
        "leaderboard": {"program_id": "default", "from": "2026-11-01", "to": "2026-11-14", "members": [
            {"rank": 1, "member_id": HOSTILE, "points": 5400},
            *({"rank": i, "member_id": f"m-{i:04d}", "points": 5400 - 300 * i} for i in range(2, 13))]},
        "segments": {"program_id": "default", "cheapest_reward": 100, "bands": [
            {"band": "below", "low": 1, "high": 100, "members": 400},
            {"band": "1-2x", "low": 100, "high": 200, "members": 300},
            {"band": "2-3x", "low": 200, "high": 300, "members": 200},
            {"band": "above", "low": 300, "high": None, "members": 150}]},
        "missing": {},
    }


def empty() -> dict[str, Any]:
    """A programme with nothing yet: the service answers, but every list is empty; no rewards (segments 404)."""
    return {
        "kpis": {"program_id": "fresh", "from": "2026-11-01", "to": "2026-11-14", "granularity": "day",
                 "timezone": "UTC", "currency": None, "kpis": [], "series": [], "issued_by_rule": [],
                 "redeemed_by_reward": [], "tiers": [],
                 "referrals": {"rewarded": 0, "rejected": 0, "revoked": 0, "conversion": None,
                               "referee_spend_90d": "0"}},
        "liability": {"program_id": "fresh", "currency": None, "point_value": None, "months": [], "closing": 0,
                      "closing_money": None},
        "cohorts": {"program_id": "fresh", "cohorts": [], "ultimate_breakage": None, "method": "none"},
        "leaderboard": {"program_id": "fresh", "from": "2026-11-01", "to": "2026-11-14", "members": []},
        "segments": None,
        "missing": {"segments": "no_rewards: programme 'fresh' has no rewards"},
    }


# --- the terminal ---------------------------------------------------------------------------------------------------


def test_the_terminal_table_shows_values_by_unit_verdicts_and_advice_under_what_is_not_ok() -> None:
    text = terminal(document())
    lines = text.splitlines()
    row = next(i for i, line in enumerate(lines) if line.strip().startswith("Points issued per point redeemed"))
    assert "3.42×" in lines[row] and "≤ 3:1 (watch above 2.5)" in lines[row] and lines[row].endswith("✘ act")
    assert lines[row + 1].strip().startswith("→ Members earn far more than they redeem")
    watch = next(line for line in lines if line.strip().startswith("Points on the top 3 rewards"))
    assert "51.0%" in watch and watch.endswith("! watch")
    ok = next(i for i, line in enumerate(lines) if line.strip().startswith("Average points held"))
    assert lines[ok].endswith("✔ ok") and "2.40×" in lines[ok] and "→" not in lines[ok + 1]
    assert "0.45%" in text  # a share below 10% keeps two decimals
    assert "21,398" in text and "1,234" in text and "58,765.25 CNY" in text
    unknown = next(line for line in lines if line.strip().startswith("Members who completed a task"))
    assert "—" in unknown and unknown.endswith("-")
    assert text.count("→") == 2


def test_the_terminal_has_the_roll_forward_top_rewards_leaderboard_and_bands() -> None:
    text = terminal(document())
    assert re.search(r"2026-11\s+91,150\s+20,500\s+9,100\s+800\s+0\s+101,750\s+1,017.50", text)
    assert "closing 101,750 points, 1,017.50 CNY" in text
    rewards = text.split("Top rewards")[1].split("Leaderboard")[0]
    assert rewards.index("coffee") < rewards.index("tote-bag") < rewards.index("voucher-50")
    board = text.split("Leaderboard")[1].split("Members by balance")[0]
    assert "m-0010" in board and "m-0011" not in board  # the top 10
    assert "≥ 300" in text and "cheapest reward 100 points" in text
    assert re.search(r"below\s+1–99\s+400", text) and re.search(r"1-2x\s+100–199\s+300", text)  # high: above the band
    assert "Ultimate breakage (estimated): 18.3%" in text


def test_control_characters_in_ids_do_not_reach_the_terminal() -> None:
    doc = document()
    doc["leaderboard"]["members"][1]["member_id"] = "evil\x1b[2J\x1b]0;pwned\x07"
    text = terminal(doc)
    assert "\x1b" not in text and "\x07" not in text
    assert "evil" in text


def test_an_empty_document_says_no_data_in_every_section() -> None:
    text = terminal(empty())
    assert text.count("no data") == 5
    assert "no data (no_rewards: programme 'fresh' has no rewards)" in text


# --- the HTML -------------------------------------------------------------------------------------------------------


def test_the_html_is_self_contained() -> None:
    page = html(document())
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert not re.search(r"<link\b", page, re.IGNORECASE)
    assert "@import" not in page and "url(" not in page.split("<script>")[0]
    assert "sourceMappingURL" not in page
    assert "default-src 'none'" in page  # and the browser is told to load nothing from anywhere
    assert "Chart" in page and len(page) > 100_000  # the library itself, inlined


def test_the_html_has_each_chart_with_its_data_and_the_verdicts() -> None:
    page = html(document())
    assert re.findall(r'data-chart="([a-z_]+)"', page) == ["issued_redeemed", "liability", "cohorts", "tiers",
                                                            "rewards", "referrals"]
    data = json.loads(re.search(r'<script type="application/json" id="report-charts">(.*?)</script>', page,
                                re.DOTALL).group(1))  # type: ignore[union-attr]
    assert len(data["issued_redeemed"]["labels"]) == 14
    assert data["cohorts"]["datasets"][0]["data"][:2] == [round(47000 / 52000, 4), round(37000 / 52000, 4)]
    assert data["cohorts"]["datasets"][2]["data"][2:] == [None, None]  # a younger cohort stops at its age
    assert data["referrals"]["datasets"][0]["data"] == [12, 3, 1]
    assert data["tiers"]["labels"] == ["(no tier)", "base", "silver", "gold"]
    assert '<span class="verdict verdict-act">act</span>' in page
    assert '<span class="verdict verdict-watch">watch</span>' in page
    assert '<span class="verdict verdict-ok">ok</span>' in page
    assert page.count('<tr class="advice">') == 2


def test_hostile_ids_are_escaped_in_markup_and_in_the_json() -> None:
    page = html(document())
    assert "<img" not in page
    assert "&lt;/script&gt;&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page
    # Every </script> of the page closes a script the page opened: the JSON cannot end its element early.
    assert page.lower().count("</script") == page.lower().count("<script")
    blob = re.search(r'id="report-charts">(.*?)</script>', page, re.DOTALL).group(1)  # type: ignore[union-attr]
    assert "<" not in blob and ">" not in blob
    assert HOSTILE in json.loads(blob)["rewards"]["labels"]


def test_an_empty_document_renders_no_data_and_no_chart() -> None:
    page = html(empty())
    assert "data-chart=" not in page
    assert page.count(">no data") >= 6 + 3
    assert "no_rewards: programme &#x27;fresh&#x27; has no rewards" in page


# --- fetching -------------------------------------------------------------------------------------------------------


def test_a_service_that_is_not_there_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "default", "--url", "http://127.0.0.1:1", "--key", "k"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("✘ unreachable: no answer from http://127.0.0.1:1/v1/programs/default")


def test_a_bad_date_is_an_argument_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["report", "default", "--from", "yesterday"])
    assert exit_.value.code == 2
    assert main(["report", "default", "--from", "2026-11-02", "--to", "2026-11-01"]) == 2


def answers(table: dict[str, tuple[int, Any]]) -> Any:
    seen: list[tuple[str, str]] = []

    def request_json(url: str, token: str, *_: Any) -> tuple[int, Any]:
        seen.append((url, token))
        path = url.split("/v1/programs/", 1)[1].split("?")[0].split("/", 1)[1]
        return table[path]

    request_json.seen = seen  # type: ignore[attr-defined]
    return request_json


def test_fetch_asks_each_document_with_the_key_and_a_missing_part_is_no_data(monkeypatch: pytest.MonkeyPatch,
                                                                            tmp_path: Path) -> None:
    doc = document()
    fake = answers({"kpis": (200, doc["kpis"]), "liability": (200, doc["liability"]), "cohorts": (200, doc["cohorts"]),
                    "leaderboard": (200, doc["leaderboard"]),
                    "segments": (404, {"error": "no_rewards", "detail": "programme 'p/1' has no rewards"})})
    monkeypatch.setattr(report.points, "request_json", fake)
    got = report.fetch("http://insight:8106/", "secret", "p/1", "2026-11-01", "2026-11-14")
    assert set(got) >= {"kpis", "liability", "cohorts", "leaderboard", "segments"}
    assert got["segments"] is None and got["missing"]["segments"].startswith("no_rewards")
    urls = [u for u, _ in fake.seen]
    assert urls[0] == "http://insight:8106/v1/programs/p%2F1/kpis?from=2026-11-01&to=2026-11-14&granularity=day"
    assert urls[3] == "http://insight:8106/v1/programs/p%2F1/leaderboard?from=2026-11-01&to=2026-11-14&limit=10"
    assert {t for _, t in fake.seen} == {"secret"}
    assert "no data (no_rewards" in terminal(got)
    out = tmp_path / "r.html"
    monkeypatch.setattr(report, "fetch", lambda *a, **k: got)
    assert main(["report", "p/1", "--key", "secret", "--html", str(out)]) == 0
    assert "data-chart=" in out.read_text()


@pytest.mark.parametrize(("status", "body", "line"), [
    (404, {"error": "unknown_program", "detail": "no programme 'nope'"}, "✘ unknown_program: no programme 'nope'"),
    (401, {"error": "unauthorized", "detail": "a valid API key is needed"}, "✘ unauthorized: a valid API key"),
    (403, {"error": "forbidden", "detail": "the key lacks the read scope"}, "✘ forbidden: the key lacks"),
    (500, "Internal Server Error", "✘ http_500 (HTTP 500 from kpis)"),
])
def test_a_refusal_is_one_line_and_exit_1(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                          status: int, body: Any, line: str) -> None:
    monkeypatch.setattr(report.points, "request_json", lambda *_: (status, body))
    assert main(["report", "nope", "--key", "k"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(line), err
