"""Degradations that turn high-resolution frames into stage-2 training pairs, and the resizes they use.

The official GriDiT stage-2 recipe (its training script): bicubic down to the low size, bicubic back up, Gaussian
pixel noise with a std drawn from 10-15 on the 0-255 scale, then with probability 0.5 a Gaussian blur with a kernel
of 9, 11, 13 or 15 pixels. ``make_pair`` builds the conditioning image in that order (``order="official"``), or
degrades the low-resolution frame itself and upsamples it exactly as ``sampling.upscale.upscale_frames`` does at
sampling time (``order="low-res"``). ``degrade`` gives a degraded low-resolution frame, the input an evaluation feeds to
``upscale_frames``. Frames are ``(N, C, H, W)`` in [-1, 1]; every random draw comes from the given generator.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gridit_core.errors import GriditError
from gridit_core.util.image import check_frames, downscale, upsample
from gridit_core.util.rng import randint, randn, uniform

ORDERS = ("official", "low-res")


@dataclass
class DegradeConfig:
    """How a high-resolution frame is degraded; the defaults are the official GriDiT stage-2 recipe."""

    scale: int = 4  # high / low resolution; the official model is x4
    noise_std: tuple = (10.0, 15.0)  # per-image pixel-noise std drawn uniformly from this range, 0-255 scale
    blur_prob: float = 0.5  # probability that an image is blurred
    blur_kernels: tuple = (9, 11, 13, 15)  # Gaussian kernel sides, one drawn uniformly per blurred image
    blur_sigma: tuple | None = None  # (lo, hi) to draw sigma uniformly; None: OpenCV's sigma for the kernel size
    order: str = "official"  # "official": noise and blur on the upsampled image; "low-res": blur, down, noise

    def __post_init__(self):
        if isinstance(self.scale, bool) or not isinstance(self.scale, int) or self.scale < 1:
            raise GriditError(f"scale must be a positive integer, got {self.scale!r}")
        self.noise_std = _pair(self.noise_std, "noise_std")
        if self.noise_std[0] < 0:
            raise GriditError(f"noise_std must be >= 0, got {self.noise_std}")
        if not 0 <= self.blur_prob <= 1:
            raise GriditError(f"blur_prob must lie in [0, 1], got {self.blur_prob}")
        self.blur_kernels = tuple(int(k) for k in self.blur_kernels)
        if not self.blur_kernels or any(k < 1 or k % 2 == 0 for k in self.blur_kernels):
            raise GriditError(f"blur_kernels must be odd positive sizes, got {self.blur_kernels}")
        if self.blur_sigma is not None:
            self.blur_sigma = _pair(self.blur_sigma, "blur_sigma")
            if self.blur_sigma[0] <= 0:
                raise GriditError(f"blur_sigma must be positive, got {self.blur_sigma}")
        if self.order not in ORDERS:
            raise GriditError(f"unknown degradation order {self.order!r}; choose one of {', '.join(ORDERS)}")


def _pair(value, name):
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise GriditError(f"{name} must be a (low, high) pair, got {value!r}") from None
    if lo > hi:
        raise GriditError(f"{name} must be a (low, high) pair with low <= high, got {value!r}")
    return lo, hi


def add_pixel_noise(x, cfg, generator=None):
    """Gaussian noise, one std per image from ``cfg.noise_std`` (0-255 scale, so divided by 127.5 here)."""
    std = uniform(x.shape[0], cfg.noise_std, generator, x.device) / 127.5  # (N,)
    return x + std.to(x.dtype).reshape(-1, 1, 1, 1) * randn(x.shape, generator, x.device, x.dtype)


def opencv_sigma(kernel):
    """The sigma OpenCV's ``GaussianBlur`` uses for a ``kernel``-pixel window when asked for sigma 0."""
    return 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8


