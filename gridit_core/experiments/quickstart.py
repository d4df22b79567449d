"""The quickstart experiment behind ``make demo``: train on bouncing balls, sample a long sequence, score it, then
super-resolve it x4 with a stage-2 model trained here from scratch and score that against bicubic upsampling.

The notebook ``notebooks/experiments/quickstart.ipynb`` stays thin and calls these functions. The demo's
recipe was chosen from measurements on 2 CPU cores (``docs/results.md``, "The demo's recipe"): one ball of a fixed
colour on 16 px frames, a 2x2 grid, v-prediction on a cosine schedule, started from a shipped checkpoint. Stage 2
predicts x0 of the residual over bicubic (v-prediction left per-pixel noise: 15 dB against bicubic's 25).
"""

import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from gridit_core.data.builtin import BouncingConfig, bouncing_shapes
from gridit_core.data.degrade import DegradeConfig, degrade
from gridit_core.diffusion import STEPPER_KINDS
from gridit_core.experiments.figures import loss_figure
from gridit_core.experiments.params import Param
from gridit_core.experiments.params import check_params as _check
from gridit_core.experiments.recipes import QUICKSTART, QUICKSTART_SR, config, sr_config  # noqa: F401 (the notebook's names)
from gridit_core.metrics.coherence import BallReference, with_baselines
from gridit_core.metrics.fidelity import bicubic_baseline, compare_sr
from gridit_core.report.page import figure_png, gif_bytes, write_report
from gridit_core.sampling import SampleConfig, family_of, sample_sequence
from gridit_core.sampling.config import CONDITIONINGS
from gridit_core.sampling.upscale import SAMPLE_AUG, upscale_frames
from gridit_core.training import Trainer, load_codec, read_metrics
from gridit_core.util.image import downscale, tensor_to_uint8, uint8_to_tensor

PARAMS = {  # the notebook's parameters cell, checked in one call (gridit demo -p, and the notebook's first cell)
    "OUT_DIR": Param(str),
    "INIT_CHECKPOINT": Param(str, file=True),
    "TRAIN_STEPS": Param(int, low=1),
    "N_FRAMES": Param(int, low=1),
    "N_SEQUENCES": Param(int, low=1),
    "SAMPLER": Param(str, choices=STEPPER_KINDS),
    "SAMPLE_STEPS": Param(int, low=1),
    "RESAMPLE": Param(int, low=1),
    "CONDITIONING": Param(str, choices=CONDITIONINGS),
    "SR_TRAIN_STEPS": Param(int, low=1),
    "SR_SAMPLE_STEPS": Param(int, low=1),
    "SR_NOISE_LEVEL": Param(float, low=0, high=1),
    "SR_EVAL_FRAMES": Param(int, low=1),
    "SEED": Param(int),
}


def check_params(values, base=None):
    """The quickstart's parameters, checked (see ``PARAMS``); ``base`` is where relative paths start."""
    return _check(values, PARAMS, base)


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


def sample(trainer, n_frames, n_sequences, *, sampler=None, steps=None, resample=None, conditioning=None, seed=0):
    """Sample with the EMA model; returns uint8 ``(S, T, H, W, 3)`` and seconds per frame.

    A setting left None is the run's recipe (``trainer.cfg.sampling``, ``QUICKSTART.sampling`` for the quickstart,
    which also gives the known cells' level): ancestral steps, each done ``resample`` times, and each continuation
    grid's known cells given at their own, nearly clean level (``conditioning="clean"``) to a model fine-tuned with
    such grids; RePaint replacement (``"replace"``) is the official behaviour. On the grid-conditioning study
    (reports/studies/grid-conditioning) clean context made the seams far more plausible than replacement did.
    """
    settings = SampleConfig.over(trainer.cfg.sampling, {"sampler": sampler, "steps": steps, "resample": resample,
                                                        "conditioning": conditioning})  # fmt: skip
    t0 = time.perf_counter()
    frames = sample_sequence(trainer.ema.eval(), trainer.diffusion, n_frames, settings, n_sequences=n_sequences,
                             seed=seed, device=trainer.device)  # fmt: skip
    seconds = time.perf_counter() - t0
    return tensor_to_uint8(frames), seconds / (n_frames * n_sequences)


def _stage2(run):
    """``(model, diffusion, cfg, codec, device)`` of a stage-2 ``Trainer`` (its EMA model) or of the
    ``(model, diffusion, cfg)`` that ``training.load_sr`` returns."""
    if isinstance(run, tuple):
        model, diffusion, cfg = run
        device = next(model.parameters()).device
        return model.eval(), diffusion, cfg, load_codec(cfg, model, device=device), device
    return run.ema.eval(), run.diffusion, run.cfg, run.codec, run.device


