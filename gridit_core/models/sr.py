"""Stage 2's model: a DiT that denoises a high-resolution frame given its low-resolution version (per-frame x2 or x4).

As in the official model, the conditioning image (the low-resolution frame, bicubic-upsampled to full size) is
concatenated with the noisy frame on channels, so the DiT sees ``2C`` input channels and predicts ``C`` (or ``2C``
with learned sigma). Unlike the official model, the conditioning image is noise-augmented (Imagen's noise-conditioning
augmentation: Imagen, Saharia et al. 2022, and cascaded diffusion models, Ho et al. 2022): it is mixed with Gaussian
noise at a level ``s`` in [0, 1], ``sqrt(1 - s^2) * lr_up + s * noise``, and ``s`` goes to the model through its
``aug_embedder``. ``s`` is the std of the added noise in [-1, 1] pixel units, independent of the diffusion schedule.
Training draws ``s ~ U(0, max_aug)`` per frame (``training.losses``); sampling uses one chosen level
(``sampling.upscale``), so stage-1 artefacts of about that size drown in noise the model has learned to look through.
"""

import torch
import torch.nn as nn

from gridit_core.errors import GriditError
from gridit_core.models.dit import build_dit
from gridit_core.util.rng import randn

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
    return build_dit(
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
