"""The experiment notebooks with tiny parameters: train.ipynb for each family through a study, then sample.ipynb on
the shipped checkpoint and evaluate.ipynb on its samples."""

import json
from pathlib import Path

import pytest

from gridit_core.cli import main

pytestmark = pytest.mark.notebooks

EXPERIMENTS = Path(__file__).resolve().parents[2] / "notebooks" / "experiments"
TINY = {"STEPS": 2, "BATCH_SIZE": 4, "N_SEQUENCES": 20, "WARMUP": 1, "SAMPLE_FRAMES": "8", "N_SAMPLES": 2,
        "SAMPLE_STEPS": 2, "POSITION_WINDOW": 4, "DEVICE": "cpu"}  # fmt: skip


def test_train_notebook_trains_samples_and_scores_each_family_through_a_study(tmp_path, capsys):
    spec = tmp_path / "families.json"
    spec.write_text(json.dumps({"name": "tiny-families", "notebook": str(EXPERIMENTS / "train.ipynb"), "parameters": TINY,
                                "list": [{"ARCH": "grid"}, {"ARCH": "tensor", "FRAMES": 4},
                                         {"ARCH": "msc", "FRAMES": 4, "FLOP_BUDGET": 1.0}],
                                "report": {"metrics": ["coherence", "train_steps", "sample_seconds_per_frame"]},
                                "profiles": {"cpu-small": {"jobs": 2}}}))  # fmt: skip
    out = tmp_path / "study"
    assert main(["study", str(spec), "--out", str(out)]) == 0
    assert ": 3 done, 0 skipped, 0 failed in " in capsys.readouterr().out
    runs = {r["parameters"]["ARCH"]: r for r in json.loads((out / "results.json").read_text())["runs"]}
    assert {arch: r["metrics"]["train_steps"] for arch, r in runs.items()} == {"grid": 2, "tensor": 2, "msc": 1}  # FLOP budget
    for arch, r in runs.items():
        m, folder = r["metrics"], out / "runs" / r["name"]
        assert m["sample_seconds_per_frame_8"] > 0 and m["flops_per_step"] > 0 and m["coherence_real"] > 0.9
        assert 0 <= m["coherence"] <= 1 and m["train_sequences"] == 20
        assert len(r["results"]["details"]["by_position"]["8"]) == 2  # two windows of 4 frames
        assert {"loss.png", "coherence_by_position.png", "samples_8f.gif"} <= set(r["results"]["figures"])
        assert (folder / "train.ipynb").is_file() and (folder / "checkpoints" / "last.pt").is_file()
        assert len(list((folder / "samples" / "8f").glob("seq_*/frames/*.png"))) == 2 * 8
    page = (out / "index.html").read_text()
    assert "coherence: mean and 95% interval over seeds" in page and "<h2>Settings</h2>" in page
    for arch, r in runs.items():  # the graded figures, or the detection gate's refusal to judge a ball it cannot find
        m = r["metrics"]
        assert m["plausible_rate_real_8"] == 1.0 and m["detection_gate_8"] == int(m["detection_rate_8"] >= 0.9)
        assert ("plausible_rate_8" in m) == bool(m["detection_gate_8"])


def test_sample_notebook_then_evaluate_notebook_on_its_samples(tmp_path):
    import papermill as pm

    sample_out, eval_out = tmp_path / "sample", tmp_path / "eval"
    params = {k: v for k, v in TINY.items() if k not in ("STEPS", "BATCH_SIZE", "N_SEQUENCES", "WARMUP")}
    pm.execute_notebook(str(EXPERIMENTS / "sample.ipynb"), str(tmp_path / "sample.ipynb"), kernel_name="python3",
                        parameters={**params, "OUT_DIR": str(sample_out), "SAMPLER": "", "SAMPLE_FRAMES": "6,8"},
                        cwd=str(EXPERIMENTS), progress_bar=False)  # fmt: skip
    sampled = json.loads((sample_out / "results.json").read_text())
    assert sampled["details"]["sampling"]["sampler"] == "ddpm"  # the checkpoint's saved sampler, its steps overridden
    assert sampled["details"]["sampling"]["steps"] == 2 and sampled["metrics"]["coherence_real_6"] > 0.9
    pm.execute_notebook(str(EXPERIMENTS / "evaluate.ipynb"), str(tmp_path / "evaluate.ipynb"), kernel_name="python3",
                        parameters={"OUT_DIR": str(eval_out), "SAMPLES": str(sample_out / "samples" / "8f"),
                                    "CKPT": "../../assets/demo_bouncing/model.safetensors", "DEVICE": "cpu"},
                        cwd=str(EXPERIMENTS), progress_bar=False)  # fmt: skip
    scored = json.loads((eval_out / "results.json").read_text())
    assert scored["metrics"]["coherence"] == pytest.approx(sampled["metrics"]["coherence_8"])
    assert scored["metrics"]["coherence_real"] > 0.9 > scored["metrics"]["coherence_shuffled"]
    assert scored["metrics"]["plausible_rate_real"] == 1.0 and scored["metrics"]["detection_gate"] == 1  # the demo draws its ball
    assert scored["metrics"]["plausible_rate"] == pytest.approx(sampled["metrics"]["plausible_rate_8"])
    assert "plausible_rate_at_seams" in scored["metrics"]  # sampling.json beside the samples names the grid seams
