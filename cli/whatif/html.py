"""The what-if as one offline HTML page (`jifen whatif P --draft FILE --html OUT`): the two sides' headline figures
with the cost share's verdict against the seed's 0.3%–0.8% band, charts of the points per rule, the members per tier
at the end and the cost share against the band, the members and rules that differ most, the assumption and the
notes. Built like `jifen report --html` (cli/report.py, whose helpers it uses): the chart library and the data are
inlined, a Content-Security-Policy refuses every outside load, and every id (rules, members, tiers: anyone's input)
is escaped."""

from __future__ import annotations

import html as markup
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from cli.report import STYLE, _int, _json_for_script, _library, _money, _share, charts_section, page_head
from cli.whatif.result import COST_BAND, Comparison, Side, verdict

# In force grey, the draft blue: the same two colours on every chart.
COLOURS = {"in force": "#8d99ae", "draft": "#2a6f97", "expected": "#2a6f97", "gross": "#a9d6e5", "band": "#e76f51"}

CHARTS = [
    ("rules", "Points issued per rule"),
    ("tiers", "Members per tier at the period's end"),
    ("cost", "Cost share of revenue against the 0.3%–0.8% band"),
]

EXTRA_STYLE = """
.verdict-below{background:#fff3bf;color:#7a5c00}.verdict-above{background:#ffd6d6;color:#8a1c1c}
.assumption{background:#f1f5f9;border-left:4px solid #2a6f97;padding:.6rem .9rem}
td.up{color:#1b4332}td.down{color:#8a1c1c}
"""

DRAW = """
(function () {
  "use strict";
  var charts = JSON.parse(document.getElementById("whatif-charts").textContent);
  Chart.defaults.animation = false;
  Chart.defaults.maintainAspectRatio = false;
  document.querySelectorAll("[data-chart]").forEach(function (box) {
    var name = box.getAttribute("data-chart");
    var chart = charts[name];
    if (!chart) { return; }
    var options = {responsive: true, plugins: {legend: {display: true}}, scales: {y: {beginAtZero: true}}};
    if (chart.percent) {
      options.scales.y.ticks = {callback: function (v) { return v + "%"; }};
    }
    if (chart.horizontal) {
      options.indexAxis = "y";
      options.scales = {x: {beginAtZero: true}};
    }
    var canvas = document.createElement("canvas");
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", box.getAttribute("data-title") || name);
    box.appendChild(canvas);
    var drawn = new Chart(canvas, {type: "bar", data: chart.data, options: options});
    var points = 0;
    drawn.data.datasets.forEach(function (set, i) {
      drawn.getDatasetMeta(i).data.forEach(function (el, j) {
        if (set.data[j] !== null && el) { points += 1; }
      });
    });
    box.setAttribute("data-points", String(points));
  });
  document.body.setAttribute("data-drawn", "true");
})();
"""


def _percent(share: Decimal | None) -> float | None:
    """A share as a chart's percentage (0.0045 → 0.45), to four places."""
    return None if share is None else round(float(share * 100), 4)


def _signed(value: int | Decimal | None, shown: Callable[[Any], str]) -> str:
    if value is None:
        return "—"
    return ("+" if value > 0 else "") + shown(value) if value != 0 else "0"


def _pp(live: Decimal | None, draft: Decimal | None) -> str:
    """The difference of two shares in percentage points."""
    if live is None or draft is None:
        return "—"
    points = (draft - live) * 100
    return f"{'+' if points > 0 else ''}{points:.2f} pp" if points else "0"


def _money_of(value: Decimal | None, side: Side) -> str:
    return _money(value, side.currency) if value is not None else "—"


def _expected_cost(side: Side) -> Decimal | None:
    return side.cost()


