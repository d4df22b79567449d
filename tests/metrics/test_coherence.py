"""Tests of the bouncing-ball coherence: detection against ground truth, real data against its baselines, and every
hand-made wrong sequence of ``metrics.cases`` far below real data."""

import numpy as np
import pytest
import torch

from gridit_core.data.builtin import BouncingConfig, bouncing_shapes
from gridit_core.errors import GriditError
from gridit_core.metrics.cases import CASES, broken_sequences
from gridit_core.metrics.coherence import (
    COMPONENTS,
    BallReference,
    coherence,
    coherence_many,
    freeze_frames,
    shuffle_frames,
    with_baselines,
)
from gridit_core.metrics.tracking import detect_blobs, label_components

pytestmark = pytest.mark.unit

DEMO = BouncingConfig.for_frame_size(16, length=32, radius=(3, 3), speed=(1, 2), colours=(255, 200, 60))  # the demo's data
CONFIGS = {  # name -> the data; the table is on "demo"
    "demo": DEMO,
    "16px-2": BouncingConfig(frame_size=16, length=32, n_balls=2, radius=(1.5, 2.5)),
    "32px-1": BouncingConfig(frame_size=32, length=32, n_balls=1, radius=(2.5, 4.0)),
    "32px-2": BouncingConfig(frame_size=32, length=32, n_balls=2, radius=(2.5, 4.0)),
    "64px-1": BouncingConfig.for_frame_size(64, length=32),  # radius 5-8 px: pixel tolerances scale with it
}
CAUGHT_BY = {  # case -> a component whose factor must fall under one half on it
    "teleport": "max_error_px", "reversal": "reversal_rate", "stop": "stop_fraction", "slow": "speed_excess",
    "noise": "background_excess", "fast": "speed_excess", "jitter": "motion_error_px", "wrap": "max_error_px",
    "grow": "size_cv", "shrink": "size_excess", "recolour": "colour_std", "wrong colour": "colour_excess",
    "vanish": "detection_rate", "extra ball": "detection_rate",
}  # fmt: skip


@pytest.fixture(scope="module")
def references():
    return {name: BallReference.from_config(cfg, n_sequences=32) for name, cfg in CONFIGS.items()}


@pytest.fixture(scope="module")
def real():
    """Four sequences per config, of a seed the references do not use."""
    return {name: bouncing_shapes(4, cfg, seed=7) for name, cfg in CONFIGS.items()}


@pytest.fixture(scope="module")
def real_score(references, real):
    return {name: coherence_many(real[name].frames, references[name])["score"] for name in CONFIGS}


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
    d = real["32px-2"]
    blobs = detect_blobs(d.frames[0])
    clear = ~blobs["touching"]
    assert clear.sum() > 20
    for t, y, x, area in zip(blobs["t"][clear], blobs["y"][clear], blobs["x"][clear], blobs["area"][clear]):
        dist = np.hypot(d.positions[0, t, :, 0] - y, d.positions[0, t, :, 1] - x)
        k = dist.argmin()
        assert dist[k] < 0.25
        assert area == pytest.approx(np.pi * d.radii[0, k] ** 2, rel=0.1)


def test_reference_holds_the_config(references):
    ref = references["demo"]
    assert ref.n_balls == 1 and ref.frame_size == (16, 16) and ref.n_sequences == 32
    assert ref.speed_range[0] < 1.05 and ref.speed_range[1] > 1.95  # the data moves 1 to 2 px per frame
    assert ref.radius_range[0] < 3 < ref.radius_range[1] and ref.radius_range[1] - ref.radius_range[0] < 0.2
    assert np.abs(ref.colours - [255, 200, 60]).max() < 15 and ref.background == 0.0
    assert references["32px-2"].n_balls == 2


@pytest.mark.parametrize("name", CONFIGS)
def test_real_scores_high_and_keeps_its_order_over_shuffled_and_frozen(references, real, name):
    frames, ref = real[name].frames, references[name]
    scores = with_baselines(frames, frames, ref)
    assert scores["samples"] == scores["real"]
    good, shuffled, frozen = (scores[k]["score"] for k in ("real", "shuffled", "frozen"))
    assert good > 0.9 and shuffled < 0.05 and frozen == 0.0 and good > shuffled >= frozen, (good, shuffled, frozen)
    for f in frames:
        one = coherence(f, ref)
        assert one.score > 0.9 and one.detection_rate == 1.0 and one.reversal_rate == 0.0, one
        assert one.stop_fraction == 0.0 and one.speed_excess < 0.01 and one.background_excess < 0.5, one
        assert set(one.factors) == set(COMPONENTS)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", ["demo", "32px-1", "64px-1"])
