"""Sequences from the sequence families: Diffusion Forcing schedules, MSC's cached rollout against the uncached one,
and the tensor model's sliding windows."""

import pytest
import torch

from gridit_core.diffusion import Diffusion, DiffusionConfig
from gridit_core.errors import GriditError
from gridit_core.sampling import FAMILIES, SampleConfig, generate_frames, sample_sequence
from gridit_core.sampling.rollout import active_frames, causal_frames, level_matrix

pytestmark = pytest.mark.unit

TINY = dict(frame_size=8, frames=6, in_channels=3, depth=2, hidden_size=32, num_heads=4, patch_size=4)


def model(arch="msc", **kw):
    torch.manual_seed(0)
    m = FAMILIES[arch].build("DiT-N/4", **{**TINY, **kw}).eval()
    g = torch.Generator().manual_seed(1)
    for p in m.parameters():
        p.data.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return m


@pytest.fixture(scope="module")
def diffusion():
    return Diffusion(DiffusionConfig(num_steps=100, schedule="cosine", prediction="v"))


@pytest.fixture
def float64_noise(monkeypatch):
    """The rollout's noise drawn in float64, for a float64 model: the cached and uncached passes sum attention in
    different orders, which in float32 leaves them apart by rounding that depends on the CPU's kernels; in float64
    they agree to ~1e-15."""

    def draw(shape, generator=None, device=None):
        return torch.randn(shape, generator=generator, dtype=torch.float64).to(device)

    monkeypatch.setattr("gridit_core.sampling.rollout.randn", draw)


def rollouts(m, diffusion, n, settings):
    """The cached and the uncached rollout of ``n`` frames, two sequences, seed 5: ``(2, n, C, H, W)`` each."""
    cached = torch.stack(list(generate_frames(m, diffusion, n, n_sequences=2, seed=5, progress=False, **settings)), 1)
    uncached = torch.stack(list(causal_frames(m, diffusion, n, SampleConfig(**settings), n_sequences=2, seed=5,
                                              progress=False, cache=False)), 1)  # fmt: skip
    return cached, uncached


def test_level_matrices():
    ar = level_matrix("autoregressive", 4, 2, 3)
    assert ar.tolist() == [[3, 3, 3, 3], [2, 2, 3, 3], [1, 1, 3, 3], [0, 0, 3, 3], [0, 0, 2, 2], [0, 0, 1, 1], [0, 0, 0, 0]]
    pyramid = level_matrix("pyramid", 3, 1, 2)
    assert pyramid.tolist() == [[2, 2, 2], [1, 2, 2], [0, 1, 2], [0, 0, 1], [0, 0, 0]]
    assert level_matrix("full", 3, 1, 2).tolist() == [[2, 2, 2], [1, 1, 1], [0, 0, 0]]


@pytest.mark.parametrize("schedule", ["autoregressive", "pyramid", "full"])
@pytest.mark.parametrize("n_frames,chunk,steps", [(7, 1, 3), (7, 3, 2), (5, 2, 4), (1, 1, 1)])
def test_the_rollout_walks_the_scheduling_matrix_row_by_row(schedule, n_frames, chunk, steps):
    levels = level_matrix(schedule, n_frames, chunk, steps)  # (M+1, N)
    for m in range(len(levels) - 1):
        moving = (levels[m + 1] < levels[m]).nonzero().flatten().tolist()
        assert list(range(*active_frames(schedule, m, n_frames, chunk, steps))) == moving


@pytest.mark.parametrize("settings", [
    dict(schedule="autoregressive", chunk=1, sampler="ddim"),
    dict(schedule="autoregressive", chunk=3, sampler="ddpm"),
    dict(schedule="pyramid", chunk=2, sampler="ddim", eta=1.0),
    dict(schedule="autoregressive", chunk=2, sampler="ddpm", context_noise=0.1),
    dict(schedule="autoregressive", chunk=1, sampler="ddim", context_noise=0.014, context_mode="scaled"),
])  # fmt: skip
def test_cached_rollout_equals_the_uncached_one(diffusion, settings, float64_noise):
    m = model("msc", light_cone=True, pool=[1, 2]).double()  # float64: see float64_noise
    n = 11  # longer than the model's span of 4 frames: the cache evicts
    kw = dict(n_sequences=2, seed=5, steps=3, progress=False, **settings)
    cached, uncached = rollouts(m, diffusion, n, {"steps": 3, **settings})
    assert cached.shape == (2, n, 3, 8, 8)
    assert cached.dtype == torch.float64
    # 1e-9: far above float64 rounding, far below what a wrong cache does (one frame too few moves frames by > 1e-4)
    torch.testing.assert_close(cached, uncached, atol=1e-9, rtol=1e-9)
    again = torch.stack(list(generate_frames(m, diffusion, n, **kw)), 1)
    assert torch.equal(cached, again)  # same seed, same frames
    other = torch.stack(list(generate_frames(m, diffusion, n, **{**kw, "seed": 6})), 1)
    assert not torch.equal(cached, other)


