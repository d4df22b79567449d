"""Tests for gridit_core.diffusion and gridit_core.samplers, with tiny tensors and stand-in denoisers."""

import math
import re

import pytest
import torch
from torch import nn

from gridit_core.diffusion import Diffusion, DiffusionConfig
from gridit_core.diffusion.samplers import SAMPLERS, Stepper, ddim_sample, ddpm_sample, sample
from gridit_core.errors import GriditError
from gridit_core.grid import GridLayout

pytestmark = pytest.mark.unit

SHAPE = (2, 3, 8, 8)


def seeded(seed):
    return torch.Generator().manual_seed(seed)


class TinyNet(nn.Module):
    """A small conv net standing in for the DiT; counts calls and the batch sizes it sees."""

    def __init__(self, channels=3, learn_sigma=False, num_classes=0):
        super().__init__()
        torch.manual_seed(0)
        self.learn_sigma, self.num_classes = learn_sigma, num_classes
        self.conv = nn.Conv2d(channels, channels * (2 if learn_sigma else 1), 3, padding=1)
        self.label = nn.Embedding(num_classes + 1, channels) if num_classes else None
        self.batches = []

    def forward(self, x, t, y=None):
        self.batches.append(x.shape[0])
        out = torch.tanh(self.conv(x)) + 0.001 * t.float().reshape(-1, 1, 1, 1)
        if self.label is not None and y is not None:
            emb = self.label(y)[:, :, None, None]  # (N, C, 1, 1)
            out = out + torch.cat([emb] * (out.shape[1] // emb.shape[1]), dim=1)
        return out


class ConstantDataDenoiser:
    """The exact denoiser when all data equal ``value``: x0 is known, so eps follows from x_t."""

    def __init__(self, diffusion, value):
        self.diffusion, self.value, self.calls = diffusion, value, 0

    def __call__(self, x, t, y=None):
        self.calls += 1
        x0 = torch.full_like(x, self.value)
        acp = self.diffusion.alphas_cumprod[t].to(x.dtype).reshape(-1, 1, 1, 1)
        eps = (x - acp.sqrt() * x0) / (1 - acp).sqrt()
        return self.diffusion.target(x0, eps, t)


# ---- configuration and schedules ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"schedule": "quadratic"}, "unknown schedule 'quadratic'; choose one of linear, cosine"),
        ({"prediction": "score"}, "unknown prediction 'score'; choose one of eps, v, x0"),
        ({"loss_weighting": "snr"}, "unknown loss_weighting 'snr'; choose one of none, min-snr"),
        ({"num_steps": 1}, "num_steps must be an integer >= 2, got 1"),
        ({"num_steps": 10}, "the linear schedule needs num_steps > 20 (beta_max = 20/T), got 10"),  # betas would exceed 1
        ({"vlb_weight": -1.0}, "vlb_weight must be >= 0, got -1.0"),
        ({"min_snr_gamma": 0.0}, "min_snr_gamma must be positive, got 0.0"),
    ],
)
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(GriditError, match=re.escape(message)):
        DiffusionConfig(**kwargs)


def test_linear_schedule_endpoints_and_rescaling():
    d = Diffusion()
    assert d.betas.dtype == torch.float64 and d.betas.shape == (1000,)
    assert d.betas[0].item() == 1e-4 and d.betas[-1].item() == 0.02  # linspace's ends are its arguments
    half = Diffusion(DiffusionConfig(num_steps=500))
    assert half.betas[0].item() == 2e-4 and half.betas[-1].item() == 0.04  # scaled by 1000/500 = 2, exactly
    assert torch.allclose(d.alphas_cumprod, torch.cumprod(1 - d.betas, 0))


def test_cosine_schedule():
    d = Diffusion(DiffusionConfig(schedule="cosine", num_steps=100))
    acp = d.alphas_cumprod
    assert (acp[1:] < acp[:-1]).all() and acp[0] > 0.999 and acp[-1] < 1e-3
    assert d.betas.max() <= 0.999
    assert d.posterior_variance[0] == 0 and torch.isfinite(d.posterior_log_variance_clipped).all()


# ---- forward process and prediction conversions ------------------------------------------------------------------


