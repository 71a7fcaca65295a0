"""Statistics of the tables: a cell's mean with its 95% confidence interval, paired differences between variants
and the verdict on a quoted paper value.

Runs of one (dataset, variant) differ by fold and seed; the interval of their mean is Student's t interval
(mean ± t_{n-1} * std / sqrt(n), sample std), the usual choice for a handful of runs. Two variants are compared on
the runs they share (same fold and seed: the same test clips and the same seed), by the t interval of the per-pair
differences, which removes the spread that folds and seeds give both. With fewer than two runs (or pairs) there is
no interval: the verdicts then say ``too few runs``.

Student's t quantile is computed here (integer degrees of freedom only, which is all a count of runs gives), from
the closed form of its two-sided probability (Abramowitz & Stegun 26.7.3-4), so that the package needs no scipy.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95
TOO_FEW = "too few runs"
SIGNIFICANT = "significant"
NOT_SIGNIFICANT = "not significant"
REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"


def t_two_sided(t: float, df: int) -> float:
    """P(|T| <= t) for Student's T with ``df`` (>= 1) degrees of freedom."""
    if df < 1:
        raise ValueError(f"Student's t needs at least 1 degree of freedom, got {df}")
    theta = math.atan(abs(t) / math.sqrt(df))
    cos2 = math.cos(theta) ** 2
    term, series = 1.0, 1.0
    if df % 2:  # odd: (2/pi) (theta + sin cos (1 + 2/3 cos^2 + (2*4)/(3*5) cos^4 + ...)), df - 3 in steps of 2
        for k in range(2, df - 1, 2):
            term *= k / (k + 1) * cos2
            series += term
        tail = math.sin(theta) * math.cos(theta) * series if df > 1 else 0.0
        return 2.0 / math.pi * (theta + tail)
    for k in range(1, df - 2, 2):  # even: sin (1 + 1/2 cos^2 + (1*3)/(2*4) cos^4 + ...), df - 2 in steps of 2
        term *= k / (k + 1) * cos2
        series += term
    return math.sin(theta) * series


def t_quantile(confidence: float, df: int) -> float:
    """t such that P(|T| <= t) = ``confidence``: the half-width factor of a two-sided ``confidence`` interval."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"a confidence level lies in (0, 1), got {confidence}")
    low, high = 0.0, math.pi / 2  # bisection on theta = atan(t / sqrt(df)), where the probability is monotone
    for _ in range(200):
        mid = 0.5 * (low + high)
        if t_two_sided(math.sqrt(df) * math.tan(mid), df) < confidence:
            low = mid
        else:
            high = mid
    return math.sqrt(df) * math.tan(0.5 * (low + high))


@dataclass(frozen=True)
class Estimate:
    """Mean, sample std and ``confidence`` t interval of ``n`` values (std and interval None for n < 2)."""
    mean: float
    std: float | None
    n: int
    low: float | None
    high: float | None

    @property
    def has_interval(self) -> bool:
        return self.low is not None

    def contains(self, value: float) -> bool:
        return self.has_interval and self.low <= value <= self.high


def estimate(values: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """The mean of ``values`` with its t confidence interval."""
    n = len(values)
    if n == 0:
        raise ValueError("no values to estimate a mean from")
    mean = math.fsum(values) / n
    if n < 2:
        return Estimate(mean, None, n, None, None)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(confidence, n - 1) * std / math.sqrt(n)
    return Estimate(mean, std, n, mean - half, mean + half)


def prediction_interval(mean: float, std: float, n: int, k: int = 1,
                        confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Where the mean of ``k`` new runs falls with probability ``confidence``, given ``n`` reference runs of that
    mean and sample std (normal runs): mean ± t_{n-1} * std * sqrt(1/k + 1/n)."""
    if n < 2 or k < 1:
        raise ValueError(f"a prediction interval needs n >= 2 reference runs and k >= 1 new ones (n={n}, k={k})")
    half = t_quantile(confidence, n - 1) * std * math.sqrt(1.0 / k + 1.0 / n)
    return mean - half, mean + half


def paired_difference(a: Mapping[Hashable, float], b: Mapping[Hashable, float],
                      confidence: float = CONFIDENCE) -> Estimate | None:
    """The mean of ``a[k] - b[k]`` over the keys (runs: fold, seed) both have, with its t interval; None if none."""
    shared = [k for k in a if k in b]
    return estimate([a[k] - b[k] for k in shared], confidence) if shared else None


def significance(difference: Estimate) -> str:
    """``significant`` where the interval of a difference excludes 0, ``not significant`` where it spans 0."""
    if not difference.has_interval:
        return TOO_FEW
    return NOT_SIGNIFICANT if difference.low <= 0.0 <= difference.high else SIGNIFICANT


def reproduction(measured: Estimate, quoted: float) -> str:
    """Whether a quoted value lies inside the measured interval."""
    if not measured.has_interval:
        return TOO_FEW
    return REPRODUCED if measured.contains(quoted) else NOT_REPRODUCED
