import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gridit_core.cli import main
from gridit_core.errors import GriditError
from gridit_core.models.weights import load_weights
from gridit_core.training import TrainConfig, build_model_and_diffusion, read_metrics
from gridit_core.util.io import load_file

pytestmark = pytest.mark.unit

SMALL = '{"depth": 1, "hidden_size": 32, "num_heads": 2}'
WIDER = '{"depth": 1, "hidden_size": 64, "num_heads": 2}'


def train_args(out, steps, *extra, model_kwargs=SMALL, data="builtin:bouncing"):
    args = ["train", "--data", data, "--model", "DiT-N/4", "--frame-size", 16, "--rows", 2, "--cols", 2, "--steps", steps,
            "--batch-size", 4, "--n-sequences", 4, "--warmup", 1, "--device", "cpu", "--model-kwargs", model_kwargs,
            "--out", out, *extra]
    return [str(a) for a in args]


def sample_args(ckpt, out, frames, *extra):
    args = ["sample", "--ckpt", ckpt, "--frames", frames, "--steps", 2, "--out", out, "--device", "cpu", *extra]
    return [str(a) for a in args]


def one_error_line(capsys, argv):
    """Run ``main(argv)``, expect exit code 2 and exactly one ``gridit CMD: error:`` line on stderr; return it."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"gridit {argv[0]}: error: "), err
    return err.strip()


def files_state(folder):
    return {p.relative_to(folder): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 2-step run of a tiny DiT on builtin bouncing balls at 16 px frames."""
    out = tmp_path_factory.mktemp("run")
    assert main(train_args(out, 2)) == 0
    return out


@pytest.mark.parametrize("command, options", [
    ("organise", ["--rows", "--cols", "--frame-size", "--stride", "--resize", "--overwrite"]),
    ("train", ["--data", "--model", "--steps", "--out", "--resume", "--batch-size", "--model-kwargs", "DiT-XL/2",
               "--stage", "--scale", "--max-aug"]),
    ("sample", ["--ckpt", "--frames", "--out", "--seed", "--steps", "--sampler", "--overlap", "sequence.gif",
                "--sr-ckpt", "--sr-steps", "--noise-level", "--sr-batch", "frames_lr"]),
    ("upscale", ["--ckpt", "--input", "--out", "--noise-level", "--steps", "--batch-size", "--overwrite"]),
    ("demo", ["--out", "--param"]),
])
def test_help_of_every_command(capsys, command, options):
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: gridit {command}")
    assert all(option in text for option in options)


@pytest.mark.parametrize("argv, message", [
    (["sample", "--ckpt", "x.pt", "--out", "o", "--frames", "0"], "argument --frames: must be at least 1, got 0"),
    (["sample", "--ckpt", "x.pt", "--out", "o", "--frames", "-3"], "argument --frames: must be at least 1, got -3"),
    (["sample", "--ckpt", "x.pt", "--out", "o"], "the following arguments are required: --frames"),
    (["train", "--data", "d", "--out", "o", "--model-kwargs", "{depth: 1}"], "argument --model-kwargs: not valid JSON"),
    (["train", "--data", "d", "--out", "o", "--model", "DiT-Q/3"], "argument --model: invalid choice: 'DiT-Q/3'"),
    (["organise", "src", "dst", "--rows", "0"], "argument --rows: must be at least 1, got 0"),
])
def test_usage_errors_are_one_line(capsys, argv, message):
    assert message in one_error_line(capsys, argv)


def make_frames(root, n=16, size=(8, 8), seed=0):
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(root / f"{i:05d}.png")


def truncated_frame(src):
    make_frames(src / "seq")
    png = src / "seq" / "00007.png"
    png.write_bytes(png.read_bytes()[:40])


def mixed_sizes(src):
    make_frames(src / "seq")
    Image.new("RGB", (8, 5)).save(src / "seq" / "00002.png")


@pytest.mark.parametrize("make, options, message", [
    (None, [], "dataset path .* does not exist"),
    (lambda src: src.mkdir(), [], "no image sequences found"),
    (truncated_frame, [], r"cannot read image .*00007\.png"),
    (mixed_sizes, ["--resize", "none"], r"frame seq\[2\] is 8x5, expected 8x8"),
    (lambda src: make_frames(src / "seq", n=10), [], "16 frames a 4x4 grid"),
    (lambda src: make_frames(src / "seq"), ["--overlap", "16"], "chunk overlap must be in 0..15"),
], ids=["missing", "empty", "truncated", "mixed-sizes", "too-short", "overlap"])
def test_organise_bad_input(capsys, tmp_path, make, options, message):
    if make:
        make(tmp_path / "src")
    line = one_error_line(capsys, ["organise", tmp_path / "src", tmp_path / "dst", "--rows", "4", "--cols", "4",
                                   "--frame-size", "8", *options])
    assert re.search(message, line), line
    assert not (tmp_path / "dst").exists()


