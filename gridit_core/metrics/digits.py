"""Coherence of moving-digit sequences (``builtin:digits``, one digit per frame): the digit keeps its identity and
shape, and moves as the generator moves it: constant velocity with bounces off the walls.

``DigitReference`` holds what real sequences look like: the digits' glyphs (the templates that classify each frame's
crop: template matching against the digit source, no trained weights) and, per component, the most real sequences
show (the generator rounds positions to whole pixels, so real motion is not exact). ``digit_coherence`` scores one
sequence, ``digit_coherence_many`` a set; ``metrics.coherence.with_baselines(..., score_many=digit_coherence_many)``
adds real, shuffled and frozen baselines.
"""

from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from gridit_core.data.builtin import moving_digits
from gridit_core.errors import GriditError
from gridit_core.metrics.distances import excess, support, tolerance
from gridit_core.metrics.motion import SPEED_SLACK, summarise
from gridit_core.metrics.tracking import as_frames, motion_by_frame

EMBED = (16, 16)  # crops are compared at this size
THRESHOLD = 40  # foreground: brightest channel above this
JUMP_PX = 2.5  # whole-pixel positions make real prediction errors up to about 2 px
TOLERANCES = {  # component -> the excess over real data that halves the score
    "detection_rate": 0.05,  # missed: frames without a digit
    "identity_kept": 0.05,  # frames whose digit is not the sequence's usual one
    "match": 0.05,  # 1 - similarity of a frame's digit to the best template
    "motion_error_px": 0.5, "max_error_px": 2.0, "jump_rate": 1 / 64, "reversal_rate": 1 / 64,
    "stop_fraction": 0.1, "speed_excess": 0.1, "background_excess": 4.0,
}  # fmt: skip
RELATIVE = ("motion_error_px", "max_error_px", "jump_rate", "reversal_rate", "stop_fraction", "speed_excess")  # beyond real


def _embed(crop):
    """A crop ``(h, w)`` resized to ``EMBED``, zero-mean and unit-norm: cosine similarity by a dot product."""
    x = F.interpolate(torch.as_tensor(crop, dtype=torch.float32)[None, None], size=EMBED, mode="bilinear", align_corners=False)
    x = x.flatten().double().numpy()
    x = x - x.mean()
    return x / max(np.linalg.norm(x), 1e-9)


def measure_digits(frames, *, min_step=0.25):
    """Per frame: whether a digit shows, its crop's embedding and size, its centre; and background brightness."""
    frames = as_frames(frames)
    grey = frames.max(-1).astype(np.float64)  # (T, H, W)
    fg = grey > THRESHOLD
    found = fg.any((1, 2))
    embeds, sizes, centres, background = [], [], [], []
    for img, mask in zip(grey, fg):
        if not mask.any():
            embeds.append(np.zeros(np.prod(EMBED)))
            sizes.append((0, 0))
            centres.append((np.nan, np.nan))
            background.append(img.mean())
            continue
        ys, xs = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        box = img[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1]
        embeds.append(_embed(box))
        sizes.append(box.shape)
        wy, wx = box.sum(1), box.sum(0)
        centres.append((ys[0] + (wy @ (np.arange(len(wy)) + 0.5)) / wy.sum(), xs[0] + (wx @ (np.arange(len(wx)) + 0.5)) / wx.sum()))
        outside = np.ones_like(mask)
        outside[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1] = False
        background.append(img[outside].mean() if outside.any() else 0.0)
    return {"frame_size": frames.shape[1:3], "found": found, "embed": np.array(embeds), "size": np.array(sizes),
            "centre": np.array(centres), "background": np.array(background), "min_step": min_step}  # fmt: skip


def _motion(m, size_hw, walls):
    """Bounce-aware step speeds, prediction errors and reversals of the digit's centre over runs of found frames
    (``metrics.tracking.motion_by_frame``, with the frames judged)."""
    when = np.flatnonzero(m["found"])
    hi = np.asarray(size_hw, float) - walls[1]
    motion = motion_by_frame(when, m["centre"][when], walls[0], hi, m["min_step"])
    return motion | {"speed": motion["step_speed"], "speed_in": motion["speed"]}


