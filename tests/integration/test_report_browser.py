"""The HTML report opened in a real browser (Debian's chromium, headless, which `make deps` installs): it draws every
chart from the inlined library and data with no network at all, no console error, the KPI verdicts shown, and the
hostile ids stay text."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, ConsoleMessage, Dialog, Page, Request, Route, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from cli.report import html
from tests.unit.test_report import HOSTILE, document, empty

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser() -> Iterator[BrowserContext]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make deps` installs Debian's chromium")
    with tempfile.TemporaryDirectory(prefix="jifen-report-chromium-") as profile, sync_playwright() as pw:
        # A persistent context is the way Playwright takes a fresh --user-data-dir of our own.
        context = pw.chromium.launch_persistent_context(profile, executable_path=str(CHROMIUM), headless=True,
                                                        args=FLAGS, offline=True)
        try:
            yield context
        finally:
            context.close()


def opened(browser: BrowserContext, tmp_path: Path, doc: dict[str, Any]) -> tuple[Page, list[str], list[str]]:
    """The report of `doc` written to a file and opened (`open_offline`)."""
    path = tmp_path / "report.html"
    path.write_text(html(doc), encoding="utf-8")
    return open_offline(browser, path, "the report")


def open_offline(browser: BrowserContext, path: Path, what: str) -> tuple[Page, list[str], list[str]]:
    """The page at `path` opened once its drawing code has finished (`body[data-drawn=true]`): the page, console
    errors (and page errors, dialogs), and every request that was not for the file itself (all of them aborted)."""
    page: Page = browser.new_page()
    errors: list[str] = []
    outside: list[str] = []

    def route(r: Route) -> None:
        if r.request.url == path.as_uri():
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    def request(r: Request) -> None:
        if r.url != path.as_uri():
            outside.append(r.url)

    def dialog(d: Dialog) -> None:
        errors.append(f"dialog: {d.message}")
        d.dismiss()

    page.route("**/*", route)
    page.on("console", console)
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.on("request", request)
    page.on("dialog", dialog)
    page.goto(path.as_uri(), wait_until="load")
    try:
        page.wait_for_selector("body[data-drawn=true]", state="attached", timeout=15_000)
    except PlaywrightTimeout:
        pytest.fail(f"{what}'s drawing code did not finish: {errors or 'no error reported'}")
    return page, errors, outside


def test_every_chart_is_drawn_offline_without_errors(browser: BrowserContext, tmp_path: Path) -> None:
    page, errors, outside = opened(browser, tmp_path, document())
    try:
        charts = page.eval_on_selector_all("[data-chart]", "els => els.map(e => [e.dataset.chart, "
                                                           "e.dataset.points || null])")
        assert {name for name, _ in charts} == {"issued_redeemed", "liability", "cohorts", "tiers", "rewards",
                                                "referrals"}
        assert all(points is not None and int(points) > 0 for _, points in charts), charts
        assert dict(charts)["issued_redeemed"] == str(14 * 3)  # 14 days, issued, redeemed and expired
        assert page.locator("[data-chart] canvas").count() == len(charts)
        assert errors == []
        assert outside == []
        # The verdicts as the KPI table shows them.
        verdicts = page.eval_on_selector_all("table.kpis tr[data-kpi]", "rows => Object.fromEntries(rows.map(r => "
                                             "[r.dataset.kpi, r.cells[3].innerText.trim()]))")
        assert verdicts["issue_redeem_ratio"] == "act"
        assert verdicts["top3_reward_share"] == "watch"
        assert verdicts["holding_vs_cheapest_reward"] == "ok"
        assert page.locator("table.kpis tr.advice").count() == 2
        # The hostile ids are text in their cells, nothing of them became an element.
        assert page.locator("img").count() == 0
        assert HOSTILE in page.locator("table.leaderboard").inner_text()
        assert HOSTILE in page.locator("table.rewards").inner_text()
    finally:
        page.close()


def test_an_empty_programme_says_no_data_and_draws_no_empty_chart(browser: BrowserContext, tmp_path: Path) -> None:
    page, errors, outside = opened(browser, tmp_path, empty())
    try:
        assert page.locator("[data-chart]").count() == 0
        assert page.locator(".no-data").count() >= 6
        assert "no data" in page.locator("body").inner_text()
        assert errors == []
        assert outside == []
    finally:
        page.close()
