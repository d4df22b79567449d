"""The cost model of one attention layer against independent counts: torch's FlopCounterMode on the layers themselves
(2 FLOPs per multiply-add) and the True entries of MSC's dense reference masks; the paper's formula as it stands."""

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from gridit_core.models import build_video_dit
from gridit_core.models.cost import (
    full_attention_macs,
    layer_macs,
    msc_attended_pairs,
    msc_attention_macs,
    paper_full_flops,
    paper_msc_flops,
    saving,
    total,
)
from gridit_core.models.msc import BranchGate, MSCAttention
from gridit_core.models.video import FullAttention

pytestmark = pytest.mark.unit


def counted_flops(fn):
    """FLOPs of ``fn()`` by FlopCounterMode, SDPA on its math path (CPU's fused kernel is not counted)."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return counter.get_total_flops()


def msc_layer(hidden, heads, **kw):
    torch.manual_seed(0)
    settings = dict(high_heads=heads // 2, window=3, p_frames=1, pool=2, i_stride=2, i_frames=2, light_cone=False)
    return MSCAttention(hidden, heads, **{**settings, **kw})


@pytest.mark.parametrize("scope", ["all", "space", "time"])
@pytest.mark.parametrize("frames,grid,hidden,heads", [(3, (4, 4), 32, 4), (5, (2, 6), 48, 3)])
def test_full_attention_counts_equal_the_flop_counter(scope, frames, grid, hidden, heads):
    layer = FullAttention(hidden, heads, scope)
    x = torch.randn(1, frames, grid[0] * grid[1], hidden)
    assert counted_flops(lambda: layer(x)) == 2 * total(full_attention_macs(frames, grid, hidden, scope))


@pytest.mark.parametrize("path,tile", [("gathered", None), ("blocked", None), ("tiled", None), ("tiled", (2, 2))])
@pytest.mark.parametrize("frames,grid,hidden,heads,kw", [
    (5, (4, 4), 32, 4, {}),
    (7, (4, 6), 48, 4, {"high_heads": 1, "window": 5, "p_frames": 2, "i_stride": 3, "i_frames": 1}),
    (4, (6, 6), 36, 3, {"high_heads": 2, "pool": 3, "p_frames": 0, "i_frames": 0, "light_cone": True}),
    (6, (4, 4), 32, 4, {"p_frames": 2, "light_cone": True}),
])  # fmt: skip
def test_msc_counts_equal_the_flop_counter_on_each_kernel(path, tile, frames, grid, hidden, heads, kw):
    layer = msc_layer(hidden, heads, **kw)
    layer.high_path, layer.high_tile = path, tile
    x = torch.randn(1, frames, grid[0] * grid[1], hidden)
    counted = counted_flops(lambda: layer(x, grid, torch.arange(frames)))
    cost = msc_attention_macs(frames, grid, hidden, heads, path=path, tile=tile, gate="equal",
                              **{"high_heads": heads // 2, **kw})  # fmt: skip
    assert cost["gate"] == 0 and counted == 2 * total(cost)


def test_the_gate_is_one_small_map_per_frame():
    gate, c = BranchGate(40), torch.randn(1, 6, 40)
    assert counted_flops(lambda: gate(c)) == 2 * msc_attention_macs(6, (4, 4), 40, 4)["gate"] == 2 * 2 * 6 * 40


def test_auto_counts_the_kernel_the_model_picks():
    small, large = (4, 4), (16, 16)  # 16 tokens: the masked frame block; 256: the tiled window
    for grid, path in ((small, "blocked"), (large, "tiled")):
        assert msc_attention_macs(8, grid, 64, 4) == msc_attention_macs(8, grid, 64, 4, path=path)
    assert msc_attention_macs(8, small, 64, 4, path="gathered") != msc_attention_macs(8, small, 64, 4, path="blocked")
    with pytest.raises(ValueError, match="path must be one of"):
        msc_attention_macs(8, small, 64, 4, path="flex")
    with pytest.raises(ValueError, match="gate must be one of"):
        msc_attention_macs(8, small, 64, 4, gate=True)


@pytest.mark.parametrize("frames,grid,kw", [
    (6, (4, 4), {}),
    (9, (4, 6), {"window": 5, "p_frames": 2, "i_stride": 3, "i_frames": 2}),
    (5, (6, 6), {"pool": 3, "p_frames": 3, "light_cone": True, "i_stride": 1, "i_frames": 7}),
    (2, (2, 2), {"p_frames": 4, "i_frames": 3}),  # reaching back further than the clip
])  # fmt: skip
def test_attended_pairs_equal_the_reference_masks(monkeypatch, frames, grid, kw):
    """The dense reference builds one boolean mask per branch; their True entries are the pairs MSC attends to."""
    masks, sdpa = [], F.scaled_dot_product_attention

    def recording(q, k, v, attn_mask=None, **rest):
        masks.append(int(attn_mask.sum()))
        return sdpa(q, k, v, attn_mask=attn_mask, **rest)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    layer = msc_layer(32, 4, **kw)
    with torch.no_grad():
        layer(torch.randn(1, frames, grid[0] * grid[1], 32), grid, torch.arange(frames), reference=True)
    pairs = msc_attended_pairs(frames, grid, **{k: v for k, v in kw.items() if k != "high_heads"})
    assert masks == [pairs["high_res"], pairs["low_res"]]


def test_the_models_own_layers_are_counted_from_their_config():
    common = dict(frame_size=16, frames=4, in_channels=3, depth=2, hidden_size=32, num_heads=4)
    tokens = torch.randn(1, 4, 16, 32)
    msc = build_video_dit("DiT-N/4", arch="msc", pool=[1, 2], **common)
    for block in (0, 1):
        attn = msc.blocks[block].attn
        cost = layer_macs(msc.config, 4, block)
        counted = counted_flops(lambda: attn(tokens, grid=(4, 4), frames=torch.arange(4)))
        assert counted == 2 * (total(cost) - cost["gate"])
        assert counted_flops(lambda: msc.blocks[block].gate(tokens[:, :, 0])) == 2 * cost["gate"]
    factorized = build_video_dit("DiT-N/4", arch="tensor", attention="factorized", **common)
    assert layer_macs(factorized.config, 4, 1) == full_attention_macs(4, (4, 4), 32, "time")
    assert counted_flops(lambda: factorized.blocks[1].attn(tokens)) == 2 * total(layer_macs(factorized.config, 4, 1))


def test_savings_at_sixteen_tokens_a_frame():
    """DiT-N's width and heads, MSC's defaults: exact counts, and the savings docs/families.md quotes."""
    d, s = 128, 64 * 16
    full = full_attention_macs(64, (4, 4), d)
    assert total(full) == 4 * s * d * d + 2 * s * s * d == 335_544_320
    gathered = msc_attention_macs(64, (4, 4), d, 4, path="gathered")
    assert gathered == {"projections": 4 * s * d * d, "high_res": 2 * s * 18 * 64, "low_res": 2 * (s // 4) * 12 * 64,
                        "gate": 2 * 64 * d}  # fmt: skip
    assert msc_attention_macs(64, (4, 4), d, 4)["high_res"] == 2 * s * 32 * 64  # masked: both frames' 16 tokens
    assert [round(saving(t, (4, 4), d, 4), 1) for t in (64, 4096)] == [4.7, 240.5]
    assert [round(saving(t, (4, 4), d, 4, path="gathered"), 1) for t in (64, 4096)] == [4.8, 246.8]
    formula = [paper_full_flops(t * 16, d) / paper_msc_flops(t * 16, d) for t in (64, 4096)]
    assert formula == pytest.approx([6.968, 16.395], abs=1e-3)


def test_paper_formulas_as_the_paper_states_them():
    s, h = 1024, 128
    assert paper_full_flops(s, h) == 8 * s * h * h + 2 * s * s * h
    # w=3, v=1, r=2, d=2: 2sh^2 + s^2h/18 + sh^2/2 + s^2h/16
    assert paper_msc_flops(s, h, window=3, p_frames=1, pool=2, i_stride=2) == pytest.approx(
        2 * s * h * h + s * s * h / 18 + s * h * h / 2 + s * s * h / 16
    )
    ratio = [paper_full_flops(n, h) / paper_msc_flops(n, h) for n in (256, 4096, 65536)]
    assert ratio[0] < ratio[1] < ratio[2] < 17.2  # the formula keeps s^2 in MSC too: its saving levels off near 17