def _components(m, templates, centroids, speed_range=(0.0, np.inf), median_speed=1.0):
    """The raw components of one measured sequence against the templates ``(K, D)``, their centroid offsets and the
    data's speeds (``speeds``: every bounce-aware step speed, for building a reference)."""
    found = m["found"]
    if not found.any():
        return None
    sims = m["embed"][found] @ templates.T  # (F, K)
    labels = sims.argmax(1)
    usual = Counter(labels.tolist()).most_common(1)[0][0]
    kept = np.zeros(len(found), bool)
    kept[np.flatnonzero(found)] = labels == usual  # per frame: the digit is found and is the sequence's usual one
    h, w = np.median(m["size"][found], axis=0)
    cy, cx = centroids[usual]  # where the centre sits in the glyph: walls at that offset from each side
    motion = _motion(m, m["frame_size"], (np.array([cy, cx]), np.array([h - cy, w - cx])))
    judged, speed = motion["error"], motion["speed"]
    return {
        "detection_rate": float(found.mean()), "identity_kept": float(np.mean(labels == usual)),
        "match": float(sims.max(1).mean()),
        "motion_error_px": float(judged.mean()) if len(judged) else float("inf"),
        "max_error_px": float(judged.max()) if len(judged) else float("inf"),
        "jump_rate": float(np.mean(judged > JUMP_PX)) if len(judged) else 1.0, "speeds": speed,
        "reversal_rate": float(np.mean(motion["reversal"])) if len(judged) else 1.0,
        "stop_fraction": float(np.mean(speed < m["min_step"])) if len(speed) else 1.0,
        "speed_excess": excess(speed, *speed_range) / median_speed if len(speed) else float("inf"),
        "background": float(m["background"].mean()), "digit": int(usual), "kept": kept, "motion": motion,
    }  # fmt: skip


@dataclass
class DigitReference:
    """Real moving-digit sequences as the metric sees them: glyph templates, speeds, and what real motion shows."""

    frame_size: tuple
    n_sequences: int
    templates: np.ndarray  # (K, D) embeddings of the distinct real glyphs
    centroids: np.ndarray  # (K, 2) each glyph's intensity centre from its top-left corner
    speed_range: tuple
    median_speed: float
    stop_speed: float
    allowance: dict  # component -> the 99th percentile over real sequences (RELATIVE components, background)

    @classmethod
    def from_sequences(cls, sequences):
        """From real sequences (a list or an array ``(N, T, H, W, 3)``; a few dozen show every digit)."""
        measured = [measure_digits(s) for s in sequences]
        if not measured or not any(m["found"].any() for m in measured):
            raise GriditError("no digits found in the real sequences: the digit metric is for moving-digit data")
        glyphs = {}  # distinct real crops: the digit source draws each glyph the same in every frame
        for s, m in zip(sequences, measured):
            grey = as_frames(s).max(-1).astype(np.float64)
            for t in np.flatnonzero(m["found"]):
                mask = grey[t] > THRESHOLD
                ys, xs = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
                box = grey[t, ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1]
                key = (box.shape, np.round(_embed(box), 3).tobytes())
                if key not in glyphs:
                    wy, wx = box.sum(1), box.sum(0)
                    glyphs[key] = (_embed(box), ((wy @ (np.arange(len(wy)) + 0.5)) / wy.sum(), (wx @ (np.arange(len(wx)) + 0.5)) / wx.sum()))
        templates = np.stack([e for e, _ in glyphs.values()])
        centroids = np.array([c for _, c in glyphs.values()])
        speed = np.concatenate([c["speeds"] for m in measured if (c := _components(m, templates, centroids))])
        speed_range, median = support(speed, len(measured)), float(np.median(speed))
        comps = [c for m in measured if (c := _components(m, templates, centroids, speed_range, median))]
        allowance = {k: float(np.quantile([c[k] for c in comps], 0.99)) for k in (*RELATIVE, "background")}
        return cls(
            frame_size=measured[0]["frame_size"], n_sequences=len(measured), templates=templates, centroids=centroids,
            speed_range=speed_range, median_speed=median, stop_speed=max(0.05, 0.25 * float(np.quantile(speed, 0.05))),
            allowance=allowance,
        )  # fmt: skip

    @classmethod
    def from_source(cls, frame_size, length=32, n_sequences=64, seed=2**31 - 1):
        """From fresh sequences of ``data.builtin.moving_digits`` (a seed no run trains on)."""
        return cls.from_sequences(moving_digits(n_sequences, length, frame_size, seed=seed))


