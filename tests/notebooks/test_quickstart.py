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
    c = metrics["coherence"]
    assert set(c) == {"samples", "real", "shuffled", "frozen"}
    assert c["real"]["plausible_rate"] == 1.0 > c["shuffled"]["plausible_rate"] and c["real"]["score"] > 0.9
    assert c["samples"]["seams"] == [4] and metrics["plausible_rate"] == c["samples"]["plausible_rate"]  # 6 frames: one seam
    if c["samples"]["plausible_rate"] is not None:  # two steps from scratch may not draw a ball: then the gate withholds it
        near_real = abs(c["samples"]["plausible_rate"] - 1.0) < abs(c["samples"]["plausible_rate"] - c["shuffled"]["plausible_rate"])
        assert metrics["plausible_rate_closer_to_real_than_shuffled"] == near_real
    else:
        assert metrics["plausible_rate_closer_to_real_than_shuffled"] is None and c["samples"]["detection_rate"] < 0.9
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
