"""What a study's runs can decide: each setting's mean with a 95% interval over its seeds, and claims judged by an
interval of the ratio between two settings.

A claim (``judge_claim``) names a metric (or one per side), the runs of each side by their parameters (every seed of
a setting), which way is better and the factor the better side must reach. The ratio is oriented so that above 1
means side ``a`` is better. Where the two sides ran the same seeds, it is paired by seed: the geometric mean of the
per-seed ratios with a t-interval on their logarithms; otherwise a percentile bootstrap of the ratio of the means
(``scipy.stats.bootstrap``, the sides resampled independently, a fixed seed). The verdict:

- ``holds`` only when the interval's lower end reaches the factor;
- ``does not hold`` only when its upper end is below the factor;
- ``inconclusive`` otherwise, and always with fewer than ``MIN_RUNS`` runs a side, when both sides' means are at or
  under the claim's ``floor``, and for a motion metric when a run of either side fails the detection gate (its
  ``detection_gate_<length>`` metric is 0: the object was found in under 90% of the frames).
"""

import math

import numpy as np

from gridit_core.errors import GriditError

CONFIDENCE = 0.95
MIN_RUNS = 3  # runs a side a verdict needs
MOTION_PREFIXES = ("plausible_", "motion_error_px", "max_error_px", "jump_rate", "reversal_rate", "stop_fraction")
# metrics that are shares of something, so their intervals are cut to [0, 1] (plausible_run_* is a frame count)
FRACTION_PREFIXES = ("plausible_rate", "detection_rate", "detection_gate", "appearance", "coherence", "jump_rate",
                     "reversal_rate", "stop_fraction")  # fmt: skip
# metrics that cannot be negative (times, counts, losses, distances), so their intervals stop at 0
NONNEGATIVE_PREFIXES = ("sample_seconds", "train_", "steps_per_second", "plausible_run", "motion_error", "max_error",
                        "final_loss", "fvd", "fid", "params_millions", "flops_per_step")  # fmt: skip