@dataclass
class DigitReport:
    """Components of one moving-digit sequence, each one's factor, and their product ``score`` in ``[0, 1]``."""

    detection_rate: float  # frames showing a digit
    identity_kept: float  # frames whose digit is the sequence's most common one
    match: float  # mean similarity (cosine, 1 = a real glyph) of each frame's digit to the nearest real glyph
    motion_error_px: float  # mean error of predicting the centre from the two before (bounces at the glyph's edges)
    max_error_px: float
    jump_rate: float  # errors over JUMP_PX per judged frame
    reversal_rate: float  # mid-air reversals per judged frame
    stop_fraction: float  # steps under the stop speed
    speed_excess: float  # mean speed outside the data's range, over its median
    background_excess: float  # mean brightness outside the digit's box beyond the data's (0-255)
    score: float
    worst: str
    digit: int  # the template index the sequence shows most (-1: none)
    factors: dict = field(default_factory=dict)

    def as_dict(self):
        return asdict(self)


def digit_coherence(frames, reference, *, tolerances=None):
    """How much one sequence behaves like the real moving digits of ``reference`` (a ``DigitReference``).

    Components (``DigitReport``): the digit is found in every frame, keeps its identity (the template each frame's
    crop matches best is the sequence's usual one) and shape (similarity to that template), and moves with constant
    velocity and wall bounces (mean, worst and tail errors, mid-air reversals, stops, speed against the data's range);
    the background stays dark. Motion components and the background count only beyond what 99% of real sequences
    show (``reference.allowance``). Each excess maps to ``f(excess / tolerance)``, ``f(z) = 1 / (1 + z^2)``
    (``TOLERANCES``; identity, match and detection by their shortfall from 1); the stop factor is multiplied by the
    moving fraction over real data's, so a digit that never moves scores 0; ``score`` is the product, 0 when no digit
    is ever found.
    """
    return _measured(frames, reference, {**TOLERANCES, **(tolerances or {})})[0]


def _measured(frames, reference, tol):
    """``(DigitReport, transitions, found)`` of one sequence (see ``digit_transitions``)."""
    m = measure_digits(frames, min_step=reference.stop_speed)
    if tuple(m["frame_size"]) != tuple(reference.frame_size):
        raise GriditError(f"frames of {tuple(m['frame_size'])} px scored against a reference of {tuple(reference.frame_size)} px frames")
    c = _components(m, reference.templates, reference.centroids, reference.speed_range, reference.median_speed)
    transitions = digit_transitions(m["found"], c, reference)
    if c is None:
        nothing = {k: float("inf") for k in ("motion_error_px", "max_error_px", "speed_excess", "background_excess")}
        report = DigitReport(**nothing, detection_rate=0.0, identity_kept=0.0, match=0.0, jump_rate=1.0, reversal_rate=1.0,
                             stop_fraction=1.0, score=0.0, worst="detection_rate", digit=-1,
                             factors={k: 0.0 for k in TOLERANCES})  # fmt: skip
        return report, transitions, m["found"]
    for k in ("speeds", "kept", "motion"):
        del c[k]
    c["background_excess"] = excess([c.pop("background")], 0, reference.allowance["background"])
    judged = {k: max(0.0, c[k] - reference.allowance[k]) if k in RELATIVE else c[k] for k in TOLERANCES}
    for k in ("detection_rate", "identity_kept", "match"):
        judged[k] = 1 - c[k]
    factors = {k: float(tolerance(judged[k], tol[k])) for k in TOLERANCES}
    still = reference.allowance["stop_fraction"]
    factors["stop_fraction"] *= min(1.0, (1 - c["stop_fraction"]) / (1 - still))  # a digit that never moves scores 0
    digit = c.pop("digit")
    report = DigitReport(**c, score=float(np.prod(list(factors.values()))), worst=min(factors, key=factors.get),
                         digit=digit, factors=factors)  # fmt: skip
    return report, transitions, m["found"]


