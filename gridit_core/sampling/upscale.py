"""Stage 2's sampling: super-resolve frames with a stage-2 model (``models.sr``), one seeded batch at a time.

Each batch is upsampled bicubically, noise-augmented at one chosen level, and denoised with the conditioning passed
through ``model_kwargs``. With ``residual=True`` (the model's ``TrainConfig.residual``) the sample is the residual over
the bicubic upsample and is added to it. At x4 on 64 px bouncing shapes the residual took a small model from 10 dB
below bicubic to above it (``reports/stage2_x4.md``).
"""

import torch
from tqdm.auto import tqdm

from gridit_core.diffusion import Stepper, sample
from gridit_core.errors import GriditError
from gridit_core.models.codec import IdentityCodec, pixel_codec
from gridit_core.models.sr import SAMPLE_AUG, SRDenoiser, check_scale, is_sr_model, noise_augment
from gridit_core.util.image import upsample

__all__ = ["SAMPLE_AUG", "check_upscale_settings", "pixel_size", "upscale_frames", "x0_range"]


@torch.no_grad()
def check_upscale_settings(model, diffusion, scale, *, batch_size=16, aug_level=SAMPLE_AUG, steps=50, sampler="ddim",
                           eta=0.0, codec=None):  # fmt: skip
    """Every setting ``upscale_frames`` needs, checked before any frame is sampled; returns the input size ``(h, w)``."""
    check_scale(scale)
    if not is_sr_model(model):
        raise GriditError("this is not a stage-2 (super-resolution) model; load it with training.load_sr")
    codec = pixel_codec(codec)
    if model.config.in_channels != 2 * codec.latent_channels:
        raise GriditError(f"the stage-2 model takes {model.config.in_channels // 2}-channel latents, but the VAE "
                          f"makes {codec.latent_channels}")  # fmt: skip
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise GriditError(f"the stage-2 batch size must be a positive integer, got {batch_size!r}")
    if not 0 <= aug_level <= 1:
        raise GriditError(f"the noise level must lie in [0, 1], got {aug_level}")
    Stepper(diffusion, sampler, steps, eta)  # refuses an unknown sampler, eta or step count
    h, w = pixel_size(model, codec)
    if h % scale or w % scale:
        raise GriditError(f"the stage-2 model's {h}x{w} frames are not divisible by its scale factor {scale}")
    return h // scale, w // scale


def pixel_size(model, codec=None):
    """The ``(H, W)`` in pixels of the frames a stage-2 model makes (its latents decoded, with a ``codec``)."""
    f = pixel_codec(codec).downsample_factor
    return tuple(side * f for side in model.config.image_size)


def upscale_frames(
    model, diffusion, lr_small, *, scale, residual=True, codec=None, aug_level=SAMPLE_AUG, sampler="ddim", steps=50,
    eta=0.0, seed=0, batch_size=16, callback=None, progress=False, device=None,
):  # fmt: skip
    """Super-resolve ``lr_small (N, C, h, w)`` in [-1, 1] to ``(N, C, h*scale, w*scale)`` with a stage-2 model.

    Each batch: bicubic upsample, noise augmentation at ``aug_level``, then ``sampler`` over ``steps`` steps with the
    conditioning passed through ``model_kwargs``; ``residual`` must be what the model was trained with (its
    ``TrainConfig.residual``): then the sample is added to the bicubic upsample. A latent-space model needs its
    ``codec``: the upsample is encoded and the sample decoded; ``lr_small`` is RGB pixels either way.

    One CPU generator seeded with ``seed`` drives every draw, so the result is the same for the same ``seed`` and
    ``batch_size`` on any device. ``callback`` gets the sampler's dict plus ``"batch"`` and ``"batches"``. Returns
    the frames on the model's device (or ``device``), clamped.
    """
    check_upscale_settings(model, diffusion, scale, batch_size=batch_size, aug_level=aug_level, steps=steps,
                           sampler=sampler, eta=eta, codec=codec)
    codec = pixel_codec(codec)
    channels = 3
    if not torch.is_tensor(lr_small) or lr_small.ndim != 4 or lr_small.shape[1] != channels:
        raise GriditError(f"lr_small must be (N, {channels}, h, w), got {tuple(getattr(lr_small, 'shape', ()))}")
    h, w = lr_small.shape[-2:]
    want = pixel_size(model, codec)
    if (h * scale, w * scale) != want:
        raise GriditError(
            f"low-resolution frames of {h}x{w} times {scale} give {h * scale}x{w * scale}, but the model makes "
            f"{want[0]}x{want[1]} frames (it wants {want[0] / scale:g}x{want[1] / scale:g} inputs at x{scale})"
        )
    device = torch.device(device) if device is not None else next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    net = SRDenoiser(model)
    extra = {"eta": eta} if sampler == "ddim" else {}  # DDPM has no eta
    batches = list(torch.split(lr_small, batch_size))
    out = []
    for b, lr in enumerate(tqdm(batches, desc="upscaling", unit="batch", disable=not progress)):
        lr_up = upsample(lr.to(device=device, dtype=torch.float32), scale)  # (B, C, H, W)
        lr_up = codec.encode(lr_up)  # (B, C', H/f, W/f); pixels pass as they are
        level = torch.full((lr.shape[0],), float(aug_level), device=device)  # (B,)
        cond = noise_augment(lr_up, level, generator)  # (B, C, H, W)
        hr = sample(
            diffusion, net, lr_up.shape, sampler=sampler, steps=steps, generator=generator, device=device,
            callback=_tagged(callback, b, len(batches)), model_kwargs={"lr_up": cond, "aug_level": level},
            clip_x0=x0_range(codec, lr_up, residual), **extra,
        )  # fmt: skip
        hr = hr + lr_up if residual else hr
        out.append(codec.decode(hr).clamp(-1, 1))  # (B, C, H, W)
    return torch.cat(out)  # (N, C, H, W)


def x0_range(codec, lr_up, residual):
    """Where the diffused signal's x0 lies, for the sampler's clamp: pixels in [-1, 1], so the residual over the
    upsample ``lr_up`` in ``[-1 - lr_up, 1 - lr_up]``; latents unbounded (None)."""
    if not isinstance(codec, IdentityCodec):
        return None
    return (-1 - lr_up, 1 - lr_up) if residual else codec.x0_range


def _tagged(callback, batch, batches):
    """``callback`` with the batch position added to each step's dict."""
    if callback is None:
        return None
    return lambda info: callback({**info, "batch": batch, "batches": batches})
