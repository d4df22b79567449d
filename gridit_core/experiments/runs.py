"""What the experiment notebooks call (``notebooks/experiments/train.ipynb``, ``sample.ipynb``, ``evaluate.ipynb``): a
run trains any family (grid, tensor, MSC) for a number of steps, a wall-time budget or a FLOP budget (for GriDiT
optionally with a stage-2 super-resolution model sharing the budget), samples sequences of several lengths, scores them
with ``gridit eval``'s functions (coherence beside real, shuffled and frozen sequences; FVD and FID with the networks
``make weights`` registers or the files given) and the coherence along the sequence, and writes ``results.json``.

Every notebook writes ``results.json`` last (atomically): a study runner counts a run done when it exists.
"""

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from gridit_core.diffusion import STEPPER_KINDS
from gridit_core.errors import GriditError
from gridit_core.experiments.figures import loss_figure  # noqa: F401 (train.ipynb's name)
from gridit_core.experiments.params import Param, check_params
from gridit_core.metrics.weights_setup import default_network
from gridit_core.models.sr import SCALES
from gridit_core.models.video import GATES
from gridit_core.sampling import CAUSAL_SCHEDULES, FAMILIES, SampleConfig, generate_frames, get_family, sample_sequence
from gridit_core.sampling.config import CONDITIONINGS, CONTEXT_MODES
from gridit_core.sampling.families import write_sample_record
from gridit_core.training import read_metrics
from gridit_core.training.config import LR_DECAYS
from gridit_core.training.losses import NOISE_MODES
from gridit_core.util.io import FrameWriter, write_bytes_atomic, write_text_atomic

COMPONENTS = ("motion_error_px", "jump_rate", "reversal_rate", "stop_fraction")  # coherence parts worth charting
GRADED = ("plausible_rate", "plausible_run", "plausible_rate_at_seams", "plausible_rate_inside", "detection_rate",
          "appearance")  # the graded figures of a coherence result (metrics.motion), flat in results.json
SCORES = ("coherence", "fvd", "fid")  # what train.ipynb and sample.ipynb score samples with
_SAMPLING = {  # shared by train.ipynb and sample.ipynb
    "SAMPLER": Param(str, choices=("", *STEPPER_KINDS)),
    "SAMPLE_STEPS": Param(int, low=0),
    "RESAMPLE": Param(int, low=0),
    "OVERLAP": Param(int, low=-1),
    "CONDITIONING": Param(str, choices=("", *CONDITIONINGS)),
    "GUIDANCE": Param(float, low=-1),
    "CONTEXT_NOISE": Param(float, low=-1, high=0.99),
    "CONTEXT_MODE": Param(str, choices=("", *CONTEXT_MODES)),
    "SCHEDULE": Param(str, choices=("", *CAUSAL_SCHEDULES)),
    "CHUNK": Param(int, low=0),
    "SAMPLE_FRAMES": Param(str),
    "N_SAMPLES": Param(int, low=1),
    "POSITION_WINDOW": Param(int, low=4),
    "METRICS": Param(str),
    "I3D": Param(str, file=True),
    "DEVICE": Param(str),
    "SEED": Param(int),
}
TRAIN_PARAMS = {
    "OUT_DIR": Param(str),
    "DATA": Param(str),
    "ARCH": Param(str, choices=tuple(FAMILIES)),
    "MODEL": Param(str),
    "ROWS": Param(int, low=1),
    "COLS": Param(int, low=1),
    "FRAMES": Param(int, low=2),
    "FRAME_SIZE": Param(int, low=4),
    "POS_EMBED": Param(str, choices=("grid2d", "frame3d")),
    "NOISE": Param(str, choices=("", *NOISE_MODES)),
    "ATTENTION": Param(str, choices=("full", "factorized")),
    "WINDOW": Param(int, low=1),
    "P_FRAMES": Param(int, low=0),
    "POOL": Param(str),
    "I_STRIDE": Param(int, low=1),
    "I_FRAMES": Param(int, low=0),
    "GATE": Param(str, choices=GATES),
    "STEPS": Param(int, low=1),
    "TIME_BUDGET": Param(float, low=0),
    "FLOP_BUDGET": Param(float, low=0),
    "BATCH_SIZE": Param(int, low=1),
    "LR": Param(float, low=0),
    "WARMUP": Param(int, low=0),
    "LR_DECAY": Param(str, choices=LR_DECAYS),
    "PREDICTION": Param(str, choices=("eps", "v", "x0")),
    "N_SEQUENCES": Param(int, low=1),
    "DATA_FRACTION": Param(float, low=0.01, high=1),
    "INIT": Param(str, file=True),
    "SR_SCALE": Param(int, choices=(0, *SCALES)),
    "SR_SHARE": Param(float, low=0.05, high=0.95),
    "SR_STEPS": Param(int, low=1),
    "SR_SAMPLE_STEPS": Param(int, low=1),
    **_SAMPLING,
}
SAMPLE_PARAMS = {"OUT_DIR": Param(str), "CKPT": Param(str, file=True), "REAL": Param(str), **_SAMPLING}
EVALUATE_PARAMS = {
    "OUT_DIR": Param(str),
    "SAMPLES": Param(str),
    "REAL": Param(str),
    "CKPT": Param(str, file=True),
    "METRICS": Param(str),
    "I3D": Param(str, file=True),
    "INCEPTION": Param(str, file=True),
    "FVD_FRAMES": Param(int, low=9),
    "DEVICE": Param(str),
}