def test_q_sample_statistics():
    d = Diffusion()
    x0 = torch.full((4000, 1, 4, 4), 0.5)
    t = torch.full((4000,), 300)
    xt = d.q_sample(x0, t, torch.randn(x0.shape, generator=seeded(0)))
    acp = d.alphas_cumprod[300].item()
    assert xt.mean().item() == pytest.approx(0.5 * math.sqrt(acp), abs=0.01)
    assert xt.std().item() == pytest.approx(math.sqrt(1 - acp), rel=0.02)


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
@pytest.mark.parametrize("extra_channels", [False, True])
def test_predict_x0_eps_inverts_q_sample(prediction, extra_channels):
    d = Diffusion(DiffusionConfig(prediction=prediction, schedule="cosine"))
    g = seeded(1)
    x0 = torch.rand(SHAPE, generator=g, dtype=torch.float64) * 2 - 1
    noise = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 998])
    xt = d.q_sample(x0, t, noise)
    out = d.target(x0, noise, t)
    if extra_channels:  # a learned-sigma output: the variance channels must be ignored
        out = torch.cat([out, torch.full_like(out, 7.0)], dim=1)
    x0_hat, eps_hat = d.predict_x0_eps(out, xt, t)
    assert torch.allclose(x0_hat, x0, atol=1e-6) and torch.allclose(eps_hat, noise, atol=1e-6)


# ---- training loss ----------------------------------------------------------------------------------------------


def oracle(diffusion, x0, noise, learn_sigma=False):
    """A model that returns the true target (and v = -1, i.e. the true posterior variance, if it learns sigma)."""

    def model(x, t, y=None):
        target = diffusion.target(x0, noise, t)
        return torch.cat([target, -torch.ones_like(target)], 1) if learn_sigma else target

    return model


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
@pytest.mark.parametrize("learn_sigma", [False, True])
@pytest.mark.parametrize("weighting", ["none", "min-snr"])
def test_training_losses_vanish_for_an_oracle(prediction, learn_sigma, weighting):
    cfg = DiffusionConfig(prediction=prediction, learn_sigma=learn_sigma, loss_weighting=weighting)
    d = Diffusion(cfg)
    x0 = torch.rand(SHAPE, generator=seeded(2)) * 2 - 1
    noise = torch.randn(SHAPE, generator=seeded(3))
    t = torch.tensor([1, 700])  # t = 0 would score the decoder NLL, which is never 0
    terms = d.training_losses(oracle(d, x0, noise, learn_sigma), x0, t, noise=noise)
    assert set(terms) == ({"loss", "mse", "vb"} if learn_sigma else {"loss", "mse"})
    assert terms["loss"].shape == (2,) and terms["loss"].abs().max() < 1e-5
    model = TinyNet(learn_sigma=learn_sigma)
    terms = d.training_losses(model, x0, t, noise=noise)
    assert (terms["loss"] > 0).all() and (terms["mse"] > 0).all()


def test_training_losses_draw_t_and_noise_from_the_generator():
    d = Diffusion(DiffusionConfig(learn_sigma=True))
    model, x0 = TinyNet(learn_sigma=True), torch.zeros(SHAPE)
    a = d.training_losses(model, x0, generator=seeded(5))["loss"]
    b = d.training_losses(model, x0, generator=seeded(5))["loss"]
    c = d.training_losses(model, x0, generator=seeded(6))["loss"]
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(GriditError, match=re.escape("timesteps must lie in 0..999, got 0..1000")):
        d.training_losses(model, x0, torch.tensor([0, 1000]))
    with pytest.raises(GriditError, match=re.escape("model output (2, 3, 8, 8) should be (2, 6, 8, 8) for this config")):
        d.training_losses(TinyNet(learn_sigma=False), x0)  # C channels where 2C are needed


def test_vlb_term_trains_only_the_variance():
    d = Diffusion(DiffusionConfig(learn_sigma=True, vlb_weight=1.0))
    mean_param, var_param = nn.Parameter(torch.tensor(0.3)), nn.Parameter(torch.tensor(0.2))

    def model(x, t, y=None):
        return torch.cat([mean_param * torch.ones_like(x), var_param * torch.ones_like(x)], 1)

    x0 = torch.rand(SHAPE, generator=seeded(4))
    terms = d.training_losses(model, x0, torch.tensor([0, 500]), generator=seeded(4))
    terms["vb"].sum().backward()
    assert (mean_param.grad is None or mean_param.grad == 0) and var_param.grad.abs() > 0
    assert terms["loss"].allclose(terms["mse"] + 1000 * terms["vb"])  # lambda * T * L_t


