"""Renderers for the book's markdown directives (see CONTRIBUTING.md for the syntax).

Each directive renders through a `_`-partial template, so its markup exists once.
Arguments are escaped by Jinja's autoescape; nothing in a directive's argument can
inject markup. Errors raise ValueError naming the chapter file and the directive.
"""

from __future__ import annotations

import shlex
from typing import Any

import yaml
from jinja2 import Environment
from markdown_it import MarkdownIt
from markdown_it.token import Token
from markupsafe import Markup, escape
from pydantic import ValidationError
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import TextLexer, get_lexer_by_name
from pygments.util import ClassNotFound

from app.formatting import format_value
from app.instrument_registry import INSTRUMENTS
from calculators import quantities

CALLOUTS = {"note": "Note", "pitfall": "Pitfall"}
_FORMATTER = HtmlFormatter(nowrap=True)


def highlight_code(code: str, language: str) -> Markup:
    """Pygments-highlighted HTML for a code block (escaped by pygments)."""
    try:
        lexer = get_lexer_by_name(language) if language else TextLexer()
    except ClassNotFound:
        lexer = TextLexer()
    return Markup(highlight(code, lexer, _FORMATTER))


def parse_role_arguments(text: str, where: str) -> tuple[str, dict[str, str]]:
    """'name k=v k2=v2' -> ('name', {'k': 'v', 'k2': 'v2'})."""
    words = shlex.split(text)
    if not words:
        raise ValueError(f"{where}: empty directive")
    args: dict[str, str] = {}
    for word in words[1:]:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise ValueError(f"{where}: argument {word!r} is not key=value")
        args[key] = value
    return words[0], args


def render_live_number(text: str, where: str) -> Markup:
    """`{num}` role: evaluate a calculators quantity and format it by its unit."""
    name, args = parse_role_arguments(text, where)
    fmt = args.pop("fmt", None)
    try:
        result = quantities.evaluate(name, args)
        shown = format_value(result.value, result.unit, fmt)
    except ValueError as exc:
        raise ValueError(f"{where}: {{num}}`{text}`: {exc}") from exc
    return Markup('<span class="live-number" data-quantity="{}" title="{}">{}</span>').format(
        name, f"computed by calculators: {text}", shown
    )


def render_reference(text: str, env: dict, where: str) -> Markup:
    """`{ref}` role: 'label' or 'label#section' -> a link titled with the chapter's title (and the section's).

    When the library knows every chapter's sections (env["sections"]), a section that does not exist fails the
    build, like an unknown label.
    """
    label, _, section = text.strip().partition("#")
    chapter = env["chapters"].get(label)
    if chapter is None:
        raise ValueError(f"{where}: {{ref}}`{text}` names no chapter label")
    href = f"/chapters/{label}" + (f"#{section}" if section else "")
    title = chapter.title
    known = (env.get("sections") or {}).get(label)
    if section and known is not None:
        if section not in known:
            raise ValueError(f"{where}: {{ref}}`{text}`: {label} has no section {section!r}; "
                             f"sections: {', '.join(known)}")
        title = f"{chapter.title} § {known[section]}"
    return Markup('<a class="xref" href="{}">{}</a>').format(href, title)


def render_citation(text: str, env: dict, where: str) -> Markup:
    """`{cite}` role: 'key' or 'key1,key2' -> author-year links to the references page."""
    keys = [key.strip() for key in text.split(",") if key.strip()]
    if not keys:
        raise ValueError(f"{where}: empty {{cite}}")
    bibliography = env.get("bibliography", {})
    links = []
    for key in keys:
        reference = bibliography.get(key)
        if reference is None:
            raise ValueError(f"{where}: {{cite}}`{text}`: {key!r} is not in content/references.yaml")
        env.setdefault("citations", []).append(key)
        links.append(Markup('<a class="cite" href="{}" title="{}">{}</a>').format(
            reference.anchor, reference.title, reference.short))
    return Markup("; ").join(links)


def chapter_number(source: str) -> int | None:
    """'02-lora.md' -> 2: the number figures are labelled with ("Figure 2.1")."""
    head = source.split("-", 1)[0]
    return int(head) if head.isdigit() else None