def _lengths(text):
    try:
        lengths = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise GriditError(f"SAMPLE_FRAMES must be comma-separated frame counts like '64,256', got {text!r}") from None
    if not lengths or min(lengths) < 1:
        raise GriditError(f"SAMPLE_FRAMES needs at least one frame count of 1 or more, got {text!r}")
    return lengths


def _check_scoring(params):
    """The sampling lengths and metrics of train.ipynb and sample.ipynb."""
    _lengths(params["SAMPLE_FRAMES"])
    wanted = _metrics(params["METRICS"])
    if not wanted or set(wanted) - set(SCORES):
        raise GriditError(f"METRICS must list some of {', '.join(SCORES)}, got {params['METRICS']!r}")
    if "fvd" in wanted and not params["I3D"]:
        default_network("i3d")  # registered by make weights, or a one-line error naming it
    if "fid" in wanted:
        default_network("inception")


def check_train(values, base=None):
    """train.ipynb's parameters checked in one call (its first cell, and ``gridit study`` for every run before any
    starts); the model is built on the meta device, so settings it cannot take are refused here. ``base`` is where
    relative files start."""
    from gridit_core.training import build_model_and_diffusion

    params = check_params(values, TRAIN_PARAMS, base)
    _check_scoring(params)
    cfg = train_config(params)
    if cfg.vae:
        return params
    try:
        with torch.device("meta"):
            model, diffusion = build_model_and_diffusion(cfg)
            if params["SR_SCALE"]:
                build_model_and_diffusion(sr_config(params))
    except (TypeError, ValueError) as e:
        raise GriditError(f"{cfg.arch} model {cfg.model}: {' '.join(str(e).split())}") from None
    check_sampling(model, diffusion, cfg, params)
    return params


def check_sample(values, base=None):
    """sample.ipynb's parameters checked in one call."""
    params = check_params(values, SAMPLE_PARAMS, base)
    _check_scoring(params)
    return params


def check_evaluate(values, base=None):
    """evaluate.ipynb's parameters checked in one call."""
    params = check_params(values, EVALUATE_PARAMS, base)
    if not params["SAMPLES"]:
        raise GriditError("SAMPLES must name sampled sequences (a gridit sample output, a folder of them, or a GIF)")
    return params


# A notebook names its check in its metadata (``"gridit": {"checks": "train"}``); ``gridit study`` runs it on every
# run's parameters before any run starts.
NOTEBOOK_CHECKS = {"train": check_train, "sample": check_sample, "evaluate": check_evaluate}


def check_sampling(model, diffusion, cfg, p):
    """Refuse now the sampling settings ``model`` (built on the meta device) cannot take at some length of
    ``p["SAMPLE_FRAMES"]``: the sampler checks every setting when it is called, before it computes anything."""
    settings = settings_of(p, cfg.sampling)
    for n in _lengths(p["SAMPLE_FRAMES"]):
        try:
            generate_frames(model, diffusion, n, settings, progress=False, device="meta")
        except GriditError as e:
            raise GriditError(f"sampling {n} frames: {e}") from None


