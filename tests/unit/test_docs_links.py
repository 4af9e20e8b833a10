"""The docs point to places that exist: a README section named in a page (`README "Admin"` or a
`README.md#anchor` link) is a heading of the README, as a reader following it would find."""

from __future__ import annotations

import re

from tests.support import REPO


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_readme_section_a_page_names_exists() -> None:
    readme = (REPO / "README.md").read_text()
    anchors = {slug(h) for h in re.findall(r"(?m)^#{1,6} (.+)$", readme)}
    named: list[tuple[str, str]] = []
    for page in sorted((REPO / "docs").glob("*.md")):
        text = page.read_text()
        named += [(page.name, slug(title)) for title in re.findall(r'README "([^"]+)"', text)]
        named += [(page.name, anchor) for anchor in re.findall(r"README\.md#([\w-]+)", text)]
    missing = [(page, anchor) for page, anchor in named if anchor not in anchors]
    assert missing == [], f"sections the README does not have: {missing}"


def test_no_page_promises_what_is_already_done_or_not_yet_wired() -> None:
    """A page saying a thing works "once wired" goes stale the day it is wired (redemption.md's bench mode was)."""
    stale = [(page.name, line) for page in sorted((REPO / "docs").glob("*.md"))
             for line in page.read_text().splitlines() if "once wired" in line]
    assert stale == []
