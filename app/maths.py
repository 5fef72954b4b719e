"""Maths typeset on the server, so a chapter reads without JavaScript and does not shift.

The markdown pipeline (app.directives) writes each formula as
``<span class="math" data-display="inline">TeX</span>`` (``div`` for display maths). After a
chapter is rendered, `typeset` replaces the TeX inside those elements by KaTeX's HTML (with
MathML for screen readers): the same KaTeX the page would run, run by Node through
scripts/katex-render.mjs. Results are cached on disk by (KaTeX build, mode, TeX), so the
book starts without Node once the cache holds its formulas (`loralab render-maths` fills it at
set-up). A formula neither cached nor typeset keeps its TeX, and the page's KaTeX (loaded
for such chapters only) typesets it in the browser.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import os
import re
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("loralab.maths")

MATH_ELEMENT = re.compile(r'<(span|div) class="math" data-display="(inline|block)"((?: tabindex="0")?)>(.*?)</\1>', re.S)
RENDER_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "katex-render.mjs"
NODE_TIMEOUT_S = 120


@dataclass(frozen=True)
class Typeset:
    html: str
    formulas: int
    untypeset: int  # left for the browser's KaTeX


class MathTypesetter:
    """KaTeX by Node with a JSON cache on disk; thread-safe, one Node call per batch of new formulas."""

    def __init__(self, cache_path: Path, katex_js: Path, node: str | None) -> None:
        self.cache_path = cache_path
        self.katex_js = katex_js
        self.node = node
        self._lock = threading.Lock()
        self._cache: dict[str, str] | None = None
        self._build = hashlib.sha256(katex_js.read_bytes()).hexdigest()[:16] if katex_js.is_file() else "missing"

    def _key(self, tex: str, display: bool) -> str:
        return hashlib.sha256(f"{self._build}\0{int(display)}\0{tex}".encode()).hexdigest()

    def _load(self) -> dict[str, str]:
        if self._cache is None:
            try:
                self._cache = json.loads(self.cache_path.read_text(encoding="utf-8"))
                if not isinstance(self._cache, dict):
                    self._cache = {}
            except (OSError, ValueError):
                self._cache = {}
        return self._cache

    def _save(self, cache: dict[str, str]) -> None:
        try:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.cache_path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(json.dumps(cache, sort_keys=True), encoding="utf-8")
            temporary.replace(self.cache_path)
        except OSError as exc:  # a read-only install still serves what it has
            log.warning("maths cache not written: %s", exc.strerror)

    def _run_node(self, items: list[tuple[str, bool]]) -> list[str] | None:
        if not self.node or not self.katex_js.is_file():
            return None
        payload = json.dumps([{"tex": tex, "display": display} for tex, display in items])
        try:
            done = subprocess.run(
                [self.node, str(RENDER_SCRIPT)], input=payload, capture_output=True, text=True, check=True,
                timeout=NODE_TIMEOUT_S, env={**os.environ, "LORALAB_KATEX_JS": str(self.katex_js)},
            )
            rendered = json.loads(done.stdout)["html"]
        except (OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
            log.warning("maths not typeset on the server (%s): the browser will typeset them", type(exc).__name__)
            return None
        return rendered if len(rendered) == len(items) else None

    def typeset_many(self, items: list[tuple[str, bool]]) -> dict[tuple[str, bool], str]:
        """HTML for each (tex, display) that the cache or Node can provide."""
        with self._lock:
            cache = self._load()
            missing = list(dict.fromkeys(item for item in items if self._key(*item) not in cache))
            if missing:
                rendered = self._run_node(missing)
                if rendered is not None:
                    for item, markup in zip(missing, rendered):
                        cache[self._key(*item)] = markup
                    self._save(cache)
            return {item: cache[self._key(*item)] for item in items if self._key(*item) in cache}

    def typeset(self, page_html: str) -> Typeset:
        """Replace every math element's TeX by KaTeX's HTML where it can."""
        found = [(html.unescape(m.group(4)), m.group(2) == "block") for m in MATH_ELEMENT.finditer(page_html)]
        if not found:
            return Typeset(page_html, 0, 0)
        done = self.typeset_many(found)

        def replace(match: re.Match) -> str:
            tag, mode, focusable, escaped = match.groups()
            markup = done.get((html.unescape(escaped), mode == "block"))
            if markup is None:
                return match.group(0)
            return f'<{tag} class="math" data-display="{mode}"{focusable} data-rendered="server">{markup}</{tag}>'

        typeset_html = MATH_ELEMENT.sub(replace, page_html)
        return Typeset(typeset_html, len(found), sum(1 for item in found if item not in done))
