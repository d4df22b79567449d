"""Coherence of bouncing-ball sequences: the generator's physics checked from the frames alone, and the balls held
to what real sequences of the same source look like.

``BallReference`` is what real sequences look like to the detector (speeds, sizes, colours, ball count, background:
``from_sequences(real)`` or ``from_config(BouncingConfig)``); ``coherence(frames, reference)`` scores one sequence
(``CoherenceReport``: every component, its factor and the score); ``coherence_many`` scores a set and adds distances
between the set's distributions and the reference's; ``with_baselines`` scores samples beside real, shuffled and
frozen real sequences. Detection and tracking live in ``metrics.tracking``.
"""

from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
from tqdm.auto import tqdm

from gridit_core.data.builtin import BouncingConfig, bouncing_shapes
from gridit_core.errors import GriditError
from gridit_core.metrics.distances import excess, ks_chance, ks_distance, support, tolerance, wasserstein_1d
from gridit_core.metrics.motion import SPEED_SLACK, ball_transitions, rate_interval, summarise
from gridit_core.metrics.tracking import (
    as_frames,
    background_level,
    detect_blobs,
    hidden_frames,
    motion_by_frame,
    track_blobs,
)  # fmt: skip

TOLERANCES = {  # component -> the value that halves the score (see ``coherence``)
    "detection_rate": 0.05,  # missed: fraction of frames without the data's ball count
    "motion_error_px": 1.0,  # mean error of the constant-velocity-with-bounces prediction
    "max_error_px": 2.0,  # worst prediction error
    "jump_rate": 1 / 64,  # predictions off by more than JUMP_PX, per judged frame
    "reversal_rate": 1 / 64,  # mid-air reversals per judged frame
    "stop_fraction": 0.1,  # steps under the data's stop speed
    "speed_excess": 0.1,  # mean distance of the speed outside the data's range, over the data's median speed
    "size_excess": 0.1,  # the same for the radius, over the data's median radius
    "size_cv": 0.15,  # relative std of a ball's area along its track
    "colour_excess": 20.0,  # mean RMS distance (0-255) to the nearest colour of the data, beyond the data's own
    "colour_std": 20.0,  # std of a ball's core colour along its track, 0-255
    "background_excess": 4.0,  # mean brightness (0-255) outside the balls, beyond the data's
    "distribution": 0.25,  # sets: a KS distance of speed, size, colour or count beyond what chance gives
}
JUMP_PX = 1.5  # a prediction error this large is a jump
RADIUS_PX = 3.0  # the demo's ball radius: pixel tolerances and JUMP_PX hold for it and scale with the data's radius
HIDDEN_SHIFT = 1.5  # prediction errors where balls touch are judged after taking off this many radii
COMPONENTS = [k for k in TOLERANCES if k != "distribution"]
# what the detection gate withholds: motion judged on fragments of a ball that is mostly not drawn decides nothing
MOTION_COMPONENTS = ("motion_error_px", "max_error_px", "jump_rate", "reversal_rate", "stop_fraction", "speed_excess")


def _track(blobs, track, frame_hw, min_step):
    """Motion, size and colour of one track of three blobs or more (see ``metrics.tracking.motion_by_frame``)."""
    when = blobs["t"][track]
    p = np.stack([blobs["y"][track], blobs["x"][track]], 1)  # (L, 2)
    area, colour, clear = blobs["area"][track], blobs["colour"][track], ~blobs["touching"][track]
    radius = min(np.sqrt(np.median(area) / np.pi), (min(frame_hw) - 1) / 2)
    lo, hi = radius, np.asarray(frame_hw, float) - radius  # where a ball of this radius bounces
    m = motion_by_frame(when, p, lo, hi, min_step)
    j, k = m["judged"], m["steps"]
    out = {"speed": m["step_speed"], "speed_clear": clear[k - 1] & clear[k], "error": m["error"],
           "reversal": m["reversal"], "judged_clear": clear[j - 2] & clear[j - 1] & clear[j],
           "frame": m["frame"], "speed_in": m["speed"]}  # fmt: skip
    # a partly hidden ball's centre is off by up to ~0.4 radius, and a prediction combines three centres
    out["error"] = np.where(out["judged_clear"], out["error"], np.maximum(out["error"] - HIDDEN_SHIFT * radius, 0))
    a, c = (area[clear], colour[clear]) if clear.sum() > 1 else (area, colour)
    return out | {
        "radius_obs": np.sqrt(area / np.pi), "colour_obs": colour, "obs_clear": clear, "size_cv": a.std() / a.mean(),
        "colour_std": c.std(axis=0).mean(), "weight": clear.sum() + 1e-3, "median_radius": np.sqrt(np.median(a) / np.pi),
        "median_colour": np.median(c, axis=0),
        "median_speed": np.median(out["speed"]) if len(out["speed"]) else 0.0,
    }  # fmt: skip


