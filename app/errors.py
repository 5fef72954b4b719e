"""Bad reader input -> a 4xx that names the field, never a 500.

Calculators raise ValueError("<argument>: <what is wrong>") using peft's names (`r`);
the HTTP layer reports the field under the name the reader sent (`rank`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from fastapi.exceptions import RequestValidationError

# calculator argument name -> public query field name
DEFAULT_ALIASES: Mapping[str, str] = {"r": "rank", "lora_alpha": "alpha", "model": "model"}


def field_of(message: str, aliases: Mapping[str, str]) -> tuple[str, str]:
    """Split 'r: must be >= 1' into ('rank', 'must be >= 1')."""
    head, sep, tail = message.partition(":")
    if sep and head and " " not in head.strip():
        name = head.strip()
        return aliases.get(name, name), tail.strip()
    return "query", message


@contextmanager
def calculator_input(aliases: Mapping[str, str] = DEFAULT_ALIASES, location: str = "query") -> Iterator[None]:
    """Turn a calculator's ValueError into FastAPI's 422 with the field named."""
    try:
        yield
    except ValueError as exc:
        field, message = field_of(str(exc), {**DEFAULT_ALIASES, **aliases})
        raise RequestValidationError(
            [{"type": "value_error", "loc": (location, field), "msg": f"{field}: {message}", "input": None}]
        ) from exc


def describe(errors: list[dict]) -> list[str]:
    """Human messages 'field: problem' from FastAPI/pydantic error dicts."""
    lines = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ()) if part not in ("query", "body", "path")]
        field = ".".join(loc) or "request"
        message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")  # pydantic's wrapper
        lines.append(message if message.startswith(f"{field}:") else f"{field}: {message}")
    return lines
