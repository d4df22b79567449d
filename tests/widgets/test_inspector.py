"""AttentionInspector built headless on every family: the frame x frame matrix (shape, row sums), what each control
changes, a click on a patch, rollout, MSC branches and gates, snapshots, and bad input in red."""

import numpy as np
import pytest
import torch

from widgets import AttentionInspector, SequenceSampler
from widgets.attention import AttentionState, as_frames
from widgets.common import load_stage1

pytestmark = pytest.mark.unit


def frames(n=6, size=16, seed=0):
    """A random sequence ``(n, 3, size, size)`` in [-1, 1]."""
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def matrix(w):
    return np.array(w.matrix.data[0].z)


@pytest.mark.parametrize("arch,window", [("grid", 4), ("tensor", 4), ("msc", 4)])
def test_the_frame_matrix_is_a_distribution_per_query_frame_and_controls_change_it(ckpts, arch, window):
    w = AttentionInspector(str(ckpts[arch]), sequence=frames(6))
    assert "gridit-error" not in w.status.value, w.status.value
    m = matrix(w)
    assert m.shape == (window, window) and np.allclose(m.sum(1), 1, atol=1e-5)
    assert w.start.max == 2 and w.layer.max == 1 and len(w.head_boxes.children) == 4
    if arch == "msc":
        assert np.allclose(np.triu(m, 1), 0)  # frame-causal
    for control, value in ((w.t, 900), (w.layer, 0), (w.start, 2), (w.mode, "max"), (w.view, "rollout")):
        before = matrix(w)
        control.value = value
        assert not np.allclose(matrix(w), before), control.description
        assert np.allclose(matrix(w).sum(1), 1, atol=1e-5)
    w.head_boxes.children[0].value = False
    assert w.state.checked == {1, 2, 3}


def test_a_click_on_a_patch_picks_its_token_and_redraws_its_map(ckpts):
    w = AttentionInspector(str(ckpts["grid"]), sequence=frames(4), layer=0)
    assert w.layer.value == w.state.layer == 0
    z = w.state.zoom  # 16 px frames drawn 8x: 128 px per frame, 32 px per 4-px patch, 2 px between frames
    picture, m = w.patches.png, matrix(w)
    w.patches.press(128 + 2 + 3 * 32 + 5, 10)  # frame 1 (top right of the 2x2 grid), patch row 0, column 3
    assert z == 8 and w.state.token == (1, 0, 3) and w.patches.png != picture
    assert np.array_equal(matrix(w), m) and "frame 1, patch row 0, column 3" in w.token_label.value
    w.patches.press(129, 5)  # the gap between frames: nothing changes
    assert w.state.token == (1, 0, 3)
    w.click(3, 3, 3)
    assert w.state.token == (3, 3, 3)
    heat = w.state.token_map()
    assert heat.shape == (4, 4, 4) and float(heat.sum()) == pytest.approx(1, abs=1e-5)


def test_layer_view_computes_one_layer_and_rollout_all_of_them(ckpts):
    state = AttentionState(load_stage1(str(ckpts["tensor"])), frames(4), t=100)
    state.layer = 0
    state.frame_matrix()
    assert list(state._cache[(0, 100)]) == [0]
    state.view, state.layer = "rollout", 1
    state.frame_matrix()
    assert sorted(state._cache[(0, 100)]) == [0, 1]


def test_msc_branches_and_gates(ckpts):
    w = AttentionInspector(str(ckpts["msc"]), sequence=frames(4))
    assert w.branch.layout.display == "" and w.gate_box.layout.display == ""
    assert len(w.gate_plot.data) == 2 and len(w.gate_plot.data[0].x) == 41
    assert "High-Res" in w.head_boxes.children[0].description and "Low-Res" in w.head_boxes.children[3].description
    both = matrix(w)
    w.branch.value = "high"
    high = matrix(w)
    w.branch.value = "low"
    assert not np.allclose(high, both) and not np.allclose(matrix(w), high)
    w.head_boxes.children[2].value = w.head_boxes.children[3].value = False  # no Low-Res head left
    assert "no head chosen" in w.status.value and "color:#c00" in w.status.value
    w.t.value = 10
    assert w.gate_plot.layout.shapes[0].x0 == 10
    grid = AttentionInspector(str(ckpts["grid"]), sequence=frames(4))
    assert grid.branch.layout.display == "none" and grid.gate_box.layout.display == "none"


def test_snapshot_writes_a_png_and_a_self_contained_html(ckpts, tmp_path):
    w = AttentionInspector(str(ckpts["msc"]), sequence=frames(4))
    png, page = w.snapshot(tmp_path / "snap")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = page.read_text()
    assert "data:image/png;base64," in text and "http" not in text.replace("http-equiv", "")
    assert text.count("<tr>") == 5 and "wrote" in w.status.value


def test_sequences_from_a_sampler_and_uint8_frames(ckpts):
    sampler = SequenceSampler(str(ckpts["grid"]), frames=5)
    sampler.controls["steps"].value = 2
    sampler.run()
    sampler.wait(60)
    w = AttentionInspector(str(ckpts["grid"]), sequence=sampler)
    assert torch.equal(w.state.frames, sampler.result()) and w.start.max == 1
    u8 = (np.arange(4 * 16 * 16 * 3) % 256).astype(np.uint8).reshape(4, 16, 16, 3)
    assert as_frames(u8).shape == (4, 3, 16, 16)


@pytest.mark.parametrize("sequence,message", [
    (frames(4, size=8), "the sequence has 8x8 frames, but the model takes 16x16"),
    (frames(3), "the sequence has 3 frames; the model looks at 4 at once"),
    ("frames.gif", "a sequence must be a tensor"),
    (None, "give a sequence"),
])  # fmt: skip
def test_bad_sequences_show_one_red_line(ckpts, sequence, message):
    w = AttentionInspector(str(ckpts["grid"]), sequence=sequence)
    assert message in w.status.value and "color:#c00" in w.status.value


def test_a_wrong_sequence_later_keeps_the_current_one(ckpts):
    w = AttentionInspector(str(ckpts["grid"]), sequence=frames(4))
    w.set_sequence(frames(4, size=32))
    assert "32x32 frames" in w.status.value and w.state.frames.shape == (4, 3, 16, 16)
    w.set_sequence(frames(8, seed=3))
    assert w.start.max == 4 and "gridit-error" not in w.status.value


def test_a_bad_checkpoint_shows_in_red(tmp_path):
    w = AttentionInspector(str(tmp_path / "none.pt"), sequence=frames(4))
    assert "checkpoint not found" in w.status.value and w.frame_matrix() is None
    w.snapshot(tmp_path / "x")
    assert "nothing to snapshot" in w.status.value
