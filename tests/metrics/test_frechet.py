"""Tests of the Frechet distance (against scipy), feature statistics and their cache."""

import numpy as np
import pytest

from gridit_core.errors import GriditError
from gridit_core.metrics.frechet import FeatureStats, cached_stats, frechet_distance, stats_dir

pytestmark = pytest.mark.unit


def features(n, d, seed, shift=0.0, scale=1.0):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d))  # correlated features
    return rng.normal(size=(n, d)) @ mix * scale + shift


@pytest.mark.parametrize("n, d", [(50, 8), (300, 32), (20, 40)])  # the last: rank-deficient covariances
def test_frechet_distance_matches_scipy(n, d):
    linalg = pytest.importorskip("scipy.linalg")
    a, b = FeatureStats.of(features(n, d, 0)), FeatureStats.of(features(n, d, 1, shift=0.5, scale=1.3))
    covmean = linalg.sqrtm(a.sigma @ b.sigma).real
    expected = np.sum((a.mu - b.mu) ** 2) + np.trace(a.sigma) + np.trace(b.sigma) - 2 * np.trace(covmean)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6, abs=1e-6)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-7)
    for keep_a, keep_b in [(False, False), (True, False), (False, True)]:  # every path of the cross term
        a2, b2 = (FeatureStats(s.mu, s.sigma, s.n, s.centred if keep else None) for s, keep in ((a, keep_a), (b, keep_b)))
        assert frechet_distance(a2, b2) == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_frechet_distance_of_known_gaussians():
    a = FeatureStats(np.zeros(3), np.diag([1.0, 4.0, 9.0]), 10)
    b = FeatureStats(np.array([1.0, 2.0, 0.0]), np.diag([4.0, 4.0, 1.0]), 10)
    # |mu|^2 = 5; per axis (sqrt(s1) - sqrt(s2))^2 = 1 + 0 + 4
    assert frechet_distance(a, b) == pytest.approx(10.0, abs=1e-12)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-12)


def test_feature_stats_and_errors():
    f = features(10, 4, 2)
    s = FeatureStats.of(f)
    assert s.n == 10 and np.array_equal(s.mu, f.mean(0)) and np.allclose(s.sigma, np.cov(f, rowvar=False), atol=1e-12)
    assert s.centred is None and FeatureStats.of(features(3, 4, 2)).centred.shape == (3, 4)  # kept when N < D
    with pytest.raises(GriditError, match=r"feature statistics need at least 2 feature vectors \(N, D\), got shape \(1, 4\)"):
        FeatureStats.of(f[:1])
    with pytest.raises(GriditError, match="features of different sizes cannot be compared: 4 vs 3"):
        frechet_distance(s, FeatureStats.of(features(10, 3, 2)))


def test_cache_computes_once_per_key(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return FeatureStats.of(features(10, 4, len(calls)))

    key = {"metric": "fvd", "source": "builtin:bouncing", "clips": 10}
    first, path, cached = cached_stats(tmp_path, key, compute)
    assert not cached and path.parent == tmp_path and path.name.startswith("fvd_") and len(calls) == 1
    again, path2, cached = cached_stats(tmp_path, key, compute)
    assert cached and path2 == path and len(calls) == 1
    assert np.array_equal(again.mu, first.mu) and np.array_equal(again.sigma, first.sigma) and again.n == 10
    _, other, cached = cached_stats(tmp_path, {**key, "clips": 11}, compute)
    assert not cached and other != path and len(calls) == 2
    path.write_bytes(b"not an npz")  # a damaged cache file is computed again
    assert cached_stats(tmp_path, key, compute)[2] is False and len(calls) == 3


def test_stats_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert stats_dir(tmp_path) == tmp_path / ".gridit-stats"
    assert stats_dir("builtin:bouncing") == tmp_path / "cache" / "gridit" / "stats"
    assert stats_dir("builtin:bouncing", tmp_path / "x") == tmp_path / "x"
