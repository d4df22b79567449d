"""Training, stage 1 (grids) and stage 2 (super-resolution): one trainer for a laptop CPU and for ``torchrun`` on GPUs.

What the official code gets wrong and this trainer does not: EMA and the LR schedule
step once per *optimizer* step, not per micro-batch; DDP skips the gradient all-reduce (``no_sync``) on all
but the last micro-batch; checkpoints are written atomically and resume exactly (weights, EMA, optimizer,
scheduler, step, data order and random state). Stage 2 differs only in its model (``models.sr.build_sr_model``), its
data (single frames: a 1x1 grid) and its loss (``training.losses.sr_training_losses``).
"""

import contextlib
import copy
import functools
import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from gridit_core.data.builtin import BouncingConfig
from gridit_core.data.datasets import open_clips, open_dataset
from gridit_core.data.degrade import DegradeConfig
from gridit_core.data.organise import GridFolder, is_grid_folder
from gridit_core.errors import GriditError
from gridit_core.models.codec import encode_grid
from gridit_core.models.weights import load_weights
from gridit_core.sampling import get_family
from gridit_core.training.checkpoints import build_model_and_diffusion, load_codec
from gridit_core.training.config import CHECKPOINT_KINDS, TrainConfig
from gridit_core.training.losses import sequence_losses, sr_training_losses
from gridit_core.util.device import autocast, resolve_device
from gridit_core.util.io import load_file, save_atomic


def training_data(cfg: TrainConfig):
    """What a config trains on: grids from an organised grid folder or cut from sequences on the fly (1x1: stage 2),
    or, for the sequence families, clips of ``cfg.frames`` frames."""
    on_grids = get_family(cfg.arch).on_grids
    if is_grid_folder(cfg.data):
        if not on_grids:
            raise GriditError(f"{cfg.data} holds grid images; a {cfg.arch} model trains on sequences of frames")
        return GridFolder(cfg.data, cfg.rows, cfg.cols, cfg.frame_size)
    bouncing = BouncingConfig.for_frame_size(cfg.frame_size, **cfg.builtin) if cfg.builtin else None
    common = dict(stride=cfg.stride, resize=cfg.resize, split="train", seed=cfg.seed, n_sequences=cfg.n_sequences,
                  bouncing=bouncing)  # fmt: skip
    if on_grids:
        return open_dataset(cfg.data, cfg.rows, cfg.cols, cfg.frame_size, **common)
    clips = open_clips(cfg.data, cfg.frames, cfg.frame_size, **common)
    shortest = min(clips.sequences, key=len)
    if len(shortest) < clips.span:
        raise GriditError(f"--frames {cfg.frames} (with stride {cfg.stride}: {clips.span} source frames) is longer than "
                          f"the shortest training sequence, {shortest.name} ({len(shortest)} frames)")  # fmt: skip
    return clips


def lr_factor(step, warmup, decay="constant", steps=None):
    """The learning rate of optimizer step ``step`` (from 0) over the peak: a linear warm-up reaching the peak at step
    ``warmup - 1``, then constant (the official schedule, stepped correctly) or, with ``decay="cosine"``, a half
    cosine from the peak that would reach 0 at step ``steps`` (so the last step, ``steps - 1``, still moves)."""
    peak = max(warmup - 1, 0)
    if step < peak:
        return (step + 1) / warmup
    if decay == "constant":
        return 1.0
    done = min(1.0, (step - peak) / max(1, steps - peak))
    return 0.5 * (1 + math.cos(math.pi * done))


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
            self.loss_fn = lambda net, x: sequence_losses(
                self.diffusion, net, self._latents(x), cfg.noise, rows=cfg.rows, cols=cfg.cols, generator=self.generator
            )
        if cfg.init:
            report = load_weights(model, cfg.init)
            self.log_line(f"initialised from {cfg.init}: {report}")
        self.model = model.to(self.device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        factor = functools.partial(lr_factor, warmup=cfg.warmup, decay=cfg.lr_decay, steps=cfg.steps)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, factor)
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

    def _latents(self, x):
        """Stage-1 grids ``(B, 3, GH, GW)`` or clips ``(B, T, 3, H, W)`` as the model sees them: pixels, or each
        frame's latents (tiled again for grids)."""
        with torch.autocast(x.device.type, enabled=False):
            if x.ndim == 5:
                return self.codec.encode_batched(x.float().flatten(0, 1), 64).unflatten(0, x.shape[:2])  # (B, T, C, h, w)
            return encode_grid(self.codec, x.float(), self.cfg.rows, self.cfg.cols)  # (B, C, GH/f, GW/f)

    # ---- bookkeeping -------------------------------------------------------------------------
    def log_line(self, text):
        if self.rank == 0:
            tqdm.write(text)

    def state_dict(self):
        return {
            "kind": CHECKPOINT_KINDS[self.cfg.stage],
            "arch": self.model.arch,
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
        try:  # through the config class, so that fields added since the run started take their defaults
            saved = asdict(self.model.config_class(**state["model_config"]))
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
                with autocast(self.device, self.cfg.precision):
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
