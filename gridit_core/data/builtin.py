"""Built-in synthetic sequences, generated in memory from a seed: bouncing balls (with their ground truth) and moving
digits. ``data.open_dataset`` serves them as ``builtin:bouncing`` and ``builtin:digits``.

Pixel coordinates are continuous: pixel ``(i, j)`` covers ``[i, i+1) x [j, j+1)``, so its centre is
``(i + 0.5, j + 0.5)`` and a ``size``-pixel frame spans ``[0, size]``.
"""

from dataclasses import dataclass, fields, replace
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from gridit_core.errors import GriditError

PALETTE = np.array(
    [(255, 60, 60), (60, 220, 60), (80, 80, 255), (255, 220, 40), (230, 70, 230), (40, 220, 230)], dtype=np.uint8
)  # bright and far apart in hue, so balls stay distinguishable where they meet


@dataclass
class BouncingConfig:
    """Bouncing balls on black: sizes in pixels, speeds in pixels per frame, ranges as ``(low, high)``."""

    frame_size: int = 32
    length: int = 64  # frames per sequence
    n_balls: int = 1
    radius: tuple = (2.5, 4.0)  # equal ends give a fixed radius
    speed: tuple = (1.0, 2.5)  # speed magnitude; direction is uniform
    colours: object = "palette"  # "palette" (distinct PALETTE colours per sequence) or one RGB tuple for all
    antialias: bool = True  # soft edge by pixel coverage, so sub-pixel motion shows

    @classmethod
    def for_frame_size(cls, frame_size, **overrides):
        """The defaults (sized for 32 px frames) with radius and speed scaled to ``frame_size``."""
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise GriditError(f"unknown bouncing-shapes settings {sorted(unknown)}; known: {', '.join(f.name for f in fields(cls))}")
        k = frame_size / 32
        radius = (max(1.0, 2.5 * k), max(1.0, 4.0 * k))
        return replace(cls(frame_size=frame_size, radius=radius, speed=(1.0 * k, 2.5 * k)), **overrides)


@dataclass
class BouncingData:
    """Frames ``(N, T, H, W, 3)`` uint8 with their ground truth: centres ``(N, T, B, 2)`` as ``(y, x)`` pixels."""

    frames: np.ndarray
    positions: np.ndarray
    radii: np.ndarray  # (N, B)
    colours: np.ndarray  # (N, B, 3) uint8
    velocities: np.ndarray  # (N, B, 2) initial (vy, vx)


def reflect_into(p, low, high):
    """Fold unbounded positions into ``[low, high]`` as elastic bounces between two walls do."""
    span = high - low
    u = np.mod(p - low, 2 * span)
    return low + span - np.abs(u - span)


def _range(pair, what):
    lo, hi = (float(pair), float(pair)) if np.isscalar(pair) else map(float, pair)
    if not 0 <= lo <= hi:
        raise GriditError(f"{what} must be a range (low, high) with 0 <= low <= high, got {pair}")
    return lo, hi


