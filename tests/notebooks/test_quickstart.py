import json

import pytest

from gridit_core.cli import main

pytestmark = pytest.mark.notebooks


def test_quickstart_runs_through_gridit_demo_with_tiny_parameters(tmp_path, capsys):
    out = tmp_path / "report"
    tiny = ["TRAIN_STEPS=2", "N_FRAMES=6", "N_SEQUENCES=2", "SAMPLE_STEPS=2", "RESAMPLE=2", "INIT_CHECKPOINT=''",
            "SR_TRAIN_STEPS=2", "SR_SAMPLE_STEPS=2", "SR_EVAL_FRAMES=4"]
    assert main(["demo", "--out", str(out), *[a for p in tiny for a in ("-p", p)]]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_steps"] == 2 and metrics["sample_frames"] == 6 and metrics["sample_sequences"] == 2
    assert set(metrics["coherence"]) == {"samples", "real", "shuffled", "frozen"}
    assert metrics["coherence"]["real"]["score"] > 0.9 > metrics["coherence"]["shuffled"]["score"]
    c = metrics["coherence"]
    in_motion = abs(c["samples"]["motion_error_px"] - c["real"]["motion_error_px"]) < abs(c["samples"]["motion_error_px"] - c["shuffled"]["motion_error_px"])
    assert metrics["motion_error_closer_to_real_than_shuffled"] == in_motion
    sr = metrics["stage2"]
    assert (sr["train_steps"], sr["scale"], sr["frame_size"], sr["fidelity"]["n"]) == (2, 4, 64, 4)
    assert sr["fidelity"]["psnr_bicubic"] > 15 and sr["beats_bicubic_psnr"] == (sr["fidelity"]["psnr"] > sr["fidelity"]["psnr_bicubic"])
    page = (out / "index.html").read_text()
    assert page.count("data:image/gif;base64,") == 3 and page.count("data:image/png;base64,") == 3
    assert "low resolution | high resolution" in page
    assert (out / "quickstart.ipynb").is_file() and (out / "run" / "checkpoints" / "last.pt").is_file()
    # a second run into the same folder is refused, and the report survives the refusal
    assert main(["demo", "--out", str(out)]) == 2
    assert "already holds results" in capsys.readouterr().err
    assert (out / "index.html").read_text() == page
