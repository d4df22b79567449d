"""Tests of the moving-digits coherence: real data high, its baselines and hand-made wrong sequences far below."""

import numpy as np
import pytest

from gridit_core.data.builtin import moving_digits
from gridit_core.errors import GriditError
from gridit_core.metrics.cases import DIGIT_CASES, broken_digits
from gridit_core.metrics.coherence import with_baselines
from gridit_core.metrics.digits import TOLERANCES, DigitReference, digit_coherence, digit_coherence_many

pytestmark = pytest.mark.unit

CAUGHT_BY = {"reversal": ["reversal_rate"], "stop": ["stop_fraction"], "teleport": ["max_error_px", "jump_rate", "reversal_rate"],
             "swap": ["identity_kept"], "noise": ["background_excess"]}  # case -> what should cost it most  # fmt: skip


@pytest.fixture(scope="module", params=[16, 32])
def setting(request):
    size = request.param
    ref = DigitReference.from_source(size, length=32, n_sequences=48)
    real = moving_digits(6, 32, size, seed=5)
    return size, ref, real, digit_coherence_many(real, ref)["score"]


def test_reference_finds_the_ten_glyphs(setting):
    size, ref, _, _ = setting
    assert len(ref.templates) == 10 and ref.frame_size == (size, size) and ref.n_sequences == 48
    assert ref.speed_range[0] < 1.0 and ref.speed_range[1] > 2.5  # the source moves 1 to 2.5 px per frame
    assert ref.allowance["reversal_rate"] == 0.0 and ref.allowance["background"] == 0.0


def test_real_high_and_its_order_over_shuffled_and_frozen(setting):
    _, ref, real, good = setting
    scores = with_baselines(real, real, ref, score_many=digit_coherence_many)
    assert good == scores["real"]["score"] > 0.9
    assert scores["shuffled"]["score"] < 0.05 and scores["frozen"]["score"] == 0.0
    one = digit_coherence(real[0], ref)
    assert one.identity_kept == 1.0 and one.detection_rate == 1.0 and one.match > 0.999 and one.reversal_rate == 0.0
    assert set(one.factors) == set(TOLERANCES)


@pytest.mark.parametrize("case", DIGIT_CASES)
def test_hand_made_cases_score_far_below_real(setting, case):
    _, ref, real, good = setting
    broken = digit_coherence_many(broken_digits(real, case), ref)
    assert broken["score"] < 0.5 * good and broken["worst"] in CAUGHT_BY[case], broken


def test_blank_frames_and_errors(setting):
    size, ref, real, _ = setting
    blank = digit_coherence(np.zeros((8, size, size, 3), np.uint8), ref)
    assert blank.score == 0.0 and blank.detection_rate == 0.0 and blank.digit == -1
    other = 48 - size  # the other setting's frame size
    with pytest.raises(GriditError, match=rf"frames of \({size}, {size}\) px scored against a reference of \({other}, {other}\) px frames"):
        digit_coherence(real[0], DigitReference.from_source(other, length=16, n_sequences=4))
    with pytest.raises(GriditError, match="no digits found in the real sequences: the digit metric is for moving-digit data"):
        DigitReference.from_sequences(np.zeros((2, 8, size, size, 3), np.uint8))
    with pytest.raises(GriditError, match="unknown digit case 'melt'; choose one of reversal, stop, teleport, swap, noise"):
        broken_digits(real, "melt")
