"""The plausible rate: real data near 1 and its baselines near 0, looks that cannot move it, sets whose motion breaks
at known rates ranked by it, its interval, the seam split and the detection gate."""

import numpy as np
import pytest

from gridit_core.data.builtin import BouncingConfig, bouncing_shapes, moving_digits
from gridit_core.metrics.cases import broken_sequences
from gridit_core.metrics.coherence import BallReference, coherence_many, with_baselines
from gridit_core.metrics.digits import DigitReference, digit_coherence_many
from gridit_core.metrics.graded import BREAKS, RESTYLES, corrupt
from gridit_core.metrics.motion import MOTION_FIGURES, plausible_run, rate_interval, summarise

pytestmark = pytest.mark.unit

DEMO = BouncingConfig.for_frame_size(16, length=32, radius=(3, 3), speed=(1, 2), colours=(255, 200, 60))


@pytest.fixture(scope="module")
def reference():
    return BallReference.from_config(DEMO, n_sequences=32)


@pytest.fixture(scope="module")
def real():
    return list(bouncing_shapes(12, DEMO, seed=99).frames)  # a seed the reference does not use


def rate(sequences, reference, **kw):
    return coherence_many(sequences, reference, **kw)["plausible_rate"]


def test_real_sequences_are_plausible_and_their_baselines_are_not(reference, real):
    out = with_baselines(real, real, reference)
    assert out["real"]["plausible_rate"] == 1.0 and out["real"]["plausible_run"] == 32
    assert out["shuffled"]["plausible_rate"] < 0.05 and out["frozen"]["plausible_rate"] == 0.0
    assert out["frozen"]["implausible_because"]["speed"] == 1.0  # a ball that never moves is too slow
    lo, hi = out["shuffled"]["plausible_rate_ci"]
    assert lo <= out["shuffled"]["plausible_rate"] <= hi < 0.1


@pytest.mark.parametrize("name", RESTYLES)
def test_looks_do_not_move_the_plausible_rate(reference, real, name):
    restyled = [RESTYLES[name](x) for x in real]
    assert rate(restyled, reference) == rate(real, reference) == 1.0


def test_appearance_is_a_figure_of_its_own(reference, real):
    recoloured = coherence_many([RESTYLES["recoloured"](x) for x in real], reference)
    assert recoloured["plausible_rate"] == 1.0 and recoloured["appearance"] == 0.0  # moves right, looks wrong
    assert coherence_many(real, reference)["appearance"] == 1.0


@pytest.mark.parametrize("kind", BREAKS)
def test_sets_are_ranked_by_how_often_their_motion_breaks(reference, real, kind):
    rows = [corrupt(real, r, kind, seed=3) for r in (0.03, 0.1, 0.2, 0.4)]
    truth = [1 - broken for _, broken in rows]
    measured = [rate(seqs, reference) for seqs, _ in rows]
    assert truth == sorted(truth, reverse=True) and measured == sorted(measured, reverse=True)
    assert len(set(measured)) == 4  # strictly ranked
    if kind == "foreign":  # a foreign frame breaks every transition that sees it: the rate is the share left whole
        assert np.abs(np.subtract(measured, truth)).max() < 0.05


def test_hand_made_flaws_of_motion_are_implausible(reference):
    data = bouncing_shapes(8, DEMO, seed=5)
    for case in ("slow", "fast", "wrap", "stop"):
        assert rate(broken_sequences(data, case), reference) < 0.75, case
    for case in ("recolour", "wrong colour", "noise"):  # flaws of looks alone
        assert rate(broken_sequences(data, case), reference) == 1.0, case


def test_the_interval_is_a_bootstrap_over_sequences():
    assert rate_interval([10, 10], [10, 10]) == (1.0, [1.0, 1.0])
    assert rate_interval([3], [10]) == (0.3, None)  # one sequence: no interval
    r, (lo, hi) = rate_interval([10, 0, 5, 9], [10, 10, 10, 10])
    assert r == 0.6 and lo < 0.6 < hi and 0 <= lo and hi <= 1
    assert rate_interval([10, 0, 5, 9], [10, 10, 10, 10]) == (r, [lo, hi])  # a fixed seed: the same interval


def test_plausible_run_counts_the_frames_before_the_first_violation():
    assert plausible_run(np.array([True, True, False, True])) == 4  # transition 2 lands on frame 4
    assert plausible_run(np.ones(30, bool)) == 32 and plausible_run(np.zeros(30, bool)) == 2


def test_seams_split_the_rate(reference, real):
    seams = list(range(4, 32, 2))
    broken = []
    for x in real:  # every seam frame made to jump: the rate falls at seams only
        y = x.copy()
        for t in seams[::2]:
            y[t] = x[(t + 12) % 32]
        broken.append(y)
    out = coherence_many(broken, reference, seams=seams)
    assert out["plausible_rate_at_seams"] < 0.7 and out["plausible_rate_inside"] < out["plausible_rate_at_seams"] + 0.5
    untouched = coherence_many(real, reference, seams=seams)
    assert untouched["plausible_rate_at_seams"] == untouched["plausible_rate_inside"] == 1.0 and untouched["seams"] == seams


def test_the_detection_gate_withholds_motion_figures():
    plausible = [{"plausible": np.ones(10, bool), "jump": np.zeros(10, bool)}]
    passed = summarise(plausible, [np.r_[np.ones(11, bool), np.zeros(1, bool)]])
    assert passed["detection_gate"]["passed"] and passed["plausible_rate"] == 1.0
    failed = summarise(plausible, [np.r_[np.ones(10, bool), np.zeros(2, bool)]])  # found in 83% of the frames
    assert not failed["detection_gate"]["passed"] and failed["detection_rate"] == pytest.approx(10 / 12)
    assert all(failed[k] is None for k in MOTION_FIGURES if k in failed) and failed["plausible_rate"] is None


def test_a_set_without_its_ball_fails_the_gate(reference, real):
    empty = [np.zeros_like(x) for x in real[:3]]
    out = coherence_many(empty, reference)
    assert out["detection_rate"] == 0 and out["plausible_rate"] is None and out["motion_error_px"] is None


def test_moving_digits_need_their_identity_and_their_motion():
    reference = DigitReference.from_source(32, 32, n_sequences=24)
    real = list(moving_digits(8, 32, 32, seed=1234))
    out = with_baselines(real, real, reference, score_many=digit_coherence_many)
    assert out["real"]["plausible_rate"] > 0.95 > 0.05 > out["shuffled"]["plausible_rate"]
    swapped = [np.concatenate([a[:16], b[16:]]) for a, b in zip(real, real[1:] + real[:1])]  # another digit halfway
    assert digit_coherence_many(swapped, reference)["plausible_rate"] < out["real"]["plausible_rate"] - 0.1
