"""Objects found and followed in frames alone: connected bright blobs, tracks linking them across frames, and the
motion of a tracked centre judged against constant velocity with elastic wall bounces.

Coordinates follow ``gridit_core.data.builtin``: pixel ``(i, j)`` has its centre at ``(i + 0.5, j + 0.5)``. The
bouncing-ball coherence (``metrics.coherence``) and the moving-digits one (``metrics.digits``) both build on this.
"""

import numpy as np
import torch

from gridit_core.data.builtin import reflect_into
from gridit_core.errors import GriditError
from gridit_core.util.image import tensor_to_uint8

# Pixel offsets at which two components count as touching (so one may hide part of the other).
_TOUCH = ((0, 1), (1, 0), (1, 1), (1, -1), (0, 2), (2, 0))


def as_frames(frames):
    """uint8 ``(T, H, W, 3)``, or float ``(T, 3, H, W)`` in ``[-1, 1]`` converted to it."""
    if isinstance(frames, torch.Tensor) and frames.dtype == torch.uint8:
        frames = frames.cpu().numpy()
    if not (isinstance(frames, np.ndarray) and frames.dtype == np.uint8):
        frames = tensor_to_uint8(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) < 1:
        raise GriditError(f"frames must be uint8 (T, H, W, 3) or float (T, 3, H, W), got shape {frames.shape}")
    return frames


def label_components(link_y, link_x):
    """4-connected components per frame of a ``(T, H, W)`` pixel graph; ``link_y[t, i, j]`` joins pixel
    ``(i, j)`` to ``(i+1, j)`` and ``link_x[t, i, j]`` joins it to ``(i, j+1)``.

    Returns int labels ``(T, H, W)``: every pixel's label is the smallest flat index in its component.
    Min-label propagation along links with pointer jumping, so a few sweeps suffice for compact blobs.
    """
    t, h, w = link_y.shape[0], link_y.shape[1] + 1, link_x.shape[2] + 1
    lab = np.arange(t * h * w).reshape(t, h, w)
    big = lab.size
    while True:
        before = lab.copy()
        for link, lo, hi in (
            (link_y, lab[:, :-1, :], lab[:, 1:, :]),
            (link_x, lab[:, :, :-1], lab[:, :, 1:]),
        ):
            m = np.where(link, np.minimum(lo, hi), big)
            np.minimum(lo, m, out=lo)  # lo and hi are views: this writes into lab
            np.minimum(hi, m, out=hi)
        flat = lab.reshape(-1)
        while True:  # pointer jumping: a label points at a pixel of the same component with a smaller label
            jumped = flat[flat]
            if np.array_equal(jumped, flat):
                break
            flat[:] = jumped
        if np.array_equal(lab, before):
            return lab


