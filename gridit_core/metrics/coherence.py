"""Coherence of bouncing-ball sequences, measured from the frames alone (no ground truth needed).

Pipeline: find the balls in every frame (connected components of bright pixels of one colour), link them into
tracks across frames, then ask of each track what the generator (``data.builtin.bouncing_shapes``) guarantees: constant
velocity with elastic bounces off the walls, constant size and colour, and actual motion. Coordinates follow
``gridit_core.data.builtin``: pixel ``(i, j)`` has its centre at ``(i + 0.5, j + 0.5)``.
"""

from dataclasses import asdict, dataclass

import numpy as np
import torch

from gridit_core.data.builtin import reflect_into
from gridit_core.errors import GriditError
from gridit_core.util.image import tensor_to_uint8

# Pixel offsets at which two components count as touching (so one may hide part of the other).
_TOUCH = ((0, 1), (1, 0), (1, 1), (1, -1), (0, 2), (2, 0))


@dataclass
class CoherenceReport:
    """Coherence components of one sequence and their product ``score`` in ``[0, 1]`` (1 = perfect)."""

    detection_rate: float  # fraction of frames holding the expected number of balls
    motion_error_px: float  # mean error of the constant-velocity-with-bounces prediction of the next centre
    size_cv: float  # relative std of a ball's area along its track
    colour_std: float  # std of a ball's mean colour along its track, 0-255 scale
    moving_fraction: float  # fraction of tracked balls that actually move
    score: float
    n_balls: int  # expected balls per frame
    n_tracks: int  # tracks of three frames or more

    def as_dict(self):
        return asdict(self)


def _as_frames(frames):
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


def _hidden(blobs, track, n_frames, max_gap=3):
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


def _track_motion(p, radius, frame_hw, speed):
    """Errors of predicting each centre from the two before it: constant velocity, elastic bounces.

    The velocity at ``t`` is recovered from ``p[t-1], p[t]`` per axis as either the plain step or, if a wall
    was hit in between, the reflected one (``p[t] + p[t-1] - 2*wall``); the candidate whose magnitude is
    closest to the track's typical per-axis speed wins. The prediction ``p[t] + v`` is then reflected at the
    walls ``[radius, size - radius]``, where a ball of that radius bounces.
    """
    lo, hi = radius, np.asarray(frame_hw, float) - radius
    prev, cur, nxt = p[:-2], p[1:-1], p[2:]  # (L-2, 2) each
    cands = np.stack([cur - prev, cur + prev - 2 * hi, cur + prev - 2 * lo])  # (3, L-2, 2)
    pick = np.abs(np.abs(cands) - speed).argmin(0)  # (L-2, 2)
    v = np.take_along_axis(cands, pick[None], 0)[0]
    return np.linalg.norm(reflect_into(cur + v, lo, hi) - nxt, axis=1)  # (L-2,)


def _tolerance(value, tol):
    return 1.0 / (1.0 + (value / tol) ** 2)


