"""The ``gridit`` commands, one thin function each: they turn parsed arguments into library calls.

Bad input ends with one line on stderr and exit code 2.
"""

import json
import sys
from pathlib import Path

from gridit_core.errors import GriditError

REPO_ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = REPO_ROOT / "notebooks" / "experiments" / "quickstart.ipynb"
# model config fields the trainer sets from the grid, clip and diffusion flags; --model-kwargs may set the others
TRAINER_SET = {"input_size", "in_channels", "out_channels", "aug_cond", "rows", "cols", "pos_embed", "learn_sigma",
               "arch", "frame_size", "frames"}  # fmt: skip
CLIP_FLAGS = {"frames": "--frames"}  # TrainConfig fields of the families that train on clips
SAMPLE_FLAGS = ("sampler", "steps", "eta", "resample", "overlap", "interpolate", "conditioning", "guidance", "schedule",
                "chunk", "context", "context_noise", "context_mode")  # the SampleConfig fields gridit sample has a flag for


def _flag(name):
    return f"--{name.replace('_', '-')}"


def _device(name):
    """The torch device ``--device`` names, refused here if it cannot be used rather than midway through a run."""
    import torch

    from gridit_core.util.device import resolve_device

    try:
        device = resolve_device(name)
    except RuntimeError as e:
        raise GriditError(f"unknown device {name!r}: {' '.join(str(e).split())}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GriditError(f"device {name!r} asked for, but CUDA is not available here")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise GriditError(f"device {name!r} asked for, but there are {torch.cuda.device_count()} CUDA devices")
    return device


def _progress():
    """Progress bars only on a terminal: piped or captured stderr keeps just the messages."""
    return sys.stderr.isatty()


def cmd_organise(a):
    from gridit_core.data.organise import organise

    n = organise(a.src, a.dst, rows=a.rows, cols=a.cols, frame_size=a.frame_size, stride=a.stride,
                 overlap=a.overlap, resize=a.resize, overwrite=a.overwrite, progress=_progress())
    print(f"wrote {n} grids to {a.dst}")


def _check_model(cfg, codec=None):
    """Build the model on the meta device (no memory, no weights) so a bad size fails before data or output is touched."""
    import torch

    from gridit_core.sampling import get_family
    from gridit_core.training import build_model_and_diffusion

    settable = set(get_family(cfg.arch).model_class.config_class.__dataclass_fields__) - TRAINER_SET
    unknown = set(cfg.model_kwargs) - settable
    if unknown:
        allowed = sorted(settable)
        raise GriditError(f"--model-kwargs: unknown or trainer-set keys {sorted(unknown)}; allowed: {', '.join(allowed)}")
    try:
        with torch.device("meta"):
            build_model_and_diffusion(cfg, codec)
    except GriditError:
        raise
    except (TypeError, ValueError) as e:
        if not cfg.model_kwargs:
            raise
        raise GriditError(f"--model-kwargs {json.dumps(cfg.model_kwargs)}: {e}") from None


def _stage_args(a):
    """``TrainConfig`` fields from the stage flags: grid rows and columns, and stage 2's scale and augmentation."""
    if a.stage == 1:
        flags = (("--scale", a.scale), ("--max-aug", a.max_aug), ("--degrade", a.degrade), ("--no-residual", a.no_residual or None))
        given = [flag for flag, value in flags if value is not None]
        if given:
            raise GriditError(f"stage-2 options for a stage-1 run: {', '.join(given)}; add --stage 2")
        return {"stage": 1, "rows": a.rows or 2, "cols": a.cols or 2}
    rows, cols = a.rows or 1, a.cols or 1
    if (rows, cols) != (1, 1):
        raise GriditError(f"stage 2 trains on single frames: --rows and --cols must be 1 or left out, got {rows}x{cols}")
    given = {"scale": a.scale, "max_aug": a.max_aug, "degrade": a.degrade}
    return {"stage": 2, "rows": 1, "cols": 1, "residual": not a.no_residual, **{k: v for k, v in given.items() if v is not None}}


def _arch_args(a):
    """``TrainConfig`` fields from the family flags; a flag of another family is refused by name."""
    from gridit_core.sampling import FAMILIES

    family = FAMILIES[a.arch]
    options = {name for f in FAMILIES.values() for name in f.model_options}
    wrong = [_flag(name) for name in sorted(options - set(family.model_options)) if getattr(a, name) is not None]
    if family.on_grids:
        wrong = [flag for name, flag in CLIP_FLAGS.items() if getattr(a, name) is not None] + wrong
    if wrong:
        raise GriditError(f"options that a {a.arch} model does not take: {', '.join(wrong)}")
    kwargs = {name: getattr(a, name) for name in family.model_options if getattr(a, name) is not None}
    out = {"arch": a.arch, "model_kwargs": {**a.model_kwargs, **kwargs}}
    return out | {name: getattr(a, name) for name in (*CLIP_FLAGS, "noise") if getattr(a, name) is not None}


def cmd_train(a):
    from gridit_core.training import TrainConfig, Trainer, load_codec, training_data

    if a.vae_scale is not None and not a.vae:
        raise GriditError("--vae-scale without --vae: the latent scale applies only to a VAE's latents")
    diffusion = {"schedule": a.schedule, "prediction": a.prediction, "learn_sigma": a.learn_sigma,
                 "loss_weighting": a.loss_weighting}
    cfg = TrainConfig(
        data=a.data, model=a.model, **_stage_args(a), **_arch_args(a), frame_size=a.frame_size, stride=a.stride,
        resize=a.resize, pos_embed=a.pos_embed, steps=a.steps, batch_size=a.batch_size, grad_accum=a.grad_accum,
        lr=a.lr, warmup=a.warmup, lr_decay=a.lr_decay, ema_decay=a.ema_decay, precision=a.precision,
        diffusion=diffusion, n_sequences=a.n_sequences, builtin=a.builtin, init=a.init or "", seed=a.seed,
        ckpt_every=a.ckpt_every, device=a.device, vae=a.vae or "", vae_scale=a.vae_scale, sampling=a.sampling or {},
    )
    device = _device(cfg.device)
    codec = load_codec(cfg, device=device)  # a bad --vae fails here, before anything is touched
    _check_model(cfg, codec)
    dataset = training_data(cfg)  # opened before the Trainer, whose --overwrite clears the old run
    trainer = Trainer(cfg, a.out, resume=a.resume, overwrite=a.overwrite, dataset=dataset, codec=codec)
    metrics = trainer.fit(progress=_progress())
    loss = f"loss {metrics['loss']:.4f}; " if "loss" in metrics else ""
    print(f"step {trainer.step}: {loss}checkpoint in {Path(a.out) / 'checkpoints'}")


def sample_settings(a, saved, family):
    """The stage-1 sampling settings: each flag given, else the checkpoint's saved one, else ``SampleConfig``'s; a
    flag that ``family`` does not use is refused by name."""
    from gridit_core.sampling import SampleConfig

    given = {k: getattr(a, k) for k in SAMPLE_FLAGS if getattr(a, k) is not None}
    wrong = [_flag(k) for k in given if k not in family.sample_fields]
    if wrong:
        raise GriditError(f"sampling options that a {family.name} model does not use: {', '.join(wrong)}")
    return SampleConfig.over(saved, given)


def cmd_sample(a):
    from gridit_core.sampling import get_family, sample_sequence
    from gridit_core.sampling.two_stage import sample_two_stage
    from gridit_core.training import load_codec, load_sr, load_trained

    stage2 = {"--sr-steps": a.sr_steps, "--noise-level": a.noise_level, "--sr-batch": a.sr_batch}
    given = [flag for flag, value in stage2.items() if value is not None]
    if a.sr_ckpt is None and given:
        raise GriditError(f"stage-2 options without a stage-2 model: {', '.join(given)}; add --sr-ckpt STAGE2")
    device = _device(a.device)
    model, diffusion, cfg = load_trained(a.ckpt, device=device)
    sr = load_sr(a.sr_ckpt, device=device) if a.sr_ckpt is not None else None
    if a.vae is not None and not cfg.vae and not (sr and sr[2].vae):
        raise GriditError(f"--vae {a.vae}: neither stage was trained in a VAE's latents")
    vae = {"vae": a.vae, "device": device}
    codec = load_codec(cfg, model, **vae)
    settings = sample_settings(a, cfg.sampling, get_family(cfg.arch))
    stage1 = dict(settings=settings, seed=a.seed, device=model.pos_embed.device, fps=a.fps, progress=_progress(),
                  codec=codec)
    out = Path(a.out)
    where = f"{out / 'seq_000'} ... {out / f'seq_{a.sequences - 1:03d}'}" if a.sequences > 1 else str(out)
    if a.sr_ckpt is None:
        sample_sequence(model, diffusion, a.frames, out_dir=out, overwrite=a.overwrite, n_sequences=a.sequences, **stage1)
        print(f"wrote {a.sequences} x {a.frames} frames to {where} (frames/ and sequence.gif)" if a.sequences > 1
              else f"wrote {a.frames} frames to {out / 'frames'} and {out / 'sequence.gif'}")  # fmt: skip
        return
    sr_model, sr_diffusion, sr_cfg = sr
    sr_codec = load_codec(sr_cfg, sr_model, **vae)
    defaults = {"aug_level": a.noise_level, "sr_batch": a.sr_batch, "sr_steps": a.sr_steps or a.steps,
                "sr_sampler": a.sampler, "sr_eta": a.eta}  # None: the pipeline's own default
    sample_two_stage(model, diffusion, cfg, sr_model, sr_diffusion, sr_cfg, a.frames, out, overwrite=a.overwrite,
                     sr_codec=sr_codec, n_sequences=a.sequences,
                     **{k: v for k, v in defaults.items() if v is not None}, **stage1)  # fmt: skip
    print(f"wrote {a.sequences} x {a.frames} frames to {where}: frames/ ({sr_cfg.frame_size}px) and frames_lr/ "
          f"({cfg.frame_size}px), with sequence.gif and sequence_lr.gif")


def cmd_upscale(a):
    from gridit_core.sampling.two_stage import upscale_folder
    from gridit_core.training import load_codec, load_sr

    device = _device(a.device)
    model, diffusion, cfg = load_sr(a.ckpt, device=device)
    codec = load_codec(cfg, model, vae=a.vae, device=device)
    out, n = upscale_folder(model, diffusion, cfg, a.input, a.out, overwrite=a.overwrite, batch_size=a.batch_size,
                            codec=codec,
                            aug_level=a.noise_level, steps=a.steps, sampler=a.sampler, eta=a.eta, seed=a.seed,
                            fps=a.fps, progress=_progress())
    print(f"wrote {n} frames of {cfg.frame_size}px to {out / 'frames'} and {out / 'sequence.gif'}")


def cmd_export(a):
    from gridit_core.training import export_weights

    out = Path(a.out)
    if out.exists() and not a.overwrite:
        raise GriditError(f"{out} exists; pass --overwrite to replace it")
    export_weights(a.ckpt, out, use_ema=not a.raw, sampling=a.sampling)
    print(f"wrote {out}")


def cmd_demo(a):
    from gridit_core.experiments import quickstart
    from gridit_core.experiments.params import parse_overrides, read_parameters
    from gridit_core.util.io import prepare_output_dir

    if not QUICKSTART.is_file():
        raise GriditError(f"the quickstart notebook {QUICKSTART} is missing; run the demo from a source checkout")
    defaults = read_parameters(QUICKSTART)
    params = {**parse_overrides(a.param or [], defaults), "OUT_DIR": str(Path(a.out).resolve())}
    quickstart.check_params({**defaults, **params}, base=QUICKSTART.parent)  # every value, before papermill starts
    try:
        import papermill as pm
    except ImportError:
        raise GriditError("gridit demo runs a notebook with papermill: pip install -e '.[notebooks]'") from None

    out = Path(a.out)
    prepare_output_dir(out, a.overwrite, ["index.html", "metrics.json", "quickstart.ipynb"])
    pm.execute_notebook(str(QUICKSTART), str(out / "quickstart.ipynb"), parameters=params, kernel_name="python3",
                        cwd=str(QUICKSTART.parent), progress_bar=_progress())
    print(f"report: {out / 'index.html'}")


def cmd_eval(a):
    from gridit_core.metrics.evaluate import evaluate, table
    from gridit_core.util.io import write_text_atomic

    out = Path(a.out)
    if out.exists() and not a.overwrite:
        raise GriditError(f"{out} exists; pass --overwrite to replace it")
    result = evaluate(a.samples, a.real, metrics=a.metric, i3d=a.i3d, inception=a.inception, frames=a.frames,
                      clips=a.clips, real_clips=a.real_clips, real_sequences=a.real_sequences, builtin=a.builtin,
                      ckpt=a.ckpt, kind=a.coherence,
                      stats_cache=a.stats_cache, batch=a.batch_size, device=_device(a.device), progress=_progress())
    write_text_atomic(json.dumps(result, indent=2) + "\n", out)
    print(table(result))
    print(f"wrote {out}")


def cmd_weights(a):
    from gridit_core.metrics.weights_setup import REGISTRY, networks_dir, setup_weights

    registry = setup_weights(force=a.force)
    print(f"registered {', '.join(sorted(registry))} in {networks_dir() / REGISTRY}")


def cmd_study(a):
    from gridit_core.studies.runner import plan, rewrite_report, run_study, summary_line
    from gridit_core.studies.spec import load_study

    study = load_study(a.spec, a.profile, base=Path.cwd())  # every run's parameters checked before any starts
    if a.dry_run:
        print("\n".join(plan(study, a.out, jobs=a.jobs, executor=a.executor)))
        return
    if a.report_only:
        print(f"report: {rewrite_report(study, a.out)}")
        return
    summary, page = run_study(study, a.out, jobs=a.jobs, executor=a.executor, resume=a.resume, progress=_progress())
    print(summary_line(study, summary, page))
    if summary["stopped"]:
        raise KeyboardInterrupt


COMMANDS = {"organise": cmd_organise, "train": cmd_train, "sample": cmd_sample, "upscale": cmd_upscale,
            "export": cmd_export, "demo": cmd_demo, "eval": cmd_eval, "study": cmd_study, "weights": cmd_weights}  # fmt: skip
