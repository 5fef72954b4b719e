"""Chapters: markdown files in content/ rendered to HTML once, with our directives.

A chapter goes through one pipeline: front matter -> markdown-it tokens -> HTML, where
fences named `{note}`, `{pitfall}`, `{instrument}`, `{figure}`, `{cell}`, `{quiz}` and the inline
roles `{num}` and `{ref}` are rendered by `app.directives` through `_`-partials.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from jinja2 import Environment
from markdown_it import MarkdownIt
from markdown_it.token import Token
from mdit_py_plugins.anchors import anchors_plugin
from mdit_py_plugins.dollarmath import dollarmath_plugin
from mdit_py_plugins.front_matter import front_matter_plugin
from mdit_py_plugins.myst_role import myst_role_plugin

from app import directives
from app.bibliography import Reference, load_bibliography
from app.maths import MathTypesetter

CHAPTER_FILE = re.compile(r"^(\d+)-[a-z0-9-]+\.md$")
LABEL = re.compile(r"^[a-z0-9][a-z0-9-]*$")


@dataclass(frozen=True)
class TocEntry:
    level: int
    anchor: str
    title: str


@dataclass(frozen=True)
class ChapterMeta:
    """What the home page and navigation need, read from front matter alone."""

    number: int
    label: str
    title: str
    summary: str
    path: Path


@dataclass(frozen=True)
class Chapter:
    meta: ChapterMeta
    html: str
    toc: tuple[TocEntry, ...]
    instruments: tuple[str, ...]
    cells: tuple[str, ...]
    n_words: int
    has_lab: bool = False
    figures: tuple[str, ...] = ()  # figure names in order of appearance
    has_live_figures: bool = False
    citations: tuple[str, ...] = ()  # bibliography keys cited, in order of first citation
    client_maths: bool = False  # some formula was not typeset on the server: the page loads KaTeX


@dataclass
class Library:
    """All chapters in reading order, addressable by label."""

    chapters: list[Chapter] = field(default_factory=list)
    bibliography: dict[str, Reference] = field(default_factory=dict)

    def by_label(self, label: str) -> Chapter | None:
        return next((c for c in self.chapters if c.meta.label == label), None)

    def neighbours(self, label: str) -> tuple[Chapter | None, Chapter | None]:
        labels = [c.meta.label for c in self.chapters]
        i = labels.index(label)
        previous = self.chapters[i - 1] if i > 0 else None
        following = self.chapters[i + 1] if i + 1 < len(self.chapters) else None
        return previous, following


def split_front_matter(text: str, path: Path) -> tuple[dict, str]:
    """Return (front matter mapping, markdown body); front matter is required."""
    if not text.startswith("---\n"):
        raise ValueError(f"{path.name}: a chapter must start with YAML front matter")
    end = text.find("\n---", 4)
    if end < 0:
        raise ValueError(f"{path.name}: front matter is not closed by '---'")
    meta = yaml.safe_load(text[4:end]) or {}
    body = text[end + 4 :].lstrip("-").lstrip("\n")
    return meta, body


def read_meta(path: Path) -> ChapterMeta:
    match = CHAPTER_FILE.match(path.name)
    if not match:
        raise ValueError(f"{path.name}: chapter files are named NN-slug.md")
    meta, _ = split_front_matter(path.read_text(encoding="utf-8"), path)
    for key in ("title", "label", "summary"):
        if not isinstance(meta.get(key), str) or not meta[key].strip():
            raise ValueError(f"{path.name}: front matter needs a non-empty '{key}'")
    if not LABEL.match(meta["label"]):
        raise ValueError(f"{path.name}: label {meta['label']!r} must be lower-case letters, digits and '-'")
    return ChapterMeta(int(match.group(1)), meta["label"], meta["title"].strip(), meta["summary"].strip(), path)


def make_markdown(jinja: Environment) -> MarkdownIt:
    """The one markdown-it configuration every chapter goes through."""
    md = (
        MarkdownIt("commonmark", {"html": True, "typographer": False})
        .enable("table")
        .use(front_matter_plugin)
        .use(dollarmath_plugin, double_inline=True)
        .use(myst_role_plugin)
        .use(anchors_plugin, min_level=2, max_level=3)
    )
    directives.install(md, jinja)
    return md


def _table_of_contents(tokens: list[Token]) -> tuple[TocEntry, ...]:
    entries = []
    for i, token in enumerate(tokens):
        if token.type == "heading_open" and token.tag in ("h2", "h3") and token.attrs.get("id"):
            inline = tokens[i + 1]
            title = "".join(child.content for child in (inline.children or []) if child.type in ("text", "code_inline"))
            entries.append(TocEntry(int(token.tag[1]), str(token.attrs["id"]), title or inline.content))
    return tuple(entries)


def section_titles(meta: ChapterMeta, md: MarkdownIt) -> dict[str, str]:
    """A chapter's section anchors and their titles, from a parse alone (directives are evaluated only when rendering)."""
    _, body = split_front_matter(meta.path.read_text(encoding="utf-8"), meta.path)
    return {entry.anchor: entry.title for entry in _table_of_contents(md.parse(body, {"source": meta.path.name}))}


def render_chapter(meta: ChapterMeta, md: MarkdownIt, all_meta: list[ChapterMeta],
                   bibliography: dict[str, Reference] | None = None,
                   sections: dict[str, dict[str, str]] | None = None,
                   typesetter: MathTypesetter | None = None) -> Chapter:
    """Render one chapter; directives may refer to any chapter (or section) by label and any work by citation key;
    maths typeset on the server."""
    _, body = split_front_matter(meta.path.read_text(encoding="utf-8"), meta.path)
    env: dict = {"chapters": {m.label: m for m in all_meta}, "source": meta.path.name,
                 "bibliography": bibliography or {}, "sections": sections}
    tokens = md.parse(body, env)
    html = md.renderer.render(tokens, md.options, env)
    typeset = typesetter.typeset(html) if typesetter else None
    return Chapter(
        meta=meta,
        html=typeset.html if typeset else html,
        client_maths=typeset.untypeset > 0 if typeset else "class=\"math\"" in html,
        toc=_table_of_contents(tokens),
        instruments=tuple(env.get("instruments", ())),
        cells=tuple(env.get("cells", ())),
        n_words=len(re.findall(r"\w+", body)),
        has_lab=bool(env.get("lab")),
        figures=tuple(env.get("figures", ())),
        has_live_figures=bool(env.get("live_figures")),
        citations=tuple(dict.fromkeys(env.get("citations", ()))),
    )


def load_library(content_dir: Path, jinja: Environment, typesetter: MathTypesetter | None = None) -> Library:
    """Read and render every chapter in content/, ordered by file name."""
    paths = sorted(p for p in content_dir.glob("*.md") if CHAPTER_FILE.match(p.name))
    all_meta = [read_meta(p) for p in paths]
    labels = [m.label for m in all_meta]
    duplicates = {label for label in labels if labels.count(label) > 1}
    if duplicates:
        raise ValueError(f"duplicate chapter labels: {sorted(duplicates)}")
    bibliography = load_bibliography(content_dir)
    md = make_markdown(jinja)
    sections = {meta.label: section_titles(meta, md) for meta in all_meta}
    return Library([render_chapter(meta, md, all_meta, bibliography, sections, typesetter) for meta in all_meta],
                   bibliography)