def detect_blobs(frames, threshold=40, min_area=3.0, colour_tol=0.2):
    """Balls in uint8 frames ``(T, H, W, 3)``: connected bright pixels of similar colour.

    A pixel is foreground when its brightest channel exceeds ``threshold``; neighbours join when both are
    foreground and their colours scaled to unit brightness differ by less than ``colour_tol`` per channel, so
    balls of different colours stay apart where they meet. Per blob: frame ``t``, intensity-weighted centre
    ``(y, x)``, ``area`` = intensity sum / peak intensity (the coverage area of a soft-edged disc, ``pi r^2``),
    mean ``colour`` of its core (pixels at 75% of the peak or more), and ``touching``: within two pixels of
    another component, so possibly partly hidden. Components under ``min_area``, or touching ones under a
    quarter of the typical area (slivers where balls meet), are dropped; ``fragments`` counts, per frame,
    the dropped ones that touch something: evidence of a ball hidden behind another.
    """
    x = frames.astype(np.float32)  # (T, H, W, 3)
    inten = x.max(-1)  # (T, H, W)
    fg = inten > threshold
    hue = x / np.maximum(inten, 1)[..., None]  # (T, H, W, 3) colour at unit brightness
    link_y = fg[:, :-1] & fg[:, 1:] & (np.abs(hue[:, :-1] - hue[:, 1:]).max(-1) < colour_tol)
    link_x = fg[:, :, :-1] & fg[:, :, 1:] & (np.abs(hue[:, :, :-1] - hue[:, :, 1:]).max(-1) < colour_tol)
    lab = label_components(link_y, link_x)
    pix = np.flatnonzero(fg)
    roots, ids = np.unique(lab.reshape(-1)[pix], return_inverse=True)
    n = len(roots)
    _, yy, xx = np.unravel_index(pix, fg.shape)
    wt = inten.reshape(-1)[pix]  # (P,) intensity of each foreground pixel
    peak = np.zeros(n, np.float32)
    np.maximum.at(peak, ids, wt)
    mass = np.bincount(ids, wt, n)
    core = wt >= 0.75 * peak[ids]
    rgb = x.reshape(-1, 3)[pix[core]]  # (P_core, 3)
    colour = np.stack([np.bincount(ids[core], rgb[:, c], n) for c in range(3)], 1)  # (n, 3)
    blobs = {
        "t": np.unravel_index(roots, fg.shape)[0],
        "y": np.bincount(ids, wt * (yy + 0.5), n) / mass,
        "x": np.bincount(ids, wt * (xx + 0.5), n) / mass,
        "area": mass / peak,
        "colour": colour / np.bincount(ids[core], None, n)[:, None],
    }
    comp = np.full(fg.shape, -1)
    comp.reshape(-1)[pix] = ids
    _, h, w = comp.shape
    touching = np.zeros(n, bool)
    for dy, dx in _TOUCH:
        a = comp[:, : h - dy, max(0, -dx) : w - max(0, dx)]  # a pixel and its neighbour at (+dy, +dx)
        b = comp[:, dy:, max(0, dx) : w - max(0, -dx)]
        hit = (a >= 0) & (b >= 0) & (a != b)
        touching[a[hit]] = True
        touching[b[hit]] = True
    blobs["touching"] = touching
    keep = blobs["area"] >= min_area
    alone = keep & ~touching
    if alone.any():  # slivers of blended colour where two balls meet are fragments, not balls
        keep &= ~touching | (blobs["area"] >= 0.25 * np.median(blobs["area"][alone]))
    out = {k: v[keep] for k, v in blobs.items()}
    out["fragments"] = np.bincount(blobs["t"][touching & ~keep], minlength=len(frames))  # per frame
    return out


def background_level(frames, blobs, margin=1.0):
    """Per frame ``(T,)``: mean brightness (brightest channel, 0-255) of the pixels farther than ``margin`` px beyond
    every detected blob's radius ``sqrt(area / pi)``: faint noise and specks under the detection threshold show here."""
    t, h, w = frames.shape[:3]
    yy, xx = np.arange(h)[:, None] + 0.5, np.arange(w)[None, :] + 0.5
    outside = np.ones((t, h, w), bool)
    for k in range(len(blobs["t"])):
        reach = np.sqrt(blobs["area"][k] / np.pi) + margin
        outside[blobs["t"][k]] &= np.hypot(yy - blobs["y"][k], xx - blobs["x"][k]) > reach
    inten = frames.max(-1).astype(np.float64)  # (T, H, W)
    return (inten * outside).sum((1, 2)) / np.maximum(outside.sum((1, 2)), 1)