@pytest.mark.slow
def test_organise_then_train_on_the_grid_folder(capsys, tmp_path):
    make_frames(tmp_path / "src" / "seq", n=12, size=(20, 12))
    argv = ["organise", tmp_path / "src", tmp_path / "grids", "--rows", "2", "--cols", "2", "--frame-size", "16"]
    assert main([str(a) for a in argv]) == 0
    assert "wrote 3 grids" in capsys.readouterr().out
    before = files_state(tmp_path / "grids")
    assert "already holds grids" in one_error_line(capsys, argv)
    assert files_state(tmp_path / "grids") == before
    assert main(train_args(tmp_path / "run", 1, data=tmp_path / "grids")) == 0
    assert read_metrics(tmp_path / "run" / "metrics.jsonl")[-1]["step"] == 1
    # rows x cols that do not match the organised grids
    bad = train_args(tmp_path / "run3", 1, data=tmp_path / "grids")
    bad[bad.index("--rows") + 1] = "3"
    assert "holds 2x2 grids of 16px frames, not 3x2" in one_error_line(capsys, bad)


@pytest.mark.slow
def test_train_then_sample_writes_exactly_n_frames(capsys, tmp_path, run):
    ckpt = run / "checkpoints" / "last.pt"
    assert read_metrics(run / "metrics.jsonl")[-1]["step"] == 2
    out = tmp_path / "sample"
    assert main(sample_args(ckpt, out, 7)) == 0
    assert sorted(p.name for p in (out / "frames").iterdir()) == [f"{i:06d}.png" for i in range(7)]
    with Image.open(out / "sequence.gif") as gif:
        assert gif.n_frames == 7 and gif.size == (16, 16)

    before = files_state(out)
    assert "already holds results" in one_error_line(capsys, sample_args(ckpt, out, 7))
    # settings the sampler would only reject later are refused before --overwrite clears anything
    assert "overlap must be in 0..3" in one_error_line(capsys, sample_args(ckpt, out, 7, "--overlap", "4", "--overwrite"))
    assert "integer in 1..1000, got 5000" in one_error_line(
        capsys, [*sample_args(ckpt, out, 7, "--overwrite"), "--steps", "5000"])
    assert files_state(out) == before

    assert main(sample_args(ckpt, out, 5, "--overwrite")) == 0
    assert sorted(p.name for p in (out / "frames").iterdir()) == [f"{i:06d}.png" for i in range(5)]


@pytest.mark.slow
def test_train_refuses_an_existing_run_and_resumes(capsys, tmp_path):
    out = tmp_path / "run"
    assert main(train_args(out, 1)) == 0
    before = files_state(out)
    assert "already holds a training run; pass --resume" in one_error_line(capsys, train_args(out, 3))
    assert "does not exist" in one_error_line(capsys, train_args(out, 3, "--overwrite", data=tmp_path / "missing"))
    assert files_state(out) == before  # a bad dataset is found before --overwrite clears the run
    assert main(train_args(out, 3, "--resume")) == 0
    assert [m["step"] for m in read_metrics(out / "metrics.jsonl")] == [1, 3]  # logged every 10 steps and at the end
    assert load_file(out / "checkpoints" / "last.pt")["step"] == 3


def test_checkpoint_of_another_model_size(capsys, tmp_path, run):
    wide = tmp_path / "wide"
    assert main(train_args(wide, 1, model_kwargs=WIDER)) == 0
    small_cfg = TrainConfig.from_dict(load_file(run / "checkpoints" / "last.pt")["config"])
    model, _ = build_model_and_diffusion(small_cfg)
    with pytest.raises(GriditError, match=r"does not fit .*: x_embedder.proj.weight is \(64, 3, 4, 4\) in the file, \(32, 3, 4, 4\) in the"):
        load_weights(model, wide / "checkpoints" / "last.pt")
    line = one_error_line(capsys, train_args(tmp_path / "b", 1, "--init", wide / "checkpoints" / "last.pt"))
    assert "checkpoint does not fit" in line
    before = files_state(wide)
    assert "trained with another model configuration" in one_error_line(capsys, train_args(wide, 2, "--resume"))
    assert files_state(wide) == before


