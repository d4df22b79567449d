"""Speed of the quickstart configuration: training steps/s, sampling seconds per frame, and the DiT step against a
plain full-attention transformer of the same shapes built from timm; and stage 2 (x4 super-resolution) beside it.

    python benchmarks/bench.py [--quick] [--out reports/bench/bench.json] [--device cpu|cuda]

Every time is the median of repeats, taken with ``time.perf_counter`` after warm-up (and ``cuda.synchronize`` on a
GPU). Variants that are compared are timed round-robin, one call of each in turn, so a noisy neighbour on a shared
machine slows them alike. See benchmarks/README.md for what each number means.
"""

import argparse
import contextlib
import dataclasses
import datetime
import importlib
import json
import math
import os
import platform
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import timm
import torch
import torch.nn as nn
from timm.layers import GELUTanh, Mlp, PatchEmbed
from timm.models.vision_transformer import Attention

from gridit_core.models.attention_maps import attention_modules, capture_inputs, explicit_attention
from gridit_core.sampling import sample_sequence
from gridit_core.sampling.grids import SequencePlan, default_overlap
from gridit_core.sampling.upscale import SAMPLE_AUG, upscale_frames
from gridit_core.training import TrainConfig, Trainer
from gridit_core.util.device import autocast as autocast_ctx
from gridit_core.util.device import resolve_device, resolve_precision
from gridit_core.util.io import write_text_atomic

TOLERANCE = 1.10  # ours may be 10% slower than the fastest reference before `passes` fails: timing noise

FULL = dict(train_warmup=3, train_steps=20, frames=16, sample_steps=50, sample_repeats=3, compare_warmup=3,
            compare_repeats=15, sr_batch=16)  # fmt: skip
QUICK = dict(train_warmup=1, train_steps=3, frames=8, sample_steps=10, sample_repeats=1, compare_warmup=1,
             compare_repeats=3, sr_batch=4)  # fmt: skip


def quickstart_config(name="QUICKSTART", default=TrainConfig):
    """A quickstart TrainConfig, ``gridit_core.experiments.recipes.<name>``, when that module exists, else ``default()``."""
    try:
        module = importlib.import_module("gridit_core.experiments.recipes")
    except ModuleNotFoundError as err:
        if err.name != "gridit_core.experiments.recipes":  # the module exists but is broken: say so
            raise
        module = None
    cfg = getattr(module, name, None)
    if cfg is not None:
        return cfg, f"gridit_core.experiments.recipes.{name}"
    return default(), f"{default.__module__}.{default.__name__}()"


def stage2_default():
    return TrainConfig(stage=2, scale=4, frame_size=64, model="DiT-N/4", model_kwargs={"patch_size": 8})


def machine_info(device):
    cpu = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {
        "torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version(),
        "platform": platform.platform(), "device": str(device), "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "cpu_model": cpu or platform.processor() or None,
    }  # fmt: skip
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_round_robin(fns, device, *, warmup, repeats):
    """Median seconds per call of each function in ``fns`` (a dict), calling them in turn ``repeats`` times."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def autocast_for(device, precision):
    """``(precision, context factory)``: the autocast the trainer uses for ``precision``."""
    return resolve_precision(device, precision), partial(autocast_ctx, device, precision)


# ---------------------------------------------------------------------------- the plain reference


class PlainDiTBlock(nn.Module):
    """A textbook adaLN-Zero block from timm's Attention and Mlp: modulation written the obvious way."""

    def __init__(self, d, heads, mlp_ratio, fused_attn):
        super().__init__()
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(d, heads, qkv_bias=True)
        self.attn.fused_attn = fused_attn  # timm reads this flag on every forward
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(d, int(d * mlp_ratio), act_layer=GELUTanh)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))

    def forward(self, x, c):
        s1, sc1, g1, s2, sc2, g2 = [m.unsqueeze(1) for m in self.ada(c).chunk(6, dim=1)]  # 6 x (N, 1, D)
        x = x + g1 * self.attn(self.norm1(x) * (1 + sc1) + s1)  # (N, L, D)
        return x + g2 * self.mlp(self.norm2(x) * (1 + sc2) + s2)  # (N, L, D)