def upscale(run, frames, *, steps=20, noise_level=SAMPLE_AUG, seed=0, batch_size=64):
    """Super-resolve uint8 frames ``(..., h, w, 3)`` with a stage-2 run (a ``Trainer``: its EMA model; or what
    ``training.load_sr`` returns); returns uint8 ``(..., H, W, 3)`` and seconds per frame."""
    model, diffusion, cfg, codec, device = _stage2(run)
    lead = frames.shape[:-3]
    lr = uint8_to_tensor(frames.reshape(-1, *frames.shape[-3:]))  # (N, 3, h, w)
    t0 = time.perf_counter()
    hr = upscale_frames(model, diffusion, lr, scale=cfg.scale, residual=cfg.residual, aug_level=noise_level,
                        steps=steps, seed=seed, batch_size=batch_size, device=device, codec=codec)  # fmt: skip
    seconds = time.perf_counter() - t0
    out = tensor_to_uint8(hr.cpu())  # (N, H, W, 3)
    return out.reshape(*lead, *out.shape[1:]), seconds / len(lr)


def sr_fidelity(run, n_frames=32, *, steps=20, noise_level=SAMPLE_AUG, seed=4321, degraded=False):
    """PSNR and SSIM of stage 2 against held-out ground truth, with bicubic upsampling beside them.

    Held-out frames of the run's built-in data are downscaled (bicubic, antialiased; with ``degraded``, degraded by
    the run's own training recipe instead: blur, down, pixel noise), super-resolved and compared; returns the scores
    of ``metrics.fidelity.compare_sr`` and uint8 ``(4, n, H, W, 3)`` stacks: low resolution (nearest), bicubic,
    stage 2, ground truth. ``run`` as for ``upscale``.
    """
    cfg = _stage2(run)[2]
    bc = BouncingConfig.for_frame_size(cfg.frame_size, length=4, **cfg.builtin)
    truth = bouncing_shapes(-(-n_frames // 4), bc, seed=seed).frames.reshape(-1, cfg.frame_size, cfg.frame_size, 3)
    hr = uint8_to_tensor(truth[:n_frames])  # (N, 3, H, W)
    if degraded:
        small = degrade(hr, DegradeConfig(**{**cfg.degrade, "scale": cfg.scale}), torch.Generator().manual_seed(seed))
    else:
        small = downscale(hr, cfg.scale)
    lr_frames = tensor_to_uint8(small)  # (N, h, w, 3): 8-bit, as stage-1 frames on disk are
    lr = uint8_to_tensor(lr_frames)  # (N, 3, h, w)
    sr, _ = upscale(run, lr_frames, steps=steps, noise_level=noise_level, seed=seed)
    scores = compare_sr(uint8_to_tensor(sr), hr, lr, cfg.scale)
    nearest = lr.repeat_interleave(cfg.scale, -2).repeat_interleave(cfg.scale, -1)
    views = [tensor_to_uint8(x) for x in (nearest, bicubic_baseline(lr, cfg.scale))] + [sr, truth[:n_frames]]
    return scores, np.stack(views)


def sr_figure(views, n=4):
    """Held-out frames side by side: low resolution, bicubic, stage 2, ground truth (first ``n`` examples)."""
    names = ["low resolution", "bicubic", "stage 2", "ground truth"]
    fig, axes = plt.subplots(n, 4, figsize=(8, 2 * n), squeeze=False)
    for i in range(n):
        for j, name in enumerate(names):
            axes[i, j].imshow(views[j, i], interpolation="nearest")
            axes[i, j].set_axis_off()
            if i == 0:
                axes[i, j].set_title(name)
    fig.tight_layout()
    return fig


def side_by_side(low, high):
    """Low-resolution sequences (nearest-upscaled to the high size) beside their super-resolved versions, uint8
    ``(S, T, H, 2W, 3)``: what the report animates."""
    k = high.shape[-2] // low.shape[-2]
    big = low.repeat(k, axis=-3).repeat(k, axis=-2)
    return np.concatenate([big, high], axis=-2)


def reference(cfg, n_frames):
    """The real balls samples are held to: fresh sequences of the training source (a seed no run trains on)."""
    return BallReference.from_config(BouncingConfig.for_frame_size(cfg.frame_size, length=n_frames, **cfg.builtin))


def seams(trainer, n_frames):
    """The frames where a continuation grid starts adding frames, for ``sample``'s sequences."""
    model = trainer.ema
    return family_of(model).seams(model, n_frames, SampleConfig.over(trainer.cfg.sampling, {}))


def score(samples, real, reference=None, seams=None):
    """Coherence (``metrics.coherence``) of samples beside real, shuffled and frozen real sequences:
    ``{"samples", "real", "shuffled", "frozen"}``, each with the plausible rate (``metrics.motion``) and its
    interval, the appearance, and the strict score with its components; ``seams`` split the samples' rate.

    ``reference``: a ``BallReference`` of other real sequences of the training source (``reference``); without one the
    ``real`` sequences are the reference, and their own row is scored in-sample (an upper bound).
    """
    return with_baselines(samples, real, reference, seams=seams)


def scores_figure(scores):
    """The plausible rate with its 95% interval for each row of ``score`` and, for the samples, at seams and inside
    grids; the strict score beside it."""
    names = list(scores)
    colours = ["tab:blue", "tab:green", "tab:red", "tab:gray"][: len(names)]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), gridspec_kw={"width_ratios": [4, 2, 3]})
    _bars(axes[0], names, [scores[n] for n in names], "plausible_rate", colours)
    axes[0].set(ylabel="plausible transitions", title="Plausible motion (95% interval over sequences)")
    s = scores["samples"]
    if s.get("plausible_rate_at_seams") is not None:
        parts = [{"plausible_rate": s[f"plausible_rate_{k}"], "plausible_rate_ci": s[f"plausible_rate_{k}_ci"]}
                 for k in ("at_seams", "inside")]  # fmt: skip
        _bars(axes[1], ["at seams", "inside grids"], parts, "plausible_rate", ["tab:orange", "tab:blue"])
    axes[1].set(title="Samples: where a new grid starts")
    axes[2].bar(names, [scores[n]["score"] for n in names], color=colours)
    axes[2].set(ylim=(0, 1.05), title="Indistinguishable from the data (strict)")
    for ax in axes:
        ax.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    return fig