def test_bad_model_settings_fail_before_anything_is_written(capsys, tmp_path):
    args = train_args(tmp_path / "run", 1)
    args[args.index("--frame-size") + 1] = "10"
    assert "frame size 10 is not divisible by the patch size 4" in one_error_line(capsys, args)
    line = one_error_line(capsys, train_args(tmp_path / "run", 1, model_kwargs='{"depth": 1, "rows": 3}'))
    assert "--model-kwargs: unknown or trainer-set keys ['rows']" in line
    assert not (tmp_path / "run").exists()


def test_bad_checkpoint_files(capsys, tmp_path, run):
    good = (run / "checkpoints" / "last.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(good[: len(good) // 2])
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(500))
    (tmp_path / "random.safetensors").write_bytes(np.random.default_rng(1).bytes(500))
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    state = load_file(run / "checkpoints" / "last.pt")
    del state["ema"]
    torch.save(state, tmp_path / "no-ema.pt")
    cases = {
        "truncated.pt": "cannot read checkpoint .*truncated.pt: truncated, corrupt or not a PyTorch file",
        "random.pt": "cannot read checkpoint .*random.pt: ",
        "random.safetensors": "cannot read checkpoint .*random.safetensors: ",
        "tensor.pt": "is not a GriDiT stage-1 checkpoint",
        "no-ema.pt": "no-ema.pt is an incomplete or inconsistent stage-1 checkpoint",
        "missing.pt": "checkpoint not found",
    }
    for name, message in cases.items():
        line = one_error_line(capsys, sample_args(tmp_path / name, tmp_path / "out", 7))
        assert re.search(message, line), line
    assert not (tmp_path / "out").exists()


def test_gridit_error_with_newlines_prints_one_line(capsys, monkeypatch):
    def fail(*args, **kwargs):
        raise GriditError("first\nsecond")

    monkeypatch.setattr("gridit_core.data.organise.organise", fail)
    assert one_error_line(capsys, ["organise", "src", "dst"]) == "gridit organise: error: first second"


