"""Sequences of any length from the sequence families: MSC's causal rollout and the tensor model's sliding windows.

MSC follows Diffusion Forcing's scheduling matrices (Chen et al. 2024). With ``S`` denoising steps, frame ``f`` is
at level ``clip(S - (m - start(f)), 0, S)`` at iteration ``m`` (``S``: pure noise, ``0``: done), where frames start
in chunks of ``chunk``:

- ``autoregressive``: ``start(f) = (f // chunk) * S``: one chunk is denoised at a time, all of it at one level, on
  top of finished (clean) context;
- ``pyramid``: ``start(f) = f // chunk``: each chunk starts one step after the one before, so later frames are
  noisier (several chunks in flight);
- ``full``: ``start(f) = 0``: every frame together (at most the training length).

Each iteration runs the model on the frames in flight, each at its own level (``t`` of shape ``(B, F)``), and steps
each frame to its next level. Finished frames enter a ``KVCache`` once (a pass at the context level writes their
keys and values) and are streamed out; as attention never reaches further back than the model's ``span``, the
cache holds ``span`` frames and memory stays flat, and the cached rollout equals the uncached one (``cache=False``
recomputes all finished frames every iteration: the reference, for tests). A ``context`` below the span keeps fewer
frames in the cache: every model call then sees the ``context`` finished frames before its first frame, and the
reference gives each frame that limit through the model's dense attention (``earliest``).

Context frames enter at timestep ``round(context_noise * (num_steps - 1))`` (Diffusion Forcing's stabilisation; its
video setting of 15 of 1000 levels is t = 14, ``context_noise`` 0.014), noised there once by a Gaussian draw
(``context_mode="noised"``) or only scaled by ``sqrt(alpha_bar_t)`` (``"scaled"``, Diffusion Forcing's DDIM path).

The tensor model sees ``T`` frames at once: a first window of ``T`` frames, then windows whose first ``overlap``
frames are the last ``overlap`` frames so far (RePaint known-region replacement on the frame axis), each adding
``T - overlap``; positions are relative to the window, so any length works.
"""

import torch
from tqdm.auto import tqdm

from gridit_core.diffusion import Stepper, sample
from gridit_core.errors import GriditError
from gridit_core.models.codec import pixel_codec
from gridit_core.util.rng import randn


def start_iteration(schedule, frame, chunk, steps):
    """The iteration at which ``frame`` starts denoising: chunks one after another (autoregressive), one iteration
    apart (pyramid), or all at once (full)."""
    k = frame // chunk
    return k * steps if schedule == "autoregressive" else k if schedule == "pyramid" else 0


def active_frames(schedule, iteration, n_frames, chunk, steps):
    """The frames denoised at ``iteration``, a range ``first:stop`` (each has started and is not yet clean), in
    O(1): the rollout never builds the whole scheduling matrix, whose size grows as frames x iterations."""
    if schedule == "autoregressive":
        lo = hi = iteration // steps
    elif schedule == "pyramid":
        lo, hi = max(0, iteration - steps + 1), iteration
    else:
        lo, hi = 0, (n_frames - 1) // chunk if iteration < steps else -1
    return lo * chunk, min((hi + 1) * chunk, n_frames)


def level_matrix(schedule, n_frames, chunk, steps):
    """Diffusion Forcing's scheduling matrix ``(iterations + 1, n_frames)``: each frame's level before each iteration
    (``steps``: pure noise, 0: clean) and after the last. For reading and tests; the rollout walks it row by row with
    ``active_frames``."""
    start = torch.tensor([start_iteration(schedule, f, chunk, steps) for f in range(n_frames)])
    m = torch.arange(int(start.max()) + steps + 1)[:, None]
    return (steps - (m - start[None, :])).clamp(0, steps)


