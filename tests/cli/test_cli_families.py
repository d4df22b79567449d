"""The CLI with the sequence families: train, sample, export and resume a tensor and an MSC model, and refuse
settings of another family."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gridit_core.cli import main
from gridit_core.training import load_trained

pytestmark = pytest.mark.unit

SMALL = '{"depth": 1, "hidden_size": 32, "num_heads": 4}'


def train(out, arch, *extra, steps=2, data="builtin:bouncing"):
    args = ["train", "--data", data, "--arch", arch, "--model", "DiT-N/4", "--frame-size", 16, "--frames", 4,
            "--steps", steps, "--batch-size", 2, "--n-sequences", 3, "--warmup", 1, "--device", "cpu",
            "--model-kwargs", SMALL, "--out", out, *extra]  # fmt: skip
    return main([str(a) for a in args])


def one_error(capsys, code):
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("arch, extra, sample_flags", [
    ("msc", ["--pool", "1", "--window", "3", "--p-frames", "1", "--i-stride", "1", "--i-frames", "2", "--light-cone"],
     ["--schedule", "pyramid", "--chunk", "2"]),
    ("tensor", ["--attention", "factorized", "--noise", "per-frame"], ["--overlap", "2"]),
])  # fmt: skip
@pytest.mark.slow  # train, sample, export, sample again and resume through the CLI
def test_train_sample_export_resume(tmp_path, arch, extra, sample_flags):
    run = tmp_path / "run"
    assert train(run, arch, *extra, "--sampling", '{"steps": 3}') == 0
    ckpt = run / "checkpoints" / "last.pt"
    model, _, cfg = load_trained(ckpt)
    assert (model.arch, cfg.arch, model.config.frames) == (arch, arch, 4)
    assert cfg.noise == ("per-frame" if arch == "msc" or "--noise" in extra else "shared")
    out = tmp_path / "s"
    assert main([str(a) for a in ["sample", "--ckpt", ckpt, "--frames", 11, "--out", out, "--device", "cpu",
                                  *sample_flags]]) == 0  # fmt: skip
    assert sorted(p.name for p in (out / "frames").iterdir()) == [f"{i:06d}.png" for i in range(11)]
    exported = tmp_path / "m.safetensors"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(exported)]) == 0
    assert load_trained(exported)[0].arch == arch
    out2 = tmp_path / "s2"
    assert main([str(a) for a in ["sample", "--ckpt", exported, "--frames", 11, "--out", out2, "--device", "cpu",
                                  *sample_flags]]) == 0  # fmt: skip
    a = np.asarray(Image.open(out / "frames" / "000010.png"))
    b = np.asarray(Image.open(out2 / "frames" / "000010.png"))
    assert np.array_equal(a, b)  # same seed and settings: the same frames (EMA weights in both)
    assert train(run, arch, *extra, "--resume", steps=3) == 0
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 3


@pytest.mark.parametrize("argv, message", [
    (["--arch", "grid", "--window", "3"], "options that a grid model does not take: --window"),
    (["--arch", "grid", "--frames", "4"], "options that a grid model does not take: --frames"),
    (["--arch", "tensor", "--gate", "equal"], "options that a tensor model does not take: --gate"),
    (["--arch", "msc", "--attention", "full"], "options that a msc model does not take: --attention"),
    (["--arch", "msc", "--pool", "3"], "the pooling factor r = 3 does not divide the frame's 4x4 token grid"),
    (["--arch", "msc", "--high-heads", "4"], "high_heads must leave both branches a head: 1..3 of 4, got 4"),
    (["--arch", "msc", "--window", "2"], "the High-Res window w must be an odd number of tokens >= 1, got 2"),
    (["--arch", "msc", "--window", "0"], "argument --window: must be at least 1, got 0"),
    (["--arch", "msc", "--i-stride", "0"], "argument --i-stride: must be at least 1, got 0"),
    (["--arch", "msc", "--stage", "2"], "stage 2 is a per-frame grid DiT: --arch msc is for stage 1"),
    (["--arch", "video"], "argument --arch: invalid choice: 'video'"),
])  # fmt: skip
def test_bad_family_settings_are_refused_before_anything_is_written(tmp_path, capsys, argv, message):
    code = main(["train", "--data", "builtin:bouncing", "--frame-size", "16", "--model", "DiT-N/4", "--model-kwargs",
                 SMALL, "--out", str(tmp_path / "x"), *argv])  # fmt: skip
    assert message in one_error(capsys, code)
    assert not (tmp_path / "x").exists()


def test_clips_longer_than_the_shortest_sequence_are_refused(tmp_path, capsys):
    data = tmp_path / "data"
    for name, n in [(f"long{i}", 12) for i in range(4)] + [(f"short{i}", 5) for i in range(4)]:
        (data / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((16, 16, 3), 10 * i, np.uint8)).save(data / name / f"{i:03d}.png")
    code = train(tmp_path / "x", "msc", "--frames", 6, data=data)  # the later --frames wins
    assert not (tmp_path / "x").exists()
    err = one_error(capsys, code)
    assert "--frames 6 (with stride 1: 6 source frames) is longer than the shortest training sequence, short" in err


def test_sampling_flags_of_another_family_are_refused(tmp_path, capsys):
    run = tmp_path / "msc"
    assert train(run, "msc") == 0
    ckpt = str(run / "checkpoints" / "last.pt")
    code = main(["sample", "--ckpt", ckpt, "--frames", "3", "--out", str(tmp_path / "o"), "--overlap", "2"])
    assert "sampling options that a msc model does not use: --overlap" in one_error(capsys, code)
    grid = Path(__file__).resolve().parents[2] / "assets" / "demo_bouncing" / "model.safetensors"
    code = main(["sample", "--ckpt", str(grid), "--frames", "3", "--out", str(tmp_path / "o"), "--schedule", "pyramid"])
    assert "sampling options that a grid model does not use: --schedule" in one_error(capsys, code)
    assert not (tmp_path / "o").exists()


def test_a_key_gated_msc_trains_and_samples_with_scaled_context(tmp_path, capsys):
    run = tmp_path / "key"
    assert train(run, "msc", "--gate", "key", steps=1) == 0
    ckpt = run / "checkpoints" / "last.pt"
    model = load_trained(ckpt)[0]
    assert model.config.gate == "key" and all(b.gate.key_linear is not None for b in model.blocks)
    out = tmp_path / "s"
    flags = ["--context", 1, "--context-noise", 0.014, "--context-mode", "scaled"]
    argv = ["sample", "--ckpt", ckpt, "--frames", 5, "--steps", 2, "--out", out, "--device", "cpu", *flags]
    assert main([str(a) for a in argv]) == 0
    assert len(list((out / "frames").iterdir())) == 5
    settings = json.loads((out / "sampling.json").read_text())["settings"]
    assert (settings["context"], settings["context_noise"], settings["context_mode"]) == (1, 0.014, "scaled")
    grid = Path(__file__).resolve().parents[2] / "assets" / "demo_bouncing" / "model.safetensors"
    code = main(["sample", "--ckpt", str(grid), "--frames", "3", "--out", str(tmp_path / "o"), "--context-mode",
                 "scaled"])  # fmt: skip
    assert "sampling options that a grid model does not use: --context-mode" in one_error(capsys, code)


@pytest.mark.parametrize("arch", ["msc", "tensor"])
@pytest.mark.slow  # trains two tiny models, then samples both stages through the CLI
def test_stage2_super_resolves_a_sequence_family(tmp_path, arch):
    assert train(tmp_path / "s1", arch, "--sampling", '{"steps": 2}') == 0
    stage2 = ["train", "--stage", 2, "--scale", 2, "--data", "builtin:bouncing", "--model", "DiT-N/4", "--frame-size",
              32, "--steps", 1, "--batch-size", 2, "--n-sequences", 2, "--device", "cpu", "--model-kwargs", SMALL,
              "--out", tmp_path / "s2"]  # fmt: skip
    assert main([str(a) for a in stage2]) == 0
    out = tmp_path / "s"
    args = ["sample", "--ckpt", tmp_path / "s1" / "checkpoints" / "last.pt", "--frames", 5, "--out", out,
            "--sr-ckpt", tmp_path / "s2" / "checkpoints" / "last.pt", "--sr-steps", 2, "--device", "cpu"]  # fmt: skip
    assert main([str(a) for a in args]) == 0
    names = [f"{i:06d}.png" for i in range(5)]
    assert sorted(p.name for p in (out / "frames_lr").iterdir()) == names
    assert sorted(p.name for p in (out / "frames").iterdir()) == names
    assert Image.open(out / "frames_lr" / names[-1]).size == (16, 16)
    assert Image.open(out / "frames" / names[-1]).size == (32, 32)