@pytest.mark.parametrize("kw, settings", [
    ({}, dict(schedule="autoregressive", chunk=1, context=0)),
    ({}, dict(schedule="autoregressive", chunk=1, context=2, context_noise=0.1)),
    ({"light_cone": True, "pool": [1, 2]}, dict(schedule="autoregressive", chunk=3, sampler="ddpm", context=1)),
    ({}, dict(schedule="pyramid", chunk=2, context=1, context_noise=0.1)),
    ({"gate": "key"}, dict(schedule="autoregressive", chunk=2, context=1, context_noise=0.014, context_mode="scaled")),
])  # fmt: skip
def test_a_context_below_the_span_is_honoured_by_the_uncached_rollout_too(diffusion, kw, settings, float64_noise):
    m = model("msc", **kw).double()  # span 4: p_frames 1, 2 I-frames 2 apart
    cached, uncached = rollouts(m, diffusion, 8, {"steps": 2, **settings})
    torch.testing.assert_close(cached, uncached, atol=1e-9, rtol=1e-9)  # ~1e-15 apart on any CPU; see float64_noise
    whole = torch.stack(list(generate_frames(m, diffusion, 8, n_sequences=2, seed=5, progress=False,
                                             **{"steps": 2, **settings, "context": None})), 1)  # fmt: skip
    assert (cached - whole).abs().max() > 1e-4  # the context changes the frames: a reference ignoring it would differ


@pytest.mark.parametrize("mode", ["noised", "scaled"])
def test_context_frames_are_noised_once_or_only_scaled(diffusion, mode, float64_noise):
    m = model("msc").double()
    written = []
    forward = m.forward

    def spy(x, t, *args, write=False, **kwargs):
        if write:
            written.append((x.clone(), t.clone()))
        return forward(x, t, *args, write=write, **kwargs)

    m.forward = spy
    frames = torch.stack(list(generate_frames(m, diffusion, 4, steps=2, context_noise=0.05, context_mode=mode,
                                              progress=False)), 1)  # fmt: skip
    seen = torch.cat([x for x, _ in written], 1)  # (1, 4, C, H, W): the frames as context, each once
    assert all((t == 5).all() for _, t in written)  # round(0.05 * 99)
    scaled = diffusion.alphas_cumprod[5].sqrt() * frames
    if mode == "scaled":  # Diffusion Forcing's DDIM path: x * sqrt(alpha_bar_t), no draw
        torch.testing.assert_close(seen, scaled.to(seen.dtype), atol=1e-12, rtol=1e-12)
    else:  # one Gaussian draw at that level
        assert (seen - scaled).abs().max() > 1e-2
    with pytest.raises(GriditError, match="unknown context mode 'fixed'; choose one of noised, scaled"):
        SampleConfig(context_mode="fixed")


@pytest.mark.slow
def test_three_hundred_frames_from_a_model_of_six(diffusion):
    m = model("msc")
    frames = sample_sequence(m, diffusion, 300, steps=2, progress=False)
    assert frames.shape == (1, 300, 3, 8, 8) and torch.isfinite(frames).all()
    assert frames[0, 290:].std() > 0  # still generating, not collapsed to a constant


def test_full_schedule_is_bounded_by_the_training_length(diffusion):
    m = model("msc")
    assert sample_sequence(m, diffusion, 6, steps=2, schedule="full", progress=False).shape == (1, 6, 3, 8, 8)
    with pytest.raises(GriditError, match="the full schedule denoises all frames at once: at most the training length 6"):
        sample_sequence(m, diffusion, 7, steps=2, schedule="full", progress=False)
    with pytest.raises(GriditError, match="context 9 exceeds what the model can see \\(4 frames\\)"):
        sample_sequence(m, diffusion, 7, steps=2, context=9, progress=False)


def test_tensor_windows_carry_their_known_frames(diffusion):
    m = model("tensor")
    finals = {}

    def keep(info):
        if info["i"] == info["steps"] - 1:
            finals[info["unit"]] = info["x"].clone()

    frames = torch.stack(list(generate_frames(m, diffusion, 13, steps=3, overlap=2, seed=1, progress=False,
                                              callback=keep)), 1)  # fmt: skip
    assert frames.shape == (1, 13, 3, 8, 8)
    assert sorted(finals) == [0, 1, 2]  # 6 frames, then 4 new per window: 6 + 4 + 4 >= 13
    for w in (1, 2):
        assert torch.equal(finals[w][:, :2], finals[w - 1][:, 4:])  # each window starts from the last one's end
    assert torch.equal(frames[:, 6:10], finals[1][:, 2:].clamp(-1, 1))


def test_settings_of_another_family_are_refused(diffusion):
    with pytest.raises(GriditError, match="sampling settings a tensor model does not use: schedule is for msc models"):
        sample_sequence(model("tensor"), diffusion, 4, schedule="pyramid", progress=False)
    with pytest.raises(GriditError, match="sampling settings a msc model does not use: interpolate is for grid models"):
        sample_sequence(model("msc"), diffusion, 4, interpolate=True, progress=False)
    with pytest.raises(GriditError, match=r"overlap must be in 0..5 for a model of 6 frames, got 6"):
        sample_sequence(model("tensor"), diffusion, 4, overlap=6, progress=False)
