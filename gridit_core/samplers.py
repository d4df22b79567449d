"""Samplers: DDPM ancestral and DDIM sampling, classifier-free guidance and RePaint known-region conditioning.

``Stepper`` does one denoising step at a time (the ``timesteps`` + ``step(model_output, t, x)`` protocol), so a widget
can drive sampling; ``ddpm_sample`` and ``ddim_sample`` are pure functions that run the same stepper in a loop, so
both paths give bit-identical samples for the same generator seed. The generator is the only random source.
They take a ``gridit_core.diffusion.Diffusion``; this module imports nothing from there, and that one re-exports it.
"""

import math

import torch

from gridit_core.errors import GriditError

STEPPER_KINDS = ("ddpm", "ddim")


def randn(shape, generator=None, device=None, dtype=torch.float32):
    """Standard normal noise drawn on the generator's device (so a CPU seed reproduces on any device), then moved."""
    source = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=source, dtype=dtype).to(device)


def learned_log_variance(v, log_beta, log_beta_tilde):
    """IDDPM eq. 15: interpolate log variance between beta and beta_tilde with the network's ``v`` in [-1, 1]."""
    frac = (v + 1) / 2
    return frac * log_beta + (1 - frac) * log_beta_tilde


def model_output(model, x, t, *, y=None, guidance_scale=1.0, model_kwargs=None):
    """The network's output ``(N, C or 2C, H, W)`` at original timestep ``t``, with classifier-free guidance if it acts.

    Guidance (Ho & Salimans 2022, eq. 6, with ``s = 1 + w``) needs ``guidance_scale != 1``, labels ``y`` and a model
    with ``num_classes > 0``; otherwise the model runs once on the plain batch, since guiding an unconditional model
    only doubles the compute. When guiding, the batch is doubled with the null label ``num_classes`` (tensor
    ``model_kwargs`` with a leading batch dimension are doubled too); the prediction channels become
    ``u + s * (c - u)`` and the variance channels, if any, come from the conditional half.
    """
    kwargs = model_kwargs or {}
    n = x.shape[0]
    tt = torch.full((n,), int(t), dtype=torch.long, device=x.device)  # (N,)
    num_classes = getattr(model, "num_classes", 0) or 0
    if guidance_scale == 1 or y is None or num_classes <= 0:
        return model(x, tt, y=y, **kwargs)
    null = torch.full_like(y, num_classes)  # (N,)
    kwargs = {k: torch.cat([v, v]) if torch.is_tensor(v) and v.shape[:1] == (n,) else v for k, v in kwargs.items()}
    out = model(torch.cat([x, x]), torch.cat([tt, tt]), y=torch.cat([y, null]), **kwargs)  # (2N, C or 2C, H, W)
    cond, uncond = out.chunk(2)  # (N, C or 2C, H, W) each
    c = x.shape[1]
    guided = uncond[:, :c] + guidance_scale * (cond[:, :c] - uncond[:, :c])  # (N, C, H, W)
    return torch.cat([guided, cond[:, c:]], dim=1)


