"""The book's bibliography: content/references.yaml, one entry per work the chapters rely on.

Chapters cite an entry by key with the `{cite}` role; the renderer links the citation to the
entry on the references page (/references#key). An unknown key fails the build, and the test
suite checks that every entry is cited somewhere, so the list and the text cannot drift apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

REFERENCES_FILE = "references.yaml"
_KEY = re.compile(r"^[a-z][a-z0-9]*$")
_ARXIV_ID = re.compile(r"^\d{4}\.\d{4,5}$")


@dataclass(frozen=True)
class Reference:
    """One work: who wrote it, when, where, and how to reach it."""

    key: str
    authors: tuple[str, ...]
    year: int
    title: str
    venue: str
    arxiv: str = ""
    url: str = ""

    @property
    def short(self) -> str:
        """How the text cites it: 'Kalajdzievski 2023', 'Li and Liang 2021', 'Hu et al. 2021'."""
        surnames = [_surname(name) for name in self.authors]
        if len(surnames) == 1:
            names = surnames[0]
        elif len(surnames) == 2:
            names = f"{surnames[0]} and {surnames[1]}"
        else:
            names = f"{surnames[0]} et al."
        return f"{names} {self.year}"

    @property
    def link(self) -> str:
        """Where the work lives: its arXiv abstract page, or the URL given."""
        return f"https://arxiv.org/abs/{self.arxiv}" if self.arxiv else self.url

    @property
    def anchor(self) -> str:
        return f"/references#{self.key}"


def _surname(name: str) -> str:
    """'Edward J. Hu' -> 'Hu'; 'Elad Ben Zaken' -> 'Ben Zaken'; 'Answer.AI' stays whole."""
    parts = name.split()
    if len(parts) >= 3 and parts[-2] in ("Ben", "de", "van", "von"):
        return " ".join(parts[-2:])
    return parts[-1]


def _reference(key: str, fields: object, where: str) -> Reference:
    if not _KEY.match(str(key)):
        raise ValueError(f"{where}: key {key!r} must be lower-case letters and digits (e.g. hu2021lora)")
    if not isinstance(fields, dict):
        raise ValueError(f"{where}: {key}: an entry is a mapping of authors, year, title, venue and arxiv or url")
    missing = [name for name in ("authors", "year", "title", "venue") if not fields.get(name)]
    if missing:
        raise ValueError(f"{where}: {key}: missing {', '.join(missing)}")
    authors = fields["authors"]
    if not isinstance(authors, list) or not all(isinstance(a, str) and a.strip() for a in authors):
        raise ValueError(f"{where}: {key}: authors must be a list of names")
    arxiv = str(fields.get("arxiv") or "")
    url = str(fields.get("url") or "")
    if arxiv and not _ARXIV_ID.match(arxiv):
        raise ValueError(f"{where}: {key}: arxiv {arxiv!r} is not an arXiv id such as 2106.09685")
    if not isinstance(fields["year"], int):
        raise ValueError(f"{where}: {key}: year must be a number")
    return Reference(str(key), tuple(a.strip() for a in authors), fields["year"], str(fields["title"]).strip(),
                     str(fields["venue"]).strip(), arxiv, url)


def load_bibliography(content_dir: Path) -> dict[str, Reference]:
    """Every entry of content/references.yaml by key, in file order (an absent file is an empty bibliography)."""
    path = content_dir / REFERENCES_FILE
    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path.name}: must map citation keys to entries")
    return {str(key): _reference(key, fields, path.name) for key, fields in data.items()}


def sorted_for_listing(bibliography: dict[str, Reference]) -> list[Reference]:
    """The references page's order: by first author's surname, then year."""
    return sorted(bibliography.values(), key=lambda ref: (_surname(ref.authors[0]).lower(), ref.year, ref.title))