def measure_balls(frames, *, min_step=0.25, threshold=40, min_area=3.0, colour_tol=0.2):
    """What the detector and tracker see in one sequence (uint8 ``(T, H, W, 3)`` or float ``(T, 3, H, W)``): per
    frame ``counts``, ``hidden`` (balls that may hide behind others) and ``background`` brightness, every detected
    ``blob``, and per track of three frames or more its motion (with the frames judged), size and colour. The raw
    material of ``coherence``, ``motion.ball_transitions`` and ``BallReference``. The detection threshold is at most
    half the sequence's peak brightness, so a dimmed sequence is still seen."""
    frames = as_frames(frames)
    t_len, h, w = frames.shape[:3]
    threshold = min(threshold, 0.5 * float(np.quantile(frames.max(-1), 0.999)))
    blobs = detect_blobs(frames, threshold, min_area, colour_tol)
    tracks = track_blobs(blobs, t_len, (h, w))
    return {
        "frame_size": (h, w), "n_frames": t_len, "counts": np.bincount(blobs["t"], minlength=t_len),
        "hidden": sum((hidden_frames(blobs, tr, t_len) for tr in tracks), blobs["fragments"]),
        "background": background_level(frames, blobs), "blobs": blobs,
        "tracks": [_track(blobs, tr, (h, w), min_step) for tr in tracks if len(tr) >= 3],
    }  # fmt: skip


def _pooled(tracks, key, mask_key):
    """``key`` over all tracks, only where ``mask_key`` holds (no ball touching another) unless that leaves nothing."""
    values = np.concatenate([t[key] for t in tracks]) if tracks else np.zeros(0)
    mask = np.concatenate([t[mask_key] for t in tracks]) if tracks else np.zeros(0, bool)
    return values[mask] if mask.any() else values


