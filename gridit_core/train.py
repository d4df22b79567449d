"""Training, stage 1 (grids) and stage 2 (super-resolution): one trainer for a laptop CPU and for ``torchrun`` on GPUs.

What the official code gets wrong and this trainer does not (see GRIDIT_NOTES.md): EMA and the LR schedule
step once per *optimizer* step, not per micro-batch; DDP skips the gradient all-reduce (``no_sync``) on all
but the last micro-batch; checkpoints are written atomically and resume exactly (weights, EMA, optimizer,
scheduler, step, data order and random state). Stage 2 differs only in its model (``superres.build_sr_model``), its
data (single frames: a 1x1 grid) and its loss (``superres.sr_training_losses``).
"""

import contextlib
import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from gridit_core.builtin import BouncingConfig
from gridit_core.ckpt import load_file, save_atomic
from gridit_core.data import open_dataset
from gridit_core.degrade import DegradeConfig
from gridit_core.diffusion import Diffusion, DiffusionConfig
from gridit_core.errors import GriditError
from gridit_core.models import DiT, DiTConfig, build_model
from gridit_core.organise import GridFolder, is_grid_folder
from gridit_core.superres import MAX_AUG, build_sr_model, check_scale, sr_training_losses
from gridit_core.vae import LatentCodec, encode_grid
from gridit_core.weights import load_checkpoint