def track_blobs(blobs, n_frames, frame_size, max_gap=3, colour_weight=2.0):
    """Link blobs into tracks: greedy matching to each track's constant-velocity guess, cost = distance over
    frame size plus ``colour_weight`` times colour distance over 255. A track survives up to ``max_gap``
    frames without a blob (a ball hidden behind another). Returns the tracks, each an array of blob indices
    in time order.
    """
    scale = float(max(frame_size))
    pos, col, when = np.stack([blobs["y"], blobs["x"]], 1), blobs["colour"], blobs["t"]
    active, done = [], []  # active: (blob indices, frames missed since the last one)
    for t in range(n_frames):
        here = np.flatnonzero(when == t)
        costs = []
        for i, (tr, _) in enumerate(active):
            vel = (pos[tr[-1]] - pos[tr[-2]]) / (when[tr[-1]] - when[tr[-2]]) if len(tr) > 1 else 0
            guess = pos[tr[-1]] + vel * (t - when[tr[-1]])
            d_pos = np.linalg.norm(pos[here] - guess, axis=1) / scale
            d_col = np.linalg.norm(col[here] - col[tr[-1]], axis=1) / 255
            costs += zip(d_pos + colour_weight * d_col, [i] * len(here), here)
        matched, used, nxt = {}, set(), []
        for _, i, j in sorted(costs):
            if i not in matched and j not in used:
                matched[i] = j
                used.add(j)
        for i, (tr, missed) in enumerate(active):
            if i in matched:
                nxt.append((tr + [matched[i]], 0))
            elif missed < max_gap:
                nxt.append((tr, missed + 1))
            else:
                done.append(tr)
        active = nxt + [([j], 0) for j in here if j not in used]
    return [np.array(tr) for tr in done + [tr for tr, _ in active]]


def hidden_frames(blobs, track, n_frames, max_gap=3):
    """Per frame, 1 where a track misses its ball (in a gap, or up to ``max_gap`` frames beyond its ends) and
    the ball, inter- or extrapolated linearly, overlaps a visible one: it may be hidden behind it."""
    when = blobs["t"][track]
    hidden = np.zeros(n_frames, int)
    if len(when) < 2:
        return hidden
    p = np.stack([blobs["y"][track], blobs["x"][track]], 1)  # (L, 2)
    radius = np.sqrt(np.median(blobs["area"][track]) / np.pi)
    span = np.arange(max(0, when[0] - max_gap), min(n_frames, when[-1] + max_gap + 1))
    missing = np.setdiff1d(span, when)
    k = np.clip(np.searchsorted(when, missing) - 1, 0, len(when) - 2)  # segment to inter/extrapolate along
    guess = p[k] + (p[k + 1] - p[k]) * ((missing - when[k]) / (when[k + 1] - when[k]))[:, None]  # (M, 2)
    for m, (gy, gx) in zip(missing, guess):
        here = blobs["t"] == m
        d = np.hypot(blobs["y"][here] - gy, blobs["x"][here] - gx)
        hidden[m] = np.any(d < np.sqrt(blobs["area"][here] / np.pi) + radius)
    return hidden


def bounce_velocity(prev, cur, lo, hi, speed):
    """Velocity at ``cur`` ``(N, 2)`` recovered from the step ``prev -> cur``, per axis either the plain step or, if a
    wall was hit in between, the reflected one (``cur + prev - 2 * wall``): the candidate whose magnitude is closest
    to the typical per-axis ``speed`` wins, so a bounce does not read as a slow step."""
    cands = np.stack([cur - prev, cur + prev - 2 * hi, cur + prev - 2 * lo])  # (3, N, 2)
    pick = np.abs(np.abs(cands) - speed).argmin(0)  # (N, 2)
    return np.take_along_axis(cands, pick[None], 0)[0]