def test_min_snr_weights():
    for schedule in ("linear", "cosine"):
        for prediction in ("eps", "v", "x0"):
            cfg = DiffusionConfig(schedule=schedule, prediction=prediction, loss_weighting="min-snr")
            w = Diffusion(cfg).loss_weight(torch.arange(1000))
            assert torch.isfinite(w).all() and (w > 0).all()
    d = Diffusion(DiffusionConfig(loss_weighting="min-snr"))
    snr = d.snr(torch.tensor([10, 999]))
    assert d.loss_weight(torch.tensor([10, 999])).tolist() == pytest.approx([5 / snr[0].item(), 1.0])


def test_loss_mask_averages_over_masked_pixels_only():
    d = Diffusion()
    x0, noise = torch.zeros(SHAPE), torch.randn(SHAPE, generator=seeded(7))
    mask = GridLayout(2, 2, 4, 4).cell_mask([3]).float()[None]  # (1, 1, 8, 8): the last cell is masked in

    def model(x, t, y=None):  # wrong by 1 in the masked cell and by 5 elsewhere
        return noise + 1 + 4 * (1 - mask)

    terms = d.training_losses(model, x0, torch.tensor([3, 4]), noise=noise, loss_mask=mask)
    assert terms["mse"].tolist() == pytest.approx([1.0, 1.0])


# ---- respacing ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 7, 50, 1000])
def test_timesteps_for_counts(n):
    ts = Diffusion().timesteps_for(n)
    assert len(ts) == n and ts[0] == 999 and all(a > b for a, b in zip(ts, ts[1:]))
    if n > 1:
        assert ts[-1] == 0 and max(a - b for a, b in zip(ts, ts[1:])) - min(a - b for a, b in zip(ts, ts[1:])) <= 1


def test_timesteps_for_every_count_is_distinct_and_errors():
    d = Diffusion(DiffusionConfig(num_steps=100))
    assert all(len(set(d.timesteps_for(n))) == n for n in range(1, 101))
    for bad in (0, 101, 2.5, True):
        with pytest.raises(GriditError, match=re.escape(f"an integer in 1..100, got {bad!r}")):
            d.timesteps_for(bad)


def test_respaced_tables():
    d = Diffusion(DiffusionConfig(schedule="cosine"))
    full = d.respaced(d.timesteps_for(1000))
    assert torch.allclose(full["betas"].flip(0), d.betas)
    assert torch.allclose(full["posterior_log_variance_clipped"].flip(0), d.posterior_log_variance_clipped)
    ts = d.timesteps_for(7)
    tab = d.respaced(ts)
    assert torch.allclose(tab["alphas_cumprod"], d.alphas_cumprod[ts])
    assert tab["betas"][0].item() == pytest.approx(1 - (d.alphas_cumprod[ts[0]] / d.alphas_cumprod[ts[1]]).item())
    assert tab["alphas_cumprod_prev"][-1] == 1


# ---- samplers ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_oracle_denoiser_recovers_a_single_point_distribution(prediction, sampler):
    d = Diffusion(DiffusionConfig(prediction=prediction))
    out = sample(d, ConstantDataDenoiser(d, 0.3), SHAPE, sampler=sampler, steps=10, generator=seeded(0))
    assert torch.allclose(out, torch.full(SHAPE, 0.3), atol=1e-4)


