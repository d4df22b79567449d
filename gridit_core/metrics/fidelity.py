"""Fidelity of super-resolved frames to ground truth: PSNR, SSIM, and the bicubic baseline beside them.

All images are float tensors ``(N, C, H, W)`` in ``[-1, 1]`` (so ``data_range`` is 2); scores are per image and
computed in float64.
"""

import torch
import torch.nn.functional as F

from gridit_core.errors import GriditError
from gridit_core.util.image import upsample


def _pair(x, y):
    """Check two image batches of one shape and return them as float64 on ``x``'s device."""
    for t in (x, y):
        if not isinstance(t, torch.Tensor) or t.ndim != 4:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise GriditError(f"images must be tensors (N, C, H, W), got {shape}")
    if x.shape != y.shape:
        raise GriditError(f"images to compare differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    return x.double(), y.to(x.device).double()


def psnr(x, y, data_range=2.0):
    """Peak signal-to-noise ratio in dB per image ``(N,)``: ``10 log10(range^2 / MSE)``, ``inf`` where equal."""
    x, y = _pair(x, y)
    mse = (x - y).pow(2).flatten(1).mean(1)  # (N,)
    return 10 * torch.log10(data_range**2 / mse)  # mse = 0 gives inf


def gaussian_window(size=11, sigma=1.5):
    """Normalised 2D Gaussian ``(size, size)``, float64: SSIM's standard window (Wang et al. 2004)."""
    k = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(k**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(x, y, data_range=2.0, win_size=11, sigma=1.5, k1=0.01, k2=0.03):
    """Structural similarity per image ``(N,)`` (Wang et al. 2004, Eq. 13): the SSIM map over every valid position
    of a Gaussian window, on each channel, averaged. 1 where equal."""
    x, y = _pair(x, y)
    n, c, h, w = x.shape
    if min(h, w) < win_size:
        raise GriditError(f"images of {h}x{w} are smaller than the SSIM window {win_size}; pass a smaller win_size")
    win = gaussian_window(win_size, sigma).to(x.device).expand(c, 1, win_size, win_size)  # (C, 1, k, k) depthwise

    def blur(t):
        return F.conv2d(t, win, groups=c)  # (N, C, H-k+1, W-k+1), 'valid' as in the reference code

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    structure = (2 * cov + c2) / (var_x + var_y + c2)  # contrast and structure terms together
    return (luminance * structure).flatten(1).mean(1)  # (N,)


def bicubic_baseline(lr_small, scale):
    """The bicubic upsample of ``(N, C, h, w)`` low-resolution frames, clamped: what stage 2 must beat."""
    return upsample(lr_small, scale)


def compare_sr(sr, hr, lr_small, scale, data_range=2.0):
    """Mean PSNR and SSIM of super-resolved ``sr`` against ``hr``, with the same for bicubic upsampling of
    ``lr_small`` beside them: ``{"psnr", "ssim", "psnr_bicubic", "ssim_bicubic", "ssim_window", "n"}``."""
    bicubic = bicubic_baseline(lr_small, scale)
    if bicubic.shape != hr.shape:
        raise GriditError(
            f"low-resolution frames {tuple(lr_small.shape)} upsampled {scale}x give {tuple(bicubic.shape)}, "
            f"not the ground truth's {tuple(hr.shape)}"
        )
    win = min(11, *hr.shape[-2:])
    win -= 1 - win % 2  # frames under 11 px get the largest odd window that fits
    return {
        "psnr": psnr(sr, hr, data_range).mean().item(),
        "ssim": ssim(sr, hr, data_range, win_size=win).mean().item(),
        "psnr_bicubic": psnr(bicubic, hr, data_range).mean().item(),
        "ssim_bicubic": ssim(bicubic, hr, data_range, win_size=win).mean().item(),
        "ssim_window": win,
        "n": len(hr),
    }