def coherence(
    frames, *, n_balls=None, threshold=40, min_area=3.0, colour_tol=0.2, min_speed=0.25,
    motion_tol=1.0, size_tol=0.15, colour_std_tol=20.0,
):
    """How much a sequence behaves like bouncing balls, from its frames alone.

    ``frames``: uint8 ``(T, H, W, 3)`` or float ``(T, 3, H, W)`` in ``[-1, 1]``. ``n_balls``: balls expected
    per frame (default: the median count found). Components, over tracks of three frames or more, weighted by
    track length, leaving out observations where a ball touches another (it may be partly hidden) unless
    nothing else is left:

    - ``detection_rate`` D: fraction of frames with the expected count, or fewer where each missing ball may
      hide behind another (a track's gap or end overlaps a visible ball, or a sliver is left); 0 if none is
      expected;
    - ``motion_error_px`` E: mean distance between each centre and its prediction from the two before it
      (constant velocity, elastic bounce off the walls at the radius sqrt(area / pi); see ``_track_motion``);
    - ``size_cv`` S: std / mean of the area; ``colour_std`` C: std of the core colour, mean over RGB;
    - ``moving_fraction`` M: fraction of tracks whose median step is at least ``min_speed`` px per frame.

    ``score = D * M * f(E / motion_tol) * f(S / size_tol) * f(C / colour_std_tol)`` with ``f(z) = 1 / (1 + z^2)``:
    each tolerance is the error that halves the score. Shuffled frames fail on E, frozen ones on M.
    """
    frames = _as_frames(frames)
    if n_balls is not None and n_balls < 1:
        raise GriditError(f"n_balls must be at least 1 (or None to use the median count), got {n_balls}")
    t_len, h, w = frames.shape[:3]
    blobs = detect_blobs(frames, threshold, min_area, colour_tol)
    counts = np.bincount(blobs["t"], minlength=t_len)
    expected = int(n_balls) if n_balls is not None else int(np.sort(counts)[(t_len - 1) // 2])
    tracks = track_blobs(blobs, t_len, (h, w))
    hidden = sum((_hidden(blobs, tr, t_len) for tr in tracks), blobs["fragments"])
    found = (counts <= expected) & (counts + hidden >= expected)  # a missing ball may hide behind another
    detection = float(np.mean(found)) if expected > 0 else 0.0
    errors, all_errors, cvs, cstds, clear_n, moving, weights = [], [], [], [], [], [], []
    for tr in tracks:
        if len(tr) < 3:
            continue  # too short to judge; a wrong count already shows in the detection rate
        when = blobs["t"][tr]
        p = np.stack([blobs["y"][tr], blobs["x"][tr]], 1)  # (L, 2)
        area, colour, clear = blobs["area"][tr], blobs["colour"][tr], ~blobs["touching"][tr]
        dt = np.diff(when)
        steps = np.diff(p, axis=0) / dt[:, None]  # (L-1, 2) per frame
        radius = min(np.sqrt(np.median(area) / np.pi), (min(h, w) - 1) / 2)
        err = _track_motion(p, radius, (h, w), np.median(np.abs(steps), axis=0))
        all_errors.append(err[(dt[:-1] == 1) & (dt[1:] == 1)])
        errors.append(err[(dt[:-1] == 1) & (dt[1:] == 1) & clear[:-2] & clear[1:-1] & clear[2:]])
        a, c = (area[clear], colour[clear]) if clear.sum() > 1 else (area, colour)
        cvs.append(a.std() / a.mean())
        cstds.append(c.std(axis=0).mean())
        clear_n.append(clear.sum() + 1e-3)  # tracks always touching another count only if nothing else does
        moving.append(float(np.median(np.linalg.norm(steps, axis=1)) >= min_speed))
        weights.append(len(tr))
    all_err = np.concatenate(errors) if errors else np.zeros(0)
    if errors and not len(all_err):  # every ball touches something all the time: judge it anyway
        all_err = np.concatenate(all_errors)
    motion = float(all_err.mean()) if len(all_err) else float("inf")
    size_cv = float(np.average(cvs, weights=clear_n)) if weights else float("inf")
    colour_std = float(np.average(cstds, weights=clear_n)) if weights else float("inf")
    moving_fraction = float(np.average(moving, weights=weights)) if weights else 0.0
    score = (
        detection
        * moving_fraction
        * _tolerance(motion, motion_tol)
        * _tolerance(size_cv, size_tol)
        * _tolerance(colour_std, colour_std_tol)
    )
    return CoherenceReport(
        detection, motion, size_cv, colour_std, moving_fraction, float(score), expected, len(weights)
    )


def coherence_many(sequences, **kwargs):
    """Mean of every ``CoherenceReport`` field over sequences (a list or an array ``(N, T, ...)``)."""
    reports = [coherence(s, **kwargs).as_dict() for s in sequences]
    if not reports:
        raise GriditError("coherence_many needs at least one sequence")
    return {k: float(np.mean([r[k] for r in reports])) for k in reports[0]} | {"n_sequences": len(reports)}


def shuffle_frames(frames, seed=0):
    """Baseline: the same frames in a random order (never the original one when T > 1)."""
    t_len = len(frames)
    perm = np.random.default_rng(seed).permutation(t_len)
    if t_len > 1 and np.array_equal(perm, np.arange(t_len)):
        perm = np.roll(perm, 1)
    return frames[perm]


def freeze_frames(frames):
    """Baseline: the first frame repeated for the whole length."""
    return frames[np.zeros(len(frames), dtype=np.int64)]
