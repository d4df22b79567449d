"""Samplers: DDPM ancestral and DDIM sampling, classifier-free guidance and RePaint known-region conditioning.

``Stepper`` does one denoising step at a time (the ``timesteps`` + ``step(model_output, t, x)`` protocol), so a widget
can drive sampling; ``ddpm_sample`` and ``ddim_sample`` are pure functions that run the same stepper in a loop, so
both paths give bit-identical samples for the same generator seed. The generator is the only random source.
They run a ``gridit_core.diffusion.Diffusion`` (``process``), whose conversions between parameterisations they use.
"""

import torch

from gridit_core.diffusion.process import learned_log_variance, x0_and_eps
from gridit_core.errors import GriditError
from gridit_core.util.rng import randn

STEPPER_KINDS = ("ddpm", "ddim")


def _timesteps(t, n, device):
    """Original timesteps as a long tensor: an int (or 0-d tensor) -> ``(N,)``; ``(N,)`` or ``(N, F)`` as they are."""
    if torch.is_tensor(t) and t.ndim > 0:
        return t.to(device=device, dtype=torch.long)
    return torch.full((n,), int(t), dtype=torch.long, device=device)


def model_output(model, x, t, *, y=None, guidance_scale=1.0, model_kwargs=None):
    """The network's output at original timestep ``t``, with classifier-free guidance if it acts.

    ``t`` is one int for the batch, or a tensor ``(N,)`` or ``(N, F)`` (one step per frame), passed to the model as
    such. Guidance (Ho & Salimans 2022, eq. 6, with ``s = 1 + w``) needs ``guidance_scale != 1``, labels ``y`` and a
    model with ``num_classes > 0``; otherwise the model runs once on the plain batch, since guiding an unconditional
    model only doubles the compute. When guiding, the batch is doubled with the null label ``num_classes`` (tensor
    ``model_kwargs`` with a leading batch dimension are doubled too); the prediction channels become
    ``u + s * (c - u)`` and the variance channels, if any, come from the conditional half.
    """
    kwargs = model_kwargs or {}
    n = x.shape[0]
    tt = _timesteps(t, n, x.device)  # (N,) or (N, F)
    num_classes = getattr(model, "num_classes", 0) or 0
    if guidance_scale == 1 or y is None or num_classes <= 0:
        return model(x, tt, y=y, **kwargs)
    null = torch.full_like(y, num_classes)  # (N,)
    kwargs = {k: torch.cat([v, v]) if torch.is_tensor(v) and v.shape[:1] == (n,) else v for k, v in kwargs.items()}
    out = model(torch.cat([x, x]), torch.cat([tt, tt]), y=torch.cat([y, null]), **kwargs)  # (2N, .., C or 2C, H, W)
    cond, uncond = out.chunk(2)  # (N, .., C or 2C, H, W) each
    k = x.ndim - 3  # the channel axis of (N, C, H, W) or (N, F, C, H, W)
    c = x.shape[k]
    guided = uncond.narrow(k, 0, c) + guidance_scale * (cond.narrow(k, 0, c) - uncond.narrow(k, 0, c))
    return torch.cat([guided, cond.narrow(k, c, cond.shape[k] - c)], dim=k)


def x0_clip_range(clip_x0):
    """``clip_x0`` as a ``(lo, hi)`` pair or None: True -> [-1, 1] (pixels), False/None -> no clamp (latents); a pair's
    ends may be tensors that broadcast over the sample (a per-pixel range)."""
    if clip_x0 is True:
        return (-1.0, 1.0)
    if clip_x0 is None or clip_x0 is False:
        return None
    try:
        lo, hi = clip_x0
    except (TypeError, ValueError):
        raise GriditError(f"clip_x0 must be True, False, None or a (low, high) pair, got {clip_x0!r}") from None
    return lo, hi