def _bars(ax, names, rows, key, colours):
    """Bars of ``key`` with its ``key_ci`` as error bars (none where unknown), on [0, 1]."""
    values = [np.nan if r.get(key) is None else r[key] for r in rows]
    ci = [r.get(f"{key}_ci") or [v, v] for r, v in zip(rows, values)]
    err = np.array([[v - lo for v, (lo, _) in zip(values, ci)], [hi - v for v, (_, hi) in zip(values, ci)]])
    ax.bar(names, values, color=colours, yerr=np.nan_to_num(err), capsize=4)
    ax.set(ylim=(0, 1.05))


def write(out_dir, *, cfg, seconds, samples, real, scores, s_per_frame, metrics_path, sr=None):
    """``index.html`` (animations, loss curve, scores) and ``metrics.json`` into ``out_dir``.

    ``sr``: stage 2's results, a dict with ``cfg``, ``seconds``, ``samples`` (the super-resolved ``samples``),
    ``s_per_frame``, ``fidelity`` and ``views`` (from ``sr_fidelity``).
    """
    closer_in_motion = _closer_to_real(scores, "plausible_rate")
    origin = f"fine-tuned from {Path(cfg.init).name}" if cfg.init else "trained from scratch"
    log = read_metrics(metrics_path)
    metrics = {
        "train_steps": cfg.steps, "train_seconds": seconds, "steps_per_second": cfg.steps / seconds,
        "final_loss": log[-1]["loss"], "init": cfg.init, "model": cfg.model, "grid": [cfg.rows, cfg.cols],
        "frame_size": cfg.frame_size, "sample_frames": int(samples.shape[1]), "sample_sequences": int(samples.shape[0]),
        "sampling_seconds_per_frame": s_per_frame, "plausible_rate": scores["samples"]["plausible_rate"],
        "plausible_rate_ci": scores["samples"]["plausible_rate_ci"], "coherence": scores,
        "plausible_rate_closer_to_real_than_shuffled": closer_in_motion,
    }  # fmt: skip
    table = [{"sequences": name, **{label: _cell(s, k) for k, label in TABLE_COMPONENTS}} for name, s in scores.items()]
    sections = [
        {"heading": f"Sampled: {samples.shape[1]} frames, grid by grid",
         "text": f"{cfg.model} on a {cfg.rows}x{cfg.cols} grid of {cfg.frame_size}px frames, {origin}, {cfg.steps} steps in "
                 f"{seconds:.0f} s on {cfg.device}. Each sequence below is one long sample: a start grid, then continuation grids "
                 f"conditioned on the previous grid's last row.",
         "gif": gif_bytes(samples, scale=4, columns=min(4, len(samples)))},
        {"heading": "Real sequences (held out)", "gif": gif_bytes(real[: len(samples)], scale=4, columns=min(4, len(samples)))},
        {"heading": "Coherence", "text": _coherence_text(scores), "png": figure_png(scores_figure(scores)), "table": table},
        {"heading": "Training loss", "png": figure_png(loss_figure(metrics_path, cfg.init))},
    ]
    if sr is not None:
        metrics["stage2"] = _sr_metrics(sr)
        sections[1:1] = _sr_sections(sr, samples)
    plt.close("all")
    return write_report(out_dir, "GriDiT quickstart: bouncing balls", sections, metrics)


