"""`jifen whatif --html`'s page from a Comparison made here (a weekend campaign doubling one rule, hostile rule,
member and tier ids): self-contained, each headline figure with the cost share's verdicts, each chart's data, the
differing members and rules, the assumption and the notes; and a new programme's empty side."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from cli.whatif.html import render
from cli.whatif.result import ASSUMPTION, Comparison, Side

HOSTILE = '</script><img src=x onerror="alert(1)">'


def comparison() -> Comparison:
    """A month of a retail programme: in force issues 0.42% of revenue (ok), the draft's weekend double makes it
    0.93% (above)."""
    live = Side("in force", 1, Decimal("0.01"), "CNY",
                issued_by_rule=Counter({"base": 400_000, "checkin": 12_000, "referral": 3_500, HOSTILE: 500}),
                taken_back_by_rule=Counter({"base": 6_000}),
                by_member=Counter({"m-00001": 1_200, "m-00002": 800, HOSTILE: 50, "m-00003": 40}),
                revenue=Decimal("600000.00"), redeemed=250_000, expired=4_000, liability=1_900_000,
                members_by_tier=Counter({"normal": 700, "silver": 220, "gold": 70, HOSTILE: 10}),
                referrals_rewarded=50, referral_points=3_500, redemption_rate=Decimal("0.6131"))
    draft = Side("draft", 2, Decimal("0.01"), "CNY",
                 issued_by_rule=Counter({"base": 400_000, "weekend-double": 480_000, "checkin": 12_000,
                                         "referral": 3_500, HOSTILE: 500}),
                 taken_back_by_rule=Counter({"base": 6_000, "weekend-double": 7_000}),
                 by_member=Counter({"m-00001": 2_500, "m-00002": 1_300, HOSTILE: 50, "m-00003": 40}),
                 revenue=Decimal("600000.00"), redeemed=250_000, expired=4_000, liability=2_373_000,
                 members_by_tier=Counter({"normal": 640, "silver": 260, "gold": 90, HOSTILE: 10}),
                 referrals_rewarded=50, referral_points=3_500, redemption_rate=Decimal("0.6131"))
    return Comparison("retail", datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC), "topics",
                      123_456, live, draft,
                      notes=["state at the start: replayed from the programme's first event (2026-01-04)",
                             f"tiers: as earn recorded them ({HOSTILE})"])


def new_programme() -> Comparison:
    """A forecast for a programme with no version in force: the in-force side is empty."""
    draft = Side("draft", 1, Decimal("0.01"), "CNY", issued_by_rule=Counter({"base": 1_000_000}),
                 revenue=Decimal("1200000.00"), liability=1_000_000, members_by_tier=Counter({"normal": 500}),
                 redemption_rate=Decimal("0.6"))
    return Comparison("fresh", datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC), "synthetic",
                      42_000, Side("in force", None, None, None), draft)


def charts_of(page: str) -> dict[str, Any]:
    found = re.search(r'<script type="application/json" id="whatif-charts">(.*?)</script>', page, re.DOTALL)
    assert found is not None
    return json.loads(found.group(1))


def figure(page: str, key: str) -> list[str]:
    row = re.search(rf'<tr data-figure="{key}">(.*?)</tr>', page, re.DOTALL)
    assert row is not None, key
    return [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row.group(1))]


def test_the_page_is_self_contained() -> None:
    page = render(comparison())
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert not re.search(r"<link\b", page, re.IGNORECASE)
    assert "sourceMappingURL" not in page
    assert "default-src 'none'" in page
    assert "Chart" in page and len(page) > 100_000  # the library itself, inlined


def test_the_headline_figures_side_by_side_with_the_cost_verdicts() -> None:
    page = render(comparison())
    assert figure(page, "issued") == ["Points issued", "416,000", "896,000", "+480,000"]
    assert figure(page, "net_issued") == ["Net points issued", "410,000", "883,000", "+473,000"]
    # 410,000 × 0.6131 × 0.01 / 600,000 = 0.419%; 883,000 × … = 0.902%.
    assert figure(page, "cost") == ["Expected cost (net issued × redemption rate × point value)", "2,513.71 CNY",
                                    "5,413.67 CNY", "+2,899.96 CNY"]
    assert figure(page, "cost_share") == ["Cost share of revenue, expected", "0.42% ok", "0.90% above", "+0.48 pp"]
    assert figure(page, "gross_share") == ["Cost share of revenue, gross (every point redeemed)", "0.68% ok",
                                           "1.47% above", "+0.79 pp"]
    assert figure(page, "liability") == ["Liability at the end, points", "1,900,000", "2,373,000", "+473,000"]
    assert figure(page, "liability_value") == ["Liability at the end, money", "19,000.00 CNY", "23,730.00 CNY",
                                               "+4,730.00 CNY"]
    assert figure(page, "referrals_rewarded") == ["Referrals rewarded", "50", "50", "0"]
    assert '<span class="verdict verdict-above">above</span>' in page
    assert ASSUMPTION in page
    assert "version 1" in page and "version 2" in page


def test_each_chart_has_both_sides() -> None:
    page = render(comparison())
    assert re.findall(r'data-chart="([a-z]+)"', page) == ["rules", "tiers", "cost"]
    charts = charts_of(page)
    rules = charts["rules"]["data"]
    assert rules["labels"][:2] == ["weekend-double", "base"]  # the largest first
    assert [d["label"] for d in rules["datasets"]] == ["in force", "draft"]
    assert rules["datasets"][0]["data"][0] == 0 and rules["datasets"][1]["data"][0] == 480_000
    assert charts["tiers"]["data"]["labels"] == ["normal", "silver", "gold", HOSTILE]
    assert charts["tiers"]["data"]["datasets"][1]["data"] == [640, 260, 90, 10]
    cost = charts["cost"]["data"]
    assert cost["datasets"][0]["data"] == [0.419, 0.9023]  # expected, in percent
    assert [d["data"] for d in cost["datasets"][2:]] == [[0.3, 0.3], [0.8, 0.8]]  # the band


def test_the_differing_tables_notes_and_hostile_ids_escaped() -> None:
    page = render(comparison())
    rules = re.search(r'<table class="rules">(.*?)</table>', page, re.DOTALL)
    members = re.search(r'<table class="members">(.*?)</table>', page, re.DOTALL)
    assert rules is not None and members is not None
    assert re.findall(r"<tr><td>([^<]+)</td>", rules.group(1)) == ["weekend-double"]
    assert re.findall(r"<tr><td>([^<]+)</td>", members.group(1)) == ["m-00001", "m-00002"]
    assert "+1,300" in members.group(1)
    assert "replayed from the programme&#x27;s first event" in page
    assert "<img" not in page
    assert "&lt;/script&gt;&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page
    assert page.lower().count("</script") == page.lower().count("<script")
    blob = re.search(r'id="whatif-charts">(.*?)</script>', page, re.DOTALL)
    assert blob is not None and "<" not in blob.group(1) and ">" not in blob.group(1)


def test_a_new_programme_has_an_empty_side_and_no_verdict_for_it() -> None:
    page = render(new_programme())
    assert "in force: none (a new programme)" in page
    assert figure(page, "issued") == ["Points issued", "0", "1,000,000", "+1,000,000"]
    assert figure(page, "cost_share") == ["Cost share of revenue, expected", "—", "0.50% ok", "—"]
    charts = charts_of(page)
    assert charts["cost"]["data"]["datasets"][0]["data"] == [None, 0.5]
    rules = re.search(r'<table class="rules">(.*?)</table>', page, re.DOTALL)
    assert rules is not None and re.findall(r"<tr><td>([^<]+)</td>", rules.group(1)) == ["base"]
    assert '<p class="no-data" data-empty="members">no data</p>' in page  # no member on either side
    assert '<p class="no-data" data-empty="rules">' not in page
