"""Distances between samples of one quantity, and the soft tolerance the coherence scores are built from."""

import numpy as np

from gridit_core.errors import GriditError

KS_ALPHA = 1.358  # c(alpha) of the two-sample Kolmogorov-Smirnov test at alpha = 0.05


def tolerance(value, tol):
    """``1 / (1 + (value / tol)^2)``: 1 at 0, one half at ``tol``, towards 0 beyond."""
    return 1.0 / (1.0 + (np.asarray(value, np.float64) / tol) ** 2)


def _samples(a, b):
    a, b = np.sort(np.asarray(a, np.float64).ravel()), np.sort(np.asarray(b, np.float64).ravel())
    if not len(a) or not len(b):
        raise GriditError(f"a distance between distributions needs values on both sides, got {len(a)} and {len(b)}")
    return a, b


def ks_distance(a, b):
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs, in ``[0, 1]``."""
    a, b = _samples(a, b)
    x = np.concatenate([a, b])
    gap = np.searchsorted(a, x, "right") / len(a) - np.searchsorted(b, x, "right") / len(b)
    return float(np.abs(gap).max())


def ks_chance(n, m):
    """The KS statistic that two samples of sizes ``n`` and ``m`` from one distribution exceed 5% of the time."""
    return KS_ALPHA * float(np.sqrt((n + m) / (n * m)))


def wasserstein_1d(a, b):
    """Earth mover's distance between two samples of a 1-D quantity: the area between their empirical CDFs."""
    a, b = _samples(a, b)
    x = np.sort(np.concatenate([a, b]))
    gap = np.searchsorted(a, x[:-1], "right") / len(a) - np.searchsorted(b, x[:-1], "right") / len(b)
    return float(np.sum(np.abs(gap) * np.diff(x)))


def support(values, n_independent, lo_q=0.005, hi_q=0.995):
    """The range a quantity takes in real data: its ``lo_q``-``hi_q`` quantiles, each widened by the range over
    ``n_independent - 1`` (the expected gap beyond the extremes of that many uniform draws), so a reference of a few
    sequences does not call the next real one out of range."""
    lo, hi = np.quantile(values, [lo_q, hi_q])
    widen = (hi - lo) / max(n_independent - 1, 1)
    return float(lo - widen), float(hi + widen)


def excess(values, lo, hi):
    """Mean distance of ``values`` outside ``[lo, hi]`` (0 when all lie inside; 0 for no values)."""
    values = np.asarray(values, np.float64)
    return float(np.mean(np.maximum(lo - values, 0) + np.maximum(values - hi, 0))) if values.size else 0.0