class Stepper:
    """DDPM or DDIM sampling one step at a time over ``timesteps``, the respaced original timesteps, descending.

    ``t`` in ``step``, ``add_noise`` and ``renoise`` is one of ``timesteps`` for the whole batch, or a tensor of them,
    ``(N,)`` or ``(N, F)`` with samples ``(N, F, C, H, W)``, so every frame can be at its own step (Diffusion Forcing);
    a frame steps from its ``t`` to the next smaller of ``timesteps``. Coefficients are computed in float64 and meet
    the sample in its dtype, so equal per-frame steps give exactly what one step for the batch gives. ``clip_x0``
    clamps the predicted x0 (see ``x0_clip_range``): on by default for pixels, off for latents.
    """

    def __init__(self, diffusion, sampler="ddim", steps=50, eta=0.0, generator=None, *, clip_x0=True):
        if sampler not in STEPPER_KINDS:
            raise GriditError(f"unknown sampler {sampler!r}; choose one of {', '.join(STEPPER_KINDS)}")
        if not 0 <= eta <= 1:
            raise GriditError(f"eta must lie in [0, 1], got {eta}")
        self.diffusion, self.sampler, self.eta, self.generator = diffusion, sampler, eta, generator
        self.clip_x0 = clip_x0
        self.x0_range = x0_clip_range(clip_x0)
        self.timesteps = diffusion.timesteps_for(steps)
        self._position = torch.full((diffusion.num_steps,), -1, dtype=torch.long)  # original t -> index, -1 if absent
        self._position[torch.tensor(self.timesteps)] = torch.arange(len(self.timesteps))
        tables = diffusion.respaced(self.timesteps)  # float64, in the order of ``timesteps``
        acp, acp_prev = tables["alphas_cumprod"], tables["alphas_cumprod_prev"]
        sigma = eta * ((1 - acp_prev) / (1 - acp) * (1 - acp / acp_prev)).sqrt()  # DDIM eq. 16, scaled by eta
        self._tables = {
            **tables,
            "sqrt_acp": acp.sqrt(), "sqrt_1m_acp": (1 - acp).sqrt(), "sqrt_acp_prev": acp_prev.sqrt(),
            "ddim_sigma": sigma, "ddim_dir": (1 - acp_prev - sigma**2).clamp(min=0).sqrt(),
            "log_betas": tables["betas"].log(), "sqrt_1m_betas": (1 - tables["betas"]).sqrt(),
            "sqrt_betas": tables["betas"].sqrt(),
            "last": (torch.arange(len(acp)) == len(acp) - 1).double(),
        }  # fmt: skip

    def __repr__(self):
        return f"Stepper({self.sampler}, steps={len(self.timesteps)}, eta={self.eta}, clip_x0={self.clip_x0})"

    def index(self, t):
        """Position of original timestep ``t`` (an int, or a tensor of them: positions of its shape) in ``timesteps``."""
        scalar = not (torch.is_tensor(t) and t.ndim > 0)
        tt = torch.as_tensor(int(t) if scalar else t.cpu(), dtype=torch.long)
        inside = (tt >= 0) & (tt < len(self._position))
        pos = torch.where(inside, self._position[tt.clamp(0, len(self._position) - 1)], -1)
        if (pos < 0).any():
            bad = int(tt[pos < 0].flatten()[0]) if tt.ndim else int(tt)
            raise GriditError(f"timestep {bad} is not one of this stepper's timesteps")
        return int(pos) if scalar else pos

    def _coef(self, name, t, like):
        """Table ``name`` at ``t`` in ``like``'s dtype and device, shaped to broadcast over it: a 0-d tensor for one
        step, ``t.shape + (1, ..)`` for a tensor of steps."""
        value = self._tables[name][self.index(t)]
        value = value.to(device=like.device, dtype=like.dtype)
        return value if value.ndim == 0 else value.reshape(*value.shape, *([1] * (like.ndim - value.ndim)))

    def _noise(self, x):
        return randn(x.shape, self.generator, x.device, x.dtype)

    def add_noise(self, x0, t):
        """Forward-noise clean ``x0`` to timestep ``t`` with fresh noise from the generator."""
        return self._coef("sqrt_acp", t, x0) * x0 + self._coef("sqrt_1m_acp", t, x0) * self._noise(x0)

    def renoise(self, x_prev, t):
        """Undo the step into ``t``: draw x_t ~ q(x_t | x_prev) of the respaced process (RePaint's jump back)."""
        return self._coef("sqrt_1m_betas", t, x_prev) * x_prev + self._coef("sqrt_betas", t, x_prev) * self._noise(x_prev)

    def predict(self, model_output, t, x, x0_shift=None):
        """``(x0, eps)`` that ``model_output`` implies at ``(t, x)``; ``x0_shift`` (x's shape) is added to x0 before
        the clamp (reconstruction guidance), and eps is then taken consistent with the x0 used."""
        k = x.ndim - 3  # the channel axis of (N, C, H, W) or (N, F, C, H, W)
        c = x.shape[k]
        if model_output.ndim != x.ndim or model_output.shape[:k] != x.shape[:k] or model_output.shape[k] not in (c, 2 * c):
            raise GriditError(f"model output {tuple(model_output.shape)} does not fit a sample {tuple(x.shape)}")
        a, s = self._coef("sqrt_acp", t, x), self._coef("sqrt_1m_acp", t, x)
        x0, eps = x0_and_eps(self.diffusion.config.prediction, model_output.narrow(k, 0, c), x, a, s)
        if x0_shift is not None:
            x0 = x0 + x0_shift
        if self.x0_range is not None or x0_shift is not None:  # clamp x0 to the data range, eps consistent with it
            x0 = x0 if self.x0_range is None else x0.clamp(*self.x0_range)
            eps = (x - a * x0) / s
        return x0, eps

    def step(self, model_output, t, x):
        """x_t -> x_prev, the sample at the next timestep of ``timesteps`` (clean x_0 after the last one)."""
        return self.step_with_x0(model_output, t, x)[0]

    def step_with_x0(self, model_output, t, x, x0_shift=None):
        """``(x_prev, x0_pred)``: ``step`` and the predicted clean sample it used (``x0_shift``: see ``predict``)."""
        x0, eps = self.predict(model_output, t, x, x0_shift)
        coef = lambda name: self._coef(name, t, x)  # noqa: E731
        if self.sampler == "ddim":  # DDIM eq. 12, sigma from eq. 16 scaled by eta
            x_prev = coef("sqrt_acp_prev") * x0 + coef("ddim_dir") * eps
            sigma = coef("ddim_sigma")
            if bool((sigma > 0).any()):  # no draw where no noise is added, so the generator's stream stays put
                x_prev = x_prev + sigma * self._noise(x)
            return x_prev, x0
        # Ancestral step, DDPM algorithm 2: posterior mean (eq. 7) plus noise of the fixed or learned (IDDPM) variance;
        # at the final step the posterior is a point mass on x0, so no noise is added there.
        mean = coef("posterior_mean_coef1") * x0 + coef("posterior_mean_coef2") * x
        last = coef("last")
        if bool((last == 1).all()):
            return mean, x0
        k = x.ndim - 3
        c = x.shape[k]
        log_var = coef("posterior_log_variance_clipped").expand_as(x)
        if model_output.shape[k] == 2 * c:
            log_var = learned_log_variance(model_output.narrow(k, c, c), coef("log_betas"), log_var)
        return mean + (1 - last) * torch.exp(0.5 * log_var) * self._noise(x), x0


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
    noise=None, device=None, callback=None, model_kwargs=None, context=None, context_t=0, reconstruction=0.0,
):  # fmt: skip
    """Sample with ``stepper`` from x_T, with ``known`` values in ``known_mask`` (returned exactly there).

    Known-region conditioning, by default RePaint's replacement (Lugmayr et al. 2022): before every model call the
    known region is overwritten with ``known`` noised to the current timestep. With ``resample = U`` each step is done
    U times, re-noising the result back to t in between (RePaint algorithm 1); the final step is done once.

    ``context`` (bool ``(F,)`` or ``(N, F)``: which cells of a grid, or frames of a clip, are known) switches to
    clean context: the known region enters every model call as ``known`` noised once to ``context_t`` (0: clean),
    and the model is told so by its timestep, one per cell or frame: ``context_t`` where ``context``, the step's
    timestep elsewhere (a model trained with per-cell levels has seen exactly this).

    ``reconstruction > 0`` adds reconstruction guidance (Ho et al. 2022, Video Diffusion Models, eq. 7): the unknown
    region's predicted x0 moves by ``-reconstruction * sqrt(acp_t) / 2`` times the gradient, with respect to x_t, of
    the squared error between the known values and their prediction; the known region is left to the conditioning.
    """
    shape = tuple(shape)
    if len(shape) not in (4, 5):
        raise GriditError(f"shape must be (N, C, H, W) or (N, F, C, H, W), got {shape}")
    if isinstance(resample, bool) or not isinstance(resample, int) or resample < 1:
        raise GriditError(f"resample must be an integer >= 1, got {resample!r}")
    if (known is None) != (known_mask is None):
        raise GriditError("known and known_mask must be given together")
    if known is None and (context is not None or reconstruction):
        raise GriditError("clean context and reconstruction guidance need known values (known, known_mask)")
    if not reconstruction >= 0:
        raise GriditError(f"the reconstruction guidance weight must be >= 0, got {reconstruction}")
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
    given = None  # clean context: the known region as the model sees it, at its own level
    if context is not None:
        context = torch.as_tensor(context, dtype=torch.bool, device=device).expand(shape[0], -1)  # (N, F)
        level = torch.full(shape[:1], int(context_t), dtype=torch.long, device=device)
        given = known if context_t == 0 else stepper.diffusion.q_sample(known, level, randn(shape, stepper.generator, device))
    if y is not None and tuple(y.shape) != shape[:1]:
        raise GriditError(f"labels y must have shape ({shape[0]},), got {tuple(y.shape)}")
    y = y.to(device) if y is not None else None
    call = dict(y=y, guidance_scale=guidance_scale, model_kwargs=model_kwargs)
    steps = len(stepper.timesteps)
    for i, t in enumerate(stepper.timesteps):
        repeats = 1 if i == steps - 1 else resample
        t_model = t if context is None else torch.where(context, int(context_t), int(t))  # () or (N, F)
        for r in range(repeats):
            if known is not None:
                x = torch.where(known_mask, stepper.add_noise(known, t) if given is None else given, x)
            if reconstruction:
                out, shift = _reconstruction(stepper, model, x, t, t_model, known, known_mask, reconstruction, call)
                x_prev, x0 = stepper.step_with_x0(out, t, x, x0_shift=shift)
            else:
                x_prev, x0 = stepper.step_with_x0(model_output(model, x, t_model, **call), t, x)
            if r < repeats - 1:
                x = stepper.renoise(x_prev, t)
        x = x_prev
        if known is not None and i == steps - 1:
            x = torch.where(known_mask, known, x)
        if callback is not None:
            callback({"i": i, "steps": steps, "t": t, "x": x, "x0_pred": x0})
    return x


def _reconstruction(stepper, model, x, t, t_model, known, known_mask, weight, call):
    """``(model output, x0 shift)``: the output at ``x`` and reconstruction guidance's shift of the unknown x0."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        out = model_output(model, xg, t_model, **call)
        x0, _ = stepper.predict(out, t, xg)
        error = ((known - x0) ** 2).masked_fill(~known_mask, 0).sum()
        (grad,) = torch.autograd.grad(error, xg)
    shift = -(weight / 2) * stepper._coef("sqrt_acp", t, x) * grad
    return out.detach(), shift.masked_fill(known_mask, 0)


def ddpm_sample(diffusion, model, shape, *, steps=250, generator=None, clip_x0=True, **kwargs):
    """Ancestral sampling (DDPM algorithm 2) over ``steps`` respaced timesteps (IDDPM sec. 4); GriDiT uses 250.

    The variance is learned (IDDPM eq. 15) when the model outputs 2C channels, else the posterior beta_tilde.
    Keywords as ``run_stepper``: ``y``, ``guidance_scale``, ``known``, ``known_mask``, ``resample``, ``noise``,
    ``device``, ``callback``, ``model_kwargs``, ``context``, ``context_t``, ``reconstruction``.
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
