"""Named recipes: the training configs the quickstart and the shipped checkpoints were made with, and the sampling
settings they were validated with. The CLI, the notebooks and the asset READMEs read them from here.
"""

from dataclasses import replace
from pathlib import Path

from gridit_core.errors import GriditError
from gridit_core.training.config import TrainConfig

QUICKSTART = TrainConfig(
    data="builtin:bouncing",
    model="DiT-N/4",
    rows=2,
    cols=2,
    frame_size=16,
    pos_embed="frame3d",
    batch_size=32,
    lr=1e-3,
    warmup=200,
    ema_decay=0.999,
    diffusion={"schedule": "cosine", "prediction": "v", "loss_weighting": "none"},
    n_sequences=2000,
    builtin={"radius": (3.0, 3.0), "speed": (1.0, 2.0), "colours": (255, 200, 60)},
    log_every=10,
    device="cpu",
    # grids trained to continue (a random number of leading cells clean or barely noised, the rest at one level) and
    # sampled with those cells given at their own, nearly clean level: the grid-conditioning study's best recipe
    # (reports/studies/grid-conditioning); the shipped file is the base fine-tuned so for 8,000 steps with a cosine
    # decay (reports/studies/grid-finetune); 3 passes a step and the level 0.015 the training gives such cells were
    # measured best on the shipped files (assets/demo_bouncing/README.md); ancestral steps beat DDIM (grid-ablation);
    # overlap 2 is the previous grid's last row
    noise="context",
    sampling={"sampler": "ddpm", "steps": 50, "resample": 3, "overlap": 2, "conditioning": "clean",
              "context_noise": 0.015},
)


SR_SCALE = 4
QUICKSTART_SR = replace(
    QUICKSTART, stage=2, scale=SR_SCALE, rows=1, cols=1, noise="", frame_size=QUICKSTART.frame_size * SR_SCALE,
    pos_embed="grid2d", warmup=100, n_sequences=300,
    model_kwargs={"patch_size": 8},  # 64 tokens of 8x8 px, as stage 1 has 64 of 4x4
    diffusion={"schedule": "cosine", "prediction": "x0", "loss_weighting": "none"},
    builtin={**QUICKSTART.builtin, "radius": (12.0, 12.0), "speed": (4.0, 8.0)},  # stage 1's balls, 4x the size
    sampling={},  # stage 2 samples with its own settings (gridit upscale)
)


def config(steps, *, init="", seed=0, **overrides):
    """The quickstart TrainConfig for ``steps`` optimizer steps, starting from ``init`` (a checkpoint) or from scratch."""
    if steps < 1:
        raise GriditError(f"TRAIN_STEPS must be at least 1, got {steps}")
    if init and not Path(init).is_file():
        raise GriditError(f"INIT_CHECKPOINT {init} does not exist; use '' to train from scratch")
    tune = {}
    if init:  # fine-tuning EMA weights: a gentler rate, and an EMA that starts from them instead of forgetting them
        tune = dict(lr=QUICKSTART.lr / 4, warmup=min(QUICKSTART.warmup, max(1, steps // 10)), ema_warmup=False)
    return replace(QUICKSTART, steps=steps, init=str(init), seed=seed, ckpt_every=steps, **{**tune, **overrides})


def sr_config(steps, *, seed=0, **overrides):
    """The stage-2 TrainConfig: x4 from 16 px to 64 px frames of stage 1's balls, trained from scratch."""
    if steps < 1:
        raise GriditError(f"SR_TRAIN_STEPS must be at least 1, got {steps}")
    return replace(QUICKSTART_SR, steps=steps, seed=seed, ckpt_every=steps, **overrides)
