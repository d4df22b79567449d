"""Images between formats and sizes: uint8 ``(..., H, W, 3)`` <-> float ``(..., 3, H, W)`` in ``[-1, 1]``, and the
bicubic resizes that stage 2, its degradations and its baseline share."""

import numpy as np
import torch
import torch.nn.functional as F

from gridit_core.errors import GriditError


def uint8_to_tensor(arr):
    """uint8 array ``(..., H, W, 3)`` -> float32 tensor ``(..., 3, H, W)`` in ``[-1, 1]``; ``tensor_to_uint8`` undone."""
    arr = np.asarray(arr)
    if arr.dtype != np.uint8 or arr.ndim < 3 or arr.shape[-1] != 3:
        raise GriditError(f"expected uint8 images (..., H, W, 3), got {arr.dtype} {arr.shape}")
    x = np.moveaxis(arr, -1, -3).astype(np.float32, order="C") / 127.5 - 1.0  # numpy: no thread overhead
    return torch.from_numpy(x)


def tensor_to_uint8(x):
    """Tensor or array ``(..., 3, H, W)`` in ``[-1, 1]`` -> numpy uint8 ``(..., H, W, 3)`` (clamped, rounded)."""
    x = torch.as_tensor(x).detach().cpu().float()
    if x.ndim < 3 or x.shape[-3] != 3:
        raise GriditError(f"expected images (..., 3, H, W), got shape {tuple(x.shape)}")
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).numpy()  # (..., H, W, 3)


def frames_to_tensor(images):
    """PIL frames of one size -> float32 tensor ``(T, 3, H, W)`` in ``[-1, 1]``."""
    if not images:
        raise GriditError("frames_to_tensor needs at least one frame")
    try:
        arr = np.stack([np.asarray(im if im.mode == "RGB" else im.convert("RGB")) for im in images])  # (T, H, W, 3)
    except ValueError:
        sizes = sorted({im.size for im in images})
        raise GriditError(f"frames differ in size ({sizes}); resize them to one size first") from None
    return uint8_to_tensor(arr)


def check_frames(x, scale, what, divisible=False):
    if not torch.is_tensor(x) or x.ndim != 4:
        raise GriditError(f"{what} must be a (N, C, H, W) tensor, got {tuple(getattr(x, 'shape', ()))}")
    if isinstance(scale, bool) or int(scale) != scale or scale < 1:
        raise GriditError(f"scale must be a positive integer, got {scale!r}")
    h, w = x.shape[-2:]
    if divisible and (h % scale or w % scale):
        raise GriditError(f"frame size {h}x{w} is not divisible by the scale factor {scale}")


def downscale(hr, scale):
    """Bicubic, antialiased ``(N, C, H, W)`` -> ``(N, C, H/scale, W/scale)``, clamped to [-1, 1]."""
    check_frames(hr, scale, "the high-resolution frames", divisible=True)
    h, w = hr.shape[-2:]
    lr = F.interpolate(hr, size=(h // scale, w // scale), mode="bicubic", align_corners=False, antialias=True)
    return lr.clamp(-1, 1)  # (N, C, H/s, W/s)


def upsample(lr_small, scale):
    """Bicubic ``(N, C, h, w)`` -> ``(N, C, h*scale, w*scale)``, clamped to [-1, 1] (bicubic overshoots at edges).

    The stage-2 conditioning resize and the bicubic baseline stage 2 is measured against; computed in float32 and
    returned in the input's dtype.
    """
    check_frames(lr_small, scale, "the low-resolution frames")
    h, w = lr_small.shape[-2:]
    s = int(scale)
    up = F.interpolate(lr_small.float(), size=(h * s, w * s), mode="bicubic", align_corners=False)
    return up.clamp(-1, 1).to(lr_small.dtype)  # (N, C, H, W)
