"""Tiny checkpoints of every family, written as training checkpoints the library loads (``load_trained``), so the
widgets are tested on what a user opens; the weights are random but large enough that attention and outputs vary."""

from dataclasses import asdict

import pytest
import torch

from gridit_core.training import TrainConfig, build_model_and_diffusion
from gridit_core.training.config import CHECKPOINT_KINDS

TINY = dict(depth=2, hidden_size=32, num_heads=4)


def randomise(model, seed=1, scale=0.1):
    """Every weight drawn afresh (adaLN-Zero starts blocks as the identity and the output at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model


def write_checkpoint(path, arch="grid", *, stage=1, sampling=None, **overrides):
    """A stage-1 (or stage-2) checkpoint of a tiny DiT-N/4: 2x2 grids of 16 px frames, clips of 4 (tensor, msc), or
    a x2 stage-2 model of 32 px frames; returns the path."""
    fields = dict(model="DiT-N/4", arch=arch, frames=4, frame_size=16, model_kwargs=dict(TINY), sampling=sampling or {},
                  diffusion={"prediction": "v"})
    if stage == 2:
        fields.update(stage=2, scale=2, frame_size=32, rows=1, cols=1, arch="grid")
    cfg = TrainConfig(**{**fields, **overrides})
    model, diffusion = build_model_and_diffusion(cfg)
    weights = randomise(model).state_dict()
    state = {"kind": CHECKPOINT_KINDS[stage], "arch": cfg.arch, "step": 0, "config": asdict(cfg),
             "model_config": asdict(model.config), "diffusion_config": asdict(diffusion.config),
             "model": weights, "ema": weights}  # fmt: skip
    torch.save(state, path)
    return path


@pytest.fixture(scope="session")
def make_checkpoint():
    """``write_checkpoint`` for a test's own variant."""
    return write_checkpoint


@pytest.fixture(scope="session")
def ckpts(tmp_path_factory):
    """``{"grid": path, "tensor": path, "msc": path, "sr": path}``: one tiny checkpoint of each kind."""
    root = tmp_path_factory.mktemp("ckpts")
    paths = {arch: write_checkpoint(root / f"{arch}.pt", arch) for arch in ("grid", "tensor", "msc")}
    paths["sr"] = write_checkpoint(root / "sr.pt", stage=2)
    paths["grid_saved"] = write_checkpoint(root / "grid_saved.pt", sampling={"sampler": "ddpm", "steps": 3, "overlap": 1,
                                                                             "resample": 2})  # fmt: skip
    return paths