TABLE_COMPONENTS = (  # (key, column) of the report's coherence table, the graded figures first
    ("plausible_rate", "plausible rate [95%]"), ("plausible_run", "frames to first violation"),
    ("plausible_rate_at_seams", "at seams [95%]"), ("plausible_rate_inside", "inside grids [95%]"),
    ("detection_rate", "detection"), ("appearance", "appearance"), ("score", "strict score"),
    ("motion_error_px", "motion error px"), ("jump_rate", "jumps"), ("reversal_rate", "mid-air reversals"),
)  # fmt: skip


def _cell(row, key):
    """A table cell: the value (3 decimals), its interval where there is one; blank where unknown."""
    value, ci = row.get(key), row.get(f"{key}_ci")
    if value is None:
        return ""
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    return f"{text} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else text


def _coherence_text(scores):
    s = scores["samples"]
    text = ("Balls are found and tracked in every frame, and each transition (frames t-2, t-1, t) is judged: the right "
            "number of balls, tracked, within the jump threshold of constant-velocity motion with wall bounces, no mid-air "
            "reversal, a speed in the data's range. The plausible rate is the share of such transitions, with a 95% "
            "bootstrap interval over sequences; real sequences are the ceiling, shuffled and frozen frames the floor. ")
    if s.get("plausible_rate") is None:
        return text + f"The samples' balls are found in only {s['detection_rate']:.0%} of frames: motion is not judged."
    text += f"Samples: {s['plausible_rate']:.2f}"
    if s.get("plausible_rate_at_seams") is not None:
        text += (f"; {s['plausible_rate_at_seams']:.2f} on the first new frame of a continuation grid, "
                 f"{s['plausible_rate_inside']:.2f} elsewhere")  # fmt: skip
    return text + (". The strict score asks for samples indistinguishable from the data in every component "
                   "(looks and motion, a product of factors) and is near 0 for any visible flaw.")


def _closer_to_real(scores, key):
    """Whether the samples' ``key`` is nearer the real sequences' than the shuffled frames' (None if unknown)."""
    sample = scores["samples"][key]
    if sample is None:
        return None
    return bool(abs(sample - scores["real"][key]) < abs(sample - scores["shuffled"][key]))


def _sr_metrics(sr):
    c = sr["cfg"]
    return {"train_steps": c.steps, "train_seconds": sr["seconds"], "model": c.model, "scale": c.scale,
            "frame_size": c.frame_size, "sampling_seconds_per_frame": sr["s_per_frame"], "fidelity": sr["fidelity"],
            "beats_bicubic_psnr": sr["fidelity"]["psnr"] > sr["fidelity"]["psnr_bicubic"]}


def _sr_sections(sr, samples):
    c, f = sr["cfg"], sr["fidelity"]
    both = side_by_side(samples, sr["samples"])  # (S, T, H, 2W, 3)
    table = [{"frames": name, "PSNR dB": f[f"psnr{key}"], "SSIM": f[f"ssim{key}"]}
             for name, key in (("stage 2", ""), ("bicubic", "_bicubic"))]
    return [
        {"heading": f"Super-resolved x{c.scale} (stage 2): low resolution | high resolution",
         "text": f"Each sampled frame super-resolved on its own by a {c.model} stage-2 model trained here from scratch "
                 f"({c.steps} steps in {sr['seconds']:.0f} s), {sr['s_per_frame']:.3f} s per frame.",
         "gif": gif_bytes(both, scale=2, columns=min(2, len(both)))},
        {"heading": "Stage 2 against bicubic upsampling (held-out frames)",
         "text": f"{f['n']} held-out {c.frame_size}px frames, downscaled x{c.scale} and brought back up.",
         "png": figure_png(sr_figure(sr["views"])), "table": table},
    ]
