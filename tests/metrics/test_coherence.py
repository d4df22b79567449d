import numpy as np
import pytest
import torch

from gridit_core.data.builtin import BouncingConfig, bouncing_shapes
from gridit_core.errors import GriditError
from gridit_core.metrics.coherence import (
    coherence,
    coherence_many,
    detect_blobs,
    freeze_frames,
    label_components,
    shuffle_frames,
)

pytestmark = pytest.mark.unit

CASES = [  # (frame size, balls, radius range)
    (16, 1, (1.5, 2.5)),
    (16, 2, (1.5, 2.5)),
    (32, 1, (2.5, 4.0)),
    (32, 2, (2.5, 4.0)),
]


@pytest.fixture(scope="module")
def real():
    """Three 32-frame sequences per case."""
    return {
        (size, balls): bouncing_shapes(3, BouncingConfig(frame_size=size, length=32, n_balls=balls, radius=r), seed=7)
        for size, balls, r in CASES
    }


def test_label_components_separates_frames_and_blobs():
    fg = np.zeros((2, 5, 6), bool)
    fg[0, 0, :3] = fg[0, 1, 2] = True  # an L shape
    fg[0, 3:, 4:] = True  # a square
    fg[1, 2, :] = True  # a line in the next frame
    lab = label_components(fg[:, :-1] & fg[:, 1:], fg[:, :, :-1] & fg[:, :, 1:])
    assert len(np.unique(lab[fg])) == 3
    assert lab[0, 0, 0] == lab[0, 1, 2] != lab[0, 4, 5]
    assert len(np.unique(lab[1][fg[1]])) == 1


def test_detect_blobs_matches_ground_truth(real):
    d = real[32, 2]
    blobs = detect_blobs(d.frames[0])
    clear = ~blobs["touching"]
    assert clear.sum() > 20
    for t, y, x, area in zip(blobs["t"][clear], blobs["y"][clear], blobs["x"][clear], blobs["area"][clear]):
        dist = np.hypot(d.positions[0, t, :, 0] - y, d.positions[0, t, :, 1] - x)
        k = dist.argmin()
        assert dist[k] < 0.25
        assert area == pytest.approx(np.pi * d.radii[0, k] ** 2, rel=0.1)


@pytest.mark.parametrize("size, balls", [(s, b) for s, b, _ in CASES])
def test_real_sequences_score_high_and_baselines_low(real, size, balls):
    for frames in real[size, balls].frames:
        good = coherence(frames, n_balls=balls)
        shuffled = coherence(shuffle_frames(frames, seed=1), n_balls=balls)
        frozen = coherence(freeze_frames(frames), n_balls=balls)
        assert good.score > 0.9, good
        assert good.detection_rate == 1.0 and good.moving_fraction == 1.0 and good.motion_error_px < 0.3
        assert shuffled.score < 0.6 and shuffled.score < good.score - 0.3, shuffled
        assert shuffled.motion_error_px > 2.0
        assert frozen.score < 0.1 and frozen.moving_fraction == 0.0, frozen
        assert coherence(frames).n_balls == balls  # the median count finds them without being told


def test_black_and_noise_score_low():
    black = coherence(np.zeros((16, 16, 16, 3), np.uint8))
    assert black.detection_rate == 0.0 and black.score == 0.0 and black.n_balls == 0
    noise = np.random.default_rng(0).integers(0, 256, (16, 16, 16, 3), dtype=np.uint8)
    for n_balls in (None, 1):
        assert coherence(noise, n_balls=n_balls).score < 0.1


def test_float_input_and_many(real):
    frames = real[16, 1].frames
    x = torch.from_numpy(frames[0]).permute(0, 3, 1, 2).float() / 127.5 - 1  # (T, 3, H, W)
    assert coherence(x).score == pytest.approx(coherence(frames[0]).score)
    summary = coherence_many(frames, n_balls=1)
    assert summary["n_sequences"] == 3
    assert summary["score"] == pytest.approx(np.mean([coherence(f, n_balls=1).score for f in frames]))
    with pytest.raises(GriditError, match="frames must be"):
        coherence(frames[0, ..., :2])


def test_baseline_helpers():
    frames = np.arange(10)[:, None, None, None] * np.ones((10, 2, 2, 3), np.uint8)
    shuffled = shuffle_frames(frames, seed=0)
    assert sorted(shuffled[:, 0, 0, 0]) == list(range(10)) and not np.array_equal(shuffled, frames)
    assert np.array_equal(shuffle_frames(frames, seed=0), shuffled)
    assert np.all(freeze_frames(frames) == frames[0]) and len(freeze_frames(frames)) == 10
