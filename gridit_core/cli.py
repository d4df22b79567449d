"""The ``gridit`` command: organise, train, sample, demo. Bad input ends with one line on stderr and exit code 2."""

import argparse
import sys
from pathlib import Path

from gridit_core.errors import GriditError

REPO_ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = REPO_ROOT / "notebooks" / "experiments" / "quickstart.ipynb"


def _positive(kind):
    def parse(text):
        value = kind(text)
        if value < 1:
            raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
        return value

    return parse


def _grid_args(p, frame_size_default=None):
    p.add_argument("--rows", type=_positive(int), default=2, help="grid rows (official: 4)")
    p.add_argument("--cols", type=_positive(int), default=2, help="grid columns (official: 4)")
    p.add_argument("--frame-size", type=_positive(int), default=frame_size_default, required=frame_size_default is None,
                   help="frame side in pixels (official: 128)")
    p.add_argument("--stride", type=_positive(int), default=1, help="take every K-th source frame")
    p.add_argument("--resize", choices=["stretch", "center-crop", "none"], default="stretch",
                   help="stretch (official, aspect not kept), center-crop, or none (frames must have the size)")


def cmd_organise(a):
    from gridit_core.organise import organise

    n = organise(a.src, a.dst, rows=a.rows, cols=a.cols, frame_size=a.frame_size, stride=a.stride,
                 overlap=a.overlap, resize=a.resize, overwrite=a.overwrite)
    print(f"wrote {n} grids to {a.dst}")


def cmd_train(a):
    from gridit_core.train import Trainer, TrainConfig

    diffusion = {"schedule": a.schedule, "prediction": a.prediction, "learn_sigma": a.learn_sigma,
                 "loss_weighting": a.loss_weighting}
    cfg = TrainConfig(
        data=a.data, model=a.model, rows=a.rows, cols=a.cols, frame_size=a.frame_size, stride=a.stride,
        resize=a.resize, pos_embed=a.pos_embed, steps=a.steps, batch_size=a.batch_size, grad_accum=a.grad_accum,
        lr=a.lr, warmup=a.warmup, ema_decay=a.ema_decay, precision=a.precision, diffusion=diffusion,
        init=a.init or "", seed=a.seed, ckpt_every=a.ckpt_every, device=a.device,
    )
    metrics = Trainer(cfg, a.out, resume=a.resume, overwrite=a.overwrite).fit()
    print(f"step {metrics.get('step')}: loss {metrics.get('loss', float('nan')):.4f}; checkpoint in {Path(a.out) / 'checkpoints'}")


def cmd_sample(a):
    from gridit_core.sequence import sample_sequence
    from gridit_core.train import load_trained, resolve_device

    device = resolve_device(a.device)
    model, diffusion, cfg = load_trained(a.ckpt, device=device)
    out = sample_sequence(
        model, diffusion, a.frames, rows=cfg.rows, cols=cfg.cols, out_dir=a.out, overwrite=a.overwrite,
        overlap=a.overlap, interpolate=a.interpolate, sampler=a.sampler, steps=a.steps, eta=a.eta,
        resample=a.resample, seed=a.seed, device=device, fps=a.fps,
    )
    print(f"wrote {a.frames} frames to {Path(out) / 'frames'} and {Path(out) / 'sequence.gif'}")


def cmd_demo(a):
    import papermill as pm

    out = Path(a.out)
    from gridit_core.sequence import prepare_output_dir

    prepare_output_dir(out, a.overwrite, ["index.html", "metrics.json", "quickstart.ipynb"])
    params = {"OUT_DIR": str(out.resolve())}
    for item in a.param or []:
        key, _, value = item.partition("=")
        params[key] = _literal(value)
    pm.execute_notebook(str(QUICKSTART), str(out / "quickstart.ipynb"), parameters=params, kernel_name="python3",
                        cwd=str(QUICKSTART.parent), progress_bar=True)
    print(f"report: {out / 'index.html'}")


def _literal(text):
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def build_parser():
    from gridit_core.models import DiT_models

    parser = argparse.ArgumentParser(prog="gridit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("organise", help="convert a sequence dataset into grid images")
    p.add_argument("src", help="folder of sequence folders of frames, GIFs or videos")
    p.add_argument("dst", help="output folder for the grid images")
    _grid_args(p, frame_size_default=128)
    p.add_argument("--overlap", type=int, default=0, help="frames shared by consecutive chunks")
    p.add_argument("--overwrite", action="store_true", help="replace grids already in DST")
    p.set_defaults(func=cmd_organise)

    p = sub.add_parser("train", help="train a stage-1 grid DiT")
    p.add_argument("--data", required=True, help="dataset folder, organised grid folder, or builtin:bouncing / builtin:digits")
    p.add_argument("--model", default="DiT-T/4", choices=sorted(DiT_models), metavar="NAME", help="model name, e.g. DiT-T/4 or DiT-XL/2")
    _grid_args(p, frame_size_default=16)
    p.add_argument("--steps", type=_positive(int), default=1000, help="optimizer steps")
    p.add_argument("--out", required=True, help="run folder: checkpoints/ and metrics.jsonl")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument("--batch-size", type=_positive(int), default=32, help="grids per optimizer step per process")
    p.add_argument("--grad-accum", type=_positive(int), default=1, help="micro-batches per optimizer step")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup", type=int, default=100, help="warm-up optimizer steps")
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--schedule", choices=["linear", "cosine"], default="linear")
    p.add_argument("--prediction", choices=["eps", "v", "x0"], default="eps")
    p.add_argument("--loss-weighting", choices=["none", "min-snr"], default="none")
    p.add_argument("--learn-sigma", action="store_true", help="learned-range variance with the IDDPM hybrid loss")
    p.add_argument("--pos-embed", choices=["grid2d", "frame3d"], default="grid2d")
    p.add_argument("--init", help="checkpoint to start from (official DiT .pt or ours)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ckpt-every", type=_positive(int), default=250)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="sample a sequence of any length from a stage-1 checkpoint")
    p.add_argument("--ckpt", required=True, help="stage-1 checkpoint (checkpoints/last.pt of a run)")
    p.add_argument("--frames", type=_positive(int), required=True, help="number of frames to write")
    p.add_argument("--out", required=True, help="output folder: frames/ and sequence.gif")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=_positive(int), default=50, help="denoising steps per grid")
    p.add_argument("--sampler", choices=["ddpm", "ddim"], default="ddim")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta")
    p.add_argument("--overlap", type=int, default=None, help="conditioning frames per continuation grid (default: all but the last row)")
    p.add_argument("--interpolate", action="store_true", help="in-betweening pass between keyframe rows")
    p.add_argument("--resample", type=_positive(int), default=1, help="RePaint resampling per step (1 = replace once)")
    p.add_argument("--fps", type=_positive(int), default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("demo", help="run the quickstart notebook and write its report")
    p.add_argument("--out", default="reports/quickstart")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("-p", "--param", action="append", metavar="NAME=VALUE", help="notebook parameter override")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except GriditError as e:
        print(f"gridit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