CHECKPOINT_KIND = "gridit-stage1"
CHECKPOINT_KINDS = {1: CHECKPOINT_KIND, 2: "gridit-stage2"}
_WRONG_STAGE = {  # why a checkpoint of the other stage is refused, and where it belongs
    1: "is a stage-1 (grid) checkpoint; use it with gridit sample --ckpt",
    2: "is a stage-2 (super-resolution) checkpoint; use it with --sr-ckpt or gridit upscale",
}


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved in every checkpoint."""

    data: str = "builtin:bouncing"  # a dataset folder, a GIF/video, or builtin:bouncing / builtin:digits
    model: str = "DiT-T/4"  # a name from gridit_core.models.DiT_models
    rows: int = 2  # grid rows
    cols: int = 2  # grid columns
    frame_size: int = 16  # each cell is frame_size x frame_size pixels
    stride: int = 1  # temporal subsampling of the source frames
    resize: str = "stretch"  # stretch (official) | center-crop | none
    pos_embed: str = "grid2d"  # grid2d (official) | frame3d
    steps: int = 1000  # optimizer steps
    batch_size: int = 32  # grids per optimizer step per process (split into grad_accum micro-batches)
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 3e-4  # AdamW peak learning rate
    weight_decay: float = 0.0
    warmup: int = 100  # optimizer steps of linear warm-up
    ema_decay: float = 0.999  # per optimizer step
    ema_warmup: bool = True  # decay min(ema_decay, (1+step)/(10+step)): early EMA weights forget the random init
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    precision: str = "auto"  # auto (bf16 on CUDA when supported, else fp32) | fp32 | bf16
    diffusion: dict = field(default_factory=dict)  # DiffusionConfig fields
    model_kwargs: dict = field(default_factory=dict)  # extra DiTConfig fields
    n_sequences: int = 2000  # sequences generated for a builtin dataset
    builtin: dict = field(default_factory=dict)  # BouncingConfig fields for builtin:bouncing
    init: str = ""  # checkpoint to start from (official DiT or ours); empty = random init
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 250
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    stage: int = 1  # 1: grids of frames; 2: per-frame super-resolution (rows = cols = 1, frame_size is the HR side)
    scale: int = 4  # stage 2: high / low resolution, 2 or 4
    max_aug: float = MAX_AUG  # stage 2: noise-augmentation levels of the conditioning image ~ U(0, max_aug)
    degrade: dict = field(default_factory=dict)  # stage 2: DegradeConfig fields (scale comes from ``scale``)
    residual: bool = True  # stage 2: diffuse hr minus the bicubic upsample of its low-resolution frame
    vae: str = ""  # a local diffusers AutoencoderKL (folder or file): diffuse in its latent space; "" = pixel space
    vae_scale: float | None = None  # latent scale; None = the VAE config's scaling_factor (0.18215 if it names none)

    def __post_init__(self):
        if self.stage not in CHECKPOINT_KINDS:
            raise GriditError(f"stage must be 1 or 2, got {self.stage!r}")
        if self.stage == 2:
            check_scale(self.scale)
            if self.frame_size % self.scale:
                raise GriditError(f"frame size {self.frame_size} is not divisible by the scale factor {self.scale}")
            if not 0 <= self.max_aug <= 1:
                raise GriditError(f"max_aug must lie in [0, 1], got {self.max_aug}")
            if self.degrade.get("scale", self.scale) != self.scale:
                raise GriditError(f"degrade scale {self.degrade['scale']} differs from the training scale {self.scale}")
            try:
                DegradeConfig(**{**self.degrade, "scale": self.scale})  # its own checks, now rather than mid-run
            except TypeError as e:
                known = ", ".join(f.name for f in fields(DegradeConfig) if f.name != "scale")
                raise GriditError(f"degrade: {e}; known fields: {known}") from None
            self.rows = self.cols = 1  # frames are independent samples in stage 2
        if self.steps < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise GriditError("steps, batch size and grad_accum must be positive")
        if self.batch_size % self.grad_accum:
            raise GriditError(f"batch size {self.batch_size} is not divisible by grad_accum {self.grad_accum}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise GriditError(f"unknown precision {self.precision!r}: use auto, fp32 or bf16")

    @classmethod
    def from_dict(cls, d):
        """A saved config; fields it predates take their defaults, except ``residual``: stage-2 runs saved before it
        existed diffused the frame itself."""
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if d.get("stage") == 2:
            d.setdefault("residual", False)
        return cls(**d)


def resolve_device(name="auto"):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_model_and_diffusion(cfg: TrainConfig, codec=None):
    """The DiT and the diffusion process a config describes; ``codec`` (from ``load_codec``, needed when ``cfg.vae``
    is set) sizes the model for its latents: ``latent_channels`` channels, frames ``downsample_factor`` times smaller."""
    if cfg.vae and codec is None:
        raise GriditError("a latent-space config needs its codec (train.load_codec) to size the model")
    channels, factor = (codec.latent_channels, codec.downsample_factor) if codec is not None else (3, 1)
    diffusion = Diffusion(DiffusionConfig(**cfg.diffusion))
    if cfg.frame_size % factor:
        raise GriditError(f"frame size {cfg.frame_size} is not divisible by the VAE's downsampling factor {factor}")
    side = cfg.frame_size // factor
    try:
        if cfg.stage == 2:
            model = build_sr_model(
                cfg.model, cfg.frame_size, cfg.scale, channels=channels, factor=factor,
                learn_sigma=diffusion.config.learn_sigma, pos_embed=cfg.pos_embed, **cfg.model_kwargs,
            )  # fmt: skip
        else:
            model = build_model(
                cfg.model, input_size=(cfg.rows * side, cfg.cols * side), in_channels=channels, rows=cfg.rows,
                cols=cfg.cols, pos_embed=cfg.pos_embed, learn_sigma=diffusion.config.learn_sigma, **cfg.model_kwargs,
            )  # fmt: skip
    except GriditError as e:
        if factor == 1:
            raise
        raise GriditError(f"{e} (the VAE's latents of {cfg.frame_size}px frames are {side}px)") from None
    return model, diffusion


def load_codec(cfg: TrainConfig, model=None, *, vae=None, device="cpu"):
    """The codec a run diffuses in: None for pixel space, else a ``vae.LatentCodec`` of ``vae`` (a path that
    overrides the one saved in ``cfg``, e.g. on another machine) or of ``cfg.vae``.

    With ``model``, the VAE's latent channels and downsampling factor are checked against it and ``cfg.frame_size``.
    """
    if not cfg.vae:
        if vae is not None:
            raise GriditError(f"--vae {vae}: this stage-{cfg.stage} model was trained in pixel space, not in a VAE's latents")
        return None
    path = Path(vae if vae is not None else cfg.vae).expanduser()
    if vae is None and model is not None and not path.exists():  # a trained model whose VAE has moved
        raise GriditError(f"this stage-{cfg.stage} model was trained in the latents of the VAE {path}, which is not "
                          "there; pass --vae PATH")  # fmt: skip
    codec = LatentCodec.from_path(path, device=device, scale=cfg.vae_scale)
    if model is not None:
        mc = model.config
        channels = mc.in_channels // 2 if cfg.stage == 2 else mc.in_channels
        side = mc.image_size[0] if cfg.stage == 2 else mc.frame_size[0]
        if (codec.latent_channels, side * codec.downsample_factor) != (channels, cfg.frame_size):
            raise GriditError(
                f"the VAE {path} has {codec.latent_channels} latent channels at 1/{codec.downsample_factor} size, but "
                f"the model was trained on {channels} channels of {side}px for {cfg.frame_size}px frames"
            )
    return codec


def training_data(cfg: TrainConfig):
    """The grids a config trains on: an organised grid folder, or grids cut from sequences on the fly (1x1: stage 2)."""
    if is_grid_folder(cfg.data):
        return GridFolder(cfg.data, cfg.rows, cfg.cols, cfg.frame_size)
    bouncing = BouncingConfig.for_frame_size(cfg.frame_size, **cfg.builtin) if cfg.builtin else None
    return open_dataset(
        cfg.data, cfg.rows, cfg.cols, cfg.frame_size, stride=cfg.stride, resize=cfg.resize,
        split="train", seed=cfg.seed, n_sequences=cfg.n_sequences, bouncing=bouncing,
    )


def lr_factor(step, warmup):
    """Linear warm-up to the peak learning rate, then constant (the official schedule, stepped correctly)."""
    return min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0


@torch.no_grad()
def update_ema(ema, model, decay):
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


class InfiniteBatches:
    """Deterministic batches: epoch ``e`` is a permutation seeded by ``(seed, e)``; rank ``r`` takes every ``world``-th item.

    The position is derived from the number of samples drawn, so resuming needs only the step count.
    """

    def __init__(self, dataset, batch_size, seed, rank=0, world=1):
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.rank, self.world = rank, world
        self.per_epoch = len(dataset) // world
        if self.per_epoch < 1:
            raise GriditError(f"the dataset has {len(dataset)} grids, fewer than the {world} processes")
        self.drawn = 0

    def _order(self, epoch):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.dataset), generator=g)[self.rank :: self.world][: self.per_epoch]

    def next(self):
        items, order, order_epoch = [], None, -1
        for k in range(self.drawn, self.drawn + self.batch_size):
            epoch, pos = divmod(k, self.per_epoch)
            if epoch != order_epoch:
                order, order_epoch = self._order(epoch), epoch
                if hasattr(self.dataset, "set_epoch"):
                    self.dataset.set_epoch(epoch)
            items.append(self.dataset[int(order[pos])])
        self.drawn += self.batch_size
        return torch.stack(items)


def _dist_info():
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device):
    """Join the process group that ``torchrun`` describes in the environment (gloo on CPU, nccl on CUDA)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
    return device