class Stepper:
    """DDPM or DDIM sampling one step at a time over ``timesteps``, the respaced original timesteps, descending."""

    def __init__(self, diffusion, sampler="ddim", steps=50, eta=0.0, generator=None, *, clip_x0=True):
        if sampler not in STEPPER_KINDS:
            raise GriditError(f"unknown sampler {sampler!r}; choose one of {', '.join(STEPPER_KINDS)}")
        if not 0 <= eta <= 1:
            raise GriditError(f"eta must lie in [0, 1], got {eta}")
        self.diffusion, self.sampler, self.eta, self.generator = diffusion, sampler, eta, generator
        self.clip_x0 = clip_x0
        self.timesteps = diffusion.timesteps_for(steps)
        self._index = {t: i for i, t in enumerate(self.timesteps)}
        # Python floats per step: float64 arithmetic here, then the sample's dtype when they meet a tensor.
        self._tables = {k: v.tolist() for k, v in diffusion.respaced(self.timesteps).items()}

    def __repr__(self):
        return f"Stepper({self.sampler}, steps={len(self.timesteps)}, eta={self.eta}, clip_x0={self.clip_x0})"

    def index(self, t):
        """Position of original timestep ``t`` in ``timesteps``."""
        try:
            return self._index[int(t)]
        except KeyError:
            raise GriditError(f"timestep {int(t)} is not one of this stepper's timesteps") from None

    def _noise(self, x):
        return randn(x.shape, self.generator, x.device, x.dtype)

    def add_noise(self, x0, t):
        """Forward-noise clean ``x0`` to timestep ``t`` with fresh noise from the generator."""
        t_batch = torch.full((x0.shape[0],), int(t), dtype=torch.long, device=x0.device)
        return self.diffusion.q_sample(x0, t_batch, self._noise(x0))

    def renoise(self, x_prev, t):
        """Undo the step into ``t``: draw x_t ~ q(x_t | x_prev) of the respaced process (RePaint's jump back)."""
        beta = self._tables["betas"][self.index(t)]
        return math.sqrt(1 - beta) * x_prev + math.sqrt(beta) * self._noise(x_prev)

    def _x0_eps(self, model_output, t, x):
        if model_output.shape[0] != x.shape[0] or model_output.shape[1] not in (x.shape[1], 2 * x.shape[1]):
            raise GriditError(f"model output {tuple(model_output.shape)} does not fit a sample {tuple(x.shape)}")
        t_batch = torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device)
        x0, eps = self.diffusion.predict_x0_eps(model_output, x, t_batch)
        if self.clip_x0:  # clamp x0 to the data range, then take the eps consistent with it
            acp = self._tables["alphas_cumprod"][self.index(t)]
            x0 = x0.clamp(-1, 1)
            eps = (x - math.sqrt(acp) * x0) / math.sqrt(1 - acp)
        return x0, eps

    def predict_x0(self, model_output, t, x):
        """The clean sample that ``model_output`` at ``(t, x)`` implies (clamped to [-1, 1] if ``clip_x0``)."""
        return self._x0_eps(model_output, t, x)[0]

    def step(self, model_output, t, x):
        """x_t -> x_prev, the sample at the next timestep of ``timesteps`` (clean x_0 after the last one)."""
        return self.step_with_x0(model_output, t, x)[0]

    def step_with_x0(self, model_output, t, x):
        """``(x_prev, x0_pred)``: ``step`` and the predicted clean sample it used."""
        i = self.index(t)
        tab = {k: v[i] for k, v in self._tables.items()}
        x0, eps = self._x0_eps(model_output, t, x)
        last = i == len(self.timesteps) - 1
        if self.sampler == "ddim":  # DDIM eq. 12, sigma from eq. 16 scaled by eta
            acp, acp_prev = tab["alphas_cumprod"], tab["alphas_cumprod_prev"]
            sigma = self.eta * math.sqrt((1 - acp_prev) / (1 - acp) * (1 - acp / acp_prev))
            x_prev = math.sqrt(acp_prev) * x0 + math.sqrt(max(1 - acp_prev - sigma**2, 0.0)) * eps
            if sigma > 0:
                x_prev = x_prev + sigma * self._noise(x)
            return x_prev, x0
        # Ancestral step, DDPM algorithm 2: posterior mean (eq. 7) plus noise of the fixed or learned (IDDPM) variance.
        mean = tab["posterior_mean_coef1"] * x0 + tab["posterior_mean_coef2"] * x
        if last:  # the posterior at the final step is a point mass on x0
            return mean, x0
        c = x.shape[1]
        log_var = torch.full_like(x, tab["posterior_log_variance_clipped"])
        if model_output.shape[1] == 2 * c:
            log_var = learned_log_variance(model_output[:, c:], math.log(tab["betas"]), log_var)
        return mean + torch.exp(0.5 * log_var) * self._noise(x), x0


def _default_device(device, noise, known, model):
    if device is not None:
        return torch.device(device)
    for tensor in (noise, known):
        if tensor is not None:
            return tensor.device
    param = next(model.parameters(), None) if hasattr(model, "parameters") else None
    return param.device if param is not None else torch.device("cpu")


