"""Per-frame timesteps: t of shape (B, F) through the process, the stepper and the grid DiT's conditioning.

The contract: with every frame at the same level, (B, F) gives exactly what (B,) gives.
"""

import pytest
import torch

from gridit_core.diffusion import Diffusion, DiffusionConfig, Stepper
from gridit_core.errors import GriditError
from gridit_core.models import DiT, DiTConfig

pytestmark = pytest.mark.unit

B, F, C, H, W = 2, 3, 2, 4, 4


def clips(seed=0):
    return torch.randn(B, F, C, H, W, generator=torch.Generator().manual_seed(seed))


def per_frame(t):
    """The same steps as ``t (B,)``, one per frame: ``(B, F)``."""
    return t[:, None].expand(B, F).contiguous()


@pytest.fixture(params=["eps", "v", "x0"])
def diffusion(request):
    return Diffusion(DiffusionConfig(num_steps=100, schedule="cosine", prediction=request.param))


def test_q_sample_target_and_predictions_match(diffusion):
    x0, noise, t = clips(0), clips(1), torch.tensor([5, 80])
    tf = per_frame(t)
    assert torch.equal(diffusion.q_sample(x0, tf, noise), diffusion.q_sample(x0, t, noise))
    assert torch.equal(diffusion.target(x0, noise, tf), diffusion.target(x0, noise, t))
    out = clips(2)
    for a, b in zip(diffusion.predict_x0_eps(out, x0, tf), diffusion.predict_x0_eps(out, x0, t)):
        assert torch.equal(a, b)


def test_q_sample_uses_each_frames_own_level(diffusion):
    x0, noise = clips(0), clips(1)
    t = torch.tensor([[0, 50, 99], [10, 10, 20]])
    got = diffusion.q_sample(x0, t, noise)
    for i in range(B):
        for f in range(F):
            one = diffusion.q_sample(x0[i : i + 1, f], t[i : i + 1, f], noise[i : i + 1, f])
            assert torch.equal(got[i, f], one[0])


class FrameModel(torch.nn.Module):
    """A model of clips: a fixed linear map of x plus a term in t, so its output depends on both."""

    def __init__(self, channels):
        super().__init__()
        self.w = torch.nn.Parameter(torch.linspace(-1, 1, channels * channels).reshape(channels, channels))
        self.seen = []

    def forward(self, x, t, y=None):
        self.seen.append(tuple(t.shape))
        tt = t.float().reshape(*t.shape, *([1] * (x.ndim - t.ndim))) / 100
        return torch.einsum("dc,...chw->...dhw", self.w, x) + tt


@pytest.mark.parametrize("learn_sigma", [False, True])
def test_training_losses_per_frame_equal_levels_match(learn_sigma):
    diffusion = Diffusion(DiffusionConfig(num_steps=100, learn_sigma=learn_sigma, loss_weighting="min-snr"))
    model = FrameModel(2 * C if learn_sigma else C)
    x0, noise, t = clips(0), clips(1), torch.tensor([0, 42])
    if learn_sigma:  # the model maps C channels to 2C: repeat the input channels
        net = lambda x, t, y=None: model(torch.cat([x, x], dim=2), t)  # noqa: E731
    else:
        net = model
    a = diffusion.training_losses(net, x0, t, noise=noise)
    b = diffusion.training_losses(net, x0, per_frame(t), noise=noise)
    assert set(a) == set(b) == ({"loss", "mse", "vb"} if learn_sigma else {"loss", "mse"})
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_training_losses_draw_one_level_per_frame():
    diffusion = Diffusion(DiffusionConfig(num_steps=100))
    model = FrameModel(C)
    losses = diffusion.training_losses(model, clips(), generator=torch.Generator().manual_seed(0), per_frame=True)
    assert model.seen == [(B, F)] and losses["loss"].shape == (B,)
    with pytest.raises(GriditError, match=r"per-frame timesteps need clips \(N, F, C, H, W\)"):
        diffusion.training_losses(model, clips()[:, 0], per_frame=True)
    with pytest.raises(GriditError, match=r"t must be an integer tensor of shape \(2\) or \(2, 3\)"):
        diffusion.training_losses(model, clips(), torch.zeros(B, F + 1, dtype=torch.long))


