"""Sequences whose motion breaks at known rates, and re-stylings that leave motion alone: what the plausible rate
(``metrics.motion``) must rank by how often the motion breaks and must not move for looks.

Unlike ``metrics.cases`` (one flaw each, made from the generator's ground truth), these work on any frames, so they
apply to real data of any source. ``corrupt`` breaks a chosen share of frames in one of three ways and says which
share of the transitions it broke (a transition is judged from frames ``t-2 .. t``, so a broken frame breaks up to
three); ``RESTYLES`` change colour, sharpness, brightness or background without moving anything.
"""

import numpy as np
import torch
import torch.nn.functional as F

from gridit_core.errors import GriditError

BREAKS = ("foreign", "stutter", "reversed")


def _foreign(frames, picked, rng):
    """Each picked frame replaced by a frame of the same sequence at least a quarter of its length away."""
    out, n = frames.copy(), len(frames)
    for t in picked:
        far = np.flatnonzero(np.abs(np.arange(n) - t) >= max(4, n // 4))
        out[t] = frames[rng.choice(far)]
    return out


def _stutter(frames, picked, rng):
    """Each picked frame replaced by the one before it (the object stops for a frame)."""
    out = frames.copy()
    for t in picked:
        out[t] = out[t - 1]
    return out


def _reversed(frames, picked, rng):
    """Each picked frame starts a stretch of three frames played backwards (the object turns in mid-air twice)."""
    out = frames.copy()
    for t in picked:
        out[t : t + 3] = frames[t : t + 3][::-1]
    return out


def corrupt(sequences, rate, kind="foreign", seed=0):
    """``(corrupted, broken)``: each sequence of ``sequences`` (uint8 ``(T, H, W, 3)`` each) with about ``rate`` of its
    frames from the third on broken by ``kind`` (``BREAKS``), and the share of transitions whose frames include a
    changed one (the ground truth of how often the motion breaks)."""
    if kind not in BREAKS:
        raise GriditError(f"unknown break {kind!r}; choose one of {', '.join(BREAKS)}")
    rng = np.random.default_rng(seed)
    make = {"foreign": _foreign, "stutter": _stutter, "reversed": _reversed}[kind]
    out, broken, judged = [], 0, 0
    for frames in sequences:
        n = len(frames)
        picked = np.flatnonzero(rng.random(n) < rate)
        picked = picked[(picked >= 2) & (picked < n - 2)]
        changed = make(frames, picked, rng)
        moved = np.flatnonzero(np.any(changed != frames, axis=(1, 2, 3)))
        window = np.zeros(n, bool)
        for t in moved:  # the transitions judged from frames t-2..t use frame t: those landing on t, t+1 and t+2
            window[t : t + 3] = True
        broken += int(window[2:].sum())
        judged += n - 2
        out.append(changed)
    return out, broken / max(judged, 1)


def _blur(frames, sigma=0.7):
    x = torch.as_tensor(frames, dtype=torch.float32).permute(0, 3, 1, 2)  # (T, 3, H, W)
    k = torch.arange(-2, 3, dtype=torch.float32)
    g = torch.exp(-(k**2) / (2 * sigma**2))
    g = g / g.sum()
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="replicate"), g.view(1, 1, 1, 5).expand(3, 1, 1, 5), groups=3)
    x = F.conv2d(F.pad(x, (0, 0, 2, 2), mode="replicate"), g.view(1, 1, 5, 1).expand(3, 1, 5, 1), groups=3)
    return x.permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).numpy()


def _noisy(frames, seed=0, level=25):
    noise = np.random.default_rng(seed).integers(0, level, size=frames.shape)
    return np.clip(frames.astype(int) + noise, 0, 255).astype(np.uint8)


RESTYLES = {  # name -> frames -> frames with the same motion and other looks
    "blurred": _blur,
    "dimmed to 30%": lambda f: np.round(f * 0.3).astype(np.uint8),
    "recoloured": lambda f: f[..., ::-1].copy(),
    "grey": lambda f: np.repeat(f.max(-1, keepdims=True), 3, axis=-1),
    "noisy background": _noisy,
}