def _metrics(text):
    return [m.strip() for m in str(text).split(",") if m.strip()]


def _pool(text):
    try:
        pools = [int(v) for v in str(text).split(",")]
    except ValueError:
        raise GriditError(f"POOL must be a factor or one per block like '1,2,2,4', got {text!r}") from None
    return pools[0] if len(pools) == 1 else pools


# ---- train ---------------------------------------------------------------------------------------------------------


def train_config(p):
    """The ``TrainConfig`` of train.ipynb's parameters ``p``: the quickstart's recipe (cosine schedule, EMA with
    warm-up, the demo's balls for ``builtin:bouncing``, scaled with the frame) with the family, size, layout and
    optimiser given. With ``SR_SCALE`` the grids hold frames ``SR_SCALE`` times smaller than ``FRAME_SIZE``, which
    stage 2 makes."""
    from gridit_core.experiments.recipes import QUICKSTART

    size = _stage1_size(p)
    balls = _demo_balls(QUICKSTART.builtin, size / QUICKSTART.frame_size) if p["DATA"] == "builtin:bouncing" else {}
    options = {"attention": p["ATTENTION"], "window": p["WINDOW"], "p_frames": p["P_FRAMES"], "pool": _pool(p["POOL"]),
               "i_stride": p["I_STRIDE"], "i_frames": p["I_FRAMES"], "gate": p["GATE"]}  # fmt: skip
    kwargs = {k: v for k, v in options.items() if k in get_family(p["ARCH"]).model_options}
    return replace(
        QUICKSTART, data=p["DATA"], model=p["MODEL"], arch=p["ARCH"], frames=p["FRAMES"], noise=p["NOISE"],
        rows=p["ROWS"], cols=p["COLS"], frame_size=size, pos_embed=p["POS_EMBED"], steps=p["STEPS"],
        batch_size=p["BATCH_SIZE"], lr=p["LR"], warmup=p["WARMUP"], lr_decay=p["LR_DECAY"],
        n_sequences=p["N_SEQUENCES"], diffusion={**QUICKSTART.diffusion, "prediction": p["PREDICTION"]},
        model_kwargs=kwargs, init=p["INIT"], seed=p["SEED"], device=p["DEVICE"], ckpt_every=p["STEPS"], sampling={},
        builtin=balls,
    )  # fmt: skip


def _stage1_size(p):
    if not p["SR_SCALE"]:
        return p["FRAME_SIZE"]
    if not get_family(p["ARCH"]).stage2:
        raise GriditError(f"SR_SCALE: stage 2 super-resolves GriDiT's frames; ARCH {p['ARCH']} makes full-size "
                          "frames itself")
    if p["FRAME_SIZE"] % p["SR_SCALE"]:
        raise GriditError(f"FRAME_SIZE {p['FRAME_SIZE']} is not divisible by SR_SCALE {p['SR_SCALE']}")
    return p["FRAME_SIZE"] // p["SR_SCALE"]


def sr_config(p):
    """The stage-2 ``TrainConfig`` of train.ipynb's parameters: a ``MODEL`` super-resolution DiT on single frames of
    ``FRAME_SIZE`` from ``SR_SCALE`` times smaller ones (residual, noise-augmented conditioning), ``SR_STEPS`` steps at
    most, the stage-1 recipe's optimiser and diffusion."""
    stage1 = train_config(p)
    builtin = _demo_balls(stage1.builtin, p["SR_SCALE"]) if stage1.builtin else {}
    return replace(stage1, stage=2, rows=1, cols=1, frame_size=p["FRAME_SIZE"], scale=p["SR_SCALE"],
                   steps=p["SR_STEPS"], ckpt_every=p["SR_STEPS"], noise="", model_kwargs={}, init="", builtin=builtin)