@pytest.mark.parametrize("sampler,extra", [("ddim", {"eta": 0.0}), ("ddim", {"eta": 0.5}), ("ddpm", {})])
def test_same_seed_same_sample(sampler, extra):
    d, model = Diffusion(), TinyNet()
    a, b, c = (sample(d, model, SHAPE, sampler=sampler, steps=5, generator=seeded(s), **extra) for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_ddim_eta_one_matches_ddpm():
    d, model = Diffusion(), TinyNet()
    a = ddim_sample(d, model, SHAPE, steps=8, eta=1.0, generator=seeded(3))
    b = ddpm_sample(d, model, SHAPE, steps=8, generator=seeded(3))
    assert torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_known_region_and_repaint_resampling(sampler):
    d, model = Diffusion(), TinyNet()
    known = torch.rand(SHAPE, generator=seeded(4)) * 2 - 1
    mask = GridLayout(2, 2, 4, 4).cell_mask([0, 1, 2])  # (1, 8, 8): three of four cells known
    for resample in (1, 2):
        model.batches.clear()
        out = sample(d, model, SHAPE, sampler=sampler, steps=6, known=known, known_mask=mask, resample=resample)
        m = mask.expand(SHAPE)
        assert torch.equal(out[m], known[m]) and not torch.allclose(out[~m], known[~m])
        assert len(model.batches) == resample * 5 + 1  # the final step is never repeated
    with pytest.raises(GriditError, match="known and known_mask must be given together"):
        sample(d, model, SHAPE, sampler=sampler, steps=2, known=known)


def test_cfg_is_skipped_for_unconditional_models():
    d, uncond = Diffusion(), TinyNet()
    y = torch.tensor([0, 1])
    plain = ddim_sample(d, uncond, SHAPE, steps=4, generator=seeded(0))
    guided = ddim_sample(d, uncond, SHAPE, steps=4, y=y, guidance_scale=4.0, generator=seeded(0))
    assert uncond.batches == [2] * 8 and torch.equal(plain, guided)
    cond = TinyNet(num_classes=3)
    ddim_sample(d, cond, SHAPE, steps=4, guidance_scale=4.0, generator=seeded(0))  # y=None: nothing to guide
    assert cond.batches == [2] * 4


def test_cfg_is_applied_for_conditional_models():
    d = Diffusion(DiffusionConfig(learn_sigma=True))
    cond = TinyNet(learn_sigma=True, num_classes=3)
    y = torch.tensor([0, 2])
    one = ddpm_sample(d, cond, SHAPE, steps=4, y=y, guidance_scale=1.0, generator=seeded(0))
    assert cond.batches == [2] * 4
    cond.batches.clear()
    four = ddpm_sample(d, cond, SHAPE, steps=4, y=y, guidance_scale=4.0, generator=seeded(0))
    assert cond.batches == [4] * 4 and not torch.allclose(one, four)


def test_callback_sees_every_step():
    d, seen = Diffusion(), []
    out = ddim_sample(d, TinyNet(), SHAPE, steps=7, callback=seen.append, generator=seeded(0))
    assert [s["i"] for s in seen] == list(range(7)) and all(s["steps"] == 7 for s in seen)
    assert [s["t"] for s in seen] == d.timesteps_for(7) and torch.equal(seen[-1]["x"], out)
    assert seen[-1]["x0_pred"].shape == SHAPE and seen[0]["x0_pred"].abs().max() <= 1


def test_learned_sigma_path():
    d = Diffusion(DiffusionConfig(learn_sigma=True))
    model = TinyNet(learn_sigma=True)
    out = ddpm_sample(d, model, SHAPE, steps=5, generator=seeded(0))
    assert out.shape == SHAPE and torch.isfinite(out).all()
    base = TinyNet()

    def learned(v):
        return lambda x, t, y=None: torch.cat([base(x, t), torch.full_like(x, v)], 1)

    fixed = ddpm_sample(d, base, SHAPE, steps=5, generator=seeded(0))
    # v = -1 selects the clipped posterior variance, which is the fixed-variance sampler's; v = 1 selects beta.
    assert torch.allclose(ddpm_sample(d, learned(-1.0), SHAPE, steps=5, generator=seeded(0)), fixed, atol=1e-6)
    assert not torch.allclose(ddpm_sample(d, learned(1.0), SHAPE, steps=5, generator=seeded(0)), fixed, atol=1e-3)


@pytest.mark.parametrize("kind,eta", [("ddim", 0.0), ("ddim", 0.7), ("ddpm", 0.0)])
def test_stepper_matches_the_sampler_bit_for_bit(kind, eta):
    d, model = Diffusion(DiffusionConfig(prediction="v")), TinyNet()
    g = seeded(9)
    stepper = Stepper(d, kind, 6, eta, g)
    x = torch.randn(SHAPE, generator=g)
    for t in stepper.timesteps:
        with torch.no_grad():
            x = stepper.step(model(x, torch.full((2,), t)), t, x)
    ref = SAMPLERS[kind](d, model, SHAPE, steps=6, generator=seeded(9), **({"eta": eta} if kind == "ddim" else {}))
    assert torch.equal(x, ref)
    with pytest.raises(GriditError, match="timestep 5 is not one of this stepper's timesteps"):
        stepper.step(x, 5, x)


def test_bad_sampler_arguments():
    d, model = Diffusion(), TinyNet()
    with pytest.raises(GriditError, match="unknown sampler 'euler'; choose one of ddpm, ddim"):
        sample(d, model, SHAPE, sampler="euler")
    with pytest.raises(GriditError, match=re.escape("eta must lie in [0, 1], got 1.5")):
        Stepper(d, "ddim", 10, eta=1.5)
    with pytest.raises(GriditError, match=re.escape("the number of sampling steps must be an integer in 1..1000, got 0")):
        ddim_sample(d, model, SHAPE, steps=0)
    with pytest.raises(GriditError, match="resample must be an integer >= 1, got 0"):
        ddim_sample(d, model, SHAPE, steps=3, resample=0)