def digit_transitions(found, components, reference):
    """Per transition (frames ``2 .. T-1``): ``plausible`` when the digit is found at ``t-2``, ``t-1`` and ``t`` and is
    the sequence's usual digit in all three (``missing``, ``identity``), and its centre at ``t`` lies within
    ``JUMP_PX`` of the constant-velocity-with-bounces prediction, without a mid-air reversal, after a step whose speed
    is in the data's range (``jump``, ``reversal``, ``speed``); ``components`` from ``_components`` (None: no digit)."""
    n = max(len(found) - 2, 0)
    seen = found[:-2] & found[1:-1] & found[2:] if n else np.zeros(0, bool)
    if components is None:
        none = np.zeros(n, bool)
        return {"plausible": none, "missing": ~seen, "identity": none, "jump": none, "reversal": none, "speed": none}
    kept, motion = components["kept"], components["motion"]
    same = kept[:-2] & kept[1:-1] & kept[2:] if n else np.zeros(0, bool)
    bad = {k: np.zeros(len(found), bool) for k in ("jump", "reversal", "speed")}
    f = motion["frame"]
    slack = SPEED_SLACK * reference.median_speed
    lo, hi = reference.speed_range[0] - slack, reference.speed_range[1] + slack
    bad["jump"][f[motion["error"] > JUMP_PX]] = True
    bad["reversal"][f[motion["reversal"].astype(bool)]] = True
    bad["speed"][f[(motion["speed_in"] < lo) | (motion["speed_in"] > hi)]] = True
    ok = seen & same
    why = {"missing": ~seen, "identity": seen & ~same, **{k: v[2:] & ok for k, v in bad.items()}}
    return {"plausible": ok & ~np.any(np.stack([why[k] for k in bad]), axis=0), **why}


def digit_coherence_many(sequences, reference, *, tolerances=None, seams=None, progress=False):
    """``metrics.motion.summarise`` of the set's plausible transitions (``digit_transitions``), and the mean of every
    ``DigitReport`` component, factor and score over the set (``score``: the strict product, indistinguishable from
    the data). Below the detection gate the motion components are None too."""
    tol = {**TOLERANCES, **(tolerances or {})}
    measured = [_measured(s, reference, tol)
                for s in tqdm(sequences, desc="digits", unit="seq", disable=not progress, leave=False)]  # fmt: skip
    if not measured:
        raise GriditError("digit_coherence_many needs at least one sequence")
    reports = [r.as_dict() for r, _, _ in measured]
    out = {k: float(np.mean([r[k] for r in reports])) for k in (*TOLERANCES, "score")}
    motion = summarise([t for _, t, _ in measured], [f for _, _, f in measured], seams)
    if not motion["detection_gate"]["passed"]:
        out |= {k: None for k in RELATIVE}
    return motion | out | {"factors": {k: float(np.mean([r["factors"][k] for r in reports])) for k in TOLERANCES},
                           "worst": Counter(r["worst"] for r in reports).most_common(1)[0][0], "n_sequences": len(reports),
                           "n_frames": int(sum(len(s) for s in sequences))}  # fmt: skip