def causal_frames(model, diffusion, n_frames, s, *, n_sequences=1, seed=0, device="cpu", progress=True, callback=None,
                  codec=None, cache=True):  # fmt: skip
    """The MSC family's sampler (``sampling.generate_frames`` checks its arguments and calls it): frames
    ``(n_sequences, C, H, W)``, exactly ``n_frames`` of them, by Diffusion Forcing's schedule ``s.schedule``. Every
    setting of ``s`` (a ``SampleConfig``) is checked before the first frame is sampled. ``cache=False`` recomputes
    the finished frames at every iteration instead of caching them (the exact reference the cache must match)."""
    cfg = model.config
    if s.schedule == "full" and n_frames > cfg.frames:
        raise GriditError(f"the full schedule denoises all frames at once: at most the training length "
                          f"{cfg.frames}, got {n_frames}; use autoregressive or pyramid")  # fmt: skip
    if s.context is not None and s.context > model.span:
        raise GriditError(f"context {s.context} exceeds what the model can see ({model.span} frames)")
    Stepper(diffusion, s.sampler, s.steps, s.eta)  # refuses a step count the process lacks, now
    shape = (n_sequences, model.in_channels, *cfg.frame_hw)
    codec = pixel_codec(codec)
    return _decoded(_msc_frames(model, diffusion, n_frames, s, shape, torch.device(device), seed, progress, callback,
                                codec, cache), codec)  # fmt: skip


def window_frames(model, diffusion, n_frames, s, *, n_sequences=1, seed=0, device="cpu", progress=True, callback=None,
                  codec=None):  # fmt: skip
    """The tensor family's sampler (``sampling.generate_frames`` checks its arguments and calls it): frames
    ``(n_sequences, C, H, W)``, exactly ``n_frames`` of them, window by window (the module docstring)."""
    t_len = model.config.frames
    overlap = s.overlap if s.overlap is not None else t_len // 2
    if not 0 <= overlap < t_len:
        raise GriditError(f"overlap must be in 0..{t_len - 1} for a model of {t_len} frames, got {overlap}")
    Stepper(diffusion, s.sampler, s.steps, s.eta)  # refuses a step count the process lacks, now
    shape = (n_sequences, model.in_channels, *model.config.frame_hw)
    codec = pixel_codec(codec)
    return _decoded(_window_frames(model, diffusion, n_frames, s, overlap, shape, torch.device(device), seed, progress,
                                   callback, codec), codec)  # fmt: skip


def window_seams(n_frames, t_len, overlap):
    """The frames where a window after the first starts adding frames (its first new frame)."""
    return list(range(t_len, n_frames, t_len - overlap))


def _decoded(stream, codec):
    return (codec.decode(z) for z in stream)  # (n_sequences, 3, H*f, W*f) each


