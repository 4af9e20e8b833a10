"""`jifen report P [--from D --to D] [--html FILE]`: the insight service's view of a programme (KPIs with verdicts
and advice, the liability roll-forward, cohorts, the leaderboard, balance bands) as a terminal table, and as one
self-contained HTML file with charts that works offline (the chart library, pinned in report/package.json, is
inlined from report/node_modules, which `make deps` installs). `jifen report P --experiment ID` compares an
experiment's arms instead (each metric against the control with its 95% interval, and the sample-ratio check), as
a table and with `--html` as one offline page. Needs a key with the `read` scope (`--key`, else JIFEN_API_KEY,
else the key `make up` wrote to .run/api-key)."""

from __future__ import annotations

import argparse
import html as markup
import json
import os
import re
import sys
import textwrap
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from cli import points

DEFAULT_URL = "http://127.0.0.1:8106"
SECTIONS = ("kpis", "liability", "cohorts", "leaderboard", "segments")
CHART_JS = Path(__file__).resolve().parents[1] / "report" / "node_modules" / "chart.js" / "dist" / "chart.umd.min.js"
# A section without data answers 404 with one of these (a programme without rewards has no balance bands); any other
# refusal, an unknown programme above all, ends the report.
NO_DATA_ERRORS = frozenset({"no_rewards", "no_data", "not_found", "no_tiers", "no_cohorts"})
# Control characters (escape sequences could rewrite the terminal) and bidirectional overrides, from ids that are
# anyone's input: shown as "?" in the terminal.
UNPRINTABLE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
VERDICT_MARK = {"ok": "✔ ok", "watch": "! watch", "act": "✘ act"}


class ReportError(Exception):
    """What stops a report, in one line (the service down, the key refused, an unknown programme)."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    report = sub.add_parser("report", help="a programme's KPIs with verdicts, liability, cohorts, leaderboard and "
                                           "segments (the insight service); --html writes an offline report")
    report.add_argument("program", help="the programme")
    report.add_argument("--from", dest="from_", type=date.fromisoformat, metavar="YYYY-MM-DD",
                        help="the period's first local day (default: the service's, 30 days to --to)")
    report.add_argument("--to", type=date.fromisoformat, metavar="YYYY-MM-DD",
                        help="the period's last local day (default: today in the programme's time zone)")
    report.add_argument("--granularity", choices=["day", "week", "month"], default="day",
                        help="the steps of the series over time (default day)")
    report.add_argument("--html", type=Path, metavar="FILE", help="also write the report as one offline HTML file")
    report.add_argument("--experiment", metavar="ID",
                        help="compare the arms of experiment ID of the programme instead (--from, --to and "
                             "--granularity do not apply)")
    report.add_argument("--url", default=os.environ.get("JIFEN_INSIGHT_URL", DEFAULT_URL),
                        help=f"the insight service (default JIFEN_INSIGHT_URL or {DEFAULT_URL})")
    report.add_argument("--key", "--api-key", dest="key",
                        help="an API key with the read scope (default JIFEN_API_KEY, or .run/api-key)")


def run(args: argparse.Namespace) -> int:
    if args.from_ and args.to and args.from_ > args.to:
        print(f"✘ --from {args.from_} is after --to {args.to}", file=sys.stderr)
        return 2
    key = points.api_key(args.key)
    if args.experiment:
        return _run_experiment(args, key)
    try:
        doc = fetch(args.url, key, args.program, args.from_, args.to, args.granularity)
    except ReportError as exc:
        print(f"✘ {exc}", file=sys.stderr)
        return 1
    print(terminal(doc))
    return write_page(args.html, lambda: html(doc)) if args.html else 0


def _run_experiment(args: argparse.Namespace, key: str) -> int:
    try:
        doc = fetch_experiment(args.url, key, args.program, args.experiment)
    except ReportError as exc:
        print(f"✘ {exc}", file=sys.stderr)
        return 1
    print(experiment_terminal(doc))
    return write_page(args.html, lambda: experiment_html(doc)) if args.html else 0


def write_page(path: Path, render: Callable[[], str], what: str = "HTML report") -> int:
    """The page `render` makes, written to `path`: 0, or 1 with one line saying why not (a folder that cannot be
    written, the chart library missing)."""
    try:
        path.write_text(render(), encoding="utf-8")
    except (OSError, ReportError) as exc:
        print(f"✘ the {what} was not written: {exc}", file=sys.stderr)
        return 1
    print(f"\n{what}: {path.resolve()}")
    return 0


def page_head(title: str, style: str) -> list[str]:
    """The head of a page that works offline, and the body's start: nothing may be loaded from anywhere (scripts
    and styles are the inline ones, images only data: URLs)."""
    return ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; script-src 'unsafe-inline'; "
            "style-src 'unsafe-inline'; img-src data:\">",
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{markup.escape(title)}</title>", f"<style>{style}</style></head><body>"]


def charts_section(charts: Mapping[str, Any], titles: Sequence[tuple[str, str]]) -> str:
    """A place for each chart the page's script draws from its data (`data-chart`), or "no data"."""
    e = markup.escape
    parts = ['<section><h2>Charts</h2><div class="charts">']
    for name, title in titles:
        parts.append(f"<div><h3>{e(title)}</h3>")
        if name in charts:
            parts.append(f'<div class="chart" data-chart="{e(name)}" data-title="{e(title)}"></div>')
        else:
            parts.append(f'<p class="no-data" data-empty="{e(name)}">no data</p>')
        parts.append("</div>")
    parts.append("</div></section>")
    return "\n".join(parts)  # as the page's own parts are joined


