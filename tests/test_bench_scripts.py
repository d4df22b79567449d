"""The measurement scripts behind the README's quoted numbers run end to end (in their --quick form)."""

import importlib.util
import json
from pathlib import Path

import pytest

from gridit_core.experiments.recipes import QUICKSTART

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def script(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")  # scripts, not part of the package
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_coherence_script_compares_settings_beside_the_baselines(tmp_path):
    out = tmp_path / "coherence.json"
    script("coherence").main(["--quick", "--out", str(out)])
    report = json.loads(out.read_text())
    assert list(report["results"]) == ["library defaults", "saved with the checkpoint", "saved, without resampling"]
    assert report["results"]["saved with the checkpoint"]["settings"]["sampler"] == "ddpm"
    saved = report["results"]["saved with the checkpoint"]["settings"]
    assert {k: saved[k] for k in ("resample", "conditioning", "context_noise")} == {  # the shipped demo's recipe
        k: QUICKSTART.sampling[k] for k in ("resample", "conditioning", "context_noise")}
    assert report["baselines"]["real"]["score"] > 0.9 > report["baselines"]["shuffled"]["score"]
    assert report["baselines"]["real"]["plausible_rate"] == 1.0 > 0.5 > report["baselines"]["shuffled"]["plausible_rate"]
    assert report["results"]["saved with the checkpoint"]["coherence"]["seams"] == [4, 6]  # 8 frames, overlap 2
    assert (out.with_suffix(".png")).stat().st_size > 1000


def test_motion_metric_script_checks_the_rate_on_known_breaks(tmp_path):
    out = tmp_path / "motion.json"
    script("motion_metric").main(["--quick", "--out", str(out)])
    results = json.loads(out.read_text())["results"]
    assert list(results) == ["demo balls (16 px)", "two balls (32 px)", "digits (32 px)"]
    demo = results["demo balls (16 px)"]
    assert demo["real"]["plausible_rate"] == 1.0 and demo["frozen"]["plausible_rate"] == 0.0
    assert all(r["plausible_rate"] == 1.0 for r in demo["restyled"].values()) and len(demo["broken"]) == 12
    assert (out.with_suffix(".png")).stat().st_size > 1000


def test_stage2_script_scores_clean_and_degraded_inputs(tmp_path):
    out = tmp_path / "sr.json"
    script("stage2_fidelity").main(["--quick", "--out", str(out)])
    rows = json.loads(out.read_text())["results"]
    assert [(r["input"], r["noise_level"]) for r in rows] == [("clean", 0.0), ("clean", 0.1), ("degraded", 0.0),
                                                              ("degraded", 0.1)]  # fmt: skip
    assert all(r["n"] == 4 and r["psnr"] > r["psnr_bicubic"] for r in rows)


def test_families_benchmark_reports_every_section(tmp_path, monkeypatch):
    out = tmp_path / "families.json"
    families = script("families")
    report = families.main(["--quick", "--out", str(out)])
    assert json.loads(out.read_text()) == report
    assert {(r["arch"], r["frames"]) for r in report["by_length"]} == {("tensor", 4), ("msc", 4)}
    assert all(r["forward_s"] > 0 and r["attention_forward_s"] > 0 for r in report["by_length"])
    assert all(r["macs_per_layer"] > r["attention_flops_per_layer"] > 0 for r in report["by_length"])  # models.cost
    # the attention time is one layer's, not the model's: checked by what the timed call runs, not by comparing times
    # (a single quick measurement each, which a busy machine can reorder)
    model, called = families.video_model("msc", 16, 4), []
    for name, module in model.named_modules():
        module.register_forward_hook(lambda mod, args, output, name=name: called.append(name))
    families.attention_call(model, 4)()
    assert "blocks.0.attn" in called and all(name.startswith("blocks.0.attn") for name in called)
    assert [(r["frames"], r["tokens"]) for r in report["large_frames"]] == [(2, 32)]
    for path in ("gathered", "blocked", "tiled"):  # each kernel timed beside its multiply-adds, as the tensor model
        ratios = report["large_frames"][0][path]["tensor_over_msc"]
        assert set(ratios) == {"attention_forward_s", "forward_s", "train_step_s", "macs_per_layer",
                               "attention_macs_per_layer"}  # fmt: skip
        assert all(v > 0 for v in ratios.values())
    assert set(report["autoregressive"]) == {"cached", "uncached"} and len(report["autoregressive"]["cached"]) == 3
    assert [r["frames"] for r in report["paper_comparison"]] == [4]
    assert [r["arch"] for r in report["peak_memory_mib"]] == ["grid", "tensor", "msc"]
    for row in report["peak_memory_mib"]:
        assert all(0 < row[n]["baseline_mib"] <= row[n]["peak_mib"] for n in ("2", "4"))
    assert out.with_suffix(".png").stat().st_size > 1000
    measured, real = [], families.measure  # the sections the second run measures (its times may equal the first's)

    def measure(section, quick):
        measured.append(section)
        return real(section, quick)

    monkeypatch.setattr(families, "measure", measure)
    again = families.main(["--quick", "--only", "autoregressive", "--out", str(out)])  # one section redone
    assert measured == ["autoregressive"] and json.loads(out.read_text()) == again
    assert again["by_length"] == report["by_length"] and len(again["autoregressive"]["cached"]) == 3
    assert [u["command"] for u in again["updated"]] == ["python benchmarks/families.py --quick --only autoregressive"]


def test_learning_curve_script_scores_snapshots_along_training(tmp_path):
    out = tmp_path / "curve.json"
    report = script("learning_curve").main(["--quick", "--arch", "msc", "--out", str(out)])
    assert [r["step"] for r in report["snapshots"]] == [10, 20] and json.loads(out.read_text())["arch"] == "msc"
    assert all(0 <= r["detection_rate"] <= 1 for r in report["snapshots"])
