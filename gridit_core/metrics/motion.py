"""Plausible motion: how often a set's objects move as the real ones could, transition by transition, with an interval.

A transition lands on a frame ``t >= 2`` and is judged from frames ``t-2``, ``t-1`` and ``t``. For bouncing balls
(``ball_transitions``) it is plausible when each of the three frames holds the data's number of balls, every ball is
tracked through all three, its centre at ``t`` lies within the jump threshold of the constant-velocity-with-bounces
prediction from the two before, no velocity component turns back in mid-air, and the step into ``t`` has a speed in
the data's range (give or take ``SPEED_SLACK``). Only centres and counts enter, so no change of colour, size or background can move it (those are
the ``appearance`` figure of ``metrics.coherence``). Moving digits have their own (``metrics.digits``), with the
digit's identity kept as one more condition.

``summarise`` turns the transitions of a set of sequences into the figures ``gridit eval`` reports:

- ``plausible_rate``: the share of plausible transitions over the set, with ``plausible_rate_ci``, a 95% bootstrap
  interval over sequences (``scipy.stats.bootstrap``, percentile method, a fixed seed; None for one sequence);
- ``plausible_run``: the mean number of frames before the first implausible transition (the sequence's length where
  there is none): how long a sequence stays right, the "any length" question;
- with ``seams`` (the frames where a new grid or window starts adding frames): the rate of the transitions that land
  on those frames and of the rest, each with its interval;
- ``detection_rate``, and the detection gate: under ``GATE`` (the right objects found in 90% of the frames) every
  motion figure is None, since motion judged on fragments of an object that is mostly not drawn decides nothing.
"""

import numpy as np

GATE = 0.9  # detection rate below which a set's motion figures are withheld (None)
SPEED_SLACK = 0.25  # a speed this share of the data's median beyond the data's range is out of it (centres of soft,
# blurred or dimmed balls wobble by tenths of a pixel; a 0.3 px/frame drift or a 3x faster ball stay well outside)
RESAMPLES = 2000  # bootstrap resamples of the interval
MOTION_FIGURES = ("plausible_rate", "plausible_rate_ci", "plausible_run", "plausible_rate_at_seams",
                  "plausible_rate_at_seams_ci", "plausible_rate_inside", "plausible_rate_inside_ci")  # fmt: skip


def ball_transitions(measured, n_balls, speed_range, jump_px):
    """Per transition (frames ``2 .. T-1``) of one measured sequence (``coherence.measure_balls``): ``plausible`` and
    why not (``missing``: a frame of the three without ``n_balls`` balls; ``untracked``: a ball not followed through
    the three; ``jump``, ``reversal``, ``speed``), each a bool array ``(T-2,)``."""
    t_len = measured["n_frames"]
    counted = measured["counts"] == n_balls  # (T,)
    missing = ~(counted[:-2] & counted[1:-1] & counted[2:])  # (T-2,)
    judged = np.zeros(t_len, int)
    bad = {k: np.zeros(t_len, bool) for k in ("jump", "reversal", "speed")}
    lo, hi = speed_range
    for track in measured["tracks"]:
        f = track["frame"]
        np.add.at(judged, f, 1)
        bad["jump"][f[track["error"] > jump_px]] = True
        bad["reversal"][f[track["reversal"].astype(bool)]] = True
        bad["speed"][f[(track["speed_in"] < lo) | (track["speed_in"] > hi)]] = True
    untracked = (judged != n_balls)[2:] & ~missing
    why = {"missing": missing, "untracked": untracked, **{k: v[2:] & ~missing & ~untracked for k, v in bad.items()}}
    plausible = ~np.any(np.stack(list(why.values())), axis=0) if t_len > 2 else np.zeros(0, bool)
    return {"plausible": plausible, **why}


def rate_interval(hits, totals, confidence=0.95, seed=0):
    """The pooled rate ``sum(hits) / sum(totals)`` over sequences and its bootstrap interval over sequences
    (resampling whole sequences; None with fewer than two sequences or nothing judged)."""
    hits, totals = np.asarray(hits, float), np.asarray(totals, float)
    if totals.sum() == 0:
        return None, None
    rate = float(hits.sum() / totals.sum())
    keep = totals > 0
    if keep.sum() < 2:
        return rate, None
    h, n = hits[keep], totals[keep]
    if np.all(h / n == rate):  # every sequence at the same rate: resampling cannot move it
        return rate, [rate, rate]
    from scipy.stats import bootstrap

    res = bootstrap((h, n), lambda a, b: a.sum() / b.sum(), paired=True, vectorized=False, n_resamples=RESAMPLES,
                    confidence_level=confidence, method="percentile", random_state=np.random.default_rng(seed))  # fmt: skip
    return rate, [float(res.confidence_interval.low), float(res.confidence_interval.high)]


def plausible_run(plausible):
    """Frames before the first implausible transition (transition ``i`` lands on frame ``i + 2``); the sequence's
    length where every transition is plausible."""
    bad = np.flatnonzero(~plausible)
    return int(bad[0] + 2) if len(bad) else len(plausible) + 2


def summarise(transitions, detected, seams=None, gate=GATE):
    """The set figures (module docstring) from each sequence's transitions (dicts with ``plausible``) and each
    sequence's per-frame ``detected`` (bool arrays); ``seams``: frame numbers where a new grid or window starts adding
    frames, for every sequence (None: unknown)."""
    plausible = [t["plausible"] for t in transitions]
    frames = np.concatenate(detected) if detected else np.zeros(0, bool)
    detection = float(frames.mean()) if frames.size else 0.0
    out = {"detection_rate": detection, "detection_gate": {"threshold": gate, "passed": detection >= gate},
           "n_transitions": int(sum(len(p) for p in plausible))}  # fmt: skip
    rate, ci = rate_interval([p.sum() for p in plausible], [len(p) for p in plausible])
    out |= {"plausible_rate": rate, "plausible_rate_ci": ci,
            "plausible_run": float(np.mean([plausible_run(p) for p in plausible])) if plausible else None}  # fmt: skip
    why = [k for k in (transitions[0] if transitions else {}) if k != "plausible"]
    total = max(out["n_transitions"], 1)
    out["implausible_because"] = {k: float(sum(t[k].sum() for t in transitions) / total) for k in why}
    if seams is not None:
        for name, pick in (("at_seams", True), ("inside", False)):
            masks = [np.isin(np.arange(2, len(p) + 2), seams) == pick for p in plausible]
            r, c = rate_interval([p[m].sum() for p, m in zip(plausible, masks)], [m.sum() for m in masks])
            out |= {f"plausible_rate_{name}": r, f"plausible_rate_{name}_ci": c}
        out["seams"] = [int(s) for s in seams]
    if detection < gate:
        out |= {k: None for k in MOTION_FIGURES if k in out}
    return out