def gaussian_blur(x, kernel, sigma):
    """Separable Gaussian blur of ``x (N, C, H, W)`` with a ``kernel x kernel`` window; ``sigma`` a float or ``(N,)``.

    Borders reflect (OpenCV's default), or repeat when the image is smaller than the window's half.
    """
    n, c, h, w = x.shape
    r = kernel // 2
    sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1).expand(n, 1)  # (N, 1)
    taps = torch.arange(-r, r + 1, dtype=torch.float64)  # (k,)
    weights = torch.exp(-0.5 * (taps / sigma) ** 2)  # (N, k)
    weights = (weights / weights.sum(1, keepdim=True)).repeat_interleave(c, 0).to(x)  # (N*C, k), one row a channel
    mode = "reflect" if min(h, w) > r else "replicate"
    y = F.pad(x.reshape(1, n * c, h, w), (r, r, r, r), mode=mode)  # (1, N*C, H+2r, W+2r)
    y = F.conv2d(y, weights.reshape(n * c, 1, 1, kernel), groups=n * c)  # (1, N*C, H+2r, W)
    y = F.conv2d(y, weights.reshape(n * c, 1, kernel, 1), groups=n * c)  # (1, N*C, H, W)
    return y.reshape(n, c, h, w)


def random_blur(x, cfg, generator=None):
    """Blur each image with probability ``cfg.blur_prob``, kernel and sigma drawn per image."""
    n = x.shape[0]
    blurred = uniform(n, (0.0, 1.0), generator, x.device) < cfg.blur_prob  # (N,)
    pick = randint(len(cfg.blur_kernels), (n,), generator, x.device)  # (N,)
    sigma = uniform(n, cfg.blur_sigma or (0.0, 0.0), generator, x.device)  # drawn always, so draws keep their order
    out = x.clone()
    for j, k in enumerate(cfg.blur_kernels):  # one grouped convolution per kernel size
        idx = (blurred & (pick == j)).nonzero().flatten()  # (n_k,)
        if len(idx):
            s = sigma[idx].cpu() if cfg.blur_sigma is not None else opencv_sigma(k)
            out[idx] = gaussian_blur(x[idx], k, s).to(out.dtype)  # autocast may have run the convolutions in bf16
    return out


def degrade(hr, cfg=None, generator=None):
    """A degraded low-resolution frame ``(N, C, H/s, W/s)``: blur (with ``blur_prob``), bicubic down, pixel noise.

    This is what an evaluation feeds to ``sampling.upscale.upscale_frames`` in place of a stage-1 output.
    """
    cfg = cfg or DegradeConfig()
    check_frames(hr, cfg.scale, "the high-resolution frames", divisible=True)  # before the blur's work
    x = random_blur(hr, cfg, generator)  # (N, C, H, W)
    x = downscale(x, cfg.scale)  # (N, C, H/s, W/s)
    return add_pixel_noise(x, cfg, generator).clamp(-1, 1)  # (N, C, H/s, W/s)


def make_pair(hr, cfg=None, generator=None):
    """``(lr_up (N, C, H, W), lr_small (N, C, H/s, W/s))``: the stage-2 conditioning image and its low-res frame.

    ``order="official"``: ``lr_small`` is the clean bicubic downscale and ``lr_up`` its bicubic upsample with pixel
    noise and then the random blur added at full size (the official recipe). ``order="low-res"``: ``lr_small`` is
    ``degrade(hr)`` and ``lr_up = upsample(lr_small)``, the very path ``upscale_frames`` takes at sampling time.
    """
    cfg = cfg or DegradeConfig()
    if cfg.order == "low-res":
        lr_small = degrade(hr, cfg, generator)  # (N, C, H/s, W/s)
        return upsample(lr_small, cfg.scale), lr_small
    lr_small = downscale(hr, cfg.scale)  # (N, C, H/s, W/s)
    x = add_pixel_noise(upsample(lr_small, cfg.scale), cfg, generator)  # (N, C, H, W)
    return random_blur(x, cfg, generator).clamp(-1, 1), lr_small