class Trainer:
    """Trains a grid DiT (stage 1) or a super-resolution DiT (stage 2); ``Trainer(cfg, out_dir).fit()``.

    ``out_dir`` holds ``checkpoints/`` and ``metrics.jsonl``.
    """

    def __init__(self, cfg: TrainConfig, out_dir, *, resume=False, overwrite=False, dataset=None, codec=None):
        self.cfg, self.out_dir = cfg, Path(out_dir)
        self.ckpt_path = self.out_dir / "checkpoints" / "last.pt"
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self.device = init_distributed(resolve_device(cfg.device))
        self.rank, self.world = _dist_info()
        has_run = self.ckpt_path.exists() or self.metrics_path.exists()
        if has_run and not (resume or overwrite):
            raise GriditError(f"{self.out_dir} already holds a training run; pass --resume to continue it or --overwrite to replace it")

        torch.manual_seed(cfg.seed)
        self.codec = codec if codec is not None else load_codec(cfg, device=self.device)
        self.dataset = dataset if dataset is not None else training_data(cfg)
        model, self.diffusion = build_model_and_diffusion(cfg, self.codec)
        if cfg.stage == 2:
            degrade = DegradeConfig(**{**cfg.degrade, "scale": cfg.scale})
            self.loss_fn = lambda net, x: sr_training_losses(
                self.diffusion, net, x, degrade, self.generator, cfg.max_aug, cfg.residual, self.codec
            )
        else:
            self.loss_fn = lambda net, x: self.diffusion.training_losses(net, self._latents(x), generator=self.generator)
        if cfg.init:
            report = load_checkpoint(model, cfg.init)
            self.log_line(f"initialised from {cfg.init}: {report}")
        self.model = model.to(self.device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(s, cfg.warmup))
        self.ddp = None
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.micro = cfg.batch_size // cfg.grad_accum
        self.batches = InfiniteBatches(self.dataset, self.micro, cfg.seed, self.rank, self.world)
        self.generator = torch.Generator(self.device).manual_seed(cfg.seed * 7919 + self.rank)
        self.step = 0
        if resume and self.ckpt_path.exists():
            self._restore(load_file(self.ckpt_path, map_location=self.device))
        elif has_run and self.rank == 0:  # replaced only now that data and model were built without error
            self.ckpt_path.unlink(missing_ok=True)
            self.metrics_path.unlink(missing_ok=True)
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def _latents(self, grids):
        """Stage-1 grids ``(B, 3, GH, GW)`` as the model sees them: pixels, or each frame's latents tiled again."""
        if self.codec is None:
            return grids
        with torch.autocast(grids.device.type, enabled=False):
            return encode_grid(self.codec, grids.float(), self.cfg.rows, self.cfg.cols)  # (B, C, GH/f, GW/f)

    # ---- bookkeeping -------------------------------------------------------------------------
    def log_line(self, text):
        if self.rank == 0:
            tqdm.write(text)

    def _autocast(self):
        want = self.cfg.precision
        if want == "auto":
            want = "bf16" if self.device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
        if want == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def state_dict(self):
        return {
            "kind": CHECKPOINT_KINDS[self.cfg.stage],
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
            "step": self.step,
            "samples_drawn": self.batches.drawn,
            "generator": self.generator.get_state(),
            "config": asdict(self.cfg),
            "model_config": asdict(self.model.config),
            "diffusion_config": asdict(self.diffusion.config),
        }

    def _restore(self, state):
        if state.get("kind") != CHECKPOINT_KINDS[self.cfg.stage]:
            raise GriditError(f"{self.ckpt_path} is not a stage-{self.cfg.stage} training checkpoint")
        try:  # through DiTConfig, so that fields added since the run started take their defaults
            saved = asdict(DiTConfig(**state["model_config"]))
        except (TypeError, GriditError):
            saved = None
        if saved != asdict(self.model.config):
            raise GriditError(f"cannot resume {self.ckpt_path}: it was trained with another model configuration")
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.step = state["step"]
        self.batches.drawn = state["samples_drawn"]
        self.generator.set_state(state["generator"].cpu() if self.device.type != "cpu" else state["generator"])
        self.log_line(f"resumed {self.ckpt_path} at step {self.step}")

    def save(self):
        if self.rank == 0:
            save_atomic(self.state_dict(), self.ckpt_path)

    # ---- training ----------------------------------------------------------------------------
    def train_step(self):
        """One optimizer step over ``grad_accum`` micro-batches; returns the mean loss and grad norm."""
        net = self.ddp or self.model
        self.model.train()
        total = 0.0
        for i in range(self.cfg.grad_accum):
            x = self.batches.next().to(self.device)  # (B, C, GH, GW)
            last = i == self.cfg.grad_accum - 1
            sync = contextlib.nullcontext() if (self.ddp is None or last) else self.ddp.no_sync()
            with sync:
                with self._autocast():
                    loss = self.loss_fn(net, x)["loss"].mean()
                (loss / self.cfg.grad_accum).backward()
            total += loss.item() / self.cfg.grad_accum
        clip = self.cfg.grad_clip if self.cfg.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip).item()
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        decay = self.cfg.ema_decay
        if self.cfg.ema_warmup:
            decay = min(decay, (1 + self.step) / (10 + self.step))
        update_ema(self.ema, self.model, decay)
        self.step += 1
        return total, grad_norm

    def fit(self, progress=True, callback=None):
        """Train until ``cfg.steps``; returns the last logged metrics. ``callback(metrics)`` runs at each log."""
        cfg = self.cfg
        bar = tqdm(total=cfg.steps, initial=self.step, desc="training", unit="step", disable=not progress or self.rank)
        last, window, t0 = {}, [], time.perf_counter()
        while self.step < cfg.steps:
            loss, grad_norm = self.train_step()
            window.append(loss)
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                elapsed = time.perf_counter() - t0
                last = {
                    "step": self.step,
                    "loss": sum(window) / len(window),
                    "grad_norm": grad_norm,
                    "lr": self.sched.get_last_lr()[0],
                    "steps_per_s": len(window) / elapsed,
                }
                window, t0 = [], time.perf_counter()
                bar.set_postfix(loss=f"{last['loss']:.4f}")
                if self.rank == 0:
                    with open(self.metrics_path, "a") as f:
                        f.write(json.dumps(last) + "\n")
                if callback is not None:
                    callback(last)
            if self.step % cfg.ckpt_every == 0 or self.step == cfg.steps:
                self.save()
        bar.close()
        return last