class PlainDiT(nn.Module):
    """The straightforward implementation with our DiT's shapes: timm patch embedding, attention and MLP, plain adaLN."""

    def __init__(self, dit, fused_attn=True):
        super().__init__()
        cfg = dit.config
        d, self.patch, self.out_channels = cfg.hidden_size, cfg.patch_size, dit.out_channels
        self.token_grid = dit.layout.token_grid
        self.patch_embed = PatchEmbed(cfg.image_size, cfg.patch_size, cfg.in_channels, d)
        self.pos_embed = nn.Parameter(torch.zeros(1, dit.layout.num_tokens, d))
        self.t_mlp = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))
        self.blocks = nn.ModuleList(PlainDiTBlock(d, cfg.num_heads, cfg.mlp_ratio, fused_attn) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.head = nn.Linear(d, cfg.patch_size**2 * self.out_channels)

    def forward(self, x, t):
        freqs = torch.exp(-math.log(10000) * torch.arange(128, device=x.device) / 128)  # (128,)
        angles = t.float()[:, None] * freqs[None]  # (N, 128)
        c = self.t_mlp(torch.cat([angles.cos(), angles.sin()], dim=1))  # (N, D)
        x = self.patch_embed(x) + self.pos_embed  # (N, L, D)
        for block in self.blocks:
            x = block(x, c)  # (N, L, D)
        shift, scale = self.final_ada(c).chunk(2, dim=1)  # (N, D) each
        x = self.head(self.norm(x) * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1))  # (N, L, p*p*C_out)
        (gh, gw), p, ch = self.token_grid, self.patch, self.out_channels
        x = x.reshape(x.shape[0], gh, gw, p, p, ch).permute(0, 5, 1, 3, 2, 4)  # (N, C_out, gh, p, gw, p)
        return x.reshape(x.shape[0], ch, gh * p, gw * p)  # (N, C_out, H, W)


def fwd_bwd(net, x, target, autocast, t=None):
    """One forward and backward pass of ``net`` on ``x`` with an MSE loss; a closure for the timer."""

    def step():
        with autocast():
            out = net(x) if t is None else net(x, t)
            loss = (out.float() - target).pow(2).mean()
        loss.backward()
        net.zero_grad(set_to_none=True)

    return step


def sdpa_calls(fn):
    """How many times ``fn`` reaches ``aten::scaled_dot_product_attention``, read from the profiler."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:  # ops are dispatched on the CPU
        fn()
    return sum(e.count for e in prof.key_averages() if e.key == "aten::scaled_dot_product_attention")


# ---------------------------------------------------------------------------- the three measurements


def bench_training(trainer, n):
    times = []
    for _ in range(n["train_warmup"]):
        trainer.train_step()
    for _ in range(n["train_steps"]):
        sync(trainer.device)
        t0 = time.perf_counter()
        trainer.train_step()  # data, forward, backward, clip, AdamW, EMA; it reads loss.item(), which syncs
        sync(trainer.device)
        times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    return {
        "method": "Trainer.train_step on builtin:bouncing: batch, forward, backward, grad clip, AdamW, EMA",
        "warmup_steps": n["train_warmup"], "timed_steps": n["train_steps"],
        "batch_size": trainer.cfg.batch_size, "step_ms_median": 1e3 * step,
        "steps_per_s": 1 / step, "samples_per_s": trainer.cfg.batch_size / step,
    }  # fmt: skip


def bench_sampling(model, diffusion, cfg, device, n):
    overlap = default_overlap(cfg.rows, cfg.cols)
    plan = SequencePlan(n["frames"], cfg.rows, cfg.cols, overlap)
    calls = [0]

    def count(_info):
        calls[0] += 1

    def run(frames, steps):
        return sample_sequence(model, diffusion, frames, rows=cfg.rows, cols=cfg.cols, overlap=overlap,
                               sampler="ddim", steps=steps, device=device, progress=False, callback=count)  # fmt: skip

    run(cfg.rows * cfg.cols, 2)  # warm-up: one grid
    times = []
    for _ in range(n["sample_repeats"]):
        calls[0] = 0
        sync(device)
        t0 = time.perf_counter()
        frames = run(n["frames"], n["sample_steps"])
        sync(device)
        times.append(time.perf_counter() - t0)
    if frames.shape[1] != n["frames"] or calls[0] != plan.total_grids * n["sample_steps"]:
        raise RuntimeError(f"sampled {frames.shape[1]} frames in {calls[0]} calls; the plan says otherwise")
    total = statistics.median(times)
    return {
        "sampler": "ddim", "eta": 0.0, "steps": n["sample_steps"], "n_frames": n["frames"], "overlap": overlap,
        "grids": plan.total_grids, "model_calls": calls[0], "batch_size": 1, "repeats": n["sample_repeats"],
        "seconds_total": total, "seconds_per_frame": total / n["frames"], "seconds_per_grid": total / plan.total_grids,
        "ms_per_model_call": 1e3 * total / calls[0],
    }  # fmt: skip


def bench_stage2(device, n, stage1_sampling):
    """Stage 2 of the quickstart: training steps/s and seconds per super-resolved frame, beside stage 1's."""
    base, source = quickstart_config("QUICKSTART_SR", stage2_default)
    cfg = dataclasses.replace(base, device=str(device), n_sequences=8)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, Path(tmp) / "run_sr")
        training = bench_training(trainer, n)
        model = trainer.ema.eval()
        side = cfg.frame_size // cfg.scale
        lr = torch.rand(n["frames"], 3, side, side, generator=torch.Generator().manual_seed(0)) * 2 - 1

        def run(frames, steps):
            return upscale_frames(model, trainer.diffusion, frames, scale=cfg.scale, residual=cfg.residual,
                                  aug_level=SAMPLE_AUG, steps=steps, batch_size=n["sr_batch"], device=device)  # fmt: skip

        run(lr[: n["sr_batch"]], 2)  # warm-up: one batch
        out = []
        total = time_round_robin({"stage2": lambda: out.append(run(lr, n["sample_steps"]))}, device, warmup=0,
                                 repeats=n["sample_repeats"])["stage2"]  # fmt: skip
    if out[-1].shape != (n["frames"], 3, cfg.frame_size, cfg.frame_size):
        raise RuntimeError(f"stage 2 returned {tuple(out[-1].shape)}")
    per_frame = total / n["frames"]
    s1 = stage1_sampling["seconds_per_frame"]
    return {
        "source": source, "model": cfg.model, "scale": cfg.scale, "frame_size": cfg.frame_size,
        "tokens": model.layout.num_tokens, "parameters": sum(p.numel() for p in model.parameters()),
        "training": training,
        "sampling": {
            "sampler": "ddim", "eta": 0.0, "steps": n["sample_steps"], "n_frames": n["frames"],
            "batch_size": n["sr_batch"], "repeats": n["sample_repeats"], "seconds_total": total,
            "seconds_per_frame": per_frame,
        },
        "seconds_per_frame": {"stage1": s1, "stage2": per_frame, "both": s1 + per_frame},
    }  # fmt: skip