def bouncing_shapes(n_sequences, cfg=None, seed=0):
    """Sequences of balls moving at constant velocity and bouncing elastically off the frame walls."""
    cfg = cfg or BouncingConfig()
    n, t, s, b = int(n_sequences), int(cfg.length), int(cfg.frame_size), int(cfg.n_balls)
    if min(n, t, s, b) < 1:
        raise GriditError(f"bouncing_shapes needs positive sizes, got n={n} and {cfg}")
    r_lo, r_hi = _range(cfg.radius, "radius")
    v_lo, v_hi = _range(cfg.speed, "speed")
    if r_lo <= 0 or 2 * r_hi >= s:
        raise GriditError(f"ball radius {cfg.radius} must be > 0 and fit a {s}px frame (below {s / 2})")
    rng = np.random.default_rng(seed)
    radii = rng.uniform(r_lo, r_hi, (n, b))
    speed = rng.uniform(v_lo, v_hi, (n, b))
    angle = rng.uniform(0, 2 * np.pi, (n, b))
    vel = np.stack([speed * np.sin(angle), speed * np.cos(angle)], -1)  # (N, B, 2) as (vy, vx)
    r = radii[..., None]  # (N, B, 1)
    start = r + rng.uniform(0, 1, (n, b, 2)) * (s - 2 * r)  # (N, B, 2)
    if isinstance(cfg.colours, str) and cfg.colours == "palette":
        order = np.argsort(rng.random((n, len(PALETTE))), axis=1)  # distinct colours while the palette lasts
        colours = PALETTE[order[:, np.arange(b) % len(PALETTE)]]  # (N, B, 3)
    else:
        c = np.asarray(cfg.colours)
        if c.shape != (3,) or c.min() < 0 or c.max() > 255:
            raise GriditError(f"colours must be 'palette' or one RGB tuple of 0-255 values, got {cfg.colours!r}")
        colours = np.broadcast_to(c.astype(np.uint8), (n, b, 3)).copy()
    steps = np.arange(t, dtype=np.float64)[None, :, None, None]  # (1, T, 1, 1)
    pos = reflect_into(start[:, None] + vel[:, None] * steps, r[:, None], s - r[:, None])  # (N, T, B, 2)

    frames = np.empty((n, t, s, s, 3), np.uint8)
    grid = np.arange(s, dtype=np.float32) + 0.5  # pixel centres
    chunk = max(1, 2**21 // (t * s * s))
    for lo in range(0, n, chunk):
        sl = slice(lo, lo + chunk)
        img = np.zeros((len(range(n)[sl]), t, s, s, 3), np.float32)  # (n, T, H, W, 3)
        for k in range(b):  # later balls are drawn over earlier ones
            dy = grid[None, None, :, None] - pos[sl, :, k, 0, None, None].astype(np.float32)  # (n, T, H, 1)
            dx = grid[None, None, None, :] - pos[sl, :, k, 1, None, None].astype(np.float32)  # (n, T, 1, W)
            rad = radii[sl, k, None, None, None].astype(np.float32)
            dist = np.sqrt(dy * dy + dx * dx)  # (n, T, H, W)
            cover = np.clip(rad - dist + 0.5, 0, 1) if cfg.antialias else (dist <= rad).astype(np.float32)
            cover = cover[..., None]  # (n, T, H, W, 1)
            img = img * (1 - cover) + cover * colours[sl, k, None, None, None, :].astype(np.float32)
        frames[sl] = np.rint(img).astype(np.uint8)
    return BouncingData(frames, pos, radii, colours, vel)


@lru_cache(maxsize=None)
def _digit_glyphs(height):
    """Glyphs of 0-9 from PIL's built-in font, upscaled to ``height`` pixels: a list of uint8 ``(h, w)``."""
    font = ImageFont.load_default()
    glyphs = []
    for d in range(10):
        canvas = Image.new("L", (48, 48))
        ImageDraw.Draw(canvas).text((8, 8), str(d), fill=255, font=font)
        glyph = canvas.crop(canvas.getbbox())
        width = max(1, round(glyph.width * height / glyph.height))
        glyphs.append(np.asarray(glyph.resize((width, height), Image.BICUBIC)))
    return glyphs


def moving_digits(n_sequences, length=64, frame_size=32, n_digits=1, seed=0, speed=(1.0, 2.5)):
    """White digits 0-9 on black, each at constant velocity bouncing off the walls: uint8 ``(N, T, H, W, 3)``."""
    n, t, s, m = int(n_sequences), int(length), int(frame_size), int(n_digits)
    if min(n, t, m) < 1 or s < 8:
        raise GriditError(f"moving_digits needs n, length, n_digits >= 1 and frame_size >= 8, got {n}, {t}, {m}, {s}")
    v_lo, v_hi = _range(speed, "speed")
    glyphs = _digit_glyphs(max(4, s // 2))
    rng = np.random.default_rng(seed)
    digits = rng.integers(10, size=(n, m))
    speeds = rng.uniform(v_lo, v_hi, (n, m))
    angle = rng.uniform(0, 2 * np.pi, (n, m))
    frames = np.zeros((n, t, s, s), np.uint8)
    steps = np.arange(t)[:, None]  # (T, 1)
    for i in range(n):
        for k in range(m):
            g = glyphs[digits[i, k]]
            room = np.array([s - g.shape[0], s - g.shape[1]], dtype=np.float64)  # top-left corner range
            start = rng.uniform(0, 1, 2) * room
            v = speeds[i, k] * np.array([np.sin(angle[i, k]), np.cos(angle[i, k])])
            corner = np.rint(reflect_into(start + v * steps, 0.0, room)).astype(int)  # (T, 2)
            ys = corner[:, 0, None, None] + np.arange(g.shape[0])[None, :, None]  # (T, h, 1)
            xs = corner[:, 1, None, None] + np.arange(g.shape[1])[None, None, :]  # (T, 1, w)
            tt = np.arange(t)[:, None, None]
            frames[i, tt, ys, xs] = np.maximum(frames[i, tt, ys, xs], g)  # overlapping digits: brighter wins
    return np.repeat(frames[..., None], 3, axis=-1)


BUILTIN = {
    "bouncing": lambda n, length, size, seed, bouncing: bouncing_shapes(
        n, replace(bouncing or BouncingConfig.for_frame_size(size), length=length), seed
    ).frames,
    "digits": lambda n, length, size, seed, bouncing: moving_digits(n, length, size, seed=seed),
}
