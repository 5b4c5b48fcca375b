"""The README is the front door: short, and every page or file it (or a docs page) links exists."""

from __future__ import annotations

import re

from tests.conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_relative_link_of_the_readme_and_docs_resolves() -> None:
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if not target.startswith(("http://", "https://")) and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def test_the_readme_stays_a_front_door_and_docs_holds_no_code() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300
    assert not list((ROOT / "docs").rglob("*.py"))