def bench_reference(model, diffusion, cfg, device, n):
    precision, autocast = autocast_for(device, cfg.precision)
    b = cfg.batch_size
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, model.in_channels, *model.config.image_size, generator=gen).to(device)  # (B, C, H, W)
    t = torch.randint(0, diffusion.num_steps, (b,), generator=gen).to(device)  # (B,)
    target = torch.randn(b, model.out_channels, *model.config.image_size, generator=gen).to(device)
    fused = PlainDiT(model, fused_attn=True).to(device).train()
    unfused = PlainDiT(model, fused_attn=False).to(device).train()
    unfused.load_state_dict(fused.state_dict())
    model.train()
    ms = time_round_robin(
        {"ours": fwd_bwd(model, x, target, autocast, t), "timm_fused": fwd_bwd(fused, x, target, autocast, t),
         "timm_unfused": fwd_bwd(unfused, x, target, autocast, t)},
        device, warmup=n["compare_warmup"], repeats=n["compare_repeats"],
    )  # fmt: skip
    ms = {k: 1e3 * v for k, v in ms.items()}
    fastest = min(ms["timm_fused"], ms["timm_unfused"])
    reference = {
        "what": "forward + backward (MSE loss) of the same batch; reference = a plain adaLN-Zero DiT from "
                "timm.layers.PatchEmbed, timm ViT Attention (fused or unfused) and timm.layers.Mlp, with modulation "
                "written the obvious way, and identical tokens, width, depth, heads and MLP ratio",
        "adaln_in_reference": True,
        "batch_size": b, "tokens": model.layout.num_tokens, "precision": precision,
        "warmup": n["compare_warmup"], "repeats": n["compare_repeats"],
        "ours_ms": ms["ours"], "timm_fused_ms": ms["timm_fused"], "timm_unfused_ms": ms["timm_unfused"],
        "ratio_vs_fused": ms["ours"] / ms["timm_fused"], "ratio_vs_unfused": ms["ours"] / ms["timm_unfused"],
        "ratio": ms["ours"] / fastest, "tolerance": TOLERANCE,
        "passes_rule": "ours_ms / min(timm_fused_ms, timm_unfused_ms) <= tolerance",
        "passes": ms["ours"] / fastest <= TOLERANCE,
    }  # fmt: skip

    model.eval()
    with torch.no_grad():
        captured = capture_inputs(model, x, t, range(model.config.depth))  # each attention module's inputs
        modules = attention_modules(model)
        calls = {"default": lambda: model(x, t),
                 "explicit": lambda: [explicit_attention(modules[i], *inputs) for i, inputs in captured.items()]}
        sec = time_round_robin(calls, device, warmup=n["compare_warmup"], repeats=n["compare_repeats"])
        counts = {name: sdpa_calls(fn) for name, fn in calls.items()}
    attention = {
        "what": "our forward (no grad) with the default fused SDPA path vs every layer's attention recomputed from "
                "its inputs as an explicit softmax that keeps the probabilities (models.attention_maps, what the "
                "inspector widget adds to a forward)",
        "batch_size": b, "fused_ms": 1e3 * sec["default"], "explicit_ms": 1e3 * sec["explicit"],
        "explicit_over_fused": sec["explicit"] / sec["default"],
        "sdpa_calls_default": counts["default"], "sdpa_calls_explicit": counts["explicit"],
        "fused_path_used": counts["default"] == model.config.depth and counts["explicit"] == 0,
    }  # fmt: skip
    return reference, attention


