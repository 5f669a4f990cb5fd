"""Rates with confidence intervals."""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(1 - (1 - confidence) / 2)


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial rate; (nan, nan) when n is 0.

    Chosen over the normal approximation because eval rates sit near 0 or 1 and samples
    per domain are small, where the normal interval leaves [0, 1].
    """
    if n <= 0:
        return (math.nan, math.nan)
    z = _z(confidence)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def rate_fields(successes: float, n: int, confidence: float) -> dict[str, Any]:
    """A summary row's n, successes, estimate and Wilson interval (None when n is 0)."""
    low, high = wilson_interval(successes, n, confidence)
    return {"n": n, "successes": float(successes), "estimate": successes / n if n else None,
            "ci_low": low if n else None, "ci_high": high if n else None, "judged": n > 0}


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) with a normal interval on the mean; nan bounds below 2 values."""
    n = len(values)
    if n == 0:
        return (math.nan, math.nan, math.nan)
    mean = sum(values) / n
    if n < 2:
        return (mean, math.nan, math.nan)
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    half = _z(confidence) * math.sqrt(var / n)
    return (mean, mean - half, mean + half)
