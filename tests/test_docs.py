"""The repository's own documents stand alone: every relative link they make lands on a file
or heading inside the repository, and none sends the reader somewhere a clone does not have."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.settings import PROJECT_ROOT

DOCUMENTS = sorted([PROJECT_ROOT / "README.md", PROJECT_ROOT / "CONTRIBUTING.md",
                    *(PROJECT_ROOT / "docs").glob("*.md"), *(PROJECT_ROOT / "bench").glob("*.md")])
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def heading_slugs(markdown: str) -> set[str]:
    """GitHub's anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+\s+(.*)$", markdown, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_links_stay_inside_the_repository(document: Path):
    text = document.read_text(encoding="utf-8")
    assert "shared/" not in text, "the working copy of the design is not part of the repository"
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target):  # http(s):, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (document.parent / path).resolve() if path else document
        assert resolved.is_relative_to(PROJECT_ROOT), f"{target} leaves the repository"
        assert resolved.exists(), f"{target}: no such file"
        if anchor and resolved.suffix == ".md":
            assert anchor in heading_slugs(resolved.read_text(encoding="utf-8")), f"{target}: no such heading"


def test_the_deploying_guide_lists_every_setting():
    settings = set(re.findall(r'"(LORALAB_[A-Z_]+)"', (PROJECT_ROOT / "app" / "settings.py").read_text()))
    guide = (PROJECT_ROOT / "docs" / "deploying.md").read_text(encoding="utf-8")
    assert settings and not {name for name in settings if f"`{name}`" not in guide}