def read_metrics(path):
    """The metrics log as a list of dicts."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def export_weights(ckpt_path, out_path, *, use_ema=True):
    """Write a run's (EMA) weights as ``.safetensors``, with the configs in its metadata so it samples on its own."""
    from safetensors.torch import save_file

    state = _trained_state(ckpt_path)
    weights = {k: v.contiguous() for k, v in state["ema" if use_ema else "model"].items()}
    meta = {"kind": state["kind"], "step": str(state["step"])}
    meta.update({k: json.dumps(state[k]) for k in ("config", "model_config", "diffusion_config")})
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    save_file(weights, tmp, metadata=meta)
    tmp.replace(out_path)
    return out_path


def _trained_state(path, stage=None):
    """One of our checkpoints as a dict with ``kind``, ``config``, ``model_config``, ``diffusion_config`` and weights.

    ``stage`` (1 or 2) refuses the other stage's checkpoints; None takes either.
    """
    path = Path(path)
    what = f"stage-{stage}" if stage else "stage-1 or stage-2"
    kinds = [CHECKPOINT_KINDS[stage]] if stage else list(CHECKPOINT_KINDS.values())
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        weights = load_file(path)
        with safe_open(path, "pt") as f:
            meta = f.metadata() or {}
        kind = meta.get("kind")
        _check_kind(path, kind, stage)
        if kind not in kinds:
            raise GriditError(f"{path} has no GriDiT {what} metadata; load it into a model with weights.load_checkpoint instead")
        state = {k: json.loads(meta[k]) for k in ("config", "model_config", "diffusion_config")}
        return {**state, "ema": weights, "model": weights, "step": int(meta.get("step", 0)), "kind": kind}
    state = load_file(path, map_location="cpu")
    kind = state.get("kind") if isinstance(state, dict) else None
    _check_kind(path, kind, stage)
    if kind not in kinds:
        raise GriditError(f"{path} is not a GriDiT {what} checkpoint (no kind {' or '.join(map(repr, kinds))})")
    return state