# --- fetching ------------------------------------------------------------------------------------------------------


def fetch(url: str, key: str, program: str, from_: date | str | None, to: date | str | None,
          granularity: str = "day") -> dict[str, Any]:
    """The five documents of the insight service for `program`; a section that has no data (404 with a
    no-data reason) is None and its reason is in `missing`. ReportError for anything else that went wrong."""
    period = {k: str(v) for k, v in (("from", from_), ("to", to)) if v}
    paths = {
        "kpis": ("kpis", {**period, "granularity": granularity}),
        "liability": ("liability", {}),
        "cohorts": ("cohorts", {}),
        "leaderboard": ("leaderboard", {**period, "limit": "10"}),
        "segments": ("segments", {}),
    }
    base = f"{url.rstrip('/')}/v1/programs/{urllib.parse.quote(program, safe='')}"
    doc: dict[str, Any] = {"missing": {}}
    for name, (path, query) in paths.items():
        status, body = points.request_json(f"{base}/{path}" + (f"?{urllib.parse.urlencode(query)}" if query else ""),
                                           key)
        if status < 400 and isinstance(body, dict):
            doc[name] = body
            continue
        body = body if isinstance(body, dict) else {}
        error, detail = str(body.get("error", f"http_{status}")), str(body.get("detail", ""))
        if status == 404 and name != "kpis" and error in NO_DATA_ERRORS:
            doc[name] = None
            doc["missing"][name] = f"{error}: {detail}" if detail else error
            continue
        if status == 599:
            raise ReportError(f"{error}: {detail} (is the insight service running? `make up` starts it)")
        raise ReportError(f"{error}: {detail}" if detail else f"{error} (HTTP {status} from {path})")
    return doc


def fetch_experiment(url: str, key: str, program: str, experiment: str) -> dict[str, Any]:
    """The comparison of an experiment's arms; ReportError for an unknown programme or experiment and the like."""
    status, body = points.request_json(
        f"{url.rstrip('/')}/v1/programs/{urllib.parse.quote(program, safe='')}/experiments/"
        f"{urllib.parse.quote(experiment, safe='')}", key)
    if status < 400 and isinstance(body, dict):
        return body
    body = body if isinstance(body, dict) else {}
    error, detail = str(body.get("error", f"http_{status}")), str(body.get("detail", ""))
    if status == 599:
        raise ReportError(f"{error}: {detail} (is the insight service running? `make up` starts it)")
    raise ReportError(f"{error}: {detail}" if detail else f"{error} (HTTP {status} from experiments)")