@dataclass
class BallReference:
    """The balls of real sequences as the detector sees them: the ranges and distributions samples are held to."""

    frame_size: tuple
    n_sequences: int
    n_balls: int  # the most common count of balls per frame
    speed_range: tuple  # px per frame (bounce-aware step speeds), see ``distances.support``
    median_speed: float
    stop_speed: float  # a quarter of the data's slowest steps: slower is a stop
    radius_range: tuple  # px, radius sqrt(area / pi) of every clear observation
    median_radius: float
    colours: np.ndarray  # (K, 3) each real track's median core colour
    colour_slack: float  # how far (RMS, 0-255) real observations lie from the nearest of those colours (99%)
    background: float  # 99% of the real frames are darker than this outside the balls (0-255)
    track_speed: np.ndarray  # (K,) per-track median speed, radius: the distributions of ``coherence_many``
    track_radius: np.ndarray
    counts: np.ndarray  # balls per frame, all frames

    @classmethod
    def from_sequences(cls, sequences):
        """From real sequences, a list or an array ``(N, T, H, W, 3)`` (a few dozen make the ranges reliable)."""
        measured = [measure_balls(s) for s in sequences]
        if not measured:
            raise GriditError("a ball reference needs at least one real sequence")
        sizes = {m["frame_size"] for m in measured}
        if len(sizes) > 1:
            raise GriditError(f"the real sequences differ in frame size: {sorted(sizes)}")
        tracks = [t for m in measured for t in m["tracks"]]
        counts = np.concatenate([m["counts"] for m in measured])
        if not tracks or not counts.any():
            raise GriditError("no balls found in the real sequences: the coherence metric is for bouncing-ball data")
        speed = _pooled(tracks, "speed", "speed_clear")
        radius = _pooled(tracks, "radius_obs", "obs_clear")
        colours = np.stack([t["median_colour"] for t in tracks])
        gaps = _colour_gaps(_pooled(tracks, "colour_obs", "obs_clear"), colours)
        return cls(
            frame_size=sizes.pop(), n_sequences=len(measured), n_balls=int(np.bincount(counts).argmax()),
            speed_range=support(speed, len(tracks)), median_speed=float(np.median(speed)),
            stop_speed=max(0.05, 0.25 * float(np.quantile(speed, 0.005))),
            radius_range=support(radius, len(tracks)), median_radius=float(np.median(radius)),
            colours=colours, colour_slack=float(np.quantile(gaps, 0.99)),
            background=float(np.quantile(np.concatenate([m["background"] for m in measured]), 0.99)),
            track_speed=np.array([t["median_speed"] for t in tracks]),
            track_radius=np.array([t["median_radius"] for t in tracks]), counts=counts,
        )  # fmt: skip

    @classmethod
    def from_config(cls, cfg: BouncingConfig, n_sequences=64, seed=2**31 - 1):
        """From ``n_sequences`` fresh sequences of ``data.builtin.bouncing_shapes(cfg)`` (a seed no run trains on)."""
        return cls.from_sequences(bouncing_shapes(n_sequences, cfg, seed=seed).frames)


def _colour_gaps(observed, colours):
    """RMS distance (0-255) of each observed colour ``(N, 3)`` to the nearest of ``colours`` ``(K, 3)``."""
    d = np.linalg.norm(observed[:, None, :] - colours[None, :, :], axis=-1) / np.sqrt(3)  # (N, K)
    return d.min(1) if d.size else np.zeros(len(observed))


@dataclass
class CoherenceReport:
    """The components of one sequence's coherence, each one's factor in ``[0, 1]``, and their product ``score``."""

    detection_rate: float  # fraction of frames with the data's ball count (or balls that may hide behind others)
    motion_error_px: float  # mean error of predicting each centre from the two before it
    max_error_px: float  # the worst such error: a single teleport
    jump_rate: float  # fraction of judged frames whose error exceeds JUMP_PX: the tail
    reversal_rate: float  # fraction of judged frames where a velocity component flips in mid-air
    stop_fraction: float  # fraction of steps slower than the data's stop speed
    speed_excess: float  # mean speed outside the data's range, relative to its median
    size_excess: float  # mean radius outside the data's range, relative to its median
    size_cv: float  # relative std of a ball's area along its track
    colour_excess: float  # mean distance (0-255) to the data's colours beyond the data's own spread
    colour_std: float  # std of a ball's core colour along its track (0-255)
    background_excess: float  # mean brightness outside the balls beyond the data's (0-255)
    score: float
    worst: str  # the component with the smallest factor: what is most wrong
    n_balls: int  # the data's balls per frame
    n_tracks: int  # tracks of three frames or more
    factors: dict = field(default_factory=dict)

    def as_dict(self):
        return asdict(self)


def _factors(c, tol):
    """Each component's factor in ``[0, 1]``: ``f(value / tolerance)`` with ``f(z) = 1 / (1 + z^2)``."""
    f = {k: float(tolerance(c[k], tol[k])) for k in COMPONENTS if k != "detection_rate"}
    f["detection_rate"] = float(tolerance(1 - c["detection_rate"], tol["detection_rate"]))
    f["stop_fraction"] *= 1 - c["stop_fraction"]  # a ball that never moves scores 0
    return f


def found_frames(m, n_balls):
    """Per frame: the data's ball count is there (a missing ball may hide behind another): the detection rate's unit."""
    return (m["counts"] <= n_balls) & (m["counts"] + m["hidden"] >= n_balls)


