"""Stage 2: a DiT that denoises a high-resolution frame given its low-resolution version (per-frame x2 or x4).

As in the official model, the conditioning image (the low-resolution frame, bicubic-upsampled to full size) is
concatenated with the noisy frame on channels, so the DiT sees ``2C`` input channels and predicts ``C`` (or ``2C``
with learned sigma). Unlike the official model, the conditioning image is noise-augmented (Imagen's noise-conditioning
augmentation: Imagen, Saharia et al. 2022, and cascaded diffusion models, Ho et al. 2022): it is mixed with Gaussian
noise at a level ``s`` in [0, 1], ``sqrt(1 - s^2) * lr_up + s * noise``, and ``s`` goes to the model through its
``aug_embedder``. ``s`` is the std of the added noise in [-1, 1] pixel units, independent of the diffusion schedule.
Training draws ``s ~ U(0, max_aug)`` per frame; sampling uses one chosen level, so stage-1 artefacts of about that
size drown in noise the model has learned to look through.

With ``residual=True`` (our default; the official model diffuses the frame itself) the diffusion runs on the residual
``hr - lr_up`` over the bicubic upsample of the given low-resolution frame (before augmentation), and sampling adds
``lr_up`` back, so a model that has learned nothing yet returns the bicubic baseline rather than noise. At x4 on
64 px bouncing shapes this took a small model from 10 dB below bicubic to above it (see ``reports/``).
"""

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from gridit_core.data.degrade import DegradeConfig, make_pair
from gridit_core.diffusion import Stepper, sample
from gridit_core.errors import GriditError
from gridit_core.latent import IdentityCodec, pixel_codec
from gridit_core.models import build_model
from gridit_core.util.image import upsample
from gridit_core.util.rng import randn, uniform

SCALES = (2, 4)
MAX_AUG = 0.3  # training levels ~ U(0, 0.3): noise std up to ~38 on the 0-255 scale, content still dominant (SNR 10)
# Sampling level: close to the std of the training pixel noise (10-15 of 255 is 0.08-0.12), enough to hide small
# stage-1 artefacts while the low-resolution content stays clear (SNR 99). Raise it for rougher stage-1 frames.
SAMPLE_AUG = 0.1


def check_scale(scale):
    if isinstance(scale, bool) or not isinstance(scale, int) or scale not in SCALES:
        raise GriditError(f"the super-resolution scale must be one of {', '.join(map(str, SCALES))}, got {scale!r}")


def build_sr_model(name, frame_size, scale, channels=3, learn_sigma=False, factor=1, **kwargs):
    """A registered DiT size as a stage-2 model of ``frame_size`` frames: ``2C`` channels in, ``C`` (or ``2C``) out.

    ``factor`` > 1 builds it for latents of a VAE that downsamples by ``factor`` (``channels`` is then its latent
    channels). ``kwargs`` go to ``DiTConfig`` (e.g. ``pos_embed``, ``depth``); the stage-2 inputs are set here.
    """
    check_scale(scale)
    h, w = (frame_size, frame_size) if isinstance(frame_size, int) else tuple(frame_size)
    if h % scale or w % scale:
        raise GriditError(f"frame size {h}x{w} is not divisible by the scale factor {scale}")
    if h % factor or w % factor:
        raise GriditError(f"frame size {h}x{w} is not divisible by the VAE's downsampling factor {factor}")
    fixed = {"input_size", "in_channels", "out_channels", "aug_cond", "rows", "cols", "learn_sigma"}
    if fixed & set(kwargs):
        raise GriditError(f"build_sr_model sets {', '.join(sorted(fixed & set(kwargs)))} itself")
    return build_model(
        name, input_size=(h // factor, w // factor), in_channels=2 * channels, out_channels=channels * (2 if learn_sigma else 1),
        aug_cond=True, rows=1, cols=1, learn_sigma=learn_sigma, **kwargs,
    )  # fmt: skip


def is_sr_model(model):
    cfg = getattr(model, "config", None)
    return bool(getattr(cfg, "aug_cond", False)) and cfg.in_channels % 2 == 0


class SRDenoiser(nn.Module):
    """A stage-2 DiT as the diffusion code calls it: ``(x_noisy, t, y, *, lr_up, aug_level)`` -> prediction.

    It holds no weights of its own, so the DiT's state dict (and checkpoints) keep the official names; ``net`` may be
    a DDP wrapper of the DiT.
    """

    num_classes = 0

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, t, y=None, *, lr_up, aug_level):
        if lr_up.shape != x.shape:
            raise GriditError(f"conditioning image {tuple(lr_up.shape)} does not match the noisy frame {tuple(x.shape)}")
        return self.net(torch.cat([x, lr_up.to(x.dtype)], dim=1), t, y=y, aug_level=aug_level)  # (N, C or 2C, H, W)


def noise_augment(lr_up, level, generator=None):
    """``sqrt(1 - s^2) * lr_up + s * noise`` per frame with ``level`` s ``(N,)`` in [0, 1] (variance-preserving)."""
    s = level.to(device=lr_up.device, dtype=lr_up.dtype).reshape(-1, 1, 1, 1)  # (N, 1, 1, 1)
    return (1 - s**2).sqrt() * lr_up + s * randn(lr_up.shape, generator, lr_up.device, lr_up.dtype)


def sr_training_losses(diffusion, model, hr, degrade_cfg=None, generator=None, max_aug=MAX_AUG, residual=True,
                       codec=None):  # fmt: skip
    """``Diffusion.training_losses`` for stage 2: degrade ``hr (N, C, H, W)``, noise-augment, denoise ``hr`` (or,
    with ``residual``, ``hr`` minus the degraded frame's upsample). With a ``codec`` (``latent.LatentCodec``) the
    degradation stays in pixels, and the frame and its degraded upsample are encoded before the rest.

    ``model`` is the stage-2 DiT (or its DDP wrapper). Draws from ``generator``, in order: the degradation, the
    augmentation levels ``U(0, max_aug)`` and noise, then the diffusion timestep and noise.
    """
    if not 0 <= max_aug <= 1:
        raise GriditError(f"max_aug must lie in [0, 1], got {max_aug}")
    with torch.autocast(hr.device.type, enabled=False):  # data preparation, kept in full precision under bf16
        hr = hr.float()
        lr_up, _ = make_pair(hr, degrade_cfg or DegradeConfig(), generator)  # (N, C, H, W)
        codec = pixel_codec(codec)
        hr, lr_up = codec.encode(hr), codec.encode(lr_up)  # (N, C', H/f, W/f); pixels pass as they are
        level = uniform(hr.shape[0], (0.0, max_aug), generator, hr.device)  # (N,)
        cond = noise_augment(lr_up, level, generator)  # (N, C, H, W)
    net = model if isinstance(model, SRDenoiser) else SRDenoiser(model)
    target = hr - lr_up if residual else hr  # (N, C, H, W)
    return diffusion.training_losses(net, target, generator=generator, model_kwargs={"lr_up": cond, "aug_level": level})


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