# ---------------------------------------------------------------------------- entry point


def write_json_atomic(obj, path):
    write_text_atomic(json.dumps(obj, indent=2, allow_nan=False) + "\n", path)


def summary(result):
    tr, sa, ref, at = result["training"], result["sampling"], result["reference"], result["attention"]
    s2 = result["stage2"]
    cfg = result["config"]
    return "\n".join([
        f"{cfg['model']} on a {cfg['grid_image']} grid ({cfg['tokens']} tokens), {result['machine']['device']}, "
        f"{result['machine']['torch_threads']} threads",
        f"training:  {tr['steps_per_s']:.2f} steps/s, {tr['samples_per_s']:.1f} samples/s (batch {tr['batch_size']})",
        f"sampling:  {sa['seconds_per_frame']:.3f} s/frame, {sa['seconds_per_grid']:.3f} s/grid, "
        f"{sa['ms_per_model_call']:.2f} ms/call ({sa['n_frames']} frames, DDIM {sa['steps']} steps)",
        f"fwd+bwd:   ours {ref['ours_ms']:.1f} ms, timm fused {ref['timm_fused_ms']:.1f} ms, "
        f"timm unfused {ref['timm_unfused_ms']:.1f} ms; ratio {ref['ratio']:.2f} -> "
        f"{'PASS' if ref['passes'] else 'FAIL'} (<= {ref['tolerance']:.2f})",
        f"attention: fused {at['fused_ms']:.1f} ms vs explicit {at['explicit_ms']:.1f} ms; "
        f"SDPA calls per forward {at['sdpa_calls_default']} (fused path used: {at['fused_path_used']})",
        f"stage 2:   x{s2['scale']} to {s2['frame_size']}px, {s2['training']['steps_per_s']:.2f} steps/s; "
        f"{s2['seconds_per_frame']['stage2']:.3f} s/frame next to stage 1's {s2['seconds_per_frame']['stage1']:.3f} "
        f"(DDIM {s2['sampling']['steps']} steps, batch {s2['sampling']['batch_size']})",
    ])  # fmt: skip


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny counts (about 20 s on a CPU); for tests")
    p.add_argument("--out", default="reports/bench/bench.json", help="where the JSON report goes")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: cuda when available")
    return p.parse_args(argv)


def main(argv=None):
    """Run the benchmark, write the JSON report and return it as a dict."""
    args = parse_args(argv)
    n = QUICK if args.quick else FULL
    device = resolve_device(args.device)
    base, source = quickstart_config()
    cfg = dataclasses.replace(base, device=str(device), n_sequences=8)  # a few sequences are plenty to draw from
    started = time.perf_counter()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, Path(tmp) / "run")  # builds with build_model_and_diffusion(cfg)
        model = trainer.model
        training = bench_training(trainer, n)
        sampling = bench_sampling(trainer.ema, trainer.diffusion, cfg, device, n)
        reference, attention = bench_reference(model, trainer.diffusion, cfg, device, n)
    stage2 = bench_stage2(device, n, sampling)
    mc = model.config
    result = {
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": machine_info(device),
        "config": {
            "source": source, "model": cfg.model, "rows": cfg.rows, "cols": cfg.cols, "frame_size": cfg.frame_size,
            "grid_image": "x".join(map(str, mc.image_size)), "tokens": model.layout.num_tokens,
            "hidden_size": mc.hidden_size, "depth": mc.depth, "num_heads": mc.num_heads, "mlp_ratio": mc.mlp_ratio,
            "parameters": sum(p.numel() for p in model.parameters()), "batch_size": cfg.batch_size,
            "train_config": dataclasses.asdict(cfg),
        },  # fmt: skip
        "training": training,
        "sampling": sampling,
        "reference": reference,
        "attention": attention,
        "stage2": stage2,
    }
    result["duration_s"] = time.perf_counter() - started
    write_json_atomic(result, args.out)
    print(summary(result))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
