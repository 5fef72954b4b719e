"""The definitions behind calculators.quantities (filled as calculators land)."""

from __future__ import annotations
