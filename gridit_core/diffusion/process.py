"""Gaussian diffusion for GriDiT: noise schedules, the forward process, the training loss and timestep respacing.

Papers implemented here: DDPM (Ho et al. 2020), IDDPM (Nichol & Dhariwal 2021: cosine schedule, learned-range
variance, hybrid loss, respacing), v-prediction (Salimans & Ho 2022) and min-SNR weighting (Hang et al. 2023).
The samplers that use these tables live in ``gridit_core.diffusion.samplers``.

Timesteps are integers on the original scale ``0 .. T-1``, one per sample ``(N,)`` with samples ``(N, C, H, W)``, or
one per frame ``(N, F)`` with samples ``(N, F, C, H, W)`` (Diffusion Forcing's independent noise levels); timestep ``t`` has ``alphas_cumprod[t]`` (the signal
fraction after ``t + 1`` noising steps), so even ``t = 0`` is slightly noisy and sampling ends on clean ``x_0``.
Tables are float64 on the CPU and are cast to the dtype and device of the tensor they meet.
"""

import math
from dataclasses import dataclass

import torch

from gridit_core.errors import GriditError
from gridit_core.util.rng import randint, randn

SCHEDULES = ("linear", "cosine")
PREDICTIONS = ("eps", "v", "x0")
LOSS_WEIGHTINGS = ("none", "min-snr")


@dataclass
class DiffusionConfig:
    """Settings of the diffusion process and its training loss; the defaults are DiT's (IDDPM linear schedule)."""

    num_steps: int = 1000  # T, the number of training timesteps
    schedule: str = "linear"  # "linear" (DDPM, rescaled by 1000/T) or "cosine" (IDDPM, s = 0.008)
    prediction: str = "eps"  # what the network predicts: "eps", "v" or "x0"
    learn_sigma: bool = False  # the network also outputs C channels of IDDPM variance interpolation
    loss_weighting: str = "none"  # "none" or "min-snr" (Hang et al. 2023)
    min_snr_gamma: float = 5.0  # gamma of min-SNR weighting
    vlb_weight: float = 0.001  # lambda of the IDDPM hybrid loss; used only with learn_sigma

    def __post_init__(self):
        if isinstance(self.num_steps, bool) or not isinstance(self.num_steps, int) or self.num_steps < 2:
            raise GriditError(f"num_steps must be an integer >= 2, got {self.num_steps!r}")
        if self.schedule not in SCHEDULES:
            raise GriditError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if self.schedule == "linear" and self.num_steps <= 20:
            raise GriditError(f"the linear schedule needs num_steps > 20 (beta_max = 20/T), got {self.num_steps}")
        if self.prediction not in PREDICTIONS:
            raise GriditError(f"unknown prediction {self.prediction!r}; choose one of {', '.join(PREDICTIONS)}")
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            raise GriditError(
                f"unknown loss_weighting {self.loss_weighting!r}; choose one of {', '.join(LOSS_WEIGHTINGS)}"
            )
        if not self.min_snr_gamma > 0:
            raise GriditError(f"min_snr_gamma must be positive, got {self.min_snr_gamma}")
        if not self.vlb_weight >= 0:
            raise GriditError(f"vlb_weight must be >= 0, got {self.vlb_weight}")


def make_betas(schedule, num_steps):
    """The float64 beta table ``(T,)`` of a named schedule."""
    if schedule == "linear":  # DDPM's 1e-4 .. 0.02 for T = 1000, scaled so other T keep the same total noise
        scale = 1000 / num_steps
        return torch.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=torch.float64)
    if schedule == "cosine":  # IDDPM eq. 17, betas clipped at 0.999 to avoid a singularity at t = T
        s = 0.008
        steps = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
        abar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        return (1 - abar[1:] / abar[:-1]).clamp(max=0.999)
    raise GriditError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")


def process_tables(betas):
    """Forward and posterior tables of a process with ``betas`` ``(K,)`` in ascending time (DDPM eqs. 4, 6, 7)."""
    acp = torch.cumprod(1 - betas, dim=0)
    acp_prev = torch.cat([acp.new_ones(1), acp[:-1]])
    var = betas * (1 - acp_prev) / (1 - acp)  # beta_tilde; 0 at the first step
    # IDDPM clips the log: beta_tilde is 0 at the first step, so that step borrows the next one's value.
    clipped = torch.cat([var[1:2], var[1:]]) if len(betas) > 1 else betas
    return {
        "betas": betas,
        "alphas_cumprod": acp,
        "alphas_cumprod_prev": acp_prev,
        "posterior_variance": var,
        "posterior_log_variance_clipped": clipped.log(),
        "posterior_mean_coef1": betas * acp_prev.sqrt() / (1 - acp),  # multiplies x_0
        "posterior_mean_coef2": (1 - acp_prev) * (1 - betas).sqrt() / (1 - acp),  # multiplies x_t
    }


