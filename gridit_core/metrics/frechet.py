"""The Frechet distance between Gaussians fitted to network features (FID, FVD), feature statistics, and their cache.

``frechet_distance`` is the one implementation (Heusel et al. 2017, Eq. 6): ``|mu1 - mu2|^2 + tr(S1 + S2 -
2 (S1 S2)^(1/2))``. Real-set statistics are cached as ``.npz`` files keyed by everything they depend on.
"""

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gridit_core.errors import GriditError
from gridit_core.util.io import atomic_path


@dataclass
class FeatureStats:
    """Mean ``(D,)`` and covariance ``(D, D)`` of ``n`` feature vectors, float64; with fewer vectors than dimensions
    the centred vectors too (``centred``, ``(n, D)``), which make the distance a small computation."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    centred: np.ndarray = field(default=None, repr=False, compare=False)
    _root: np.ndarray = field(default=None, repr=False, compare=False)

    def root(self):
        """``sigma^(1/2)``, computed once: a real set's statistics meet several sample sets."""
        if self._root is None:
            self._root = _psd_sqrt(self.sigma)
        return self._root

    @classmethod
    def of(cls, features):
        """Statistics of features ``(N, D)``; the covariance is the unbiased one (``N - 1``), as in FID's reference code."""
        f = np.asarray(features, np.float64)
        if f.ndim != 2 or len(f) < 2:
            raise GriditError(f"feature statistics need at least 2 feature vectors (N, D), got shape {f.shape}")
        centred = f - f.mean(0)
        return cls(f.mean(0), centred.T @ centred / (len(f) - 1), len(f), centred if len(f) < f.shape[1] else None)


def _psd_sqrt(m):
    """Square root of a symmetric positive semi-definite matrix (negative rounding in eigenvalues taken as 0)."""
    w, v = np.linalg.eigh(m)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def _sqrt_trace(gram):
    """Sum of the square roots of the eigenvalues of a symmetric PSD matrix."""
    return np.sqrt(np.clip(np.linalg.eigvalsh((gram + gram.T) / 2), 0, None)).sum()


def _cross_term(a, b):
    """``tr((S_a S_b)^(1/2))``, through the smallest matrix the statistics allow.

    With ``S = X^T X / (n - 1)`` (``X`` the centred vectors): both sides' vectors give the singular values of
    ``X_a X_b^T``; one side's give the eigenvalues of ``Y Y^T``, ``Y = X_b S_a^(1/2)`` (``n x n``); else those of
    ``S_a^(1/2) S_b S_a^(1/2)``, which is symmetric with the eigenvalues of ``S_a S_b``, so no complex parts arise.
    """
    if a.centred is not None and b.centred is not None:
        return np.linalg.svd(a.centred @ b.centred.T, compute_uv=False).sum() / np.sqrt((a.n - 1) * (b.n - 1))
    if a.centred is not None:
        a, b = b, a
    if b.centred is not None:
        y = b.centred @ a.root()  # (n_b, D)
        return _sqrt_trace(y @ y.T) / np.sqrt(b.n - 1)
    root = a.root()
    return _sqrt_trace(root @ b.sigma @ root)


def frechet_distance(a, b):
    """Frechet distance between two ``FeatureStats`` (a set met again belongs first: its square root is kept)."""
    if a.mu.shape != b.mu.shape:
        raise GriditError(f"features of different sizes cannot be compared: {a.mu.shape[0]} vs {b.mu.shape[0]}")
    diff = a.mu - b.mu
    return float(diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2 * _cross_term(a, b))


def cache_root():
    """The workbench's cache folder: ``$XDG_CACHE_HOME/gridit`` (``~/.cache/gridit``): real-set statistics in ``stats/``,
    networks made ready by ``gridit weights`` in ``networks/``."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gridit"


def stats_dir(spec, override=None):
    """Where real-set statistics are cached: ``override``; else next to a data folder (``DATA/.gridit-stats``) when
    it can be written; else (built-in data, files, read-only folders) ``$XDG_CACHE_HOME/gridit/stats``."""
    if override:
        return Path(override)
    path = Path(str(spec))
    if not str(spec).startswith("builtin:") and path.is_dir() and os.access(path, os.W_OK):
        return path / ".gridit-stats"
    return cache_root() / "stats"


def cached_stats(directory, key, compute):
    """The ``FeatureStats`` keyed by ``key`` (a JSON-able dict) in ``directory``, computed by ``compute()`` and saved
    the first time. Returns ``(stats, path, was_cached)``."""
    text = json.dumps(key, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = Path(directory) / f"{key.get('metric', 'features')}_{digest}.npz"
    if path.is_file():
        try:
            with np.load(path) as f:
                if str(f["key"]) == text:
                    return FeatureStats(f["mu"], f["sigma"], int(f["n"])), path, True
        except (OSError, ValueError, KeyError):
            pass  # unreadable or foreign: computed again and replaced
    stats = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, mu=stats.mu, sigma=stats.sigma, n=stats.n, key=text)
    return stats, path, False
