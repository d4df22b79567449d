"""MSC's tiled High-Res kernel against the dense reference, in float64, forward and backward: square and non-square
token grids, tiles of whole rows or not, windows wider than a tile or than the frame, the light cone, frames before
frame 0, and the KV cache; how it picks its tiles."""

import math

import pytest
import torch
import torch.nn.functional as F

from gridit_core.errors import GriditError
from gridit_core.models.msc import KVCache, MSCAttention, attend, high_res_tile, tile_keys
from gridit_core.sampling import FAMILIES

pytestmark = pytest.mark.unit

# float64 throughout: the tiled and the dense kernels sum over keys in different orders; in float64 they agree to
# ~1e-15, while a key missing from a tile's halo or a wrong mask entry moves the output by > 1e-3.
TOL = dict(atol=1e-9, rtol=1e-9)


def layer(dim=24, heads=3, **kw):
    torch.manual_seed(0)
    settings = dict(high_heads=2, window=3, p_frames=1, pool=1, i_stride=2, i_frames=1, light_cone=False)
    return MSCAttention(dim, heads, **{**settings, **kw}).double()


def tokens(b, t, grid, dim=24, seed=1):
    return torch.randn(b, t, grid[0] * grid[1], dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def run(attn, x, grid, reference, gates=None):
    """Output and the gradients of the input and of every weight, for a fixed random direction."""
    x = x.clone().requires_grad_(True)
    attn.zero_grad()
    out = attn(x, grid, torch.arange(x.shape[1]), reference=reference, **(gates or {}))
    out.backward(torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape))
    return out.detach(), x.grad, {n: p.grad.clone() for n, p in attn.named_parameters()}


@pytest.mark.parametrize("grid, tile, kw", [
    ((8, 8), (4, 4), {}),
    ((8, 8), (2, 8), {"window": 5}),
    ((8, 8), (8, 8), {"p_frames": 2}),  # one tile: the whole frame, no halo
    ((6, 10), (3, 5), {"window": 5, "p_frames": 2, "light_cone": True}),
    ((6, 10), (6, 2), {"window": 1, "p_frames": 0}),
    ((4, 6), (1, 3), {"window": 7}),  # the window wider than the frame
    ((5, 7), (1, 7), {"p_frames": 3, "light_cone": True}),  # p_frames beyond the clip's first frames
    ((3, 3), (1, 1), {"window": 3, "p_frames": 1}),
    ((12, 8), None, {"pool": 2, "i_frames": 2}),  # the tile high_res_tile picks
])  # fmt: skip
def test_tiled_equals_the_dense_reference_forward_and_backward(grid, tile, kw):
    attn = layer(**kw)
    attn.high_path, attn.high_tile = "tiled", tile
    g = torch.Generator().manual_seed(2)
    gates = {"gate": torch.rand(2, 5, 2, generator=g, dtype=torch.float64) * 2,
             "key_gate": torch.rand(2, 5, 2, generator=g, dtype=torch.float64) * 2}  # fmt: skip
    x = tokens(2, 5, grid)
    (fast, gx, gp), (dense, rx, rp) = (run(attn, x, grid, reference, gates) for reference in (False, True))
    torch.testing.assert_close(fast, dense, **TOL)
    torch.testing.assert_close(gx, rx, **TOL)
    for name in rp:
        torch.testing.assert_close(gp[name], rp[name], **TOL, msg=lambda m, name=name: f"{name}: {m}")
    blocked = layer(**kw)
    blocked.high_path = "blocked"
    assert (blocked(x, grid, torch.arange(5), **gates) - fast).abs().max() < 1e-9  # the other kernels agree too
    attn.window += 2  # a wider window than the masks were built for changes the output: the test can fail
    assert (attn(x, grid, torch.arange(5), **gates) - fast).abs().max() > 1e-3