def appearance_frames(m, ref, tol=None):
    """``(counted, fine)``, bool per frame: the frame holds the data's ball count, and every ball clear of the others
    has a radius and colour within the data's ranges over a background no brighter than the data's, each give or take
    its ``TOLERANCES`` entry (``size_excess`` of the median radius, ``colour_excess`` and ``background_excess``
    levels). Appearance only: where and how the balls move does not enter."""
    tol = tol or TOLERANCES
    blobs, counted = m["blobs"], m["counts"] == ref.n_balls
    radius = np.sqrt(blobs["area"] / np.pi)
    slack = tol["size_excess"] * ref.median_radius
    off = (radius < ref.radius_range[0] - slack) | (radius > ref.radius_range[1] + slack)
    off |= _colour_gaps(blobs["colour"], ref.colours) > ref.colour_slack + tol["colour_excess"]
    bad = np.asarray(m["background"]) > ref.background + tol["background_excess"]
    bad[blobs["t"][off & ~blobs["touching"]]] = True
    return counted, counted & ~bad


def _score(m, ref, tol):
    """``CoherenceReport`` of one ``measure_balls`` result against a ``BallReference``."""
    if m["frame_size"] != tuple(ref.frame_size):
        raise GriditError(f"frames of {m['frame_size']} px scored against a reference of {tuple(ref.frame_size)} px frames")
    expected, tracks = ref.n_balls, m["tracks"]
    found = found_frames(m, expected)
    error = np.concatenate([t["error"] for t in tracks]) if tracks else np.zeros(0)
    reversal = _pooled(tracks, "reversal", "judged_clear")
    speed = _pooled(tracks, "speed", "speed_clear")
    radius = _pooled(tracks, "radius_obs", "obs_clear")
    colour = _pooled(tracks, "colour_obs", "obs_clear").reshape(-1, 3)
    judged, weights = len(error) > 0, [t["weight"] for t in tracks]
    px = ref.median_radius / RADIUS_PX  # motion is judged relative to the ball's size
    tol = tol | {k: tol[k] * px for k in ("motion_error_px", "max_error_px")}
    c = {
        "detection_rate": float(np.mean(found)),
        "motion_error_px": float(error.mean()) if judged else float("inf"),
        "max_error_px": float(error.max()) if judged else float("inf"),
        "jump_rate": float(np.mean(error > JUMP_PX * px)) if judged else 1.0,
        "reversal_rate": float(np.mean(reversal)) if judged else 1.0,
        "stop_fraction": float(np.mean(speed < ref.stop_speed)) if len(speed) else 1.0,
        "speed_excess": excess(speed, *ref.speed_range) / ref.median_speed if len(speed) else float("inf"),
        "size_excess": excess(radius, *ref.radius_range) / ref.median_radius if len(radius) else float("inf"),
        "size_cv": float(np.average([t["size_cv"] for t in tracks], weights=weights)) if tracks else float("inf"),
        "colour_excess": excess(_colour_gaps(colour, ref.colours), 0, ref.colour_slack) if len(colour) else float("inf"),
        "colour_std": float(np.average([t["colour_std"] for t in tracks], weights=weights)) if tracks else float("inf"),
        "background_excess": excess(m["background"], 0, ref.background),
    }  # fmt: skip
    factors = _factors(c, tol)
    score = float(np.prod(list(factors.values()))) if tracks else 0.0
    return CoherenceReport(**c, score=score, worst=min(factors, key=factors.get), n_balls=expected,
                           n_tracks=len(tracks), factors=factors)  # fmt: skip