def budgets(p):
    """``{1: budget, 2: budget}``: the ``TIME_BUDGET`` and ``FLOP_BUDGET`` of each stage (stage 2 takes ``SR_SHARE``
    of both when ``SR_SCALE`` is set; without it stage 1 takes all and there is no stage 2)."""
    share = {1: 1 - p["SR_SHARE"], 2: p["SR_SHARE"]} if p["SR_SCALE"] else {1: 1.0}
    return {stage: {"time_budget": p["TIME_BUDGET"] * f, "flop_budget": p["FLOP_BUDGET"] * f}
            for stage, f in share.items()}  # fmt: skip


def train_stages(p, out_dir):
    """Train stage 1 into ``out_dir`` and, with ``SR_SCALE``, stage 2 into ``out_dir/stage2``, each within its share
    of the budgets (``budgets``). Returns ``(trainer, sr_trainer or None, info)``: ``info`` is stage 1's (``train``),
    with ``train_seconds``, ``train_flops`` and ``params_millions`` summed over the stages and stage 2's own figures
    beside them as ``sr_*``."""
    shares = budgets(p)
    trainer, info = train(train_config(p), out_dir, data_fraction=p["DATA_FRACTION"], **shares[1])
    if not p["SR_SCALE"]:
        return trainer, None, info
    sr_trainer, sr_info = train(sr_config(p), Path(out_dir) / "stage2", data_fraction=p["DATA_FRACTION"], **shares[2])
    info |= {f"sr_{k}": v for k, v in sr_info.items() if k != "train_sequences"}
    info |= {k: info[k] + sr_info[k] for k in ("train_seconds", "train_flops", "params_millions")}
    return trainer, sr_trainer, info


def _demo_balls(builtin, k):
    """The demo's balls at ``k`` times the demo's frame size: radius and speed scaled with it."""
    return {**builtin, **{f: tuple(k * v for v in builtin[f]) for f in ("radius", "speed")}}


def data_subset(dataset, cfg, fraction):
    """The first ``fraction`` of the training sequences (at least one), cut into the same clips or grids."""
    from gridit_core.data.datasets import GridClips, SequenceClips

    if fraction >= 1:
        return dataset
    if not hasattr(dataset, "sequences"):
        raise GriditError(f"DATA_FRACTION < 1 needs sequences; {cfg.data} is an organised folder of grid images")
    keep = dataset.sequences[: max(1, round(fraction * len(dataset.sequences)))]
    common = dict(stride=cfg.stride, resize=cfg.resize, seed=cfg.seed)
    if isinstance(dataset, GridClips):
        return GridClips(keep, cfg.rows, cfg.cols, cfg.frame_size, **common)
    return SequenceClips(keep, cfg.frames, cfg.frame_size, **common)


def step_flops(trainer):
    """FLOPs of one training step (forward and backward of one batch), as torch's ``FlopCounterMode`` counts them
    (matrix products and attention; the MSC gathers count nothing). The trainer's random state is left as it was."""
    from torch.utils.flop_counter import FlopCounterMode

    micro = trainer.cfg.batch_size // trainer.cfg.grad_accum
    x = torch.stack([trainer.dataset[i % len(trainer.dataset)] for i in range(micro)]).to(trainer.device)
    state = trainer.generator.get_state()
    with FlopCounterMode(display=False) as counter:
        trainer.loss_fn(trainer.model, x)["loss"].mean().backward()
    trainer.generator.set_state(state)
    trainer.opt.zero_grad(set_to_none=True)
    return counter.get_total_flops() * trainer.cfg.grad_accum


class _OutOfTime(Exception):
    """Raised from the trainer's log callback when the wall-time budget is spent."""