@torch.no_grad()
def run_stepper(
    stepper, model, shape, *, y=None, guidance_scale=1.0, known=None, known_mask=None, resample=1,
    noise=None, device=None, callback=None, model_kwargs=None,
):  # fmt: skip
    """Sample with ``stepper`` from x_T; known-region conditioning and resampling as in RePaint (Lugmayr et al. 2022).

    Before every model call the known region is overwritten with ``known`` noised to the current timestep. With
    ``resample = U`` each step is done U times, re-noising the result back to t in between (RePaint algorithm 1); the
    final step is done once since nothing follows it. The returned sample equals ``known`` exactly where known.
    """
    shape = tuple(shape)
    if len(shape) != 4:
        raise GriditError(f"shape must be (N, C, H, W), got {shape}")
    if isinstance(resample, bool) or not isinstance(resample, int) or resample < 1:
        raise GriditError(f"resample must be an integer >= 1, got {resample!r}")
    if (known is None) != (known_mask is None):
        raise GriditError("known and known_mask must be given together")
    device = _default_device(device, noise, known, model)
    if noise is not None and tuple(noise.shape) != shape:
        raise GriditError(f"noise shape {tuple(noise.shape)} differs from the sample shape {shape}")
    x = noise.to(device) if noise is not None else randn(shape, stepper.generator, device)  # (N, C, H, W)
    if known is not None:
        if tuple(known.shape) != shape:
            raise GriditError(f"known shape {tuple(known.shape)} differs from the sample shape {shape}")
        try:
            fits = torch.broadcast_shapes(tuple(known_mask.shape), shape) == shape
        except RuntimeError:
            fits = False
        if not fits:
            raise GriditError(f"known_mask shape {tuple(known_mask.shape)} does not broadcast to {shape}")
        known, known_mask = known.to(device=device, dtype=x.dtype), known_mask.to(device).bool()
    if y is not None and tuple(y.shape) != shape[:1]:
        raise GriditError(f"labels y must have shape ({shape[0]},), got {tuple(y.shape)}")
    y = y.to(device) if y is not None else None
    steps = len(stepper.timesteps)
    for i, t in enumerate(stepper.timesteps):
        repeats = 1 if i == steps - 1 else resample
        for r in range(repeats):
            if known is not None:
                x = torch.where(known_mask, stepper.add_noise(known, t), x)
            out = model_output(model, x, t, y=y, guidance_scale=guidance_scale, model_kwargs=model_kwargs)
            x_prev, x0 = stepper.step_with_x0(out, t, x)
            if r < repeats - 1:
                x = stepper.renoise(x_prev, t)
        x = x_prev
        if known is not None and i == steps - 1:
            x = torch.where(known_mask, known, x)
        if callback is not None:
            callback({"i": i, "steps": steps, "t": t, "x": x, "x0_pred": x0})
    return x


def ddpm_sample(diffusion, model, shape, *, steps=250, generator=None, clip_x0=True, **kwargs):
    """Ancestral sampling (DDPM algorithm 2) over ``steps`` respaced timesteps (IDDPM sec. 4); GriDiT uses 250.

    The variance is learned (IDDPM eq. 15) when the model outputs 2C channels, else the posterior beta_tilde.
    Keywords as ``run_stepper``: ``y``, ``guidance_scale``, ``known``, ``known_mask``, ``resample``, ``noise``,
    ``device``, ``callback``, ``model_kwargs``.
    """
    stepper = Stepper(diffusion, "ddpm", steps, 0.0, generator, clip_x0=clip_x0)
    return run_stepper(stepper, model, shape, **kwargs)


def ddim_sample(diffusion, model, shape, *, steps=50, eta=0.0, generator=None, clip_x0=True, **kwargs):
    """DDIM sampling (Song et al. 2021, eq. 12): deterministic for ``eta = 0``, DDPM-like for ``eta = 1``.

    Keywords as ``run_stepper``; variance channels of a 2C model output are ignored.
    """
    stepper = Stepper(diffusion, "ddim", steps, eta, generator, clip_x0=clip_x0)
    return run_stepper(stepper, model, shape, **kwargs)


SAMPLERS = {"ddpm": ddpm_sample, "ddim": ddim_sample}


def sample(diffusion, model, shape, *, sampler="ddim", **kwargs):
    """Run the sampler named ``sampler`` (a key of ``SAMPLERS``) with its keywords."""
    if sampler not in SAMPLERS:
        raise GriditError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[sampler](diffusion, model, shape, **kwargs)
