"""The sequence-tensor DiT and MSC: shapes, per-frame conditioning, causality, the fast MSC path against its dense
reference (forward and backward), and the exact KV cache."""

import pytest
import torch

from gridit_core.errors import GriditError
from gridit_core.models import build_video_dit
from gridit_core.sampling import FAMILIES

pytestmark = pytest.mark.unit

TINY = dict(frame_size=16, frames=6, in_channels=3, depth=2, hidden_size=32, num_heads=4)


def model(arch="msc", **kw):
    torch.manual_seed(0)
    m = FAMILIES[arch].build("DiT-N/4", **{**TINY, **kw})
    g = torch.Generator().manual_seed(1)
    for p in m.parameters():  # adaLN-Zero starts as the identity: give every weight a value so all paths matter
        p.data.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return m


def clips(n=6, b=2, seed=2):
    return torch.randn(b, n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def levels(n=6, b=2, seed=3):
    return torch.randint(0, 1000, (b, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch,kw", [("tensor", {}), ("tensor", {"attention": "factorized"}), ("msc", {}),
                                     ("msc", {"gate": "equal", "light_cone": True}), ("msc", {"gate": "key"})])  # fmt: skip
def test_shapes_and_one_level_for_all_frames(arch, kw):
    m = model(arch, **kw)
    x, t = clips(), torch.tensor([3, 700])
    out = m(x, t)
    assert out.shape == (2, 6, 3, 16, 16)
    assert torch.allclose(out, m(x, t[:, None].expand(2, 6)), atol=1e-6, rtol=0)
    assert FAMILIES[arch].from_config(m.config.__dict__).config == m.config


@pytest.mark.parametrize("kw", [
    {},
    {"window": 1, "p_frames": 0, "pool": 1, "i_stride": 1, "i_frames": 0},
    {"window": 5, "p_frames": 2, "pool": [2, 4], "i_stride": 3, "i_frames": 1, "light_cone": True},
    {"high_heads": 1, "gate": "equal"},
    {"high_heads": 3, "pool": [1, 2]},
    {"gate": "key", "p_frames": 2, "light_cone": True},
])  # fmt: skip
@pytest.mark.parametrize("path", ["blocked", "gathered", "tiled"])
def test_msc_fast_path_equals_the_dense_reference_forward_and_backward(kw, path):
    # float64: the two paths sum over keys in different orders, and in float32 how far apart that leaves them depends
    # on the CPU's kernels (a weight gradient of 18.5 was 1.4e-5 off on one CPU, under 1e-5 on another). In float64
    # they agree to ~3e-14; 1e-9 leaves room for any kernel, while a wrong mask or a missing term moves them by > 1e-2.
    m = model("msc", **kw).double()
    for block in m.blocks:
        block.attn.high_path = path
    x, t = clips().double(), levels()
    grads = []
    for reference in (False, True):
        xi = x.clone().requires_grad_(True)
        m.zero_grad()
        out = m(xi, t, reference=reference)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)).sum().backward()
        grads.append((out.detach(), xi.grad, {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}))
    (fast, gx, gp), (dense, rx, rp) = grads
    torch.testing.assert_close(fast, dense, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(gx, rx, atol=1e-9, rtol=1e-9)
    assert gp.keys() == rp.keys()
    for name in gp:
        torch.testing.assert_close(gp[name], rp[name], atol=1e-9, rtol=1e-9, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("kw", [{}, {"p_frames": 3, "i_stride": 1, "light_cone": True}])
def test_msc_is_causal_at_the_frame_level(kw):
    m = model("msc", **kw)
    x, t = clips(), levels()
    base = m(x, t)
    for j in (2, 5):
        x2, t2 = x.clone(), t.clone()
        x2[:, j] += 1
        t2[:, j] = 999 - t2[:, j]
        moved = (m(x2, t2) - base).abs().amax(dim=(0, 2, 3, 4))  # (T,)
        assert moved[:j].max() == 0 and moved[j] > 0


def test_the_tensor_model_is_bidirectional():
    m = model("tensor")
    x, t = clips(), levels()
    x2 = x.clone()
    x2[:, 5] += 1
    assert (m(x2, t) - m(x, t))[:, 0].abs().max() > 0


@pytest.mark.parametrize("kw", [{}, {"pool": [1, 4], "light_cone": True, "p_frames": 2}, {"gate": "key"}])
def test_cached_rollout_equals_the_full_sequence(kw):
    m = model("msc", **kw).double().eval()  # float64: cached and full passes sum attention in different orders
    n = 13
    x, t = clips(n, b=1).double(), torch.zeros(1, n, dtype=torch.long)
    t[0, 11:] = 400  # the frames being denoised; the rest are clean context
    with torch.no_grad():
        full = m(x, t)
        cache = m.new_cache()
        for a, b in [(0, 4), (4, 5), (5, 11)]:  # finished frames enter the cache in chunks
            m(x[:, a:b], t[:, a:b], start=a, cache=cache, write=True)
        part = m(x[:, 11:], t[:, 11:], start=11, cache=cache)
    # they agree to ~1e-15 in float64 on any CPU's kernels; the same frames without the cache differ by > 1e-2
    torch.testing.assert_close(part, full[:, 11:], atol=1e-9, rtol=1e-9)
    assert cache.frames() == m.span == max(m.config.p_frames, m.config.i_frames * m.config.i_stride)
    with pytest.raises(GriditError, match="the cache ends at frame 11, but these frames start at 12"):
        m(x[:, 12:], t[:, 12:], start=12, cache=cache)


def test_frames_far_past_the_training_length_are_fine():
    m = model("msc").eval()
    x, t = clips(3, b=1), levels(3, b=1)
    with torch.no_grad():
        near, far = m(x, t, start=0), m(x, t, start=300)
    assert torch.isfinite(far).all()
    assert torch.allclose(near, far, atol=1e-4, rtol=0)  # time enters only as frame distances


def test_gate_weights_per_noise_level():
    learned = model("msc")
    w = learned.gate_weights(torch.tensor([0, 500, 999]))
    assert w.shape == (2, 3, 2) and torch.allclose(w.sum(-1), torch.full((2, 3), 2.0))
    fresh = FAMILIES["msc"].build("DiT-N/4", **TINY)
    assert torch.equal(fresh.gate_weights(torch.tensor([0, 999])), torch.ones(2, 2, 2))  # start: plain concatenation
    equal = model("msc", gate="equal")
    assert torch.equal(equal.gate_weights(torch.tensor([0, 999])), torch.ones(2, 2, 2))
    with pytest.raises(GriditError, match="branch weights exist only in MSC models"):
        model("tensor").gate_weights(torch.tensor([0]))


def test_the_key_gate_weighs_each_frames_values_by_its_own_level():
    keyed = model("msc", gate="key")
    c = keyed.t_embedder(levels())  # (B, T, D)
    gate = keyed.blocks[0].gate
    weights = gate.key_weights(c)
    assert weights.shape == (2, 6, 2) and torch.allclose(weights.sum(-1), torch.full((2, 6), 2.0))
    assert weights[..., 0].std() > 1e-3  # they follow the frames' levels
    assert model("msc").blocks[0].gate.key_weights(c) is None  # the learned gate has none: its checkpoints load as before
    plain = FAMILIES["msc"].build("DiT-N/4", **{**TINY, "gate": "learned"})
    plain.load_state_dict({k: v for k, v in keyed.state_dict().items() if "key_linear" not in k})
    x, t = clips(), levels()
    assert (keyed(x, t) - plain(x, t)).abs().max() > 1e-3
    for block in keyed.blocks:  # a key gate at zero weighs every value by 1: the learned gate's model
        torch.nn.init.zeros_(block.gate.key_linear.weight)
        torch.nn.init.zeros_(block.gate.key_linear.bias)
    torch.testing.assert_close(keyed(x, t), plain(x, t), atol=1e-6, rtol=1e-5)
    fresh = FAMILIES["msc"].build("DiT-N/4", **{**TINY, "gate": "key"})
    assert all(torch.equal(b.gate.key_linear.weight, torch.zeros(2, 32)) for b in fresh.blocks)  # start: equal


def test_the_key_gate_trains():
    m = model("msc", gate="key")  # every weight nonzero: the gates are reached by the gradient at the first step
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    x, t = clips(), levels()
    before = [b.gate.key_linear.weight.detach().clone() for b in m.blocks]
    loss = (m(x, t) - x).square().mean()
    loss.backward()
    assert all(b.gate.key_linear.weight.grad.abs().sum() > 0 for b in m.blocks)
    opt.step()
    assert all(not torch.equal(w, b.gate.key_linear.weight) for w, b in zip(before, m.blocks))
    with torch.no_grad():
        assert torch.isfinite((m(x, t) - x).square().mean())


def test_a_first_key_frame_per_frame_is_for_the_dense_reference():
    m = model("msc").double()
    x, t = clips().double(), levels()
    with torch.no_grad():
        free = m(x, t, reference=True)
        same = m(x, t, reference=True, earliest=torch.zeros(6, dtype=torch.long))
        cut = m(x, t, reference=True, earliest=torch.tensor([0, 0, 0, 3, 3, 3]))  # frames 3-5 see frames 3.. only
        alone = m(x[:, 3:], t[:, 3:], start=3)
    torch.testing.assert_close(same, free, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(cut[:, :3], free[:, :3], atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(cut[:, 3:], alone, atol=1e-9, rtol=1e-9)  # as if frames 0-2 were not there
    assert (cut[:, 3:] - free[:, 3:]).abs().max() > 1e-3
    with pytest.raises(GriditError, match="a first key frame per frame \\(earliest\\) is for the dense reference"):
        m(x, t, earliest=torch.zeros(6, dtype=torch.long))


@pytest.mark.parametrize("kw, message", [
    ({"pool": 3}, "the pooling factor r = 3 does not divide the frame's 4x4 token grid"),
    ({"pool": [2, 2, 2]}, "pool lists 3 factors for 2 blocks"),
    ({"window": 0}, "the High-Res window w must be an odd number of tokens >= 1, got 0"),
    ({"window": 4}, "the High-Res window w must be an odd number of tokens >= 1, got 4"),
    ({"p_frames": -1}, "p_frames v (previous frames of the High-Res branch) must be >= 0, got -1"),
    ({"i_stride": 0}, "the I-frame stride d must be >= 1, got 0"),
    ({"high_heads": 0}, "high_heads must leave both branches a head: 1..3 of 4, got 0"),
    ({"high_heads": 4}, "high_heads must leave both branches a head: 1..3 of 4, got 4"),
    ({"gate": "max"}, "gate must be one of learned, equal, key, got 'max'"),
    ({"attention": "full"}, "msc attention must be one of msc, got 'full'"),
])  # fmt: skip
def test_msc_settings_that_cannot_work_are_refused(kw, message):
    with pytest.raises(GriditError, match=message.replace("(", r"\(").replace(")", r"\)")):
        FAMILIES["msc"].build("DiT-N/4", **{**TINY, **kw})


def test_inputs_are_checked():
    m = model("tensor")
    with pytest.raises(GriditError, match=r"the tensor model sees 6 frames at once, got 7"):
        m(clips(7), levels(7))
    with pytest.raises(GriditError, match=r"expects clips of shape \(B, T, 3, 16, 16\)"):
        m(torch.zeros(2, 3, 16, 16), levels())
    with pytest.raises(GriditError, match=r"t must have shape \(2,\) or \(2, 6\)"):
        m(clips(), torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(GriditError, match="unknown sequence architecture 'video'"):
        build_video_dit("DiT-N/4", arch="video", **TINY)


@pytest.mark.parametrize("light_cone", [False, True])
def test_reach_maps_match_the_gathered_keys(light_cone):
    from gridit_core.models.msc import _high_index, _low_index, reach

    cfg = model("msc", p_frames=2, light_cone=light_cone, i_stride=2, i_frames=2).config
    h, w = cfg.frame_tokens
    index, valid = _high_index(0, 7, (h, w), cfg.window, cfg.p_frames, cfg.light_cone)
    frames, ok = _low_index(0, 7, cfg.i_frames, cfg.i_stride)
    for f, y, x in [(0, 0, 0), (3, 1, 2), (6, 3, 3)]:
        seen = reach(cfg, 7, f, y, x)
        gathered = set(index[f, y * w + x][valid[f, y * w + x]].tolist())
        assert gathered == set(seen["high"].flatten().nonzero().flatten().tolist())
        assert set(frames[f][ok[f]].tolist()) == set(seen["low"][:, 0, 0].nonzero().flatten().tolist())