def mean_interval(values, confidence=CONFIDENCE, bounds=None):
    """``(mean, [lo, hi])``: the mean of ``values`` and its t-interval (None with fewer than two values), cut to
    ``bounds = (low, high)`` where the values cannot leave them (a rate's interval never reaches below 0)."""
    x = np.asarray(values, float)
    if not len(x):
        return None, None
    mean = float(x.mean())
    if len(x) < 2:
        return mean, None
    from scipy.stats import t

    half = float(t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    lo, hi = bounds or (-math.inf, math.inf)
    return mean, [max(mean - half, lo), min(mean + half, hi)]


def ratio_interval(a, b, paired=False, confidence=CONFIDENCE, seed=0):
    """``(ratio, [lo, hi], method)`` of the values ``a`` over the values ``b``.

    Paired (``a[i]`` and ``b[i]`` share a seed): the geometric mean of ``a[i] / b[i]`` and a t-interval on the logs;
    where a ratio is 0 or infinite, a bootstrap over seeds of the ratio of means instead. Unpaired: a bootstrap of the
    ratio of means, each side resampled on its own. ``(nan, None, ...)`` when both means are 0."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.mean() == 0 and b.mean() == 0:
        return math.nan, None, "both sides are 0"
    if paired and len(a) == len(b) and np.all(a > 0) and np.all(b > 0):
        logs = np.log(a / b)
        mean, ci = mean_interval(logs, confidence)
        return math.exp(mean), None if ci is None else [math.exp(ci[0]), math.exp(ci[1])], "paired by seed (log t)"
    ratio = a.mean() / b.mean() if b.mean() > 0 else math.inf
    if min(len(a), len(b)) < 2:
        return ratio, None, "one run a side"
    from scipy.stats import bootstrap

    def of_means(x, y, axis=-1):
        mx, my = np.mean(x, axis=axis), np.mean(y, axis=axis)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(my > 0, mx / np.where(my > 0, my, 1), np.inf)

    if np.ptp(a) == 0 and np.ptp(b) == 0:  # nothing to resample: every run of a side gave the same value
        return ratio, [ratio, ratio], "constant sides"
    res = bootstrap((a, b), of_means, paired=paired, vectorized=True, n_resamples=9999, confidence_level=confidence,
                    method="percentile", random_state=np.random.default_rng(seed))  # fmt: skip
    how = "paired bootstrap over seeds" if paired else "bootstrap, sides resampled apart"
    return ratio, [float(res.confidence_interval.low), float(res.confidence_interval.high)], how


def _matches(record, where):
    return all(record["parameters"].get(k) == v for k, v in (where or {}).items())


def gate_metric(metric):
    """The detection-gate metric a motion metric answers to (``plausible_rate_64`` -> ``detection_gate_64``), or None."""
    if not metric.startswith(MOTION_PREFIXES):
        return None
    suffix = metric.rsplit("_", 1)[1] if metric.rsplit("_", 1)[-1].isdigit() else ""
    return f"detection_gate_{suffix}" if suffix else "detection_gate"


def judge_claim(claim, records):
    """A claim's verdict from the finished runs (the module docstring): ``{"id", "claim", "factor", "better", "runs",
    "measured", "interval", "method", "verdict", "why"}``."""
    better = claim.get("better", "higher")
    if better not in ("higher", "lower"):
        raise GriditError(f"claim {claim.get('id')}: better must be higher or lower, got {better!r}")
    factor, floor = float(claim.get("factor", 1.0)), float(claim.get("floor", 0.0))
    sides, gates = {}, {}
    for side in ("a", "b"):
        metric = claim.get(f"metric_{side}", claim.get("metric"))
        gate = claim.get("gate", gate_metric(metric))
        runs = [r for r in records if r["status"] == "done" and _matches(r, claim.get(side))]
        gates[side] = [r for r in runs if gate and r["metrics"].get(gate, 1) == 0]
        sides[side] = {r["parameters"].get("SEED"): r["metrics"][metric] for r in runs if metric in r["metrics"]}
    a, b = sides["a"], sides["b"]
    row = {"id": str(claim.get("id", "")), "claim": str(claim.get("claim", "")), "factor": factor, "better": better,
           "runs": f"{len(a)} vs {len(b)}", "measured": None, "interval": None, "method": None}  # fmt: skip
    if not a or not b:
        return row | {"verdict": "inconclusive", "why": "runs missing or failed"}
    failed = [f"{len(gates[s])} run(s) of side {s}" for s in "ab" if gates[s]]
    if failed:
        return row | {"verdict": "inconclusive", "why": f"the detection gate fails in {' and '.join(failed)}"}
    if floor > 0 and max(np.mean(list(a.values())), np.mean(list(b.values()))) <= floor:
        return row | {"verdict": "inconclusive", "why": f"both sides at or under {floor:g}"}
    paired = None not in a and set(a) == set(b)
    seeds = sorted(a, key=str) if paired else None
    xa, xb = ([a[s] for s in seeds], [b[s] for s in seeds]) if paired else (list(a.values()), list(b.values()))
    num, den = (xa, xb) if better == "higher" else (xb, xa)  # how many times better a is than b
    ratio, ci, method = ratio_interval(num, den, paired)
    row |= {"measured": None if math.isnan(ratio) else ratio, "interval": ci, "method": method}
    if math.isnan(ratio):
        return row | {"verdict": "inconclusive", "why": "both sides are 0"}
    if min(len(a), len(b)) < MIN_RUNS:
        return row | {"verdict": "inconclusive", "why": f"fewer than {MIN_RUNS} runs a side"}
    if ci is None:
        return row | {"verdict": "inconclusive", "why": "no interval"}
    verdict = "holds" if ci[0] >= factor else "does not hold" if ci[1] < factor else "inconclusive"
    why = {"holds": "the interval's lower end reaches the factor", "does not hold": "the interval's upper end is below "
           "the factor", "inconclusive": "the interval straddles the factor"}[verdict]  # fmt: skip
    return row | {"verdict": verdict, "why": why}


def metric_bounds(metric):
    """The values ``metric`` can take, ``(low, high)``, where the name says: a share in [0, 1], a non-negative
    quantity from 0; None otherwise."""
    if metric.startswith(FRACTION_PREFIXES):
        return (0.0, 1.0)
    return (0.0, math.inf) if metric.startswith(NONNEGATIVE_PREFIXES) else None


def settings(records, metrics):
    """One entry per setting of the finished runs, in run order: ``{"label", "setting", "runs", "seeds", "metrics":
    {name: {"mean", "ci", "n"}}}`` over its seeds."""
    groups = {}
    for r in records:
        if r["status"] == "done":
            groups.setdefault(r.get("setting_label", "all"), []).append(r)
    out = []
    for label, runs in groups.items():
        stats = {}
        for m in metrics:
            values = [r["metrics"][m] for r in runs if m in r["metrics"]]
            mean, ci = mean_interval(values, bounds=metric_bounds(m))
            if mean is not None:
                stats[m] = {"mean": mean, "ci": ci, "n": len(values)}
        out.append({"label": label, "setting": runs[0].get("setting", {}), "runs": [r["name"] for r in runs],
                    "seeds": [r["parameters"].get("SEED") for r in runs], "metrics": stats})  # fmt: skip
    return out