def learned_log_variance(v, log_beta, log_beta_tilde):
    """IDDPM eq. 15: interpolate log variance between beta and beta_tilde with the network's ``v`` in [-1, 1]."""
    frac = (v + 1) / 2
    return frac * log_beta + (1 - frac) * log_beta_tilde


def x0_and_eps(prediction, pred, x_t, a, s):
    """``(x0, eps)`` that a network's prediction ``pred`` of type ``prediction`` (eps, x0 or v) implies at
    ``x_t = a x0 + s eps``, with ``a = sqrt(acp_t)`` and ``s = sqrt(1 - acp_t)``; v = a eps - s x0 (Salimans & Ho
    2022). The one place the parameterisations are converted: training and every sampler call it."""
    if prediction == "eps":
        return (x_t - s * pred) / a, pred
    if prediction == "x0":
        return pred, (x_t - a * pred) / s
    return a * x_t - s * pred, s * x_t + a * pred


def _at(table, t, like):
    """``table[t]`` for timesteps ``t`` of shape ``(N,)`` or ``(N, F)``, shaped ``t.shape + (1, ..)`` to broadcast over
    ``like`` (``(N, C, H, W)``, or ``(N, F, C, H, W)`` for one timestep per frame)."""
    return _expand(table.to(like.device)[t.to(like.device)].to(like.dtype), like)


def _expand(values, like):
    """Per-sample ``(N,)`` or per-frame ``(N, F)`` values reshaped with trailing ones to broadcast over ``like``."""
    return values.reshape(*values.shape, *([1] * (like.ndim - values.ndim)))


def channel_axis(x):
    """The channel axis of images ``(N, C, H, W)`` or clips ``(N, F, C, H, W)``: third from the end."""
    return x.ndim - 3


def _channels(x, c, start=0):
    """Channels ``start .. start + c`` of ``x`` (see ``channel_axis``)."""
    return x.narrow(channel_axis(x), start, c)


def _normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2) - 1)


def _discretized_gaussian_log_likelihood(x, mean, log_scale):
    """DDPM eq. 13: log-likelihood of data in [-1, 1] quantised to 256 levels, the two end bins open-ended."""
    inv_std = torch.exp(-log_scale)
    cdf_plus = torch.special.ndtr(inv_std * (x - mean + 1 / 255))
    cdf_min = torch.special.ndtr(inv_std * (x - mean - 1 / 255))
    log_cdf_plus = cdf_plus.clamp(min=1e-12).log()
    log_one_minus_cdf_min = (1 - cdf_min).clamp(min=1e-12).log()
    log_delta = (cdf_plus - cdf_min).clamp(min=1e-12).log()
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def _masked_mean(values, mask):
    """Per-example mean ``(N,)`` of ``values`` ``(N, ...)`` over the pixels where ``mask`` (broadcastable) is set."""
    if mask is None:
        return values.flatten(1).mean(1)
    weights = torch.broadcast_to(mask.to(values.dtype), values.shape)
    return (values * weights).flatten(1).sum(1) / weights.flatten(1).sum(1).clamp(min=1e-8)


