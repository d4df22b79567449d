"""Explicit attention for inspection: the probabilities reproduce every family's fused attention output, are in
frame-major token order, respect each family's masks, and the frame matrix, head fusion and rollout add up."""

import pytest
import torch

from gridit_core.diffusion import Diffusion
from gridit_core.errors import GriditError
from gridit_core.models.attention_maps import (
    attention_modules,
    capture_inputs,
    explicit_attention,
    frame_major_order,
    frame_mass,
    fuse_heads,
    layer_attention,
    model_input,
    near_mass,
    noised,
    rollout,
)
from gridit_core.sampling import get_family

pytestmark = pytest.mark.unit

VIDEO = dict(frame_size=16, frames=4, in_channels=3, depth=2, hidden_size=32, num_heads=4)
FAMILIES = [
    ("grid", {}),
    ("tensor", {}),
    ("tensor", {"attention": "factorized"}),
    ("msc", {}),
    ("msc", {"window": 1, "p_frames": 2, "pool": [2, 4], "i_stride": 1, "i_frames": 1, "light_cone": True}),
    ("msc", {"gate": "key"}),
]


def tiny(arch, **kw):
    torch.manual_seed(0)
    if arch == "grid":
        m = get_family("grid").build("DiT-N/4", input_size=32, rows=2, cols=2, in_channels=3, depth=2, hidden_size=32, num_heads=4,
                        learn_sigma=False, **kw)  # fmt: skip
    else:
        m = get_family(arch).build("DiT-N/4", **{**VIDEO, **kw})
    g = torch.Generator().manual_seed(1)
    for p in m.parameters():  # adaLN-Zero starts as the identity: give every weight a value so attention matters
        p.data.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return m.eval()


def frames(n=4, seed=2):
    return torch.randn(1, n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch,kw", FAMILIES)
def test_explicit_probabilities_reproduce_the_fused_output_and_rows_sum_to_one(arch, kw):
    m = tiny(arch, **kw)
    x = model_input(m, frames())
    captured = capture_inputs(m, x, 500, [0, 1])
    for i, module in enumerate(attention_modules(m)):
        args, kwargs = captured[i]
        fused = module(*args, **kwargs)
        out, probs, branch, gate = explicit_attention(module, args, kwargs)
        assert torch.allclose(out, fused, atol=1e-5, rtol=1e-4)
        assert probs.shape == (1, 4, 64, 64) and len(branch) == 4
        assert torch.allclose(probs.sum(-1), torch.ones(1, 4, 64), atol=1e-5)
        assert (gate is not None) == (arch == "msc")


def test_capture_stops_after_the_last_layer_asked_for():
    m = tiny("grid")
    calls = []
    m.final_layer.register_forward_hook(lambda *a: calls.append(1))
    assert set(capture_inputs(m, model_input(m, frames()), 10, [0])) == {0}
    assert calls == []  # the forward stopped inside block 0


def test_grid_tokens_are_reordered_frame_major():
    m = tiny("grid")
    order = frame_major_order(m)
    f, y, x = m.layout.token_to_frame(order)
    assert f.tolist() == [i // 16 for i in range(64)]
    assert (y * 4 + x).tolist() == [i % 16 for i in range(64)]
    raw = m.blocks[0].attn  # the grid model's own probabilities, reordered, are what layer_attention gives
    args, kwargs = capture_inputs(m, model_input(m, frames()), 300, [0])[0]
    probs = explicit_attention(raw, args, kwargs)[1][0]
    got = layer_attention(m, model_input(m, frames()), 300, [0])[0].probs[0]
    assert torch.equal(got, probs[:, order][:, :, order])


def test_causal_and_factorized_masks_show_in_the_probabilities():
    msc = layer_attention(tiny("msc"), frames(), 200, [1])[1]
    t = frame_mass(fuse_heads(msc.probs[0]), 4)
    assert torch.all(t.triu(1) == 0) and t[0, 0] == pytest.approx(1, abs=1e-5)  # frame-causal
    assert msc.branch == ["high", "high", "low", "low"] and msc.gate.shape == (1, 4, 2)
    space = layer_attention(tiny("tensor", attention="factorized"), frames(), 200, [0])[0]  # even blocks: within frames
    assert torch.allclose(frame_mass(fuse_heads(space.probs[0]), 4), torch.eye(4), atol=1e-6)


def test_msc_low_res_head_spreads_a_pooled_key_over_its_tokens():
    probs = layer_attention(tiny("msc"), frames(), 200, [0])[0].probs[0, 3]  # a Low-Res head, pool 2
    first = probs[0].reshape(4, 4, 4)[0]  # frame 0's tokens as key, query token (0, 0, 0)
    assert torch.allclose(first[0, 0], first[1, 1]) and torch.allclose(probs[0], probs[1])  # same cell, same row


def test_fusion_rollout_and_frame_mass():
    probs = torch.softmax(torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(0)), -1)
    assert torch.allclose(fuse_heads(probs, [1]), probs[1], atol=1e-6)
    mx = fuse_heads(probs, mode="max")
    assert torch.allclose(mx.sum(-1), torch.ones(8)) and torch.all(mx >= 0)
    weights = torch.tensor([[1.0] * 8, [0.0] * 8, [0.0] * 8])
    assert torch.allclose(fuse_heads(probs, weights=weights), probs[0], atol=1e-6)
    r = rollout([probs[0], probs[1]])
    a0, a1 = [(p + torch.eye(8)) / 2 for p in (probs[0], probs[1])]
    assert torch.allclose(r, a1 @ a0, atol=1e-6) and torch.allclose(r.sum(-1), torch.ones(8), atol=1e-5)
    fm = frame_mass(torch.eye(8), 2)
    assert torch.equal(fm, torch.eye(2)) and near_mass(fm, 0) == 1.0
    with pytest.raises(GriditError, match="at least one head"):
        fuse_heads(probs, [])
    with pytest.raises(GriditError, match="unknown head fusion"):
        fuse_heads(probs, mode="sum")


def test_inputs_are_checked_and_noise_is_reproducible():
    with pytest.raises(GriditError, match="takes 4 frames"):
        model_input(tiny("grid"), frames(3))
    with pytest.raises(GriditError, match="takes frames of 3x16x16"):
        model_input(tiny("msc"), torch.zeros(1, 4, 3, 8, 8))
    with pytest.raises(GriditError, match="sees 4 frames at once"):
        model_input(tiny("tensor"), frames(5))
    with pytest.raises(GriditError, match="layers must lie in 0..1"):
        capture_inputs(tiny("grid"), model_input(tiny("grid"), frames()), 0, [2])
    d = Diffusion()
    x0 = frames()
    assert torch.equal(noised(d, x0, 500, seed=1), noised(d, x0, 500, seed=1))
    assert not torch.equal(noised(d, x0, 500, seed=1), noised(d, x0, 501, seed=1))