def test_every_hand_made_case_scores_far_below_real(references, real, real_score, name, case):
    broken = coherence_many(broken_sequences(real[name], case), references[name])
    assert broken["score"] < 0.5 * real_score[name], (case, broken["score"], real_score[name])
    assert broken["factors"][CAUGHT_BY[case]] < 0.5, (case, broken["factors"])


@pytest.mark.parametrize("case", ["teleport", "stop", "slow", "noise", "fast", "jitter", "extra ball"])
def test_two_ball_cases_with_one_ball_broken_score_below_half(references, real, real_score, case):
    broken = coherence_many(broken_sequences(real["32px-2"], case), references["32px-2"])["score"]
    assert broken < 0.5 * real_score["32px-2"]


def test_black_and_noise_score_zero_or_near(references):
    black = coherence(np.zeros((16, 16, 16, 3), np.uint8), references["demo"])
    assert black.score == 0.0 and black.detection_rate == 0.0 and black.n_tracks == 0
    noise = np.random.default_rng(0).integers(0, 256, (16, 16, 16, 3), dtype=np.uint8)
    assert coherence(noise, references["demo"]).score < 0.01


def test_sets_report_distributions_and_chance(references, real):
    ref = references["32px-1"]
    summary = coherence_many(real["32px-1"].frames, ref)
    assert summary["n_sequences"] == 4 and summary["n_frames"] == 128
    assert set(summary["distributions"]) == {"speed", "radius", "colour", "count"}
    for d in summary["distributions"].values():
        assert d["ks"] <= d["ks_chance"], summary["distributions"]
    assert summary["distribution_score"] == 1.0
    assert summary["score"] == summary["sequence_score"] == np.mean([coherence(f, ref).score for f in real["32px-1"].frames])
    slow = coherence_many(broken_sequences(real["32px-1"], "slow"), ref)
    assert slow["distributions"]["speed"]["ks"] == 1.0 and slow["distribution_score"] < 0.5


def test_float_input_and_errors(references, real):
    frames = real["demo"].frames[0]
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1  # (T, 3, H, W)
    assert coherence(x, references["demo"]).score == coherence(frames, references["demo"]).score
    with pytest.raises(GriditError, match=r"frames must be uint8 \(T, H, W, 3\) or float \(T, 3, H, W\), got shape"):
        coherence(frames[..., :2], references["demo"])
    with pytest.raises(GriditError, match=r"frames of \(16, 16\) px scored against a reference of \(32, 32\) px frames"):
        coherence(frames, references["32px-1"])
    with pytest.raises(GriditError, match="no balls found in the real sequences: the coherence metric is for bouncing-ball data"):
        BallReference.from_sequences(np.zeros((2, 8, 16, 16, 3), np.uint8))
    with pytest.raises(GriditError, match="coherence_many needs at least one sequence"):
        coherence_many([], references["demo"])


def test_baseline_helpers():
    frames = np.arange(10)[:, None, None, None] * np.ones((10, 2, 2, 3), np.uint8)
    shuffled = shuffle_frames(frames, seed=0)
    assert sorted(shuffled[:, 0, 0, 0]) == list(range(10)) and not np.array_equal(shuffled, frames)
    assert np.array_equal(shuffle_frames(frames, seed=0), shuffled)
    assert np.all(freeze_frames(frames) == frames[0]) and len(freeze_frames(frames)) == 10


def test_a_track_without_three_consecutive_frames_pools_with_others_without_breaking_the_masks():
    from gridit_core.metrics.coherence import _pooled, _track

    blobs = {"t": np.array([0, 2, 4, 0, 1, 2, 3]), "y": np.array([5.0, 6, 7, 5, 6, 7, 8]), "x": np.full(7, 8.0),
             "area": np.full(7, 28.0), "colour": np.full((7, 3), 200.0), "touching": np.zeros(7, bool)}  # fmt: skip
    gappy, steady = _track(blobs, np.arange(3), (16, 16), 0.25), _track(blobs, np.arange(3, 7), (16, 16), 0.25)
    assert gappy["judged_clear"].dtype == bool and len(gappy["reversal"]) == 0
    assert len(_pooled([steady, gappy], "reversal", "judged_clear")) == len(steady["reversal"]) == 2
