import importlib.util
import json
import math
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"

NUMBERS = {
    "training": ["step_ms_median", "steps_per_s", "samples_per_s"],
    "sampling": ["seconds_total", "seconds_per_frame", "seconds_per_grid", "ms_per_model_call"],
    "reference": ["ours_ms", "timm_fused_ms", "timm_unfused_ms", "ratio_vs_fused", "ratio_vs_unfused", "ratio"],
    "attention": ["fused_ms", "explicit_ms", "explicit_over_fused"],
}


def load_bench():
    spec = importlib.util.spec_from_file_location("bench", BENCH)  # a script, not part of the package
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_quick_run_writes_a_complete_report(tmp_path):
    out = tmp_path / "bench" / "bench.json"
    returned = load_bench().main(["--quick", "--out", str(out), "--device", "cpu"])
    report = json.loads(out.read_text())
    assert report == json.loads(json.dumps(returned))
    assert not list(out.parent.glob(".*.tmp")), "the temporary file should have been renamed"
    for section, keys in NUMBERS.items():
        for key in keys:
            value = report[section][key]
            assert isinstance(value, float) and math.isfinite(value) and value > 0, f"{section}.{key} = {value!r}"
    assert report["quick"] is True
    assert report["machine"]["device"] == "cpu" and report["machine"]["torch"]
    assert report["config"]["tokens"] > 0 and report["config"]["model"].startswith("DiT-")
    sampling = report["sampling"]
    assert sampling["model_calls"] == sampling["grids"] * sampling["steps"]
    assert report["reference"]["adaln_in_reference"] is True
    assert isinstance(report["reference"]["passes"], bool)
    assert report["attention"]["sdpa_calls_default"] == report["config"]["depth"]
    assert report["attention"]["sdpa_calls_explicit"] == 0
    assert report["attention"]["fused_path_used"] is True
    stage2 = report["stage2"]
    assert stage2["source"] == "gridit_core.experiments.recipes.QUICKSTART_SR" and stage2["scale"] == 4
    per_frame = stage2["seconds_per_frame"]
    assert per_frame["stage1"] == sampling["seconds_per_frame"] and per_frame["stage2"] > 0
    assert per_frame["both"] == per_frame["stage1"] + per_frame["stage2"]
    assert stage2["training"]["steps_per_s"] > 0
