"""`jifen simulate`'s summary of the insight service's KPIs (`make up` prints it): only the indicators with a verdict,
each with its value, verdict and healthy range, the advice under each that is not ok, and the ones the period gave
nothing to measure by named on one line."""

from __future__ import annotations

from typing import Any

from cli.simulate import kpi_lines

ADVICE = ("Members earn far more than they redeem: award fewer points per unit, or add cheaper rewards so points get "
          "used (above 3:1 the rules need adjusting).")
KPIS: dict[str, Any] = {
    "program_id": "default", "from": "2026-11-03", "to": "2026-12-02", "timezone": "UTC", "currency": None,
    "kpis": [
        {"kpi": "issue_redeem_ratio", "label": "Points issued per point redeemed", "value": "167.2431",
         "unit": "ratio", "verdict": "act", "healthy": "≤ 3:1 (watch above 2.5)", "advice": ADVICE},
        {"kpi": "top3_reward_share", "label": "Points on the top 3 rewards ÷ points on all rewards", "value": "1.0000",
         "unit": "share", "verdict": "ok", "healthy": "the top 3 rewards take ≥ 60% of redemptions", "advice": None},
        {"kpi": "task_completion", "label": "Members who completed a task ÷ members", "value": None, "unit": "share",
         "verdict": None, "healthy": "≥ 20% of members complete a task (watch below 25%)", "advice": None},
        {"kpi": "issued", "label": "Points issued (earn less reversals)", "value": "384659", "unit": "points",
         "verdict": None, "healthy": None, "advice": None},
    ]}


def test_only_judged_kpis_are_listed_with_value_verdict_and_range_and_advice_when_not_ok() -> None:
    lines = kpi_lines("default", KPIS, "as the ledger: 384,659 points issued, 382,359 held")
    assert lines[0] == ("  insight default      2026-11-03 to 2026-12-02 (UTC), as the ledger: 384,659 points issued, "
                        "382,359 held")
    assert lines[1] == "    issue_redeem_ratio  167.24×  ✘ act    healthy: ≤ 3:1 (watch above 2.5)"
    advice = [line for line in lines if line.startswith("      → ") or line.startswith("        ")]
    assert " ".join(line.strip().removeprefix("→ ") for line in advice) == ADVICE
    assert all(len(line) <= 120 for line in lines)
    assert lines[-2] == "    top3_reward_share    100.0%  ✔ ok     healthy: the top 3 rewards take ≥ 60% of redemptions"
    assert lines[-1] == "    no data yet for task_completion"
    assert not any("issued " in line or "384659" in line for line in lines[1:])


def test_a_period_with_nothing_judged_is_the_heading_and_what_had_no_data() -> None:
    kpis = {**KPIS, "kpis": [k for k in KPIS["kpis"] if not k["verdict"]]}
    assert kpi_lines("default", kpis) == ["  insight default      2026-11-03 to 2026-12-02 (UTC)",
                                          "    no data yet for task_completion"]