def _check_kind(path, kind, stage):
    """A clear refusal when ``path`` holds the other stage's checkpoint."""
    found = {k: s for s, k in CHECKPOINT_KINDS.items()}.get(kind)
    if stage and found and found != stage:
        raise GriditError(f"{path} {_WRONG_STAGE[found]}")


def _rebuild(path, state, use_ema, device):
    """``(model, diffusion, config)`` from a checkpoint state, the model in eval mode."""
    what = {k: f"stage-{s}" for s, k in CHECKPOINT_KINDS.items()}[state["kind"]]
    try:
        cfg = TrainConfig.from_dict(state["config"])
        diffusion = Diffusion(DiffusionConfig(**state["diffusion_config"]))
        model = DiT(DiTConfig(**state["model_config"]))
        model.load_state_dict(state["ema" if use_ema else "model"])
    except (KeyError, TypeError, RuntimeError) as e:
        raise GriditError(f"{path} is an incomplete or inconsistent {what} checkpoint: {str(e).splitlines()[0]}") from None
    return model.to(device).eval(), diffusion, cfg


def load_trained(path, *, use_ema=True, device="cpu"):
    """Rebuild a stage-1 model (EMA weights by default) and its diffusion from one of our checkpoints.

    ``path`` is a training checkpoint (``checkpoints/last.pt``) or an exported ``.safetensors``.
    Returns ``(model, diffusion, config)`` with the model in eval mode.
    """
    return _rebuild(path, _trained_state(path, stage=1), use_ema, device)


def load_sr(path, *, use_ema=True, device="cpu"):
    """Rebuild a stage-2 (super-resolution) model, its diffusion and config (``cfg.scale``) from one of our checkpoints.

    ``path`` as for ``load_trained``; the model goes to ``superres.upscale_frames``.
    """
    return _rebuild(path, _trained_state(path, stage=2), use_ema, device)
