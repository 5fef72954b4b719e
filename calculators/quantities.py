"""Named quantities: the numbers the book's prose states, each computed by a calculator.

A chapter writes {num}`lora_trainable model=llama-2-7b r=8 targets=all-linear`; the
renderer calls `evaluate("lora_trainable", {...})` here. Each quantity is a small function
of plain arguments that delegates to one calculator and declares the unit its value is in,
so the text and the maths cannot drift apart.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Mapping

UNITS = ("count", "percent", "bytes", "bits", "ratio", "float")


@dataclass(frozen=True)
class Quantity:
    value: float
    unit: str


@dataclass(frozen=True)
class QuantityDef:
    name: str
    unit: str
    function: Callable[..., float]
    doc: str


REGISTRY: dict[str, QuantityDef] = {}


def quantity(unit: str) -> Callable[[Callable[..., float]], Callable[..., float]]:
    """Register a function as a named quantity with the given unit."""
    if unit not in UNITS:
        raise ValueError(f"unit: {unit!r} is not one of {UNITS}")

    def register(function: Callable[..., float]) -> Callable[..., float]:
        REGISTRY[function.__name__] = QuantityDef(function.__name__, unit, function, inspect.getdoc(function) or "")
        return function

    return register


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "yes", "on", "1"):
        return True
    if lowered in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _convert(name: str, text: str, annotation: object) -> object:
    kind = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "bool":
            return _parse_bool(text)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from exc
    return text


def evaluate(name: str, args: Mapping[str, str]) -> Quantity:
    """Evaluate quantity `name` with string arguments converted by its signature."""
    definition = REGISTRY.get(name)
    if definition is None:
        raise ValueError(f"unknown quantity {name!r}")
    parameters = inspect.signature(definition.function).parameters
    unknown = sorted(set(args) - set(parameters))
    if unknown:
        raise ValueError(f"{name}: unknown argument(s) {unknown}; takes {list(parameters)}")
    kwargs = {key: _convert(key, value, parameters[key].annotation) for key, value in args.items()}
    return Quantity(float(definition.function(**kwargs)), definition.unit)


def value(name: str, **args: object) -> float | int:
    """The number a chapter's {num}`name key=value` shows, from Python arguments.

    For the book's cells, which check their own results against the text:
    `value("lora_scaling", alpha=16, r=8)` is {num}`lora_scaling alpha=16 r=8` unformatted;
    counts and byte sizes come back as int.
    """
    result = evaluate(name, {key: str(arg) for key, arg in args.items()})
    if result.unit in ("count", "bytes") and result.value.is_integer():
        return int(result.value)
    return result.value


# --- the quantities ------------------------------------------------------------------
# Imported at the end so the registry above exists; each module registers its own.
from calculators import _quantity_defs  # noqa: E402,F401  (registration side effect)