# --- numbers as people read them ------------------------------------------------------------------------------------


def _num(value: Any) -> Decimal | None:
    """A JSON number or decimal string as a Decimal; None for null or anything that is not a number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def _int(value: Any) -> str:
    n = _num(value)
    return "—" if n is None else f"{n:,.0f}"


def _money(value: Any, currency: str | None = None) -> str:
    n = _num(value)
    return "—" if n is None else f"{n:,.2f}" + (f" {currency}" if currency else "")


def _share(value: Any) -> str:
    n = _num(value)
    if n is None:
        return "—"
    pct = n * 100
    return f"{pct:.2f}%" if abs(pct) < 10 else f"{pct:.1f}%"


def value_text(value: Any, unit: str, currency: str | None = None) -> str:
    """A KPI's value by its unit: ratios as 2.50×, shares as percentages, points and members as whole numbers."""
    n = _num(value)
    if n is None:
        return "—"
    match unit:
        case "ratio":
            return f"{n:,.2f}×"
        case "share":
            return _share(n)
        case "money":
            return _money(n, currency)
        case _:
            return _int(n)


def _table(headers: list[str], rows: list[list[str]], right: set[int] | None = None, indent: str = "  ") -> list[str]:
    right = right if right is not None else set(range(1, len(headers)))
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return indent + "  ".join(c.rjust(w) if i in right else c.ljust(w)
                                  for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return [line(headers), indent + "  ".join("─" * w for w in widths), *(line(r) for r in rows)]


def _no_data(doc: dict[str, Any], name: str) -> str:
    why = (doc.get("missing") or {}).get(name)
    return "  no data" + (f" ({why})" if why else "")


def _top_rewards(kpis: dict[str, Any] | None, limit: int = 10) -> list[dict[str, Any]]:
    rewards = (kpis or {}).get("redeemed_by_reward") or []
    return sorted(rewards, key=lambda r: (-(_num(r.get("points")) or 0), str(r.get("reward_id"))))[:limit]


def _balance(band: dict[str, Any]) -> str:
    """A band's balances: `high` is the first balance above the band (none for the top one)."""
    low, high = _num(band.get("low")), _num(band.get("high"))
    if high is None:
        return f"≥ {_int(low)}"
    return f"{_int(low)}–{_int(high - 1)}"


# --- the terminal ---------------------------------------------------------------------------------------------------


def terminal(doc: dict[str, Any]) -> str:
    """The report as text: the KPIs with verdicts (advice under each verdict that is not ok), then the liability
    roll-forward, the top rewards, the leaderboard and the balance bands; "no data" for a section without."""
    kpis = doc.get("kpis") or {}
    currency = kpis.get("currency") or (doc.get("liability") or {}).get("currency")
    out: list[str] = []
    program = kpis.get("program_id") or next((d.get("program_id") for d in (doc.get(s) for s in SECTIONS)
                                              if isinstance(d, dict) and d.get("program_id")), "?")
    period = f", {kpis['from']} to {kpis['to']}" if kpis.get("from") and kpis.get("to") else ""
    zone = f" ({kpis['timezone']})" if kpis.get("timezone") else ""
    out.append(f"programme {program}{period}{zone}")

    out.append("\nKPIs")
    items = kpis.get("kpis") or []
    if not items:
        out.append(_no_data(doc, "kpis"))
    else:
        headers = ["KPI", "value", "healthy", "verdict"]
        widths = [max(len(headers[0]), *(len(str(k.get("label") or k.get("kpi"))) for k in items)),
                  max(len(headers[1]), *(len(value_text(k.get("value"), k.get("unit", ""), currency)) for k in items)),
                  max(len(headers[2]), *(len(k.get("healthy") or "") for k in items))]
        out.append(f"  {headers[0]:<{widths[0]}}  {headers[1]:>{widths[1]}}  {headers[2]:<{widths[2]}}  verdict")
        out.append("  " + "  ".join("─" * w for w in [*widths, 9]))
        for k in items:
            verdict = k.get("verdict")
            mark = VERDICT_MARK.get(verdict, str(verdict)) if verdict else "-"
            out.append(f"  {k.get('label') or k.get('kpi')!s:<{widths[0]}}  "
                       f"{value_text(k.get('value'), k.get('unit', ''), currency):>{widths[1]}}  "
                       f"{k.get('healthy') or '':<{widths[2]}}  {mark}".rstrip())
            if verdict in ("watch", "act") and k.get("advice"):
                out.extend(textwrap.wrap(str(k["advice"]), 110, initial_indent="      → ",
                                         subsequent_indent="        "))

    out.append("\nLiability roll-forward" + (f" ({currency})" if currency else ""))
    liability = doc.get("liability") or {}
    months = liability.get("months") or []
    if not months:
        out.append(_no_data(doc, "liability"))
    else:
        cols = ["opening", "issued", "redeemed", "expired", "adjusted"]
        if any(_num(m.get("transferred")) for m in months):
            cols.append("transferred")
        cols.append("closing")
        rows = [[str(m.get("month")), *(_int(m.get(c)) for c in cols), _money(m.get("closing_money"))]
                for m in months]
        out.extend(_table(["month", *cols, "money"], rows))
        out.append(f"  closing {_int(liability.get('closing'))} points"
                   + (f", {_money(liability.get('closing_money'), currency)}"
                      if liability.get("closing_money") is not None else ""))

    cohorts = doc.get("cohorts") or {}
    if cohorts.get("ultimate_breakage") is not None:
        out.append(f"\nUltimate breakage (estimated): {_share(cohorts['ultimate_breakage'])}"
                   + (f"  ({cohorts['method']})" if cohorts.get("method") else ""))

    out.append("\nTop rewards")
    rewards = _top_rewards(doc.get("kpis"))
    if not rewards:
        out.append(_no_data(doc, "kpis") if not doc.get("kpis") else "  no data")
    else:
        out.extend(_table(["reward", "points", "redemptions"],
                          [[str(r.get("reward_id")), _int(r.get("points")), _int(r.get("count"))] for r in rewards]))

    out.append("\nLeaderboard (points earned)")
    leaders = (doc.get("leaderboard") or {}).get("members") or []
    if not leaders:
        out.append(_no_data(doc, "leaderboard"))
    else:
        out.extend(_table(["#", "member", "points"],
                          [[str(m.get("rank")), str(m.get("member_id")), _int(m.get("points"))] for m in leaders[:10]],
                          right={0, 2}))

    segments = doc.get("segments") or {}
    cheapest = segments.get("cheapest_reward")
    out.append("\nMembers by balance" + (f" (cheapest reward {_int(cheapest)} points)" if cheapest else ""))
    bands = segments.get("bands") or []
    if not bands:
        out.append(_no_data(doc, "segments"))
    else:
        out.extend(_table(["band", "balance", "members"],
                          [[str(b.get("band")), _balance(b), _int(b.get("members"))] for b in bands]))
    return UNPRINTABLE.sub("?", "\n".join(out))


# --- an experiment's comparison -------------------------------------------------------------------------------------


def _figure(value: Any, unit: str, signed: bool = False) -> str:
    """A mean or a proportion by its unit: shares as percentages (a difference of shares in percentage points),
    the rest to two places."""
    n = _num(value)
    if n is None:
        return "—"
    sign = "+" if signed and n > 0 else ""
    if unit == "share":
        return sign + f"{n * 100:.1f}" + (" pp" if signed else "%")
    return sign + f"{n:,.2f}"


def _lift(value: Any) -> str:
    n = _num(value)
    return "—" if n is None else ("+" if n > 0 else "") + f"{n * 100:.1f}%"


def _interval(versus: dict[str, Any] | None, unit: str) -> str:
    if not versus:
        return ""
    if versus.get("ci_low") is None or versus.get("ci_high") is None:
        return "no interval"
    mark = " ✔" if versus.get("significant") else ""
    return f"[{_figure(versus['ci_low'], unit, True)}, {_figure(versus['ci_high'], unit, True)}]{mark}"


def _srm_line(doc: dict[str, Any]) -> str:
    srm = doc.get("sample_ratio") or {}
    p = srm.get("p_value")
    if p is None:
        return "Sample ratio: no members seen yet"
    said = (f"Sample ratio: chi-square {_num(srm.get('chi_square')) or 0:.2f} (df {srm.get('df')}), "
            f"p = {float(p):.3g}")
    if srm.get("flagged"):
        return said + " — ✘ mismatch (p < 0.001): the arms were not exposed alike; no figure below is to be trusted"
    return said + " — ✔ the split matches the declared shares"


def experiment_rows(doc: dict[str, Any]) -> list[list[str]]:
    """One row per metric and arm: label (first arm only), arm (* where its overrides touch the metric), n, value,
    standard error, difference from the control, its 95% interval (✔ when it excludes 0) and the lift."""
    rows = []
    for metric in doc.get("metrics") or []:
        unit = str(metric.get("unit", ""))
        for i, arm in enumerate(metric.get("arms") or []):
            versus = arm.get("versus_control")
            rows.append([str(metric.get("metric")) if i == 0 else "",
                         str(arm.get("arm")) + (" *" if arm.get("touched") else ""), _int(arm.get("n")),
                         _figure(arm.get("value"), unit), _figure(arm.get("standard_error"), unit),
                         _figure(versus.get("difference"), unit, True) if versus else "",
                         _interval(versus, unit), _lift(versus.get("lift")) if versus else ""])
    return rows


EXPERIMENT_HEADERS = ["metric", "arm", "n", "value", "± se", "difference", "95% interval", "lift"]


def experiment_terminal(doc: dict[str, Any]) -> str:
    """The comparison as text: the experiment and its state, the arms with their members, the sample-ratio verdict,
    then every metric per arm against the control."""
    out = [f"experiment {doc.get('experiment_id')} of programme {doc.get('program_id')}"
           + (f": {doc['name']}" if doc.get("name") else ""),
           f"  {doc.get('starts')} to {doc.get('ends')} · {doc.get('status')} · control {doc.get('control')}",
           "\nArms"]
    out.extend(_table(["arm", "share", "members", "overrides"],
                      [[str(a.get("arm")), _share(a.get("share")), _int(a.get("members")),
                        ", ".join(a.get("overrides") or []) or "—"] for a in doc.get("arms") or []], right={1, 2}))
    out.append("\n" + _srm_line(doc))
    out.append(f"\nMetrics (each arm against {doc.get('control')}; * the arm's overrides touch the metric; "
               "✔ the interval excludes 0)")
    out.extend(_table(EXPERIMENT_HEADERS, experiment_rows(doc), right={2, 3, 4, 5, 7}))
    return UNPRINTABLE.sub("?", "\n".join(out))


def experiment_html(doc: dict[str, Any]) -> str:
    """The comparison as one offline HTML page (no script, everything from the document escaped)."""
    e = markup.escape
    title = f"experiment {doc.get('experiment_id')} of programme {doc.get('program_id')}"
    head = "".join(f"<th>{e(h)}</th>" for h in EXPERIMENT_HEADERS)
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in experiment_rows(doc))
    arms = "".join(f"<tr><td>{e(str(a.get('arm')))}</td><td class=n>{e(_share(a.get('share')))}</td>"
                   f"<td class=n>{e(_int(a.get('members')))}</td><td>{e(', '.join(a.get('overrides') or []))}</td>"
                   "</tr>" for a in doc.get("arms") or [])
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        f"<title>Jifen report: {e(title)}</title>", f"<style>{STYLE}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f'<p class="meta">{e(str(doc.get("name") or ""))} · {e(str(doc.get("starts")))} to '
        f"{e(str(doc.get('ends')))} · {e(str(doc.get('status')))} · control {e(str(doc.get('control')))}</p>",
        '<section><h2>Arms</h2><table class="arms"><thead><tr><th>arm</th><th class=n>share</th>'
        f"<th class=n>members</th><th>overrides</th></tr></thead><tbody>{arms}</tbody></table>",
        f'<p class="srm">{e(_srm_line(doc))}</p></section>',
        f'<section><h2>Metrics</h2><table class="experiment"><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
        "</table><p class=meta>* the arm's overrides touch the metric; ✔ the interval excludes 0. "
        f"{e(str(doc.get('method') or ''))}</p></section>",
        "</body></html>"])


