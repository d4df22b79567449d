"""A checkpoint carries the sampling settings it was validated with, and ``gridit sample`` uses them unless told
otherwise; ``gridit demo -p`` checks the notebook's parameters before papermill starts."""

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from gridit_core import sampling
from gridit_core.cli import main
from gridit_core.cli.commands import QUICKSTART
from gridit_core.experiments.params import read_parameters
from gridit_core.experiments.recipes import QUICKSTART as QUICKSTART_RECIPE
from gridit_core.sampling import FAMILIES, SampleConfig
from gridit_core.training import load_trained

pytestmark = pytest.mark.unit

ASSET = Path(__file__).resolve().parents[2] / "assets" / "demo_bouncing" / "model.safetensors"
SAVED = {"sampler": "ddpm", "steps": 3, "resample": 2, "overlap": 1}


def train(out, *extra):
    args = ["train", "--data", "builtin:bouncing", "--model", "DiT-N/4", "--frame-size", 16, "--steps", 1,
            "--batch-size", 2, "--n-sequences", 2, "--warmup", 1, "--device", "cpu", "--out", out,
            "--model-kwargs", '{"depth": 1, "hidden_size": 32, "num_heads": 2}', *extra]  # fmt: skip
    assert main([str(a) for a in args]) == 0
    return Path(out) / "checkpoints" / "last.pt"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return train(tmp_path_factory.mktemp("run"), "--sampling", json.dumps(SAVED))


@pytest.fixture
def calls(monkeypatch):
    """The keywords ``gridit sample`` passes to ``sample_sequence``, which is replaced by a recorder."""
    seen = []
    monkeypatch.setattr(sampling, "sample_sequence", lambda *a, **kw: seen.append(kw))
    return seen


def sample(ckpt, out, *flags):
    return main([str(a) for a in ["sample", "--ckpt", ckpt, "--frames", 5, "--out", out, "--device", "cpu", *flags]])


GRID_FIELDS = FAMILIES["grid"].sample_fields


def picked(kw):
    return kw["settings"].pick(GRID_FIELDS)


def test_sample_uses_the_checkpoints_saved_settings(ckpt, calls, tmp_path):
    assert load_trained(ckpt)[2].sampling == {**asdict(SampleConfig()), **SAVED}
    assert sample(ckpt, tmp_path / "a") == 0
    assert picked(calls[-1]) == {**SampleConfig().pick(GRID_FIELDS), **SAVED}


def test_flags_override_the_saved_settings(ckpt, calls, tmp_path):
    assert sample(ckpt, tmp_path / "b", "--sampler", "ddim", "--steps", 4, "--overlap", 2, "--no-interpolate") == 0
    assert picked(calls[-1]) == {**SampleConfig().pick(GRID_FIELDS), **SAVED, "sampler": "ddim", "steps": 4, "overlap": 2}


def test_without_saved_settings_the_library_defaults_apply(tmp_path, calls):
    plain = train(tmp_path / "plain")
    assert load_trained(plain)[2].sampling == {}
    assert sample(plain, tmp_path / "c") == 0
    assert picked(calls[-1]) == SampleConfig().pick(GRID_FIELDS)


def test_export_can_set_the_sampling_settings(ckpt, tmp_path, calls):
    out = tmp_path / "m.safetensors"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(out), "--sampling", '{"sampler": "ddim", "steps": 7}']) == 0
    assert load_trained(out)[2].sampling == {**asdict(SampleConfig()), "sampler": "ddim", "steps": 7}
    again = tmp_path / "n.safetensors"  # an export re-exported keeps what it had
    assert main(["export", "--ckpt", str(out), "--out", str(again)]) == 0
    assert load_trained(again)[2].sampling == load_trained(out)[2].sampling


@pytest.mark.parametrize("flag, value, message", [
    ("--sampling", '{"sampler": "euler"}', "unknown sampler 'euler'; choose one of ddpm, ddim"),
    ("--sampling", '{"step": 5}', "sampling: unknown settings ['step']"),
    ("--sampling", '{"steps": 0}', "steps must be an integer >= 1, got 0"),
])  # fmt: skip
def test_bad_sampling_settings_are_refused_before_training(tmp_path, capsys, flag, value, message):
    args = ["train", "--data", "builtin:bouncing", "--out", str(tmp_path / "x"), "--device", "cpu", flag, value]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "x").exists()