def path_motion(p, lo, hi, speed, min_step, margin=0.5):
    """How a run of centres ``(L, 2)`` at consecutive frames departs from constant velocity with elastic bounces.

    The walls are ``lo`` and ``hi`` (per axis: where the centre bounces) and ``speed`` is the track's typical
    per-axis speed. Returns per step ``speed`` ``(L-1,)`` (bounce-aware, see ``bounce_velocity``) and per interior
    frame ``error`` ``(L-2,)`` (distance from the next centre to its prediction from the two before, reflected at
    the walls) and ``reversal`` ``(L-2,)``: a velocity component moves off (a step of at least ``min_step``) against
    its last such step, directly or after a pause, while the ball stayed farther than either step, the typical speed
    and ``margin`` from the wall it was heading for (at every frame in between).
    """
    v = bounce_velocity(p[:-1], p[1:], lo, hi, speed)  # (L-1, 2) velocity at frames 1..L-1
    error = np.linalg.norm(reflect_into(p[1:-1] + v[:-1], lo, hi) - p[2:], axis=1)  # (L-2,)
    d = np.diff(p, axis=0)  # (L-1, 2) plain steps
    moving = np.abs(d) >= np.maximum(min_step, 0.5 * speed)  # a real move on this axis, not jitter
    last = np.maximum.accumulate(np.where(moving, np.arange(len(d))[:, None], -1), axis=0)  # last moving step so far
    before = np.concatenate([np.full((1, 2), -1), last[:-1]])  # ... strictly before each step
    d_before = np.take_along_axis(d, np.maximum(before, 0), 0)
    reach = np.maximum(np.maximum(np.abs(d), np.abs(d_before)), speed) + margin
    lo, hi = np.broadcast_to(lo, 2), np.broadcast_to(hi, 2)
    turned = np.zeros(len(d), bool)
    for k, a in np.argwhere(moving & (before >= 0) & (d * d_before < 0)):  # flips: check the frames since the last move
        span = p[before[k, a] + 1 : k + 1, a]
        wall = hi[a] - span if d_before[k, a] > 0 else span - lo[a]  # to the wall it was heading for
        turned[k] |= wall.min() > reach[k, a]
    return {"speed": np.linalg.norm(v, axis=1), "error": error, "reversal": turned[1:]}  # interior frames 1..L-2


def motion_by_frame(when, p, lo, hi, min_step):
    """``path_motion`` over each run of three or more consecutive frames of one track, with the frames kept.

    ``when`` ``(L,)`` are the track's frame numbers (sorted) and ``p`` ``(L, 2)`` its centres; the typical per-axis
    speed is the median step of the track. Returns ``frame``, ``error``, ``reversal`` and ``speed`` (of the step into
    that frame) per judged frame (the third and later of each run), ``step_frame`` and ``step_speed`` per step (the
    frame it lands on), and the index arrays ``judged`` and ``steps`` into the track's observations (the
    observation judged, the observation a step lands on), so callers can pick per-observation flags."""
    runs = [(a, b) for a, b in consecutive_runs(when) if b - a >= 2]
    all_steps = np.concatenate([np.diff(p[a:b], axis=0) for a, b in runs]) if runs else np.zeros((0, 2))
    typical = np.median(np.abs(all_steps), axis=0) if len(all_steps) else np.zeros(2)
    out = {k: [] for k in ("judged", "error", "reversal", "speed", "steps", "step_speed")}
    for a, b in runs:
        motion = path_motion(p[a:b], lo, hi, typical, min_step)
        out["steps"].append(np.arange(a + 1, b))
        out["step_speed"].append(motion["speed"])
        out["judged"].append(np.arange(a + 2, b))
        out["error"].append(motion["error"])
        out["reversal"].append(motion["reversal"])
        out["speed"].append(motion["speed"][1:])
    empty = {"judged": np.zeros(0, int), "steps": np.zeros(0, int), "reversal": np.zeros(0, bool)}
    out = {k: np.concatenate(v) if v else empty.get(k, np.zeros(0)) for k, v in out.items()}
    return out | {"frame": when[out["judged"]], "step_frame": when[out["steps"]]}


def consecutive_runs(when):
    """Index ranges ``[(start, stop), ...]`` of the runs of consecutive frames in sorted frame numbers ``when``."""
    cuts = np.flatnonzero(np.diff(when) != 1) + 1
    edges = [0, *cuts.tolist(), len(when)]
    return list(zip(edges[:-1], edges[1:]))
