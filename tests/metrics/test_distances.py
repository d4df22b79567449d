"""Tests of the distribution distances against hand values and scipy, and of the hand-made broken sequences."""

import numpy as np
import pytest

from gridit_core.data.builtin import BouncingConfig, bouncing_shapes
from gridit_core.errors import GriditError
from gridit_core.metrics.cases import CASES, bounce, broken_sequences, draw_balls
from gridit_core.metrics.distances import excess, ks_chance, ks_distance, support, tolerance, wasserstein_1d

pytestmark = pytest.mark.unit


def test_hand_values():
    assert ks_distance([0.0, 1.0], [2.0, 3.0]) == 1.0
    assert ks_distance([0.0, 1.0, 2.0, 3.0], [0.0, 1.0]) == 0.5
    assert wasserstein_1d([0.0], [1.5]) == 1.5
    assert wasserstein_1d([0.0, 1.0], [0.0, 3.0]) == 1.0  # half the mass moves 2
    assert tolerance(2.0, 2.0) == 0.5 and tolerance(0.0, 1.0) == 1.0
    assert excess([1.0, 2.0, 5.0], 1.5, 4.0) == (0.5 + 0 + 1) / 3 and excess([], 0, 1) == 0.0
    assert support(np.arange(11.0), 11, 0, 1) == (-1.0, 11.0)  # the range over n - 1 added at each end
    with pytest.raises(GriditError, match="needs values on both sides, got 0 and 2"):
        ks_distance([], [1, 2])


def test_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for n, m in [(5, 7), (40, 13), (100, 100)]:
        a, b = rng.normal(size=n), rng.normal(0.3, 1.5, size=m)
        assert ks_distance(a, b) == pytest.approx(stats.ks_2samp(a, b).statistic, abs=1e-12)
        assert wasserstein_1d(a, b) == pytest.approx(stats.wasserstein_distance(a, b), abs=1e-12)
    assert ks_chance(8, 64) == pytest.approx(1.358 * np.sqrt(72 / 512))


def test_draw_and_bounce_match_the_generator():
    cfg = BouncingConfig(frame_size=16, length=20, n_balls=2, radius=(2.0, 3.0))
    data = bouncing_shapes(2, cfg, seed=3)
    for i in range(2):
        r = data.radii[i]
        t = len(data.frames[i])
        drawn = draw_balls(data.positions[i], np.repeat(r[None], t, 0), np.repeat(data.colours[i][None], t, 0).astype(float),
                           np.ones((t, 2)), 16)  # fmt: skip
        assert np.abs(drawn.astype(int) - data.frames[i]).max() <= 1  # float32 against float64 rounding
        path, _ = bounce(data.positions[i, 0, 0], data.velocities[i, 0], t, r[0], 16 - r[0])
        assert np.allclose(path, data.positions[i, :, 0])


@pytest.mark.parametrize("case", CASES)
def test_cases_change_the_frames_and_keep_their_shape(case):
    data = bouncing_shapes(2, BouncingConfig(frame_size=16, length=16, radius=(3, 3)), seed=1)
    broken = broken_sequences(data, case)
    assert broken.shape == data.frames.shape
    assert broken.dtype == np.uint8 and not np.array_equal(broken, data.frames)
    with pytest.raises(GriditError, match="unknown case 'nope'; choose one of teleport, "):
        broken_sequences(data, "nope")