def test_the_shipped_checkpoint_carries_the_recipe_it_was_validated_with():
    cfg = load_trained(ASSET)[2]
    assert cfg.sampling == asdict(SampleConfig.from_dict(QUICKSTART_RECIPE.sampling))
    assert (cfg.sampling["sampler"], cfg.sampling["conditioning"], cfg.sampling["resample"]) == ("ddpm", "clean", 3)
    assert cfg.noise == QUICKSTART_RECIPE.noise == "context"  # fine-tuned with grids as they are sampled


def test_the_quickstart_notebook_samples_with_the_recipes_settings():
    defaults = read_parameters(QUICKSTART)
    notebook = {"sampler": defaults["SAMPLER"], "steps": defaults["SAMPLE_STEPS"], "resample": defaults["RESAMPLE"],
                "conditioning": defaults["CONDITIONING"]}  # fmt: skip
    assert notebook == {k: QUICKSTART_RECIPE.sampling[k] for k in notebook}


@pytest.mark.parametrize("param, message", [
    ("TRAIN_STEPS=0", "TRAIN_STEPS must be >= 1, got 0"),
    ("TRAIN_STEPS=abc", "TRAIN_STEPS=abc: not a value of the parameter's type (an integer)"),
    ("TRAIN_STEPS=2.5", "TRAIN_STEPS must be an integer, got 2.5"),
    ("SAMPLER='euler'", "SAMPLER must be one of 'ddpm', 'ddim', got 'euler'"),
    ("SR_NOISE_LEVEL=1.5", "SR_NOISE_LEVEL must be in [0, 1], got 1.5"),
    ("INIT_CHECKPOINT=missing.pt", "INIT_CHECKPOINT: file missing.pt does not exist"),
    ("STEPS=3", "unknown parameter STEPS; the notebook takes: OUT_DIR, INIT_CHECKPOINT"),
    ("TRAIN_STEPS", "-p takes NAME=VALUE with NAME a notebook parameter, got 'TRAIN_STEPS'"),
])  # fmt: skip
def test_demo_checks_its_parameters_before_papermill_starts(tmp_path, capsys, monkeypatch, param, message):
    monkeypatch.setitem(__import__("sys").modules, "papermill", None)  # papermill must not even be imported
    assert main(["demo", "--out", str(tmp_path / "report"), "-p", param]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and message in err, err
    assert not (tmp_path / "report").exists()


def test_the_quickstart_parameters_cell_passes_its_own_check():
    from gridit_core.experiments import quickstart

    defaults = read_parameters(QUICKSTART)
    assert set(defaults) == set(quickstart.PARAMS)
    assert quickstart.check_params(defaults, base=QUICKSTART.parent) == defaults


def test_grids_train_with_context_noise_and_sample_several_sequences_with_clean_context(tmp_path):
    ckpt = train(tmp_path / "context", "--noise", "context")
    assert load_trained(ckpt)[2].noise == "context"
    out = tmp_path / "many"
    assert sample(ckpt, out, "--sequences", 3, "--conditioning", "clean", "--guidance", 1.5, "--steps", 2) == 0
    assert sorted(p.name for p in out.iterdir()) == ["sampling.json", "seq_000", "seq_001", "seq_002"]
    assert all(len(list((out / f"seq_{k:03d}" / "frames").glob("*.png"))) == 5 for k in range(3))
    record = json.loads((out / "sampling.json").read_text())
    assert record["settings"]["conditioning"] == "clean" and record["settings"]["guidance"] == 1.5
    assert record["seams"] == [4] and record["family"] == "grid"  # a 2x2 grid, overlap 2: the 5th frame is new
    assert sample(ckpt, out, "--sequences", 2, "--steps", 2) == 2  # the folder holds results: refused, kept
    assert (out / "seq_002").is_dir()
    assert sample(ckpt, out, "--steps", 2, "--overwrite") == 0  # one sequence: the folder itself, the rest cleared
    assert sorted(p.name for p in out.iterdir()) == ["frames", "sampling.json", "sequence.gif"]
