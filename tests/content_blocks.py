"""The fenced ```python blocks of the chapters, for the tests that execute them.

A ```{cell} runs in the reader's browser and tests/app/test_cells_execute.py runs all of
them. A ```python block is code the reader copies into their own environment (transformers,
peft, a GPU): each is executed by a named test, registered in
tests/app/test_content_python_blocks.py, which loads it with `python_block(chapter, n)`.
"""

from __future__ import annotations

import re
from pathlib import Path

CONTENT = Path(__file__).resolve().parent.parent / "content"
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def python_blocks() -> dict[tuple[str, int], str]:
    """{(chapter file, n): source} for every ```python block, n counted from 1 within its chapter."""
    blocks = {}
    for chapter in sorted(CONTENT.glob("*.md")):
        for n, match in enumerate(FENCE.finditer(chapter.read_text()), start=1):
            blocks[chapter.name, n] = match.group(1)
    return blocks


def python_block(chapter: str, n: int) -> str:
    """The source of the n-th ```python block of a chapter file (e.g. "08-practice.md", 1)."""
    try:
        return python_blocks()[chapter, n]
    except KeyError:
        raise LookupError(f"{chapter} has no ```python block number {n}") from None