def coherence(frames, reference, *, tolerances=None):
    """How much one sequence behaves like the real bouncing balls of ``reference``, from its frames alone.

    ``frames``: uint8 ``(T, H, W, 3)`` or float ``(T, 3, H, W)`` in ``[-1, 1]``; ``reference``: a ``BallReference``
    of real sequences of the same source and frame size. Balls are found and tracked (``metrics.tracking``); where
    one touches another its observations are left out unless nothing else is left. Components, and what each catches:

    - ``detection_rate``: frames holding the data's ball count (a missing ball may hide behind another): balls that
      vanish, extra balls, specks;
    - ``motion_error_px`` (mean), ``max_error_px`` (worst) and ``jump_rate`` (share over ``JUMP_PX``) of predicting
      each centre from the two before it with constant velocity and elastic bounces: shuffled frames, jitter (mean),
      a single teleport or a pass through a wall (worst, tail); their pixel tolerances hold for balls of radius
      ``RADIUS_PX`` and scale with the data's median radius;
    - ``reversal_rate``: a velocity component flipping far from any wall: turning back in mid-air;
    - ``stop_fraction``: steps slower than a quarter of the data's slowest: hovering, stopping, frozen frames;
    - ``speed_excess``, ``size_excess``: how far speeds and radii fall outside the data's ranges: too slow or fast,
      too small or large;
    - ``size_cv``, ``colour_std``: a ball changing size or colour along its track;
    - ``colour_excess``: colours the data never has;
    - ``background_excess``: brightness outside the balls beyond the data's: noise and specks under the detection
      threshold.

    Each component maps to a factor ``f(value / tolerance)`` with ``f(z) = 1 / (1 + z^2)`` (``TOLERANCES``: the
    value that halves the score; the detection factor uses the missed fraction, and the stop factor is further
    multiplied by the moving fraction, so a frozen ball scores 0). ``score`` is the product, 0 without any track.
    """
    tol = {**TOLERANCES, **(tolerances or {})}
    return _score(measure_balls(frames, min_step=reference.stop_speed), reference, tol)


def _distributions(measured, ref, tol):
    """KS and Wasserstein-1 distances of per-track speed, radius and colour and per-frame count to the reference.

    ``gap = min(ks, w1 / resolution)``: KS alone would flag a radius 0.01 px off a reference that has no spread.
    """
    tracks = [t for m in measured for t in m["tracks"]]
    colour = np.array([t["median_colour"] for t in tracks]).reshape(-1, 3)
    pairs = {  # name -> (sample values, reference values: lists of 1-D samples; independent units on each side; resolution)
        "speed": ([[t["median_speed"] for t in tracks]], [ref.track_speed], len(tracks), len(ref.track_speed),
                  0.05 * ref.median_speed),
        "radius": ([[t["median_radius"] for t in tracks]], [ref.track_radius], len(tracks), len(ref.track_radius),
                   0.05 * ref.median_radius),
        "colour": (colour.T, ref.colours.T, len(colour), len(ref.colours), 10.0),  # per channel; the worst counts
        "count": ([np.concatenate([m["counts"] for m in measured])], [ref.counts], len(measured), ref.n_sequences, 0.5),
    }  # fmt: skip
    out = {}
    for name, (a, b, n, k, resolution) in pairs.items():
        d = {"ks": 1.0, "w1": float("inf")}
        if n:
            d = {"ks": max(map(ks_distance, a, b)), "w1": max(map(wasserstein_1d, a, b))}
        out[name] = d | {"gap": min(d["ks"], d["w1"] / resolution), "ks_chance": ks_chance(max(n, 1), k)}
    factor = np.prod([tolerance(max(0.0, d["gap"] - d["ks_chance"]), tol["distribution"]) for d in out.values()])
    return out, float(factor)


