"""The figures' shapes, shared by the report's modules: a record, a median with min..max, a number as
the tables print it."""

from __future__ import annotations

import statistics
from typing import Any

Record = dict[str, Any]


def stat(samples: list[float]) -> Record | None:
    """Median with min..max of the repetitions."""
    if not samples:
        return None
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples),
            "samples": samples}


def median(record: Record, key: str) -> float | None:
    value = record.get(key)
    return value["median"] if isinstance(value, dict) else None


def num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"
