"""Training losses beyond the diffusion process's own (``Diffusion.training_losses``): stage 1's noise modes, and stage
2's loss, whose model sees a degraded, noise-augmented low-resolution frame beside the noisy high-resolution one
(``models.sr``).

Stage 1 trains with one of ``NOISE_MODES`` (``sequence_losses``): ``shared``, one level for a whole grid or clip (the
official); ``per-frame``, an independent level for every cell of a grid or frame of a clip (Diffusion Forcing); or
``context``, the way continuation grids and windows are sampled: a random number of leading cells (0 to all but one),
in the continuation's order, given clean or barely noised (a level up to ``context_noise`` of the process), the rest
at one level, and the loss over the rest only. The grid DiT takes one timestep per cell (``DiT.forward``), so these
need no new parameters: official and shipped checkpoints load and fine-tune with any of them.

With ``residual=True`` (our default; the official model diffuses the frame itself) the diffusion runs on the residual
``hr - lr_up`` over the bicubic upsample of the degraded low-resolution frame (before augmentation), and sampling adds
``lr_up`` back, so a model that has learned nothing yet returns the bicubic baseline rather than noise.
"""

import torch
import torch.nn as nn

from gridit_core.data.degrade import DegradeConfig, make_pair
from gridit_core.errors import GriditError
from gridit_core.grid import frames_to_grid, grid_to_frames
from gridit_core.models.codec import pixel_codec
from gridit_core.models.sr import MAX_AUG, SRDenoiser, noise_augment
from gridit_core.util.rng import randint, uniform

NOISE_MODES = ("shared", "per-frame", "context")
CONTEXT_NOISE = 0.015  # context cells' highest level, a fraction of the process: Diffusion Forcing stabilises at 15/1000


class GridAsClip(nn.Module):
    """A grid DiT called on clips ``(N, F, C, h, w)``: the frames tiled into its grid image and its output cut back
    into frames, so the per-frame path of ``Diffusion.training_losses`` trains it with one level per cell."""

    def __init__(self, net, rows, cols):
        super().__init__()
        self.net, self.rows, self.cols = net, rows, cols

    def forward(self, x, t, y=None, **kwargs):
        out = self.net(frames_to_grid(x, self.rows, self.cols), t, y=y, **kwargs)  # (N, C_out, GH, GW)
        return grid_to_frames(out, self.rows, self.cols)  # (N, F, C_out, h, w)


def context_levels(n, frames, num_steps, generator=None, device=None, context_noise=CONTEXT_NOISE):
    """``(t, context)`` for ``n`` samples of ``frames`` cells (``context`` mode): ``k`` leading cells, ``k`` uniform in
    ``0 .. frames-1``, are context at a level uniform in ``0 .. round(context_noise * (T-1))``; the rest share one level
    uniform in ``0 .. T-1``. ``t`` is ``(n, frames)``, ``context`` a bool ``(n, frames)``."""
    k = randint(frames, (n,), generator, device)  # (n,) leading context cells
    level = randint(num_steps, (n,), generator, device)  # (n,) the level of the rest
    given = randint(round(context_noise * (num_steps - 1)) + 1, (n, frames), generator, device)  # (n, F)
    context = torch.arange(frames, device=level.device)[None] < k[:, None]  # (n, F)
    return torch.where(context, given, level[:, None]), context


def sequence_losses(diffusion, net, x, mode="shared", *, rows=None, cols=None, generator=None,
                    context_noise=CONTEXT_NOISE):  # fmt: skip
    """Stage-1 ``Diffusion.training_losses`` of grids ``x (N, C, GH, GW)`` (of ``rows x cols`` cells) or clips
    ``(N, F, C, H, W)`` with the noise ``mode`` of ``NOISE_MODES`` (module docstring)."""
    if mode not in NOISE_MODES:
        raise GriditError(f"unknown noise mode {mode!r}; choose one of {', '.join(NOISE_MODES)}")
    if mode == "shared":
        return diffusion.training_losses(net, x, generator=generator)
    if x.ndim == 4:  # a grid image: its cells as the frames of a clip
        x, net = grid_to_frames(x, rows, cols), GridAsClip(net, rows, cols)  # (N, F, C, h, w)
    if mode == "per-frame":
        return diffusion.training_losses(net, x, generator=generator, per_frame=True)
    t, context = context_levels(len(x), x.shape[1], diffusion.num_steps, generator, x.device, context_noise)
    return diffusion.training_losses(net, x, t, generator=generator, loss_mask=~context[..., None, None, None])


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