@pytest.mark.slow
def test_console_script_exit_code_and_message(tmp_path):
    gridit = Path(sys.executable).with_name("gridit")
    result = subprocess.run([gridit, "sample", "--ckpt", tmp_path / "missing.pt", "--frames", "3", "--out", tmp_path / "o"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"gridit sample: error: checkpoint not found: {tmp_path / 'missing.pt'}"]


def stage2_args(out, frame_size, scale, *extra):
    args = ["train", "--stage", 2, "--scale", scale, "--data", "builtin:bouncing", "--model", "DiT-N/4", "--frame-size",
            frame_size, "--steps", 1, "--batch-size", 4, "--n-sequences", 8, "--device", "cpu", "--model-kwargs", SMALL,
            "--out", out, *extra]
    return [str(a) for a in args]


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    """Checkpoints of a 1-step stage 1 on 8 px frames and a 1-step x2 stage 2 on 16 px frames."""
    root = tmp_path_factory.mktemp("stages")
    args = train_args(root / "s1", 1)
    args[args.index("--frame-size") + 1] = "8"
    assert main(args) == 0
    assert main(stage2_args(root / "s2", 16, 2, "--degrade", '{"order": "low-res"}')) == 0
    return root / "s1" / "checkpoints" / "last.pt", root / "s2" / "checkpoints" / "last.pt"


def test_stage2_training_and_checkpoints_in_the_wrong_slot(capsys, tmp_path, stages):
    stage1, stage2 = stages
    state = load_file(stage2)
    assert state["kind"] == "gridit-stage2" and (state["config"]["stage"], state["config"]["scale"]) == (2, 2)
    assert state["model_config"]["in_channels"] == 6 and state["model_config"]["aug_cond"]
    assert state["config"]["residual"] is True and state["config"]["degrade"] == {"order": "low-res"}
    out = tmp_path / "out"
    line = one_error_line(capsys, sample_args(stage2, out, 3))
    assert f"{stage2} is a stage-2 (super-resolution) checkpoint; use it with --sr-ckpt" in line
    line = one_error_line(capsys, sample_args(stage1, out, 3, "--sr-ckpt", stage1))
    assert f"{stage1} is a stage-1 (grid) checkpoint; use it with gridit sample --ckpt" in line
    line = one_error_line(capsys, ["upscale", "--ckpt", stage1, "--input", tmp_path, "--out", out])
    assert "is a stage-1 (grid) checkpoint" in line
    assert not out.exists()


@pytest.mark.parametrize("frame_size, extra, message", [
    (16, ["--rows", "2"], "stage 2 trains on single frames: --rows and --cols must be 1 or left out, got 2x1"),
    (16, ["--model-kwargs", '{"aug_cond": false}'], "--model-kwargs: unknown or trainer-set keys ['aug_cond']"),
    (18, [], "frame size 18 is not divisible by the scale factor 4"),
    (16, ["--degrade", '{"noise": [1, 2]}'], "degrade: DegradeConfig.__init__() got an unexpected keyword argument 'noise'"),
    (16, ["--degrade", '{"order": "first"}'], "unknown degradation order 'first'; choose one of official, low-res"),
], ids=["rows", "trainer-set", "scale", "degrade-field", "degrade-order"])
def test_stage2_train_bad_flags(capsys, tmp_path, frame_size, extra, message):
    assert message in one_error_line(capsys, stage2_args(tmp_path / "run", frame_size, 4, *extra))
    assert not (tmp_path / "run").exists()


def test_stage2_flags_need_stage2(capsys, tmp_path):
    line = one_error_line(capsys, train_args(tmp_path / "run", 1, "--scale", "2", "--max-aug", "0.2"))
    assert "stage-2 options for a stage-1 run: --scale, --max-aug; add --stage 2" in line
    line = one_error_line(capsys, train_args(tmp_path / "run", 1, "--degrade", "{}", "--no-residual"))
    assert "stage-2 options for a stage-1 run: --degrade, --no-residual; add --stage 2" in line
    line = one_error_line(capsys, sample_args(tmp_path / "x.pt", tmp_path / "out", 3, "--noise-level", "0.2"))
    assert "stage-2 options without a stage-2 model: --noise-level; add --sr-ckpt" in line
    assert not (tmp_path / "run").exists() and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_two_stage_sample_then_upscale_the_low_resolution_frames(capsys, tmp_path, stages):
    stage1, stage2 = stages
    runs = [tmp_path / "a", tmp_path / "b"]
    for out in runs:
        assert main(sample_args(stage1, out, 5, "--sr-ckpt", stage2, "--sr-steps", "2", "--sr-batch", "2")) == 0
    for name, side in (("frames", 16), ("frames_lr", 8)):
        files = sorted((runs[0] / name).iterdir())
        assert [f.name for f in files] == [f"{i:06d}.png" for i in range(5)]
        for f in files:
            with Image.open(f) as img:
                assert img.size == (side, side)
    assert files_state(runs[0]).keys() == files_state(runs[1]).keys()
    assert all((runs[0] / f).read_bytes() == (runs[1] / f).read_bytes() for f in files_state(runs[0]))  # same seed
    # stage 2 alone on frames_lr/, with the same seed and batch size, gives frames/ back exactly
    up = ["upscale", "--ckpt", stage2, "--input", runs[0] / "frames_lr", "--out", tmp_path / "up", "--steps", "2",
          "--batch-size", "2", "--device", "cpu"]
    assert main([str(a) for a in up]) == 0
    assert "wrote 5 frames of 16px" in capsys.readouterr().out
    assert all((tmp_path / "up" / "frames" / f.name).read_bytes() == f.read_bytes() for f in (runs[0] / "frames").iterdir())
    with Image.open(tmp_path / "up" / "sequence.gif") as gif:
        assert gif.n_frames == 5 and gif.size == (16, 16)
    before = files_state(tmp_path / "up")
    assert "already holds results" in one_error_line(capsys, up)
    assert files_state(tmp_path / "up") == before


def test_stage_sizes_that_do_not_match(capsys, tmp_path, run, stages):
    _, stage2 = stages
    line = one_error_line(capsys, sample_args(run / "checkpoints" / "last.pt", tmp_path / "out", 3, "--sr-ckpt", stage2))
    assert "the stage-2 model makes 16px frames from 8px ones (x2), but stage 1 makes 16px frames" in line
    assert not (tmp_path / "out").exists()
    make_frames(tmp_path / "lr", n=4, size=(8, 8))
    Image.new("RGB", (9, 8)).save(tmp_path / "lr" / "00002b.png")
    up = ["upscale", "--ckpt", stage2, "--input", tmp_path / "lr", "--out", tmp_path / "out", "--steps", "2"]
    line = one_error_line(capsys, up)
    assert f"frame {tmp_path / 'lr' / '00002b.png'} is 9x8, but the x2 stage-2 model takes 8x8 frames" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_stage2_without_the_residual_is_saved_and_used(capsys, tmp_path):
    assert main(stage2_args(tmp_path / "run", 16, 4, "--no-residual")) == 0
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    assert load_file(ckpt)["config"]["residual"] is False
    make_frames(tmp_path / "lr", n=2, size=(4, 4))
    up = ["upscale", "--ckpt", ckpt, "--input", tmp_path / "lr", "--out", tmp_path / "up", "--steps", "2", "--device", "cpu"]
    assert main([str(a) for a in up]) == 0
    assert len(list((tmp_path / "up" / "frames").iterdir())) == 2
