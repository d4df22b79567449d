"""The quickstart experiment behind ``make demo``: train on bouncing balls, sample a long sequence, score it.

The notebook ``notebooks/experiments/quickstart.ipynb`` stays thin and calls these functions. The demo's
recipe was chosen from measurements on 2 CPU cores (see README, "The demo's recipe"): one ball of a fixed
colour on 16 px frames, a 2x2 grid, v-prediction on a cosine schedule, started from a shipped checkpoint.
"""

import time
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from gridit_core.data import BouncingConfig, bouncing_shapes, tensor_to_uint8
from gridit_core.errors import GriditError
from gridit_core.metrics import coherence_many, freeze_frames, shuffle_frames
from gridit_core.report import figure_png, gif_bytes, write_report
from gridit_core.sequence import sample_sequence
from gridit_core.train import Trainer, TrainConfig, read_metrics

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


def train(cfg, run_dir):
    """Train (or fine-tune) and return ``(trainer, seconds)``; the run folder is replaced."""
    trainer = Trainer(cfg, run_dir, overwrite=True)
    t0 = time.perf_counter()
    trainer.fit()
    return trainer, time.perf_counter() - t0


def real_sequences(cfg, n_sequences, n_frames, seed=1234):
    """Held-out sequences from the same generator the model was trained on: uint8 ``(S, T, H, W, 3)``."""
    bc = BouncingConfig.for_frame_size(cfg.frame_size, length=n_frames, **cfg.builtin)
    return bouncing_shapes(n_sequences, bc, seed=seed).frames


def sample(trainer, n_frames, n_sequences, *, sampler="ddpm", steps=50, resample=5, seed=0):
    """Sample with the EMA model; returns uint8 ``(S, T, H, W, 3)`` and seconds per frame.

    The defaults were measured on the demo model: ancestral sampling with RePaint resampling (each step redone
    ``resample`` times with the known cells re-imposed) follows the conditioning frames' motion much more closely
    than DDIM (coherence 0.40 against 0.08 at the same checkpoint).
    """
    cfg = trainer.cfg
    t0 = time.perf_counter()
    frames = sample_sequence(trainer.ema.eval(), trainer.diffusion, n_frames, rows=cfg.rows, cols=cfg.cols,
                             n_sequences=n_sequences, sampler=sampler, steps=steps, resample=resample, seed=seed,
                             device=trainer.device)
    seconds = time.perf_counter() - t0
    return tensor_to_uint8(frames), seconds / (n_frames * n_sequences)


def score(samples, real):
    """Coherence of samples beside real, shuffled and frozen real sequences (the baselines)."""
    shuffled = np.stack([shuffle_frames(r, seed=i) for i, r in enumerate(real)])
    frozen = np.stack([freeze_frames(r) for r in real])
    return {name: coherence_many(x, n_balls=1) for name, x in
            [("samples", samples), ("real", real), ("shuffled", shuffled), ("frozen", frozen)]}


def loss_figure(metrics_path, init=""):
    """This run's loss; after a shipped checkpoint's own training log when it starts from one."""
    log = read_metrics(metrics_path)
    fig, ax = plt.subplots(figsize=(6, 3))
    offset = 0
    before = Path(init).with_name("training_metrics.jsonl") if init else None
    if before is not None and before.is_file():
        shipped = read_metrics(before)
        offset = shipped[-1]["step"]
        ax.plot([m["step"] for m in shipped], [m["loss"] for m in shipped], label=f"shipped checkpoint ({offset} steps)")
    ax.plot([offset + m["step"] for m in log], [m["loss"] for m in log], label="this run")
    ax.set(xlabel="optimizer step", ylabel="training loss", yscale="log", title="Training loss")
    ax.legend()
    return fig


def scores_figure(scores):
    names = list(scores)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(names, [scores[n]["score"] for n in names], color=["tab:blue", "tab:green", "tab:red", "tab:gray"])
    ax.set(ylim=(0, 1.05), ylabel="coherence score", title="Bouncing-ball coherence (1 = perfect)")
    return fig


def write(out_dir, *, cfg, seconds, samples, real, scores, s_per_frame, metrics_path):
    """``index.html`` (animations, loss curve, scores) and ``metrics.json`` into ``out_dir``."""
    closer_to_real = abs(scores["samples"]["score"] - scores["real"]["score"]) < abs(scores["samples"]["score"] - scores["shuffled"]["score"])
    origin = f"fine-tuned from {Path(cfg.init).name}" if cfg.init else "trained from scratch"
    log = read_metrics(metrics_path)
    metrics = {
        "train_steps": cfg.steps, "train_seconds": seconds, "steps_per_second": cfg.steps / seconds,
        "final_loss": log[-1]["loss"], "init": cfg.init, "model": cfg.model, "grid": [cfg.rows, cfg.cols],
        "frame_size": cfg.frame_size, "sample_frames": int(samples.shape[1]), "sample_sequences": int(samples.shape[0]),
        "sampling_seconds_per_frame": s_per_frame, "coherence": scores, "samples_closer_to_real_than_shuffled": bool(closer_to_real),
    }
    table = [{"sequences": name, **{k: v for k, v in s.items() if k in ("score", "detection_rate", "motion_error_px", "size_cv", "moving_fraction")}}
             for name, s in scores.items()]
    sections = [
        {"heading": f"Sampled: {samples.shape[1]} frames, grid by grid",
         "text": f"{cfg.model} on a {cfg.rows}x{cfg.cols} grid of {cfg.frame_size}px frames, {origin}, {cfg.steps} steps in "
                 f"{seconds:.0f} s on {cfg.device}. Each sequence below is one long sample: a start grid, then continuation grids "
                 f"conditioned on the previous grid's last row.",
         "gif": gif_bytes(samples, scale=4, columns=min(4, len(samples)))},
        {"heading": "Real sequences (held out)", "gif": gif_bytes(real[: len(samples)], scale=4, columns=min(4, len(samples)))},
        {"heading": "Coherence", "text": "Balls found, tracked and checked against constant-velocity motion with wall bounces. "
                                         f"Samples are closer to real data than to shuffled frames: {closer_to_real}.",
         "png": figure_png(scores_figure(scores)), "table": table},
        {"heading": "Training loss", "png": figure_png(loss_figure(metrics_path, cfg.init))},
    ]
    plt.close("all")
    return write_report(out_dir, "GriDiT quickstart: bouncing balls", sections, metrics)