# --- the offline HTML -----------------------------------------------------------------------------------------------


def _json_for_script(data: Any) -> str:
    """JSON that is safe inside a <script> element: no `</script>`, `<!--` or line separators can end or bend it."""
    text = json.dumps(data, ensure_ascii=False, default=str)
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _library() -> str:
    try:
        code = CHART_JS.read_text(encoding="utf-8")
    except OSError as exc:
        raise ReportError(f"the chart library is not installed ({CHART_JS}): run `make deps`") from exc
    # The source map lives next to the file, not in the report: the comment would only send a browser looking for it.
    code = "\n".join(line for line in code.splitlines() if not line.startswith("//# sourceMappingURL="))
    return code.replace("</script", "<\\/script").replace("</SCRIPT", "<\\/SCRIPT")


def _chart_data(doc: dict[str, Any]) -> dict[str, Any]:
    """Each chart's data, only for the charts that have any (the rest say "no data")."""
    kpis = doc.get("kpis") or {}
    charts: dict[str, Any] = {}
    series = kpis.get("series") or []
    if series:
        charts["issued_redeemed"] = {
            "labels": [str(s.get("period")) for s in series],
            "datasets": [{"label": k, "data": [float(_num(s.get(k)) or 0) for s in series]}
                         for k in ("issued", "redeemed", "expired")]}
    months = (doc.get("liability") or {}).get("months") or []
    if months:
        charts["liability"] = {
            "labels": [str(m.get("month")) for m in months],
            "datasets": [{"label": k, "data": [float(_num(m.get(k)) or 0) * (-1 if k in ("redeemed", "expired")
                                                                             else 1) for m in months],
                          "type": "line" if k == "closing" else "bar"}
                         for k in ("closing", "issued", "redeemed", "expired")]}
    cohorts = [c for c in (doc.get("cohorts") or {}).get("cohorts") or [] if (_num(c.get("issued")) or 0) > 0
               and c.get("curve")]
    if cohorts:
        ages = sorted({int(p.get("age", 0)) for c in cohorts for p in c["curve"]})
        charts["cohorts"] = {
            "labels": [str(a) for a in ages],
            "datasets": [{"label": str(c.get("month")), "data": [
                round(float((_num(by_age[a]) or 0) / (_num(c["issued"]) or 1)), 4) if a in by_age else None
                for a in ages]}
                for c in cohorts for by_age in [{int(p.get("age", 0)): p.get("outstanding") for p in c["curve"]}]]}
    tiers = [t for t in kpis.get("tiers") or [] if (_num(t.get("members")) or 0) > 0]
    if tiers:
        charts["tiers"] = {"labels": [str(t.get("tier")) or "(no tier)" for t in tiers],
                           "datasets": [{"label": "members", "data": [float(_num(t.get("members")) or 0)
                                                                      for t in tiers]}]}
    rewards = _top_rewards(kpis)
    if rewards:
        charts["rewards"] = {"labels": [str(r.get("reward_id")) for r in rewards],
                             "datasets": [{"label": "points", "data": [float(_num(r.get("points")) or 0)
                                                                       for r in rewards]}]}
    referrals = kpis.get("referrals") or {}
    funnel = [float(_num(referrals.get(k)) or 0) for k in ("rewarded", "rejected", "revoked")]
    if any(funnel):
        charts["referrals"] = {"labels": ["rewarded", "rejected", "revoked"],
                               "datasets": [{"label": "referrals", "data": funnel}]}
    return charts


