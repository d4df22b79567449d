"""train.ipynb's library side (``experiments.runs``): GriDiT with a stage-2 model sharing the budget, and the checks of
its parameters."""

from pathlib import Path

import pytest
import torch

from gridit_core.errors import GriditError
from gridit_core.experiments import runs
from gridit_core.experiments.params import read_parameters

TRAIN = Path(__file__).resolve().parents[2] / "notebooks" / "experiments" / "train.ipynb"
TINY = {"STEPS": 2, "SR_STEPS": 2, "BATCH_SIZE": 4, "N_SEQUENCES": 12, "WARMUP": 1, "SAMPLE_FRAMES": "8", "N_SAMPLES": 2,
        "SAMPLE_STEPS": 2, "SR_SAMPLE_STEPS": 2, "POSITION_WINDOW": 4, "DEVICE": "cpu", "FRAME_SIZE": 16}  # fmt: skip


def params(**given):
    return runs.check_train({**read_parameters(TRAIN), **TINY, **given})


def test_stage2_is_refused_where_it_cannot_apply():
    with pytest.raises(GriditError, match="SR_SCALE: stage 2 super-resolves GriDiT's frames; ARCH tensor"):
        params(ARCH="tensor", SR_SCALE=2)
    with pytest.raises(GriditError, match="FRAME_SIZE 18 is not divisible by SR_SCALE 4"):
        params(FRAME_SIZE=18, SR_SCALE=4)
    with pytest.raises(GriditError, match="SR_SCALE must be one of 0, 2, 4, got 3"):
        params(SR_SCALE=3)
    with pytest.raises(GriditError, match="METRICS must list some of coherence, fvd, fid"):
        params(METRICS="coherence,lpips")


def test_stage_configs_and_budgets():
    p = params(SR_SCALE=2, SR_SHARE=0.25, FLOP_BUDGET=8e9, TIME_BUDGET=60)
    stage1, stage2 = runs.train_config(p), runs.sr_config(p)
    assert (stage1.stage, stage1.frame_size, stage1.rows, stage1.cols) == (1, 8, 2, 2)
    assert (stage2.stage, stage2.frame_size, stage2.scale, stage2.rows, stage2.cols) == (2, 16, 2, 1, 1)
    assert stage2.builtin["radius"] == tuple(2 * r for r in stage1.builtin["radius"])  # the same balls at twice the size
    assert runs.budgets(p) == {1: {"time_budget": 45.0, "flop_budget": 6e9}, 2: {"time_budget": 15.0, "flop_budget": 2e9}}
    assert runs.budgets(params(FLOP_BUDGET=8e9)) == {1: {"time_budget": 0.0, "flop_budget": 8e9}}


def test_two_stage_run_trains_both_within_their_shares_and_samples_full_size_frames(tmp_path):
    p = params(SR_SCALE=2, SR_SHARE=0.5, FLOP_BUDGET=1e20)
    trainer, sr_trainer, info = runs.train_stages(p, tmp_path)
    assert (tmp_path / "checkpoints" / "last.pt").is_file() and (tmp_path / "stage2" / "checkpoints" / "last.pt").is_file()
    assert info["train_steps"] == info["sr_train_steps"] == 2  # the steps ended both before the budget
    assert info["train_flops"] == 2 * (info["flops_per_step"] + info["sr_flops_per_step"])
    assert info["params_millions"] == pytest.approx(sum(sum(q.numel() for q in t.model.parameters()) / 1e6
                                                        for t in (trainer, sr_trainer)))  # fmt: skip
    sr = (sr_trainer.ema.eval(), sr_trainer.diffusion, sr_trainer.cfg)
    cfg = runs.train_config(p)
    metrics, details, samples = runs.sample_and_score(trainer.ema.eval(), trainer.diffusion, cfg, p, tmp_path,
                                                      ckpt=trainer.ckpt_path, sr=sr)  # fmt: skip
    assert samples[8].shape == (2, 8, 16, 16, 3)  # stage 1 made 8 px frames, stage 2 16 px ones
    assert len(list((tmp_path / "samples" / "8f").glob("seq_*/frames/*.png"))) == 16
    assert metrics["plausible_rate_real_8"] == 1.0  # real balls drawn at 16 px, as stage 2's frames are
    _, _, again = runs.sample_and_score(trainer.ema.eval(), trainer.diffusion, cfg, p, tmp_path / "again",
                                        ckpt=trainer.ckpt_path, sr=sr)  # fmt: skip
    assert torch.equal(torch.from_numpy(samples[8]), torch.from_numpy(again[8]))  # same seed, same frames


def test_flop_budget_splits_between_the_stages(tmp_path):
    p = params(SR_SCALE=2, SR_SHARE=0.5, STEPS=50, SR_STEPS=50, FLOP_BUDGET=0.0)
    per_step = runs.train_stages(params(**{**p, "STEPS": 1, "SR_STEPS": 1}), tmp_path / "probe")[2]
    budget = 3.5 * (per_step["flops_per_step"] + per_step["sr_flops_per_step"])  # three and a half steps of each
    p = params(**{**p, "FLOP_BUDGET": budget, "SR_SHARE": 3.5 * per_step["sr_flops_per_step"] / budget})
    _, _, info = runs.train_stages(p, tmp_path / "run")
    assert (info["train_steps"], info["sr_train_steps"]) == (3, 3)


def test_frechet_figures_are_flattened_with_their_baselines():
    metrics = {"fvd": {"samples": 5.0, "real": 1.0, "shuffled": 3.0, "frozen": 4.0}, "coherence": {}}
    assert runs.frechet_flat(metrics) == {"fvd": 5.0, "fvd_real": 1.0, "fvd_shuffled": 3.0, "fvd_frozen": 4.0}