def train(cfg, out_dir, *, time_budget=0.0, flop_budget=0.0, data_fraction=1.0):
    """Train into ``out_dir`` (``checkpoints/last.pt``, ``metrics.jsonl``) until ``cfg.steps``, ``time_budget``
    seconds (checked every ``log_every`` steps) or ``flop_budget`` FLOPs, whichever comes first.

    Returns ``(trainer, info)``: steps run, seconds, steps/s, FLOPs per step and in all, parameters, the last loss.
    """
    from gridit_core.training import Trainer, training_data

    dataset = data_subset(training_data(cfg), cfg, data_fraction)
    trainer = Trainer(cfg, out_dir, overwrite=True, dataset=dataset)
    flops = step_flops(trainer)
    if flop_budget > 0:
        trainer.cfg.steps = cfg.steps = max(1, min(cfg.steps, int(flop_budget // flops)))

    def stop_when_spent(_):
        if time_budget > 0 and time.perf_counter() - started > time_budget:
            raise _OutOfTime

    started = time.perf_counter()
    try:
        last = trainer.fit(progress=False, callback=stop_when_spent)
    except _OutOfTime:
        trainer.save()
        last = {}
    seconds = time.perf_counter() - started
    log = read_metrics(trainer.metrics_path)
    info = {"train_steps": trainer.step, "train_seconds": seconds, "steps_per_second": trainer.step / seconds,
            "flops_per_step": flops, "train_flops": flops * trainer.step,
            "params_millions": sum(p.numel() for p in trainer.model.parameters()) / 1e6,
            "final_loss": (last or (log[-1] if log else {})).get("loss", float("nan")),
            "train_sequences": len(getattr(trainer.dataset, "sequences", [])) or None}  # fmt: skip
    return trainer, info


# ---- sample and score ----------------------------------------------------------------------------------------------


def settings_of(p, saved=None):
    """``SampleConfig`` from the notebook's sampling parameters over ``saved`` (a checkpoint's saved settings): an
    empty or 0 value keeps the saved setting (else the library default), and so does -1 for ``OVERLAP``, ``GUIDANCE``
    and ``CONTEXT_NOISE`` (the overlap's default is the family's)."""
    given = {"sampler": p["SAMPLER"] or None, "steps": p["SAMPLE_STEPS"] or None, "resample": p["RESAMPLE"] or None,
             "schedule": p["SCHEDULE"] or None, "chunk": p["CHUNK"] or None, "conditioning": p["CONDITIONING"] or None,
             "context_mode": p["CONTEXT_MODE"] or None,
             **{k: p[k.upper()] if p[k.upper()] >= 0 else None for k in ("overlap", "guidance", "context_noise")}}  # fmt: skip
    return SampleConfig.over(saved, given)


def sample_to_folder(model, diffusion, cfg, n_frames, n_sequences, settings, out_dir, *, seed=0, device="cpu",
                     codec=None, sr=None, sr_steps=20):  # fmt: skip
    """``n_sequences`` sequences of ``n_frames`` written as ``out_dir/seq_K/frames/*.png`` (what ``gridit eval``
    reads); returns uint8 ``(S, T, H, W, 3)`` and seconds per frame (sequences sampled in parallel). ``sr``, a
    stage-2 ``(model, diffusion, cfg)``, super-resolves every frame as written to 8 bits (as ``gridit sample
    --sr-ckpt`` does) with ``sr_steps`` DDIM steps; the seconds count both stages."""
    from gridit_core.util.image import tensor_to_uint8

    started = time.perf_counter()
    frames = sample_sequence(model, diffusion, n_frames, settings, n_sequences=n_sequences, seed=seed, device=device,
                             progress=False, codec=codec)  # fmt: skip
    if sr is not None:
        frames = super_resolve(frames, *sr, steps=sr_steps, seed=seed)
    seconds = time.perf_counter() - started
    for k, seq in enumerate(frames.cpu()):  # (T, C, H, W)
        writer = FrameWriter(Path(out_dir) / f"seq_{k}", gif=False)
        for frame in seq:
            writer.add(frame)
    write_sample_record(out_dir, model, n_frames, settings)
    return tensor_to_uint8(frames.cpu()), seconds / (n_frames * n_sequences)


def super_resolve(frames, model, diffusion, cfg, *, steps=20, seed=0, batch_size=64):
    """Stage 2 on ``frames (S, T, C, h, w)`` in [-1, 1], each frame rounded to 8 bits first: ``(S, T, C, H, W)``."""
    from gridit_core.sampling.upscale import upscale_frames
    from gridit_core.util.image import tensor_to_uint8, uint8_to_tensor

    s, t = frames.shape[:2]
    lr = uint8_to_tensor(tensor_to_uint8(frames.flatten(0, 1))).to(frames.device)  # what a PNG of each frame holds
    hr = upscale_frames(model, diffusion, lr, scale=cfg.scale, residual=cfg.residual, steps=steps, seed=seed,
                        batch_size=min(batch_size, len(lr)))  # fmt: skip
    return hr.unflatten(0, (s, t))


def coherence_by_position(samples, data, frame_size, window, ckpt=None):
    """The samples' coherence in consecutive windows of ``window`` frames along the sequence, each held to real
    windows of that length: ``[{"start", "score", "motion_error_px", ...}]``; empty for data without a metric."""
    from gridit_core.metrics.coherence import BallReference, coherence_many
    from gridit_core.metrics.digits import DigitReference, digit_coherence_many
    from gridit_core.metrics.evaluate import bouncing_config
    from gridit_core.training import read_config

    if data == "builtin:bouncing":
        bc = bouncing_config(frame_size, window, None, read_config(ckpt) if ckpt else None)
        reference, score = BallReference.from_config(bc), coherence_many
    elif data == "builtin:digits":
        reference, score = DigitReference.from_source(frame_size, window), digit_coherence_many
    else:
        return []
    rows = []
    for start in range(0, samples.shape[1] - window + 1, window):
        out = score(list(samples[:, start : start + window]), reference)
        keep = ("plausible_rate", "detection_rate", *COMPONENTS)
        rows.append({"start": start, "score": out["score"], **{k: out[k] for k in keep if k in out}})
    return rows


def position_figure(by_length):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3))
    for n, rows in by_length.items():
        starts = [r["start"] for r in rows]
        axes[0].plot(starts, [_nan(r.get("plausible_rate")) for r in rows], "o-", label=f"{n} frames")
        axes[1].plot(starts, [_nan(r.get("detection_rate")) for r in rows], "o-", label=f"{n} frames")
    axes[0].set(xlabel="first frame of the window", ylabel="plausible rate", ylim=(0, 1.05),
                title="Plausible motion along the sequence")  # fmt: skip
    axes[1].set(xlabel="first frame of the window", ylabel="detection rate", ylim=(0, 1.05),
                title="Object found along the sequence")  # fmt: skip
    axes[0].legend()
    fig.tight_layout()
    return fig


def _nan(value):
    return np.nan if value is None else value


def coherence_flat(coh):
    """The flat figures of a coherence result (``evaluate``'s ``metrics.coherence``): the samples' graded figures
    (``GRADED``), ``detection_gate`` (1 passed, 0 failed), ``coherence`` (the strict score) and the motion
    ``COMPONENTS`` where measured, and the real and shuffled baselines' plausible rate and strict score."""
    samples = coh["samples"]
    flat = {k: samples.get(k) for k in GRADED} | {"detection_gate": int(samples["detection_gate"]["passed"])}
    flat |= {"coherence": samples["score"], **{k: samples.get(k) for k in COMPONENTS}}
    for side in ("real", "shuffled"):
        flat |= {f"plausible_rate_{side}": coh[side].get("plausible_rate"), f"coherence_{side}": coh[side]["score"]}
    return flat


def frechet_flat(metrics):
    """FVD and FID of an evaluation's ``metrics`` flat: ``fvd`` for the samples, ``fvd_real``, ``fvd_shuffled`` and
    ``fvd_frozen`` for the baselines, the same for ``fid``; nothing for a metric not measured."""
    from gridit_core.metrics.evaluate import BASELINES

    return {name if side == "samples" else f"{name}_{side}": metrics[name].get(side)
            for name in ("fvd", "fid") if name in metrics for side in ("samples", *BASELINES)}  # fmt: skip


def sample_and_score(model, diffusion, cfg, p, out_dir, *, ckpt, codec=None, device="cpu", real=None, sr=None):
    """Sample at every length of ``p["SAMPLE_FRAMES"]`` (through stage 2 when ``sr``, a stage-2 ``(model, diffusion,
    cfg)``, is given), score each with ``evaluate.evaluate`` (``p["METRICS"]``: coherence, also along the sequence;
    FVD for lengths of 16 frames or more; FID); returns ``(metrics, details, samples)``: flat metrics suffixed by
    length (the first length's also unsuffixed), the full evaluations, and uint8 samples per length."""
    from gridit_core.metrics.evaluate import evaluate

    real = real or cfg.data
    settings = settings_of(p, cfg.sampling)
    metrics, details, samples = {}, {"sampling": asdict(settings), "eval": {}, "by_position": {}}, {}
    for n in _lengths(p["SAMPLE_FRAMES"]):
        folder = Path(out_dir) / "samples" / f"{n}f"
        frames, s_per_frame = sample_to_folder(model, diffusion, cfg, n, p["N_SAMPLES"], settings, folder,
                                               seed=p["SEED"], device=device, codec=codec, sr=sr,
                                               sr_steps=p.get("SR_SAMPLE_STEPS", 20))  # fmt: skip
        flat = {"sample_seconds_per_frame": s_per_frame}
        wanted = [m for m in _metrics(p["METRICS"]) if m != "fvd" or n >= 16]  # FVD takes clips of 16 frames
        if wanted:
            result = evaluate(folder, real, metrics=wanted, i3d=p["I3D"] or None, frames=16, ckpt=ckpt, device=device)
            details["eval"][str(n)] = result
            if "coherence" in wanted:
                flat |= coherence_flat(result["metrics"]["coherence"])
                details["by_position"][str(n)] = coherence_by_position(frames, real, frames.shape[2], p["POSITION_WINDOW"], ckpt)
            flat |= frechet_flat(result["metrics"])
        flat = {k: v for k, v in flat.items() if v is not None}  # withheld by the detection gate, or nothing to measure
        metrics.update({f"{k}_{n}": v for k, v in flat.items()})
        if not samples:
            metrics.update(flat)
        samples[n] = frames
    return metrics, details, samples


def write_results(out_dir, notebook, params, metrics, details=None, figures=None, samples=None):
    """Figures (PNG), a GIF of the first sequences of each length, then ``results.json`` (last, atomically)."""
    import matplotlib.pyplot as plt

    from gridit_core.report.page import figure_png, gif_bytes

    out = Path(out_dir)
    names = []
    for name, fig in (figures or {}).items():
        write_bytes_atomic(figure_png(fig), out / f"{name}.png")
        names.append(f"{name}.png")
    plt.close("all")
    for n, frames in (samples or {}).items():
        write_bytes_atomic(gif_bytes(frames[:4], scale=4, columns=min(4, len(frames))), out / f"samples_{n}f.gif")
        names.append(f"samples_{n}f.gif")
    results = {"notebook": notebook, "parameters": {k: v for k, v in params.items() if k != "OUT_DIR"},
               "metrics": metrics, "details": details or {}, "figures": names}  # fmt: skip
    write_text_atomic(json.dumps(_jsonable(results), indent=2) + "\n", out / "results.json")
    return results


def _jsonable(x):
    from gridit_core.metrics.evaluate import _finite

    return _finite(json.loads(json.dumps(x, default=lambda v: v.item() if hasattr(v, "item") else str(v))))


def load_model(path, device="auto"):
    """``(model, diffusion, cfg, codec, device)`` of a stage-1 checkpoint, for sample.ipynb."""
    from gridit_core.training import load_codec, load_trained
    from gridit_core.util.device import resolve_device

    device = resolve_device(device)
    model, diffusion, cfg = load_trained(path, device=device)
    return model, diffusion, cfg, load_codec(cfg, model, device=device), device


def evaluate_folder(p):
    """evaluate.ipynb: ``evaluate.evaluate`` of ``p["SAMPLES"]`` against ``p["REAL"]``; flat metrics and the result."""
    from gridit_core.metrics.evaluate import evaluate
    from gridit_core.util.device import resolve_device

    metrics = [m.strip() for m in p["METRICS"].split(",") if m.strip()]
    result = evaluate(p["SAMPLES"], p["REAL"], metrics=metrics, i3d=p["I3D"] or None, inception=p["INCEPTION"] or None,
                      frames=p["FVD_FRAMES"], ckpt=p["CKPT"] or None, device=resolve_device(p["DEVICE"]))  # fmt: skip
    flat = coherence_flat(result["metrics"]["coherence"]) if "coherence" in result["metrics"] else {}
    flat = {k: v for k, v in (flat | frechet_flat(result["metrics"])).items() if v is not None}
    return flat | {"eval_seconds": result["seconds"]}, result