CHARTS = [
    ("issued_redeemed", "Points issued, redeemed and expired over time"),
    ("liability", "Liability roll-forward (closing balance; movements per month)"),
    ("cohorts", "Cohorts: share of each issue month's points still outstanding, by age in months"),
    ("tiers", "Tier mix (members)"),
    ("rewards", "Top rewards (points redeemed)"),
    ("referrals", "Referral funnel"),
]

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem}.meta{color:#666;margin-top:0}
table{border-collapse:collapse;margin:.5rem 0 1.5rem;width:100%}
th,td{border-bottom:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.verdict{font-weight:600;border-radius:3px;padding:0 .4rem}
.verdict-ok{background:#d8f3dc;color:#1b4332}.verdict-watch{background:#fff3bf;color:#7a5c00}
.verdict-act{background:#ffd6d6;color:#8a1c1c}.advice td{color:#555;font-style:italic;border-bottom:1px solid #ddd}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:1.5rem}
.chart{position:relative;height:300px}.no-data{color:#888;font-style:italic}
section{margin-bottom:1rem}
"""

DRAW = """
(function () {
  "use strict";
  var charts = JSON.parse(document.getElementById("report-charts").textContent);
  var palette = ["#2a6f97", "#e76f51", "#8d99ae", "#2a9d8f", "#e9c46a", "#6d597a", "#f4a261", "#264653",
                 "#b5838d", "#52b788"];
  var kinds = {issued_redeemed: "line", liability: "bar", cohorts: "line", tiers: "doughnut", rewards: "bar",
               referrals: "bar"};
  Chart.defaults.animation = false;
  Chart.defaults.maintainAspectRatio = false;
  document.querySelectorAll("[data-chart]").forEach(function (box) {
    var name = box.getAttribute("data-chart");
    var data = charts[name];
    if (!data) { return; }
    var kind = kinds[name] || "bar";
    data.datasets.forEach(function (set, i) {
      var colour = palette[i % palette.length];
      if (kind === "doughnut") {
        set.backgroundColor = data.labels.map(function (_, j) { return palette[j % palette.length]; });
      } else {
        set.backgroundColor = colour;
        set.borderColor = colour;
        set.spanGaps = true;
      }
    });
    var options = {responsive: true, plugins: {legend: {display: data.datasets.length > 1 || kind === "doughnut"}}};
    if (name === "rewards") { options.indexAxis = "y"; }
    if (name === "cohorts") {
      options.scales = {y: {min: 0, max: 1, ticks: {callback: function (v) { return Math.round(v * 100) + "%"; }}},
                        x: {title: {display: true, text: "age (months)"}}};
    }
    var canvas = document.createElement("canvas");
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", box.getAttribute("data-title") || name);
    box.appendChild(canvas);
    var chart = new Chart(canvas, {type: kind, data: data, options: options});
    var drawn = 0;
    chart.data.datasets.forEach(function (_, i) {
      chart.getDatasetMeta(i).data.forEach(function (el, j) {
        if (chart.data.datasets[i].data[j] !== null && el) { drawn += 1; }
      });
    });
    box.setAttribute("data-points", String(drawn));
  });
  document.body.setAttribute("data-drawn", "true");
})();
"""


def html(doc: dict[str, Any]) -> str:
    """The report as one HTML file that needs no network: the chart library and the data are inlined, everything
    from the documents is escaped (member and reward ids are anyone's input)."""
    e = markup.escape
    kpis = doc.get("kpis") or {}
    currency = kpis.get("currency") or (doc.get("liability") or {}).get("currency")
    program = kpis.get("program_id") or next((d.get("program_id") for d in (doc.get(s) for s in SECTIONS)
                                              if isinstance(d, dict) and d.get("program_id")), "?")
    meta = " · ".join(x for x in (f"{kpis['from']} to {kpis['to']}" if kpis.get("from") else "",
                                  kpis.get("timezone") or "", currency or "",
                                  f"by {kpis['granularity']}" if kpis.get("granularity") else "") if x)
    parts: list[str] = [*page_head(f"Jifen report: {program}", STYLE),
                        f"<h1>Programme {e(str(program))}</h1>", f'<p class="meta">{e(meta)}</p>']

    def no_data(name: str) -> str:
        why = (doc.get("missing") or {}).get(name)
        return f'<p class="no-data" data-empty="{e(name)}">no data' + (f" ({e(why)})" if why else "") + "</p>"

    def table(headers: list[str], rows: list[list[str]], numeric: set[int], cls: str) -> str:
        head = "".join(f'<th{" class=n" if i in numeric else ""}>{e(h)}</th>' for i, h in enumerate(headers))
        body = "".join("<tr>" + "".join(f'<td{" class=n" if i in numeric else ""}>{e(c)}</td>'
                                        for i, c in enumerate(r)) + "</tr>" for r in rows)
        return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'

    parts.append("<section><h2>KPIs</h2>")
    items = kpis.get("kpis") or []
    if items:
        rows = []
        for k in items:
            verdict = k.get("verdict")
            badge = (f'<span class="verdict verdict-{e(str(verdict))}">{e(str(verdict))}</span>' if verdict
                     else "-")
            rows.append(f'<tr data-kpi="{e(str(k.get("kpi")))}"><td>{e(str(k.get("label") or k.get("kpi")))}</td>'
                        f'<td class=n>{e(value_text(k.get("value"), k.get("unit", ""), currency))}</td>'
                        f'<td>{e(k.get("healthy") or "")}</td><td>{badge}</td></tr>')
            if verdict in ("watch", "act") and k.get("advice"):
                rows.append(f'<tr class="advice"><td colspan="4">→ {e(str(k["advice"]))}</td></tr>')
        parts.append('<table class="kpis"><thead><tr><th>KPI</th><th class=n>value</th><th>healthy</th>'
                     f'<th>verdict</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')
    else:
        parts.append(no_data("kpis"))
    parts.append("</section>")

    charts = _chart_data(doc)
    parts.append(charts_section(charts, CHARTS))

    parts.append("<section><h2>Liability roll-forward</h2>")
    liability = doc.get("liability") or {}
    months = liability.get("months") or []
    if months:
        cols = ["opening", "issued", "redeemed", "expired", "adjusted", "closing"]
        parts.append(table(["month", *cols, "money"],
                           [[str(m.get("month")), *(_int(m.get(c)) for c in cols),
                             _money(m.get("closing_money"), currency)] for m in months], set(range(1, 8)),
                           "liability"))
    else:
        parts.append(no_data("liability"))
    breakage = (doc.get("cohorts") or {}).get("ultimate_breakage")
    if breakage is not None:
        parts.append(f"<p>Ultimate breakage (estimated): {e(_share(breakage))}"
                     + (f" <small>({e(str(doc['cohorts'].get('method')))})</small>"
                        if doc["cohorts"].get("method") else "") + "</p>")
    parts.append("</section>")

    sections: list[tuple[str, str, Callable[[], str | None]]] = [
        ("Top rewards", "kpis", lambda: table(["reward", "points", "redemptions"], [
            [str(r.get("reward_id")), _int(r.get("points")), _int(r.get("count"))]
            for r in _top_rewards(doc.get("kpis"))], {1, 2}, "rewards") if _top_rewards(doc.get("kpis")) else None),
        ("Leaderboard (points earned)", "leaderboard", lambda: table(["#", "member", "points"], [
            [str(m.get("rank")), str(m.get("member_id")), _int(m.get("points"))]
            for m in ((doc.get("leaderboard") or {}).get("members") or [])[:10]], {0, 2}, "leaderboard")
            if (doc.get("leaderboard") or {}).get("members") else None),
        ("Members by balance", "segments", lambda: table(["band", "balance", "members"], [
            [str(b.get("band")), _balance(b), _int(b.get("members"))]
            for b in (doc.get("segments") or {}).get("bands") or []], {1, 2}, "segments")
            if (doc.get("segments") or {}).get("bands") else None),
    ]
    for title, source, render in sections:
        body = render()
        parts.append(f"<section><h2>{e(title)}</h2>{body if body is not None else no_data(source)}</section>")

    parts.append(f'<script type="application/json" id="report-charts">{_json_for_script(charts)}</script>')
    parts.append(f"<script>{_library()}</script>")
    parts.append(f"<script>{DRAW}</script>")
    parts.append("</body></html>")
    return "\n".join(parts)