@pytest.mark.parametrize("sampler,eta", [("ddpm", 0.0), ("ddim", 0.0), ("ddim", 1.0)])
@pytest.mark.parametrize("learned", [False, True])
def test_stepper_per_frame_equal_levels_match(diffusion, sampler, eta, learned):
    x, out = clips(0), clips(1)
    if learned:
        out = torch.cat([out, clips(2).clamp(-1, 1)], dim=2)  # 2C channels: learned variance
    for t in Stepper(diffusion, sampler, 5, eta).timesteps:
        results = []
        for tt in (t, torch.full((B,), t), torch.full((B, F), t)):
            stepper = Stepper(diffusion, sampler, 5, eta, torch.Generator().manual_seed(3))
            results.append((*stepper.step_with_x0(out, tt, x), stepper.add_noise(x, tt), stepper.renoise(x, tt)))
        for other in results[1:]:
            for a, b in zip(results[0], other):
                assert torch.equal(a, b), (sampler, eta, t)


def test_stepper_moves_each_frame_from_its_own_step(diffusion):
    stepper = Stepper(diffusion, "ddim", 5)
    ts = stepper.timesteps
    x, out = clips(0), clips(1)
    t = torch.tensor([[ts[0], ts[2], ts[4]], [ts[1], ts[1], ts[3]]])
    got = stepper.step(out, t, x)
    for i in range(B):
        for f in range(F):
            one = stepper.step(out[i : i + 1, f], int(t[i, f]), x[i : i + 1, f])
            assert torch.allclose(got[i, f], one[0], atol=1e-6, rtol=0)
    assert stepper.index(t).tolist() == [[0, 2, 4], [1, 1, 3]]
    with pytest.raises(GriditError, match="timestep 7 is not one of this stepper's timesteps"):
        stepper.step(out, torch.full((B, F), 7), x)


def test_final_ddpm_step_adds_no_noise_only_where_the_frame_ends():
    diffusion = Diffusion(DiffusionConfig(num_steps=100))
    stepper = Stepper(diffusion, "ddpm", 4, generator=torch.Generator().manual_seed(0))
    last, first = stepper.timesteps[-1], stepper.timesteps[0]
    x, out = clips(0), clips(1)
    t = torch.tensor([[last, first, last], [first, last, first]])
    mixed = stepper.step(out, t, x)
    plain = Stepper(diffusion, "ddpm", 4).step(out, last, x)  # the posterior mean, no noise
    ends = t == last
    assert torch.allclose(mixed[ends], plain[ends], atol=1e-6, rtol=0)
    assert not torch.allclose(mixed[~ends], Stepper(diffusion, "ddpm", 4).step(out, first, x)[~ends])


def grid_dit(**kw):
    torch.manual_seed(0)
    cfg = dict(input_size=(8, 12), patch_size=2, in_channels=3, rows=2, cols=3, depth=2, hidden_size=32, num_heads=2,
               learn_sigma=False)  # fmt: skip
    model = DiT(DiTConfig(**{**cfg, **kw})).eval()
    for p in model.parameters():  # adaLN-Zero starts as the identity: give every weight a value so t matters
        p.data.normal_(0, 0.2, generator=torch.Generator().manual_seed(p.numel()))
    return model


@pytest.mark.parametrize("extra", [{}, {"num_classes": 3}, {"aug_cond": True}])
def test_grid_dit_per_frame_steps_equal_levels_match(extra):
    model = grid_dit(**extra).double()
    x = torch.randn(2, 3, 8, 12, generator=torch.Generator().manual_seed(1)).double()
    t = torch.tensor([7, 900])
    kw = {}
    if "num_classes" in extra:
        kw["y"] = torch.tensor([0, 2])
    if "aug_cond" in extra:
        kw["aug_level"] = torch.tensor([0.1, 0.3])
    with torch.no_grad():
        a = model(x, t, **kw)
        b = model(x, t[:, None].expand(2, 6), **kw)
    # equal up to float rounding: the per-frame adaLN projections are one matrix product over all frames, and a
    # product of another shape may sum in another order, by an amount that depends on the CPU's kernels. In float64
    # that is ~1e-15 of the largest value (1e-12 leaves room for any kernel); one frame one step off moves it by 0.2.
    assert (a - b).abs().max() <= 1e-12 * a.abs().max()


def test_grid_dit_per_frame_steps_condition_each_frame():
    model = grid_dit()
    x = torch.randn(1, 3, 8, 12, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([[10, 10, 10, 10, 10, 10]])
    t2 = t.clone()
    t2[0, 4] = 800  # frame 4 sits at row 1, column 1 of the 2x3 grid
    with torch.no_grad():
        a, b = model(x, t), model(x, t2)
    changed = (a - b).abs().amax(dim=(0, 1)) > 1e-6  # (8, 12) pixels that moved
    assert changed[4:8, 4:8].all()  # the frame whose level changed; attention spreads some change to the rest
    with pytest.raises(GriditError, match=r"t must have shape \(1,\), or \(1, 6\) with one step per frame"):
        model(x, torch.zeros(1, 5, dtype=torch.long))