@pytest.mark.parametrize("grid, tile, kw", [
    ((8, 8), (4, 4), {}),
    ((6, 10), (2, 5), {"window": 5, "p_frames": 2, "light_cone": True, "i_stride": 1, "i_frames": 2}),
])  # fmt: skip
def test_tiled_with_a_cache_equals_the_whole_clip(grid, tile, kw):
    """Frames arriving in chunks, each chunk's keys cached: the tiled kernel over cached and new keys (``n_past``
    > 0, the masks shifted) gives what the dense reference gives over the whole clip."""
    attn = layer(**kw)
    attn.high_path, attn.high_tile = "tiled", tile
    x, n = tokens(1, 9, grid), 9
    with torch.no_grad():
        whole = attn(x, grid, torch.arange(n), reference=True)
        cache, parts = KVCache(attn.span), []
        for a, b in [(0, 2), (2, 3), (3, 7), (7, 9)]:
            parts.append(attn(x[:, a:b], grid, torch.arange(a, b), cache=cache, write=True))
    torch.testing.assert_close(torch.cat(parts, 1), whole, **TOL)
    assert cache.frames() == attn.span


def test_a_tiled_model_rolls_out_with_its_cache_as_the_whole_clip():
    """The whole model on 24 px frames (6x6 tokens), every block on the tiled kernel: cached chunks equal one pass
    over the clip, and equal the dense reference."""
    torch.manual_seed(0)
    m = FAMILIES["msc"].build("DiT-N/4", frame_size=24, frames=6, in_channels=3, depth=2, hidden_size=32, num_heads=4,
                              p_frames=2, light_cone=True).double().eval()  # fmt: skip
    g = torch.Generator().manual_seed(1)
    for p in m.parameters():  # adaLN-Zero starts as the identity: give every weight a value so all paths matter
        p.data.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.1)
    for block in m.blocks:
        block.attn.high_path, block.attn.high_tile = "tiled", (2, 3)
    n = 10
    x = torch.randn(1, n, 3, 24, 24, generator=g, dtype=torch.float64)
    t = torch.randint(0, 1000, (1, n), generator=g)
    with torch.no_grad():
        full, dense = m(x, t), m(x, t, reference=True)
        cache = m.new_cache()
        for a, b in [(0, 3), (3, 4), (4, 8)]:
            m(x[:, a:b], t[:, a:b], start=a, cache=cache, write=True)
        part = m(x[:, 8:], t[:, 8:], start=8, cache=cache)
    torch.testing.assert_close(full, dense, **TOL)
    torch.testing.assert_close(part, full[:, 8:], **TOL)


def test_tiles_are_picked_to_see_the_fewest_keys():
    assert high_res_tile((8, 8), 3, 1) == (4, 8)  # 2 x 6 x 8 keys; the whole frame's 2 x 64, (8, 4) as many
    assert high_res_tile((16, 16), 3, 1) == (4, 8)  # 2 x 6 x 10 keys; strips of two rows see 2 x 4 x 16
    assert high_res_tile((16, 16), 3, 1, min_queries=64) == (4, 16)  # 2 x 6 x 16; squares of 8 see 2 x 10 x 10
    assert tile_keys((16, 16), (4, 16), 3, 1, False) == 192 and tile_keys((16, 16), (8, 8), 3, 1, False) == 200
    assert tile_keys((16, 16), (4, 16), 3, 2, True) == 6 * 16 + 8 * 16 + 10 * 16  # the halo grows with the cone
    assert tile_keys((4, 6), (1, 3), 7, 0, False) == 4 * 6  # the block never leaves the frame
    assert high_res_tile((5, 7), 3, 1) == (5, 7)  # no divisor tile reaches 64 queries: the whole frame
    assert high_res_tile((5, 7), 3, 1, min_queries=7) == (1, 7)
    attn = layer()
    attn.high_path, attn.high_tile = "tiled", (3, 3)
    with pytest.raises(GriditError, match="the High-Res tile 3x3 does not divide the frame's 8x8 token grid"):
        attn(tokens(1, 2, (8, 8)), (8, 8), torch.arange(2))


def test_the_cpu_products_equal_sdpa_with_the_same_mask():
    """``attend`` runs two products and a softmax on the CPU and SDPA elsewhere: the two agree, masks included."""
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64) for _ in range(3))
    bias = torch.zeros(3, 5, 5, dtype=torch.float64).masked_fill_(torch.rand(3, 5, 5, generator=g) < 0.4, -math.inf)
    bias[..., 0] = 0  # every query sees a key
    torch.testing.assert_close(attend(q, k, v, bias), F.scaled_dot_product_attention(q, k, v, attn_mask=bias), **TOL)
    torch.testing.assert_close(attend(q, k, v), F.scaled_dot_product_attention(q, k, v), **TOL)
    assert (attend(q, k, v, bias) - attend(q, k, v)).abs().max() > 1e-3