@torch.no_grad()
def _msc_frames(model, diffusion, n_frames, s, shape, device, seed, progress, callback, codec, use_cache):
    """The generator behind ``causal_frames``."""
    generator = torch.Generator(device).manual_seed(seed)
    stepper = Stepper(diffusion, s.sampler, s.steps, s.eta, generator, clip_x0=codec.x0_range)
    ts = torch.tensor(stepper.timesteps + [0], device=device)  # the timestep of each level, index S - level
    n_iterations = start_iteration(s.schedule, n_frames - 1, s.chunk, s.steps) + s.steps
    context_t = s.context_t(diffusion.num_steps)
    reach = model.span if s.context is None else s.context  # finished frames a model call sees
    cache = model.new_cache() if use_cache else None
    if cache is not None:
        cache.span = reach
    b = shape[0]
    x, history, done = {}, [], 0  # frames in flight by index; finished frames and their call's first (uncached); out
    bar = tqdm(total=n_iterations, desc="sampling", unit="step", disable=not progress)
    try:
        for m in range(n_iterations):
            active = range(*active_frames(s.schedule, m, n_frames, s.chunk, s.steps))
            now = torch.tensor([s.steps - (m - start_iteration(s.schedule, f, s.chunk, s.steps)) for f in active])
            for f in active:
                if f not in x:
                    x[f] = randn(shape, generator, device)  # (B, C, H, W) pure noise when the frame starts
            a, z = active[0], torch.stack([x[f] for f in active], 1)  # (B, F, C, H, W)
            t = ts[s.steps - now].to(device).expand(b, -1)  # (B, F)
            if cache is not None:
                out = model(z, t, start=a, cache=cache)
            else:
                past = torch.stack([h for h, _ in history], 1) if history else z[:, :0]
                tp = torch.full((b, len(history)), context_t, dtype=torch.long, device=device)
                limit = {}
                if reach < model.span:  # each frame sees the `reach` frames before its call's first, as when cached
                    first = torch.tensor([f for _, f in history] + [a] * len(active), device=device)  # (H + F,)
                    limit = dict(reference=True, earliest=first - reach)
                out = model(torch.cat([past, z], 1), torch.cat([tp, t], 1), start=0, **limit)[:, len(history) :]
            z, x0 = stepper.step_with_x0(out, t, z)
            for i, f in enumerate(active):
                x[f] = z[:, i]
            bar.update(1)
            if callback is not None:
                callback({"i": m, "steps": n_iterations, "t": t, "x": z, "x0_pred": x0, "unit": 0, "units": 1,
                          "frames": (a, active[-1] + 1)})  # fmt: skip
            finished = [f for f, level in zip(active, now.tolist()) if level == 1]  # clean after this iteration
            if finished:
                clean = torch.stack([x.pop(f) for f in finished], 1)  # (B, K, C, H, W)
                ctx = clean
                if context_t > 0:  # Diffusion Forcing's stabilisation: context seen slightly noisy
                    noised = s.context_mode == "noised"  # else Diffusion Forcing's DDIM path: scaled, no draw
                    draw = randn(clean.shape, generator, device) if noised else torch.zeros_like(clean)
                    ctx = diffusion.q_sample(clean, torch.full((b,), context_t, device=device), draw)
                if cache is not None:
                    model(ctx, torch.full(ctx.shape[:2], context_t, dtype=torch.long, device=device),
                          start=finished[0], cache=cache, write=True)  # fmt: skip
                else:
                    history += [(ctx[:, i], finished[0]) for i in range(len(finished))]
                for i in range(len(finished)):
                    yield clean[:, i]
                    done += 1
    finally:
        bar.close()
    if done != n_frames:  # pragma: no cover - the schedule finishes every frame by construction
        raise GriditError(f"the rollout finished {done} of {n_frames} frames")


def _window_frames(model, diffusion, n_frames, s, overlap, shape, device, seed, progress, callback, codec):
    """The generator behind ``window_frames``."""
    generator = torch.Generator(device).manual_seed(seed)
    t_len = model.config.frames
    windows = 1 + max(0, -(-(n_frames - t_len) // (t_len - overlap)))
    window_shape = (shape[0], t_len, *shape[1:])
    opts = dict(sampler=s.sampler, steps=s.steps, resample=s.resample, device=device, clip_x0=codec.x0_range)
    if s.sampler == "ddim":
        opts["eta"] = s.eta
    mask = torch.zeros(1, t_len, 1, 1, 1, dtype=torch.bool, device=device)
    mask[:, :overlap] = True
    known_opts = {"reconstruction": s.guidance}  # for the windows after the first
    if s.conditioning == "clean":  # the known frames at their own level, one timestep per frame
        known_opts |= {"context": mask.flatten(), "context_t": s.context_t(diffusion.num_steps)}
    bar = tqdm(total=windows * s.steps, desc="sampling", unit="step", disable=not progress)
    done, window = 0, None
    try:
        for w in range(windows):
            known = None
            if window is not None:
                known = torch.zeros(window_shape, device=device)
                known[:, :overlap] = window[:, t_len - overlap :]

            def on_step(info, w=w):
                bar.update(1)
                if callback is not None:
                    first = w * (t_len - overlap)
                    callback({**info, "unit": w, "units": windows, "frames": (first, first + t_len)})

            with torch.no_grad():
                more = known_opts if known is not None else {}
                window = sample(diffusion, model, window_shape, known=known, known_mask=mask if known is not None else None,
                                generator=generator, callback=on_step, **opts, **more)  # fmt: skip
            for f in range(0 if w == 0 else overlap, t_len):
                if done == n_frames:
                    return
                yield window[:, f]
                done += 1
    finally:
        bar.close()