class DirectiveRenderer:
    """Binds the markdown-it rules to a Jinja environment that holds the partials."""

    def __init__(self, md: MarkdownIt, jinja: Environment) -> None:
        self.md = md
        self.jinja = jinja
        self._default_fence = md.renderer.rules.get("fence")

    def _partial(self, name: str, **context: Any) -> str:
        return self.jinja.get_template(name).render(**context)

    def _inline(self, text: str, env: dict) -> Markup:
        return Markup(self.md.renderInline(str(text), env))

    def _block(self, text: str, env: dict) -> Markup:
        return Markup(self.md.render(str(text), env))

    # --- block directives -------------------------------------------------------
    def fence(self, tokens: list[Token], idx: int, options: Any, env: dict) -> str:
        token = tokens[idx]
        info = token.info.strip()
        if not info.startswith("{"):
            language = info.split()[0] if info else ""
            return self._partial("_code.html", code=highlight_code(token.content, language), language=language)
        name, _, argument = info[1:].partition("}")
        argument = argument.strip()
        where = f"{env.get('source', '?')}:{(token.map or [0])[0] + 1}"
        if name in CALLOUTS:
            return self._partial(
                "_callout.html", kind=name, label=CALLOUTS[name], title=argument, body=self._block(token.content, env)
            )
        if name == "instrument":
            return self._instrument(argument, token.content, env, where)
        if name == "cell":
            cells = env.setdefault("cells", [])
            cells.append(token.content)
            return self._partial(
                "_cell.html", index=len(cells), code=token.content, highlighted=highlight_code(token.content, "python")
            )
        if name == "quiz":
            return self._quiz(token.content, env, where)
        if name == "figure":
            return self._figure(argument, token.content, env, where)
        if name == "lab":
            env["lab"] = True
            return self._partial("_lab_embed.html")
        raise ValueError(f"{where}: unknown directive {{{name}}}")

    def _instrument(self, name: str, body: str, env: dict, where: str) -> str:
        """Render the live instrument itself, in its initial state, inside the chapter."""
        spec = INSTRUMENTS.get(name)
        if spec is None:
            raise ValueError(f"{where}: unknown instrument {name!r}; registered: {sorted(INSTRUMENTS)}")
        initial = yaml.safe_load(body) if body.strip() else {}
        if not isinstance(initial, dict):
            raise ValueError(f"{where}: instrument {name!r} body must be 'key: value' lines")
        try:
            query = spec.parse(initial)
        except ValidationError as exc:
            raise ValueError(f"{where}: instrument {name!r}: {exc}") from exc
        env.setdefault("instruments", []).append(name)
        embed_id = f"{name}-{len(env['instruments'])}"
        return self.jinja.get_template(spec.template).render(**spec.context(query, embed_id, standalone=False))

    def _figure(self, name: str, body: str, env: dict, where: str) -> str:
        """Draw a registered figure server-side (app.figures) with the body's arguments."""
        from app.figures import get_figure

        if not name or " " in name:
            raise ValueError(f"{where}: a figure directive names one figure, got {name!r}")
        try:
            spec = get_figure(name)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from exc
        values = yaml.safe_load(body) if body.strip() else {}
        if not isinstance(values, dict):
            raise ValueError(f"{where}: figure {name!r} body must be 'key: value' lines")
        try:  # pydantic's ValidationError is a ValueError too, and names the field
            query = spec.parse(values)
            art = spec.render(query)
            controls = spec.controls(query) if spec.controls else ()
        except ValueError as exc:
            raise ValueError(f"{where}: figure {name!r}: {exc}") from exc
        drawn = env.setdefault("figures", [])
        drawn.append(name)
        env["live_figures"] = env.get("live_figures", False) or spec.live
        number = chapter_number(env.get("source", ""))
        label = f"Figure {number}.{len(drawn)}" if number else f"Figure {len(drawn)}"
        return self._partial("_figure.html", spec=spec, art=art, controls=controls,
                             fig_id=f"fig-{number or 0}-{len(drawn)}", label=label)

    def _quiz(self, body: str, env: dict, where: str) -> str:
        data = yaml.safe_load(body)
        if not isinstance(data, dict) or "question" not in data or "answer" not in data:
            raise ValueError(f"{where}: a quiz needs 'question' and 'answer'")
        choices = data.get("choices")
        answer = data["answer"]
        if choices is not None:
            if not isinstance(choices, list) or not isinstance(answer, int) or not 0 <= answer < len(choices):
                raise ValueError(f"{where}: a multiple-choice quiz needs a list of choices and an answer index")
            rendered_choices = [self._inline(c, env) for c in choices]
            answer_html = rendered_choices[answer]
        else:
            rendered_choices = []
            answer_html = self._inline(answer, env)
        env["quizzes"] = env.get("quizzes", 0) + 1
        return self._partial(
            "_quiz.html",
            index=env["quizzes"],
            question=self._inline(data["question"], env),
            choices=rendered_choices,
            answer=answer_html,
            explanation=self._inline(data["explanation"], env) if data.get("explanation") else None,
        )

    # --- inline roles and maths --------------------------------------------------
    def role(self, tokens: list[Token], idx: int, options: Any, env: dict) -> str:
        token = tokens[idx]
        name = token.meta.get("name")
        where = env.get("source", "?")
        if name == "num":
            return render_live_number(token.content, where)
        if name == "ref":
            return render_reference(token.content, env, where)
        if name == "cite":
            return render_citation(token.content, env, where)
        raise ValueError(f"{where}: unknown role {{{name}}}`{token.content}`")

    @staticmethod
    def math_inline(tokens: list[Token], idx: int, options: Any, env: dict) -> str:
        return f'<span class="math" data-display="inline">{escape(tokens[idx].content)}</span>'

    @staticmethod
    def math_block(tokens: list[Token], idx: int, options: Any, env: dict) -> str:
        # focusable: a formula wider than a phone scrolls sideways, and keys must reach it too
        return f'<div class="math" data-display="block" tabindex="0">{escape(tokens[idx].content.strip())}</div>\n'


def install(md: MarkdownIt, jinja: Environment) -> None:
    """Register our rules on a markdown-it instance."""
    renderer = DirectiveRenderer(md, jinja)
    # markdown-it calls rules[name](tokens, idx, options, env)
    md.renderer.rules["fence"] = renderer.fence
    md.renderer.rules["myst_role"] = renderer.role
    md.renderer.rules["math_inline"] = renderer.math_inline
    md.renderer.rules["math_inline_double"] = renderer.math_block
    md.renderer.rules["math_block"] = renderer.math_block
    md.renderer.rules["math_block_label"] = renderer.math_block
    # A table wider than a phone scrolls inside its own box (focusable, so keys scroll it too).
    md.renderer.rules["table_open"] = lambda *_: ('<div class="table-scroll" role="region" tabindex="0" '
                                                  'aria-label="Table; scrolls sideways on narrow screens">\n<table>\n')
    md.renderer.rules["table_close"] = lambda *_: "</table>\n</div>\n"