def figures(comparison: Comparison) -> list[tuple[str, str, str, str, str, str | None, str | None]]:
    """The headline rows: (key, label, in force, draft, difference, in force's verdict, draft's verdict); verdicts
    only on the two cost shares."""
    live, draft = comparison.live, comparison.draft
    rows: list[tuple[str, str, str, str, str, str | None, str | None]] = []

    def points(key: str, label: str, get: Callable[[Side], int]) -> None:
        rows.append((key, label, _int(get(live)), _int(get(draft)), _signed(get(draft) - get(live), _int), None,
                     None))

    def money(key: str, label: str, get: Callable[[Side], Decimal | None]) -> None:
        a, b = get(live), get(draft)
        diff = b - a if a is not None and b is not None else None
        rows.append((key, label, _money_of(a, live), _money_of(b, draft),
                     _signed(diff, lambda v: _money(v, draft.currency or live.currency)), None, None))

    def share(key: str, label: str, get: Callable[[Side], Decimal | None], judged: bool) -> None:
        a, b = get(live), get(draft)
        rows.append((key, label, _share(a), _share(b), _pp(a, b), verdict(a) if judged else None,
                     verdict(b) if judged else None))

    points("issued", "Points issued", lambda s: s.issued)
    points("taken_back", "Points taken back (refunds, clawbacks)", lambda s: sum(s.taken_back_by_rule.values()))
    points("net_issued", "Net points issued", lambda s: s.net_issued)
    money("revenue", "Revenue (purchases less refunds)", lambda s: s.revenue)
    share("redemption_rate", "Redemption rate", lambda s: s.redemption_rate, False)
    money("cost", "Expected cost (net issued × redemption rate × point value)", _expected_cost)
    share("cost_share", "Cost share of revenue, expected", lambda s: s.cost_share(), True)
    share("gross_share", "Cost share of revenue, gross (every point redeemed)", lambda s: s.gross_share(), True)
    points("redeemed", "Points redeemed (as they were)", lambda s: s.redeemed)
    points("expired", "Points expired", lambda s: s.expired)
    points("liability", "Liability at the end, points", lambda s: s.liability)
    money("liability_value", "Liability at the end, money", lambda s: s.liability_value())
    points("referrals_rewarded", "Referrals rewarded", lambda s: s.referrals_rewarded)
    points("referral_points", "Referral points", lambda s: s.referral_points)
    return rows


def _ordered(*counters: dict[str, int]) -> list[str]:
    """Keys in the order the counters first name them (a tier's order is its replay's, not the alphabet's)."""
    seen: dict[str, None] = {}
    for counter in counters:
        seen.update(dict.fromkeys(counter))
    return list(seen)


def chart_data(comparison: Comparison) -> dict[str, Any]:
    """Each chart's data, only for the charts that have any (the others say "no data")."""
    live, draft = comparison.live, comparison.draft
    charts: dict[str, Any] = {}

    def pair(labels: list[str], get: Callable[[Side, str], int]) -> list[dict[str, Any]]:
        return [{"label": side.label, "data": [get(side, label) for label in labels],
                 "backgroundColor": COLOURS[name], "borderColor": COLOURS[name]}
                for name, side in (("in force", live), ("draft", draft))]

    rules = sorted(set(live.issued_by_rule) | set(draft.issued_by_rule),
                   key=lambda r: (-max(live.issued_by_rule[r], draft.issued_by_rule[r]), r))
    if any(live.issued_by_rule.values()) or any(draft.issued_by_rule.values()):
        charts["rules"] = {"horizontal": len(rules) > 8,
                           "data": {"labels": rules, "datasets": pair(rules, lambda s, r: s.issued_by_rule[r])}}
    tiers = _ordered(live.members_by_tier, draft.members_by_tier)
    if any(live.members_by_tier.values()) or any(draft.members_by_tier.values()):
        charts["tiers"] = {"data": {"labels": [t or "(no tier)" for t in tiers],
                                    "datasets": pair(tiers, lambda s, t: s.members_by_tier[t])}}
    shares = {"expected": [_percent(s.cost_share()) for s in (live, draft)],
              "gross": [_percent(s.gross_share()) for s in (live, draft)]}
    if any(v is not None for values in shares.values() for v in values):
        low, high = (_percent(b) for b in COST_BAND)
        charts["cost"] = {"percent": True, "data": {
            "labels": [f"{live.label}", f"{draft.label}"],
            "datasets": [
                *({"label": f"{name} cost share", "data": values, "backgroundColor": COLOURS[name],
                   "borderColor": COLOURS[name]} for name, values in shares.items()),
                *({"type": "line", "label": label, "data": [bound, bound], "borderColor": COLOURS["band"],
                   "backgroundColor": COLOURS["band"], "borderDash": [6, 4], "pointRadius": 0, "fill": False}
                  for label, bound in ((f"band low {low}%", low), (f"band high {high}%", high)))]}}
    return charts


