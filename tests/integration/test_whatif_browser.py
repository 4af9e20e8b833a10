"""The what-if's HTML page opened in a real browser (Debian's chromium, headless, offline, as for the report): every
chart drawn from the inlined library and data with no outside request and no console error, the cost verdicts
shown, the hostile ids kept as text; a new programme's page draws its draft alone."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import BrowserContext, Page

from cli.whatif.html import render
from cli.whatif.result import Comparison
from tests.integration.test_report_browser import browser, open_offline
from tests.unit.test_whatif_html import HOSTILE, comparison, new_programme

__all__ = ["browser"]  # the report's fixture: one headless chromium for the module


def opened(browser: BrowserContext, tmp_path: Path, what: Comparison) -> tuple[Page, list[str], list[str]]:
    """The page of `what` written to a file and opened as the report's test opens its own (`open_offline`)."""
    path = tmp_path / "whatif.html"
    path.write_text(render(what), encoding="utf-8")
    return open_offline(browser, path, "the what-if page")


def drawn(page: Page) -> dict[str, int]:
    """Each chart's drawn elements (bars and band points), by chart."""
    charts = page.eval_on_selector_all("[data-chart]", "els => els.map(e => [e.dataset.chart, e.dataset.points])")
    return {name: int(points) for name, points in charts}


def test_every_chart_is_drawn_offline_without_errors(browser: BrowserContext, tmp_path: Path) -> None:
    page, errors, outside = opened(browser, tmp_path, comparison())
    try:
        # 5 rules and 4 tiers, each with a bar per side; the cost: expected and gross per side, and the band's
        # two lines of two points.
        assert drawn(page) == {"rules": 5 * 2, "tiers": 4 * 2, "cost": 2 * 2 + 2 * 2}
        assert page.locator("[data-chart] canvas").count() == 3
        # A canvas drawn on holds pixels that are not transparent.
        painted = page.eval_on_selector_all("[data-chart] canvas", """cs => cs.map(c => {
            const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 3; i < d.length; i += 4) { if (d[i] > 0) { n += 1; } } return n; })""")
        assert all(n > 1000 for n in painted), painted
        assert errors == []
        assert outside == []
        verdicts = page.eval_on_selector_all(
            "table.figures tr[data-figure]", "rows => Object.fromEntries(rows.map(r => "
            "[r.dataset.figure, [r.cells[1].innerText.trim(), r.cells[2].innerText.trim()]]))")
        assert verdicts["cost_share"] == ["0.42% ok", "0.90% above"]
        assert verdicts["gross_share"] == ["0.68% ok", "1.47% above"]
        assert "members behave as they did" in page.locator(".assumption").inner_text()
        assert page.locator("ul.notes li").count() == 2
        assert page.locator("img").count() == 0
        assert HOSTILE in page.locator("ul.notes").inner_text()
    finally:
        page.close()


def test_a_new_programme_draws_the_draft_alone(browser: BrowserContext, tmp_path: Path) -> None:
    page, errors, outside = opened(browser, tmp_path, new_programme())
    try:
        # The in-force side's bars are zeros, and it has no cost share (null, not drawn); the draft's two shares and
        # the band's lines are.
        assert drawn(page) == {"rules": 2, "tiers": 2, "cost": 2 + 2 * 2}
        assert errors == []
        assert outside == []
        assert "in force: none (a new programme)" in page.locator("body").inner_text()
    finally:
        page.close()
