"""The ``gridit`` command: organise, train, sample, upscale, export, demo.

Bad input ends with one line on stderr and exit code 2.
"""

import argparse
import json
import sys
from pathlib import Path

from gridit_core.errors import GriditError

REPO_ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = REPO_ROOT / "notebooks" / "experiments" / "quickstart.ipynb"
# DiTConfig fields the trainer sets from the grid and diffusion flags; --model-kwargs may set the others
TRAINER_SET = {"input_size", "in_channels", "out_channels", "aug_cond", "rows", "cols", "pos_embed", "learn_sigma"}


class Parser(argparse.ArgumentParser):
    """Usage errors as one line, ``gridit CMD: error: ...``, the same shape as every other error of the command."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive(kind):
    def parse(text):
        value = kind(text)
        if value < 1:
            raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in "invalid int value"
    return parse


def _at_least_zero(kind):
    def parse(text):
        value = kind(text)
        if not value >= 0:  # also refuses nan
            raise argparse.ArgumentTypeError(f"must be at least 0, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _above_zero(text):
    value = float(text)
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def _unit_interval(text):
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {text}")
    return value


def _json_object(text):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e.msg} at character {e.pos}): {text}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object like '{{\"depth\": 2}}', got {text}")
    return value


def _device(name):
    """The torch device ``--device`` names, refused here if it cannot be used rather than midway through a run."""
    import torch

    from gridit_core.train import resolve_device

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


def _grid_args(p, frame_size_default=None):
    p.add_argument("--rows", type=_positive(int), default=2, help="grid rows (official: 4)")
    p.add_argument("--cols", type=_positive(int), default=2, help="grid columns (official: 4)")
    p.add_argument("--frame-size", type=_positive(int), default=frame_size_default, help="frame side in pixels (official: 128)")
    p.add_argument("--stride", type=_positive(int), default=1, help="take every K-th source frame")
    p.add_argument("--resize", choices=["stretch", "center-crop", "none"], default="stretch",
                   help="stretch (official, aspect not kept), center-crop, or none (frames must have the size)")


def cmd_organise(a):
    from gridit_core.organise import organise

    n = organise(a.src, a.dst, rows=a.rows, cols=a.cols, frame_size=a.frame_size, stride=a.stride,
                 overlap=a.overlap, resize=a.resize, overwrite=a.overwrite, progress=_progress())
    print(f"wrote {n} grids to {a.dst}")


def _check_model(cfg, codec=None):
    """Build the model on the meta device (no memory, no weights) so a bad size fails before data or output is touched."""
    import torch

    from gridit_core.models import DiTConfig
    from gridit_core.train import build_model_and_diffusion

    unknown = set(cfg.model_kwargs) - (set(DiTConfig.__dataclass_fields__) - TRAINER_SET)
    if unknown:
        allowed = sorted(set(DiTConfig.__dataclass_fields__) - TRAINER_SET)
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


def cmd_train(a):
    from gridit_core.train import Trainer, TrainConfig, load_codec, training_data

    if a.vae_scale is not None and not a.vae:
        raise GriditError("--vae-scale without --vae: the latent scale applies only to a VAE's latents")
    diffusion = {"schedule": a.schedule, "prediction": a.prediction, "learn_sigma": a.learn_sigma,
                 "loss_weighting": a.loss_weighting}
    cfg = TrainConfig(
        data=a.data, model=a.model, **_stage_args(a), frame_size=a.frame_size, stride=a.stride,
        resize=a.resize, pos_embed=a.pos_embed, steps=a.steps, batch_size=a.batch_size, grad_accum=a.grad_accum,
        lr=a.lr, warmup=a.warmup, ema_decay=a.ema_decay, precision=a.precision, diffusion=diffusion,
        model_kwargs=a.model_kwargs, n_sequences=a.n_sequences, builtin=a.builtin, init=a.init or "", seed=a.seed,
        ckpt_every=a.ckpt_every, device=a.device, vae=a.vae or "", vae_scale=a.vae_scale,
    )
    device = _device(cfg.device)
    codec = load_codec(cfg, device=device)  # a bad --vae fails here, before anything is touched
    _check_model(cfg, codec)
    dataset = training_data(cfg)  # opened before the Trainer, whose --overwrite clears the old run
    trainer = Trainer(cfg, a.out, resume=a.resume, overwrite=a.overwrite, dataset=dataset, codec=codec)
    metrics = trainer.fit(progress=_progress())
    loss = f"loss {metrics['loss']:.4f}; " if "loss" in metrics else ""
    print(f"step {trainer.step}: {loss}checkpoint in {Path(a.out) / 'checkpoints'}")


def cmd_sample(a):
    from gridit_core.pipeline import sample_two_stage
    from gridit_core.sequence import sample_sequence
    from gridit_core.train import load_codec, load_sr, load_trained

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
    codec = load_codec(cfg, model, **vae) if cfg.vae else None
    stage1 = dict(overlap=a.overlap, interpolate=a.interpolate, sampler=a.sampler, steps=a.steps, eta=a.eta,
                  resample=a.resample, seed=a.seed, device=model.pos_embed.device, fps=a.fps, progress=_progress(),
                  codec=codec)
    out = Path(a.out)
    if a.sr_ckpt is None:
        sample_sequence(model, diffusion, a.frames, rows=cfg.rows, cols=cfg.cols, out_dir=out, overwrite=a.overwrite,
                        **stage1)
        print(f"wrote {a.frames} frames to {out / 'frames'} and {out / 'sequence.gif'}")
        return
    sr_model, sr_diffusion, sr_cfg = sr
    sr_codec = load_codec(sr_cfg, sr_model, **vae) if sr_cfg.vae else None
    defaults = {"aug_level": a.noise_level, "sr_batch": a.sr_batch}  # None: the pipeline's own default
    sample_two_stage(model, diffusion, cfg, sr_model, sr_diffusion, sr_cfg, a.frames, out, overwrite=a.overwrite,
                     sr_steps=a.sr_steps or a.steps, sr_sampler=a.sampler, sr_eta=a.eta, sr_codec=sr_codec,
                     **{k: v for k, v in defaults.items() if v is not None}, **stage1)
    print(f"wrote {a.frames} frames to {out / 'frames'} ({sr_cfg.frame_size}px) and {out / 'frames_lr'} "
          f"({cfg.frame_size}px), with sequence.gif and sequence_lr.gif")


def cmd_upscale(a):
    from gridit_core.pipeline import upscale_folder
    from gridit_core.train import load_codec, load_sr

    device = _device(a.device)
    model, diffusion, cfg = load_sr(a.ckpt, device=device)
    codec = load_codec(cfg, model, vae=a.vae, device=device)
    out, n = upscale_folder(model, diffusion, cfg, a.input, a.out, overwrite=a.overwrite, batch_size=a.batch_size,
                            codec=codec,
                            aug_level=a.noise_level, steps=a.steps, sampler=a.sampler, eta=a.eta, seed=a.seed,
                            fps=a.fps, progress=_progress())
    print(f"wrote {n} frames of {cfg.frame_size}px to {out / 'frames'} and {out / 'sequence.gif'}")


def cmd_export(a):
    from gridit_core.train import export_weights

    out = Path(a.out)
    if out.exists() and not a.overwrite:
        raise GriditError(f"{out} exists; pass --overwrite to replace it")
    export_weights(a.ckpt, out, use_ema=not a.raw)
    print(f"wrote {out}")


def cmd_demo(a):
    from gridit_core.sequence import prepare_output_dir

    if not QUICKSTART.is_file():
        raise GriditError(f"the quickstart notebook {QUICKSTART} is missing; run the demo from a source checkout")
    params = {"OUT_DIR": str(Path(a.out).resolve())}
    for item in a.param or []:
        key, eq, value = item.partition("=")
        if not eq or not key.isidentifier():
            raise GriditError(f"-p takes NAME=VALUE with NAME a notebook parameter, got {item!r}")
        params[key] = _literal(value)
    import papermill as pm

    out = Path(a.out)
    prepare_output_dir(out, a.overwrite, ["index.html", "metrics.json", "quickstart.ipynb"])
    pm.execute_notebook(str(QUICKSTART), str(out / "quickstart.ipynb"), parameters=params, kernel_name="python3",
                        cwd=str(QUICKSTART.parent), progress_bar=_progress())
    print(f"report: {out / 'index.html'}")


def _literal(text):
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def build_parser():
    from gridit_core.models import DiT_models
    from gridit_core.superres import MAX_AUG, SAMPLE_AUG, SCALES

    parser = Parser(prog="gridit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("organise", help="convert a sequence dataset into grid images",
                       description="Cut every sequence under SRC into full chunks of rows*cols frames and write each as "
                                   "one grid image in DST, with a manifest grids.json.")
    p.add_argument("src", help="folder of sequence folders of frames, GIFs or videos")
    p.add_argument("dst", help="output folder for the grid images")
    _grid_args(p, frame_size_default=128)
    p.add_argument("--overlap", type=_at_least_zero(int), default=0, help="frames shared by consecutive chunks")
    p.add_argument("--overwrite", action="store_true", help="replace grids already in DST")
    p.set_defaults(func=cmd_organise)

    p = sub.add_parser("train", help="train a stage-1 grid DiT or a stage-2 super-resolution DiT",
                       description="Train a stage-1 grid DiT, or with --stage 2 a per-frame super-resolution DiT; "
                                   "--out holds checkpoints/last.pt and metrics.jsonl.")
    p.add_argument("--data", required=True, help="dataset folder, organised grid folder, or builtin:bouncing / builtin:digits")
    p.add_argument("--model", default="DiT-T/4", choices=sorted(DiT_models), metavar="NAME",
                   help=f"model name: {', '.join(DiT_models)}")
    p.add_argument("--stage", type=int, choices=[1, 2], default=1,
                   help="1: grids of frames (default); 2: super-resolution of single frames, --frame-size being the "
                        "high-resolution side and --rows/--cols 1 or left out")
    p.add_argument("--scale", type=int, choices=SCALES, default=None, help="stage 2: high / low resolution (default 4)")
    p.add_argument("--degrade", type=_json_object, default=None, metavar="JSON",
                   help='stage 2: DegradeConfig fields of the training pairs, e.g. \'{"noise_std": [5, 10], '
                        '"blur_prob": 0, "order": "low-res"}\' (default: the official recipe)')
    p.add_argument("--no-residual", action="store_true",
                   help="stage 2: diffuse the frame itself, as the official model does, not its residual over bicubic")
    p.add_argument("--max-aug", type=_unit_interval, default=None,
                   help=f"stage 2: noise-augmentation levels of the conditioning image ~ U(0, MAX_AUG) (default {MAX_AUG})")
    _grid_args(p, frame_size_default=16)
    p.set_defaults(rows=None, cols=None)  # stage 1: 2x2; stage 2: 1x1, and any other value is refused
    p.add_argument("--steps", type=_positive(int), default=1000, help="optimizer steps (with --resume: the total)")
    p.add_argument("--out", required=True, help="run folder: checkpoints/ and metrics.jsonl")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument("--batch-size", type=_positive(int), default=32, help="grids per optimizer step per process")
    p.add_argument("--grad-accum", type=_positive(int), default=1, help="micro-batches per optimizer step")
    p.add_argument("--lr", type=_at_least_zero(float), default=3e-4, help="AdamW peak learning rate")
    p.add_argument("--warmup", type=_at_least_zero(int), default=100, help="warm-up optimizer steps")
    p.add_argument("--ema-decay", type=_unit_interval, default=0.999)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--schedule", choices=["linear", "cosine"], default="linear")
    p.add_argument("--prediction", choices=["eps", "v", "x0"], default="eps")
    p.add_argument("--loss-weighting", choices=["none", "min-snr"], default="none")
    p.add_argument("--learn-sigma", action="store_true", help="learned-range variance with the IDDPM hybrid loss")
    p.add_argument("--pos-embed", choices=["grid2d", "frame3d"], default="grid2d")
    p.add_argument("--model-kwargs", type=_json_object, default={}, metavar="JSON",
                   help='DiTConfig overrides of the named size, e.g. \'{"depth": 2, "hidden_size": 64, "num_heads": 2}\'')
    p.add_argument("--n-sequences", type=_positive(int), default=2000, help="sequences generated for builtin data")
    p.add_argument("--builtin", type=_json_object, default={}, metavar="JSON",
                   help='BouncingConfig fields for builtin:bouncing, e.g. \'{"radius": [3, 3], "colours": [255, 200, 60]}\'')
    p.add_argument("--init", help="checkpoint to start from (official DiT .pt or ours)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ckpt-every", type=_positive(int), default=250)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--vae", help="diffuse in the latents of this local diffusers AutoencoderKL (a save_pretrained "
                                 "folder, or a .safetensors/.ckpt file beside its config.json); default: pixels")
    p.add_argument("--vae-scale", type=_above_zero, default=None,
                   help="latent scale (default: the VAE config's scaling_factor, else 0.18215)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="sample a sequence of any length from a stage-1 checkpoint (and super-resolve it)",
                       description="Sample exactly --frames frames grid by grid; writes DIR/frames/000000.png ... "
                                   "and DIR/sequence.gif. With --sr-ckpt, the stage-1 frames go to DIR/frames_lr/ and "
                                   "DIR/sequence_lr.gif and their super-resolved versions to DIR/frames/ and "
                                   "DIR/sequence.gif, a batch at a time.")
    p.add_argument("--ckpt", required=True, help="stage-1 checkpoint (checkpoints/last.pt of a run)")
    p.add_argument("--frames", type=_positive(int), required=True, help="number of frames to write")
    p.add_argument("--out", required=True, help="output folder: frames/ and sequence.gif")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=_positive(int), default=50, help="denoising steps per grid")
    p.add_argument("--sampler", choices=["ddpm", "ddim"], default="ddim")
    p.add_argument("--eta", type=_unit_interval, default=0.0, help="DDIM eta")
    p.add_argument("--overlap", type=_at_least_zero(int), default=None,
                   help="conditioning frames per continuation grid (default: all but the last row)")
    p.add_argument("--interpolate", action="store_true", help="in-betweening pass between keyframe rows")
    p.add_argument("--resample", type=_positive(int), default=1, help="RePaint resampling per step (1 = replace once)")
    p.add_argument("--fps", type=_positive(int), default=8)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--overwrite", action="store_true", help="replace frames/ and sequence.gif already in --out")
    p.add_argument("--sr-ckpt", help="stage-2 checkpoint: super-resolve every frame (it must take the stage-1 frame size)")
    p.add_argument("--sr-steps", type=_positive(int), default=None,
                   help="stage 2: denoising steps per frame (default: --steps)")
    p.add_argument("--noise-level", type=_unit_interval, default=None,
                   help=f"stage 2: noise-augmentation level of the low-resolution frames (default {SAMPLE_AUG})")
    p.add_argument("--sr-batch", type=_positive(int), default=None,
                   help="stage 2: frames super-resolved at once (default 16)")
    p.add_argument("--vae", help="where the VAE of a latent-space model is now, for either stage (default: the path "
                                 "saved at training)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("upscale", help="super-resolve a folder of frames with a stage-2 checkpoint",
                       description="Super-resolve every image in --input (natural order; each must be the stage-2 "
                                   "input size) a batch at a time; writes DIR/frames/000000.png ... and DIR/sequence.gif.")
    p.add_argument("--ckpt", required=True, help="stage-2 checkpoint (checkpoints/last.pt of a --stage 2 run)")
    p.add_argument("--input", required=True, help="folder of low-resolution frames")
    p.add_argument("--out", required=True, help="output folder: frames/ and sequence.gif")
    p.add_argument("--noise-level", type=_unit_interval, default=SAMPLE_AUG,
                   help="noise-augmentation level of the low-resolution frames: raise it for rougher input")
    p.add_argument("--steps", type=_positive(int), default=50, help="denoising steps per frame")
    p.add_argument("--sampler", choices=["ddpm", "ddim"], default="ddim")
    p.add_argument("--eta", type=_unit_interval, default=0.0, help="DDIM eta")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=_positive(int), default=16, help="frames super-resolved at once")
    p.add_argument("--fps", type=_positive(int), default=8)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--overwrite", action="store_true", help="replace frames/ and sequence.gif already in --out")
    p.add_argument("--vae", help="where the VAE of a latent-space model is now (default: the path saved at training)")
    p.set_defaults(func=cmd_upscale)

    p = sub.add_parser("export", help="write a run's EMA weights as .safetensors with its configs")
    p.add_argument("--ckpt", required=True, help="training checkpoint (checkpoints/last.pt)")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--raw", action="store_true", help="export the raw weights instead of the EMA")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("demo", help="run the quickstart notebook and write its report")
    p.add_argument("--out", default="reports/quickstart")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("-p", "--param", action="append", metavar="NAME=VALUE", help="notebook parameter override")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None):
    """Run the command; returns the exit code (0, 2 for bad input, 130 when interrupted)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, or a usage error argparse has already printed
        return e.code
    try:
        args.func(args)
    except GriditError as e:
        message = " ".join(str(e).splitlines())
        print(f"gridit {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
