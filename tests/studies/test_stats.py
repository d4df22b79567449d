"""Study statistics on synthetic results: each setting's mean and interval over seeds, and claim verdicts that need
three runs a side, an interval clear of the factor, and the detection gate passed."""

import math

import numpy as np
import pytest

from gridit_core.studies.stats import gate_metric, judge_claim, mean_interval, metric_bounds, ratio_interval, settings

pytestmark = pytest.mark.unit


def record(arch, seed, status="done", **metrics):
    params = {"ARCH": arch, "SEED": seed}
    return {"name": f"{arch}-{seed}", "status": status, "parameters": params, "varied": params, "metrics": metrics,
            "setting": {"ARCH": arch}, "setting_label": f"ARCH {arch}", "results": {"metrics": metrics},
            "error": None if status == "done" else "ValueError: boom", "notebook": None, "log": None}  # fmt: skip


def runs(arch, values, key="t", seeds=None, **extra):
    return [record(arch, s, **{key: v}, **extra) for s, v in zip(seeds or range(len(values)), values)]


CLAIM = {"id": "a", "metric": "t", "better": "lower", "factor": 2.0, "a": {"ARCH": "grid"}, "b": {"ARCH": "tensor"}}


def test_mean_interval_is_the_t_interval():
    mean, (lo, hi) = mean_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and (lo, hi) == pytest.approx((2 - 4.302653 / math.sqrt(3), 2 + 4.302653 / math.sqrt(3)))
    assert mean_interval([5.0]) == (5.0, None) and mean_interval([]) == (None, None)


def test_intervals_stay_where_the_values_can_be():
    mean, (lo, hi) = mean_interval([0.0, 0.1, 0.9], bounds=(0.0, 1.0))
    assert lo == 0.0 and hi == 1.0 and mean == pytest.approx(1 / 3)
    done = [{"status": "done", "setting_label": "s", "parameters": {"SEED": i}, "name": f"r{i}",
             "metrics": {"plausible_rate_64": v, "plausible_run_64": 10 * v, "final_loss": v}}
            for i, v in enumerate([0.02, 0.05, 0.9])]  # fmt: skip
    stats = settings(done, ["plausible_rate_64", "plausible_run_64", "final_loss"])[0]["metrics"]
    assert stats["plausible_rate_64"]["ci"][0] == 0.0  # cut: the t-interval reaches below 0
    assert stats["plausible_run_64"]["ci"][0] == 0.0 and stats["final_loss"]["ci"][0] == 0.0  # cannot be negative
    assert stats["plausible_run_64"]["ci"][1] > 1 and stats["plausible_rate_64"]["ci"][1] <= 1  # not rates: no cap
    assert metric_bounds("sample_seconds_per_frame_256") == (0.0, math.inf) and metric_bounds("some_score") is None


def test_one_run_a_side_is_always_inconclusive():
    out = judge_claim(CLAIM, runs("grid", [1.0]) + runs("tensor", [30.0]))
    assert out["verdict"] == "inconclusive" and out["measured"] == pytest.approx(30.0) and out["runs"] == "1 vs 1"


def test_a_clear_win_holds_and_a_clear_loss_does_not():
    clear = runs("grid", [1.0, 1.1, 0.9]) + runs("tensor", [3.0, 3.3, 2.8])
    out = judge_claim(CLAIM, clear)  # paired by seed: per-seed ratios 3.0, 3.0, 3.1
    assert out["verdict"] == "holds" and out["interval"][0] >= 2.0 and "paired" in out["method"]
    assert judge_claim({**CLAIM, "factor": 4.0}, clear)["verdict"] == "does not hold"
    assert judge_claim({**CLAIM, "better": "higher", "factor": 1.0}, clear)["verdict"] == "does not hold"


def test_overlapping_intervals_are_inconclusive():
    noisy = runs("grid", [1.0, 2.5, 0.8]) + runs("tensor", [3.0, 1.5, 2.6])  # per-seed ratios 3.0, 0.6, 3.25
    out = judge_claim(CLAIM, noisy)
    assert out["verdict"] == "inconclusive" and out["interval"][0] < 2.0 <= out["interval"][1]


def test_sides_without_shared_seeds_are_bootstrapped_apart():
    apart = runs("grid", [1.0, 1.1, 0.9], seeds=[0, 1, 2]) + runs("tensor", [3.0, 3.3, 2.8], seeds=[5, 6, 7])
    out = judge_claim(CLAIM, apart)
    assert "apart" in out["method"] and out["measured"] == pytest.approx(9.1 / 3.0) and out["verdict"] == "holds"
    ratio, ci, _ = ratio_interval([1.0, 2.0, 3.0], [1.0, 1.0, 1.0])
    assert ratio == 2.0 and ci[0] < 2.0 < ci[1]


def test_a_motion_claim_fails_where_the_detection_gate_fails():
    assert gate_metric("plausible_rate_64") == "detection_gate_64" and gate_metric("sample_seconds_per_frame_64") is None
    claim = {"id": "m", "metric": "plausible_rate_64", "better": "higher", "factor": 1.0, "a": {"ARCH": "grid"},
             "b": {"ARCH": "tensor"}}  # fmt: skip
    passed = runs("grid", [0.9, 0.95, 0.92], "plausible_rate_64", detection_gate_64=1)
    tensor = runs("tensor", [0.3, 0.2, 0.25], "plausible_rate_64", detection_gate_64=1)
    assert judge_claim(claim, passed + tensor)["verdict"] == "holds"
    failing = tensor[:2] + [record("tensor", 2, plausible_rate_64=0.1, detection_gate_64=0)]
    out = judge_claim(claim, passed + failing)
    assert out["verdict"] == "inconclusive" and out["why"] == "the detection gate fails in 1 run(s) of side b"


def test_missing_runs_floors_and_zeros_are_inconclusive():
    assert judge_claim({**CLAIM, "b": {"ARCH": "msc"}}, runs("grid", [1, 1, 1]))["why"] == "runs missing or failed"
    tiny = runs("grid", [1e-9] * 3, "s") + runs("tensor", [2e-10] * 3, "s")
    claim = {"metric": "s", "a": {"ARCH": "grid"}, "b": {"ARCH": "tensor"}, "floor": 0.01}
    assert judge_claim(claim, tiny)["why"] == "both sides at or under 0.01"
    zeros = runs("grid", [0.0] * 3, "s") + runs("tensor", [0.0] * 3, "s")
    assert judge_claim({**claim, "floor": 0}, zeros)["why"] == "both sides are 0"
    failed = runs("grid", [1.0, 1.0]) + [record("grid", 2, status="failed")] + runs("tensor", [3.0] * 3)
    assert judge_claim(CLAIM, failed)["why"] == "fewer than 3 runs a side"


def test_settings_give_each_setting_its_mean_and_interval_over_seeds():
    rows = settings(runs("grid", [1.0, 2.0, 3.0]) + runs("tensor", [4.0]) + [record("msc", 0, status="failed")], ["t"])
    assert [g["label"] for g in rows] == ["ARCH grid", "ARCH tensor"]
    grid, tensor = (g["metrics"]["t"] for g in rows)
    assert grid["mean"] == 2.0 and grid["n"] == 3 and grid["ci"][0] < 2.0 < grid["ci"][1]
    assert tensor == {"mean": 4.0, "ci": None, "n": 1} and rows[0]["seeds"] == [0, 1, 2]
    assert np.isfinite(grid["ci"]).all()