def _side_title(side: Side) -> str:
    if side.version is None:
        return f"{side.label}: none" + (" (a new programme)" if side.label == "in force" else "")
    return f"{side.label}: version {side.version}"


def render(comparison: Comparison) -> str:
    """The what-if as one HTML file that needs no network. Raises cli.report.ReportError when the chart library is
    not installed (`make deps`)."""
    e = markup.escape
    live, draft = comparison.live, comparison.draft
    program = str(comparison.program_id)
    currency = draft.currency or live.currency
    meta = " · ".join(x for x in (f"{comparison.start.isoformat()} to {comparison.end.isoformat()}",
                                  f"history: {comparison.source}", f"{comparison.events:,} events replayed",
                                  currency or "") if x)
    parts: list[str] = [
        *page_head(f"Jifen what-if: {program}", STYLE + EXTRA_STYLE),
        f"<h1>What-if: programme {e(program)}</h1>",
        f'<p class="meta">{e(_side_title(live))} · {e(_side_title(draft))}</p>', f'<p class="meta">{e(meta)}</p>',
        f'<p class="assumption"><strong>Assumption:</strong> {e(comparison.assumption)}.</p>']

    def badge(v: str | None) -> str:
        return f' <span class="verdict verdict-{e(v)}">{e(v)}</span>' if v else ""

    low, high = COST_BAND
    rows = "".join(
        f'<tr data-figure="{e(key)}"><td>{e(label)}</td><td class=n>{e(a)}{badge(va)}</td>'
        f'<td class=n>{e(b)}{badge(vb)}</td><td class=n>{e(diff)}</td></tr>'
        for key, label, a, b, diff, va, vb in figures(comparison))
    parts.append(f"<section><h2>Headline figures</h2><table class=\"figures\"><thead><tr><th>figure</th>"
                 f"<th class=n>{e(live.label)}</th><th class=n>{e(draft.label)}</th><th class=n>difference</th></tr>"
                 f"</thead><tbody>{rows}</tbody></table>"
                 f"<p>The verdicts judge the cost share against the seed's band, {_share(low)}–{_share(high)} of "
                 "revenue: below, ok or above.</p></section>")

    charts = chart_data(comparison)
    parts.append(charts_section(charts, CHARTS))

    def differing(title: str, cls: str, what: str, items: list[tuple[str, int, int]], any_data: bool) -> str:
        if not items:
            why = "none: the two sides agree" if any_data else "no data"
            return f'<section><h2>{e(title)}</h2><p class="no-data" data-empty="{e(cls)}">{why}</p></section>'
        body = "".join(f"<tr><td>{e(str(key))}</td><td class=n>{_int(a)}</td><td class=n>{_int(b)}</td>"
                       f'<td class="n {"up" if b > a else "down"}">{e(_signed(b - a, _int))}</td></tr>'
                       for key, a, b in items)
        return (f'<section><h2>{e(title)}</h2><table class="{e(cls)}"><thead><tr><th>{e(what)}</th>'
                f"<th class=n>{e(live.label)}</th><th class=n>{e(draft.label)}</th><th class=n>difference</th>"
                f"</tr></thead><tbody>{body}</tbody></table></section>")

    parts.append(differing("Rules that differ most (points issued)", "rules", "rule", comparison.rules_differing(),
                           bool(live.issued_by_rule or draft.issued_by_rule)))
    parts.append(differing("Members who differ most (net points in the period)", "members", "member",
                           comparison.members_differing(), bool(live.by_member or draft.by_member)))
    if comparison.notes:
        parts.append("<section><h2>Notes</h2><ul class=\"notes\">"
                     + "".join(f"<li>{e(note)}</li>" for note in comparison.notes) + "</ul></section>")

    parts.append(f'<script type="application/json" id="whatif-charts">{_json_for_script(charts)}</script>')
    parts.append(f"<script>{_library()}</script>")
    parts.append(f"<script>{DRAW}</script>")
    parts.append("</body></html>")
    return "\n".join(parts)