class Diffusion:
    """A discrete Gaussian diffusion process: forward noising, prediction conversions, losses and respacing."""

    def __init__(self, config=None):
        self.config = config if config is not None else DiffusionConfig()
        self.num_steps = self.config.num_steps
        tables = process_tables(make_betas(self.config.schedule, self.num_steps))
        for name, table in tables.items():
            setattr(self, name, table)

    def __repr__(self):
        return f"Diffusion({self.config})"

    def _check_t(self, t, x):
        """``t`` must be ``(N,)`` integers, or ``(N, F)`` for samples ``x (N, F, C, H, W)``, within ``0 .. T-1``."""
        shapes = [tuple(x.shape[:1])] + ([tuple(x.shape[:2])] if x.ndim == 5 else [])
        if not torch.is_tensor(t) or tuple(t.shape) not in shapes or t.is_floating_point():
            want = " or ".join(str(s).replace(",)", ")") for s in shapes)
            raise GriditError(f"t must be an integer tensor of shape {want}, got {getattr(t, 'shape', t)!r}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_steps):
            raise GriditError(f"timesteps must lie in 0..{self.num_steps - 1}, got {int(t.min())}..{int(t.max())}")

    def q_sample(self, x0, t, noise):
        """Sample x_t ~ q(x_t | x_0) = N(sqrt(acp_t) x_0, (1 - acp_t) I) (DDPM eq. 4) with the given noise."""
        acp = _at(self.alphas_cumprod, t, x0)  # (N, 1, 1, 1) or (N, F, 1, 1, 1)
        return acp.sqrt() * x0 + (1 - acp).sqrt() * noise

    def target(self, x0, noise, t):
        """What the network should output, per element, for the configured prediction type."""
        if self.config.prediction == "eps":
            return noise
        if self.config.prediction == "x0":
            return x0
        acp = _at(self.alphas_cumprod, t, x0)
        return acp.sqrt() * noise - (1 - acp).sqrt() * x0  # v (Salimans & Ho 2022)

    def predict_x0_eps(self, model_output, x_t, t):
        """``(x0, eps)`` implied by the network's prediction; a 2C output's variance channels are ignored."""
        pred = _channels(model_output, x_t.shape[channel_axis(x_t)])  # (N, C, H, W) or (N, F, C, H, W)
        acp = _at(self.alphas_cumprod, t, x_t)
        return x0_and_eps(self.config.prediction, pred, x_t, acp.sqrt(), (1 - acp).sqrt())

    def snr(self, t):
        """Signal-to-noise ratio acp / (1 - acp) at timesteps ``t``, float64."""
        acp = self.alphas_cumprod.to(t.device)[t]
        return acp / (1 - acp)

    def loss_weight(self, t):
        """Weight of the MSE at each timestep of ``t`` (``t``'s shape): 1 or min-SNR-gamma for the prediction type (Hang et al. 2023)."""
        if self.config.loss_weighting == "none":
            return torch.ones(t.shape, dtype=torch.float64, device=t.device)
        snr = self.snr(t)
        clipped = snr.clamp(max=self.config.min_snr_gamma)
        # min(SNR, gamma) weights the x0 error; eps and v errors are x0 errors scaled by SNR and SNR + 1.
        return clipped / {"x0": 1.0, "eps": snr, "v": snr + 1}[self.config.prediction]

    def training_losses(
        self, model, x0, t=None, *, noise=None, y=None, generator=None, model_kwargs=None, loss_mask=None,
        per_frame=False,
    ):  # fmt: skip
        """Per-example losses ``{"loss", "mse", "vb"}`` of ``(N,)``; IDDPM's hybrid loss when ``learn_sigma``.

        ``x0`` is ``(N, C, H, W)``, or clips ``(N, F, C, H, W)``. ``t`` is drawn uniformly from ``generator`` when
        None: one step per sample, or with ``per_frame`` one per frame of a clip (Diffusion Forcing), and the model is
        called with ``t`` of that shape. Every frame has the same number of elements, so the mean over a sample is the
        mean of its per-frame losses. ``loss_mask`` (broadcastable to ``x0``, e.g. ``(N, 1,
        H, W)``) limits both terms to the pixels where it is nonzero, averaging over those pixels only. ``mse`` is
        unweighted; ``loss`` applies the loss weighting. ``vb`` is L_t in bits per dimension; the hybrid loss estimates
        ``L_simple + lambda * L_vlb`` with ``L_vlb = T * E_t[L_t]`` (IDDPM sec. 3.1), so it adds ``lambda * T * vb``.
        """
        if x0.ndim not in (4, 5):
            raise GriditError(f"x0 must be (N, C, H, W) or clips (N, F, C, H, W), got shape {tuple(x0.shape)}")
        if per_frame and x0.ndim != 5:
            raise GriditError(f"per-frame timesteps need clips (N, F, C, H, W), got shape {tuple(x0.shape)}")
        if t is None:
            t = randint(self.num_steps, tuple(x0.shape[: 2 if per_frame else 1]), generator, x0.device)
        self._check_t(t, x0)
        t = t.to(device=x0.device, dtype=torch.long)
        k = channel_axis(x0)
        c = x0.shape[k]
        if noise is None:
            noise = randn(x0.shape, generator, x0.device, x0.dtype)
        if noise.shape != x0.shape:
            raise GriditError(f"noise shape {tuple(noise.shape)} differs from x0 shape {tuple(x0.shape)}")
        x_t = self.q_sample(x0, t, noise)  # like x0
        out = model(x_t, t, y=y, **(model_kwargs or {}))  # x0's shape with C or 2C channels
        want = (*x0.shape[:k], 2 * c if self.config.learn_sigma else c, *x0.shape[k + 1 :])
        if tuple(out.shape) != want:
            raise GriditError(f"model output {tuple(out.shape)} should be {want} for this config")
        pred = _channels(out, c)
        err = (pred - self.target(x0, noise, t)) ** 2  # like x0
        weight = _expand(self.loss_weight(t).to(err.dtype), err)  # (N, 1, ..) or (N, F, 1, ..)
        mse = _masked_mean(err, loss_mask)  # (N,)
        terms = {"mse": mse, "loss": _masked_mean(weight * err, loss_mask)}
        if self.config.learn_sigma:
            # Stop-gradient on the mean (IDDPM sec. 3.1): the VLB term trains only the variance.
            v = _channels(out, c, start=c)
            terms["vb"] = _masked_mean(self._vb_terms(pred.detach(), v, x0, x_t, t), loss_mask)
            terms["loss"] = terms["loss"] + self.config.vlb_weight * self.num_steps * terms["vb"]
        return terms

    def _vb_terms(self, pred, v, x0, x_t, t):
        """Elementwise L_t in bits: KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) for t > 0, decoder NLL at t = 0."""
        x0_hat, _ = self.predict_x0_eps(pred, x_t, t)
        c1, c2 = _at(self.posterior_mean_coef1, t, x_t), _at(self.posterior_mean_coef2, t, x_t)
        true_mean = c1 * x0 + c2 * x_t
        true_logvar = _at(self.posterior_log_variance_clipped, t, x_t)
        mean = c1 * x0_hat + c2 * x_t
        logvar = learned_log_variance(v, _at(self.betas.log(), t, x_t), true_logvar)
        kl = _normal_kl(true_mean, true_logvar, mean, logvar) / math.log(2.0)
        nll = -_discretized_gaussian_log_likelihood(x0, mean, 0.5 * logvar) / math.log(2.0)
        return torch.where(_expand(t == 0, x_t), nll, kl)

    def timesteps_for(self, num_sampling_steps):
        """The original timesteps that ``num_sampling_steps`` sampling steps visit, descending, as a list of ints.

        Spacing rule: ``t_i = floor(i * (T-1) / (n-1) + 1/2)`` for ``i = 0 .. n-1``, so the first step is at ``T-1``
        and the last at ``0`` and the gaps differ by at most one; ``n = 1`` gives ``[T-1]`` (jump straight to x_0).
        """
        n = num_sampling_steps
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= self.num_steps:
            raise GriditError(f"the number of sampling steps must be an integer in 1..{self.num_steps}, got {n!r}")
        if n == 1:
            return [self.num_steps - 1]
        ts = torch.floor(torch.linspace(0, self.num_steps - 1, n, dtype=torch.float64) + 0.5).long()
        return ts.flip(0).tolist()

    def respaced(self, timesteps):
        """Process tables for sampling over ``timesteps`` (descending), indexed in that order (IDDPM sec. 4).

        The respaced process keeps ``alphas_cumprod`` at the chosen timesteps; its betas are
        ``beta'_i = 1 - acp[t_i] / acp[t_next]``, where ``t_next`` is the next smaller chosen timestep (acp = 1 past 0).
        """
        ascending = torch.tensor(list(timesteps)[::-1], dtype=torch.long)
        ok = len(ascending) and bool((ascending[1:] > ascending[:-1]).all())
        if not ok or ascending[0] < 0 or ascending[-1] >= self.num_steps:
            raise GriditError(f"timesteps must descend strictly within 0..{self.num_steps - 1}, got {list(timesteps)}")
        acp = self.alphas_cumprod[ascending]
        betas = 1 - acp / torch.cat([acp.new_ones(1), acp[:-1]])
        return {name: table.flip(0) for name, table in process_tables(betas).items()}