def coherence_many(sequences, reference, *, tolerances=None, seams=None, progress=False):
    """The coherence of a set of sequences (a list or an array ``(N, T, ...)``) against ``reference``.

    First the graded figures: ``metrics.motion.summarise`` of every sequence's plausible transitions
    (``plausible_rate`` with its interval, ``plausible_run``, the detection rate and gate, and with ``seams``, the
    frames where a new grid or window starts adding frames, the rate at those frames and inside), and ``appearance``,
    the share of frames holding the data's ball count whose balls and background look like the data's
    (``appearance_frames``), with ``appearance_ci``.

    Then the strict figures: the mean of every ``CoherenceReport`` component and factor over the sequences,
    ``sequence_score`` (their mean score), ``distributions`` (per quantity the KS and Wasserstein-1 distances
    between the set's per-track speed, radius and colour (per channel, the worst), and per-frame count, and the
    reference's; ``gap``, the KS distance unless the Wasserstein one is under the quantity's resolution (5% of the
    data's median speed or radius, 10 colour levels, half a ball); ``ks_chance``, the KS distance two samples of
    those sizes from one distribution exceed 5% of the time), ``distribution_score`` (the product over quantities of
    ``f(max(0, gap - ks_chance) / TOLERANCES["distribution"])``: only a gap beyond chance counts) and
    ``score = sequence_score * distribution_score``: indistinguishable from the data, so any flaw of looks or
    motion takes it towards 0. Below the detection gate the motion components are None too.
    """
    tol = {**TOLERANCES, **(tolerances or {})}
    measured = [measure_balls(s, min_step=reference.stop_speed)
                for s in tqdm(sequences, desc="coherence", unit="seq", disable=not progress, leave=False)]  # fmt: skip
    if not measured:
        raise GriditError("coherence_many needs at least one sequence")
    reports = [_score(m, reference, tol).as_dict() for m in measured]
    summary = {k: float(np.mean([r[k] for r in reports])) for k in COMPONENTS}
    factors = {k: float(np.mean([r["factors"][k] for r in reports])) for k in COMPONENTS}
    distributions, dist_score = _distributions(measured, reference, tol)
    seq_score = float(np.mean([r["score"] for r in reports]))
    jump = JUMP_PX * reference.median_radius / RADIUS_PX
    slack = SPEED_SLACK * reference.median_speed
    speeds = (reference.speed_range[0] - slack, reference.speed_range[1] + slack)
    transitions = [ball_transitions(m, reference.n_balls, speeds, jump) for m in measured]
    motion = summarise(transitions, [found_frames(m, reference.n_balls) for m in measured], seams)
    looks = [appearance_frames(m, reference, tol) for m in measured]
    appearance, appearance_ci = rate_interval([fine.sum() for _, fine in looks], [c.sum() for c, _ in looks])
    if not motion["detection_gate"]["passed"]:
        summary |= {k: None for k in MOTION_COMPONENTS}
    return motion | {"appearance": appearance, "appearance_ci": appearance_ci} | summary | {
        "score": seq_score * dist_score, "sequence_score": seq_score, "distribution_score": dist_score,
        "worst": Counter(r["worst"] for r in reports).most_common(1)[0][0], "factors": factors,
        "distributions": distributions, "n_balls": reference.n_balls, "n_tracks": float(np.mean([r["n_tracks"] for r in reports])),
        "n_sequences": len(reports), "n_frames": int(sum(m["n_frames"] for m in measured)),
    }  # fmt: skip


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


def with_baselines(samples, real, reference=None, *, score_many=coherence_many, seams=None, progress=False, **kwargs):
    """``{"samples", "real", "shuffled", "frozen"}``: ``score_many(x, reference)`` of the samples, of real sequences,
    and of those with their frames shuffled and frozen (the baselines a good score must sit far above); ``seams`` (the
    samples' grid or window starts) split the samples' plausible rate.

    ``reference`` defaults to one made from ``real`` (``BallReference.from_sequences``); the real row is then scored
    in-sample, an upper bound: pass a reference of other real sequences (``BallReference.from_config``) for an
    honest one. ``score_many`` and ``kwargs`` let the moving-digits metric use the same baselines.
    """
    if reference is None:
        reference = BallReference.from_sequences(real)
    shuffled = [shuffle_frames(r, seed=i) for i, r in enumerate(real)]
    frozen = [freeze_frames(r) for r in real]
    out = {"samples": score_many(samples, reference, seams=seams, progress=progress, **kwargs)}
    return out | {name: score_many(x, reference, progress=progress, **kwargs)
                  for name, x in [("real", real), ("shuffled", shuffled), ("frozen", frozen)]}  # fmt: skip
