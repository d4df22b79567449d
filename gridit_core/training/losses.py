"""Training losses beyond the diffusion process's own (``Diffusion.training_losses``): stage 2's, whose model sees a
degraded, noise-augmented low-resolution frame beside the noisy high-resolution one (``models.sr``).

With ``residual=True`` (our default; the official model diffuses the frame itself) the diffusion runs on the residual
``hr - lr_up`` over the bicubic upsample of the degraded low-resolution frame (before augmentation), and sampling adds
``lr_up`` back, so a model that has learned nothing yet returns the bicubic baseline rather than noise.
"""

import torch

from gridit_core.data.degrade import DegradeConfig, make_pair
from gridit_core.errors import GriditError
from gridit_core.models.codec import pixel_codec
from gridit_core.models.sr import MAX_AUG, SRDenoiser, noise_augment
from gridit_core.util.rng import uniform


def sr_training_losses(diffusion, model, hr, degrade_cfg=None, generator=None, max_aug=MAX_AUG, residual=True,
                       codec=None):  # fmt: skip
    """``Diffusion.training_losses`` for stage 2: degrade ``hr (N, C, H, W)``, noise-augment, denoise ``hr`` (or,
    with ``residual``, ``hr`` minus the degraded frame's upsample). With a ``codec`` (``models.codec.LatentCodec``) the
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
