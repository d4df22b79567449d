"""Cost of the three families: full attention (tensor) against MSC by sequence length, MSC's autoregressive cost per
frame with and without its KV cache, the paper-level comparison (GriDiT's low-resolution grids then stage 2, against
the tensor model and MSC at the final resolution), and peak memory sampling 1,000 frames against 64.

    .venv/bin/python benchmarks/families.py            # about 15 minutes on 2 CPU cores
    .venv/bin/python benchmarks/families.py --quick    # tiny counts: a smoke test
    .venv/bin/python benchmarks/families.py --only peak_memory_mib   # re-measure sections into the saved report
    .venv/bin/python benchmarks/families.py --only large_frames      # 64 x 64 and 16 x 256 tokens, each kernel

Writes ``reports/bench/families.json`` and ``reports/bench/families.png``. Models are randomly initialised (speed
does not depend on the weights) and share width and depth (``DiT-N/4``: 4 blocks, width 128, 4 heads); every
time is a median over repeats after a warm-up, and peak memory is a fresh process's resident set while it samples.
"""

import argparse
import datetime
import io
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from gridit_core.diffusion import Diffusion, DiffusionConfig  # noqa: E402
from gridit_core.models import build_dit  # noqa: E402
from gridit_core.models.cost import layer_macs, paper_full_flops, paper_msc_flops, total  # noqa: E402
from gridit_core.models.msc import HIGH_RES_PATHS  # noqa: E402
from gridit_core.models.sr import build_sr_model  # noqa: E402
from gridit_core.sampling import FAMILIES, SampleConfig, generate_frames  # noqa: E402
from gridit_core.sampling.rollout import causal_frames  # noqa: E402
from gridit_core.sampling.upscale import upscale_frames  # noqa: E402
from gridit_core.util.io import write_bytes_atomic, write_text_atomic  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SIZE = "DiT-N/4"
MSC = dict(window=3, p_frames=1, pool=2, i_stride=2, i_frames=2)  # the defaults of `gridit train --arch msc`
COST = {k: MSC[k] for k in ("window", "p_frames", "pool", "i_stride")}  # what the paper's formulas take


def video_model(arch, frame_size, frames, seed=0):
    torch.manual_seed(seed)
    kw = MSC if arch == "msc" else {}
    return FAMILIES[arch].build(SIZE, frame_size=frame_size, frames=frames, in_channels=3, **kw).eval()


def median_time(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def layer_cost(model, frames):
    """Block 0's attention by this code's cost model (``models.cost``, multiply-adds, batch 1) and by the paper's
    formula: the whole layer, its scores and weighted sums alone (QK^T and AV), and the paper's count."""
    cfg = model.config
    cost, tokens = layer_macs(cfg, frames), frames * cfg.frame_tokens[0] * cfg.frame_tokens[1]
    d = cfg.hidden_size
    paper = paper_msc_flops(tokens, d, **COST) if cfg.causal else paper_full_flops(tokens, d)
    products = total(cost) - cost["projections"] - cost.get("gate", 0)
    return {"macs_per_layer": total(cost), "attention_flops_per_layer": products, "paper_flops_per_layer": paper}


def attention_call(model, frames):
    """A no-grad call of block 0's attention alone on random tokens ``(1, T, L, D)``: the part MSC changes (the
    linear layers around it cost the same in both families)."""
    cfg, attn = model.config, model.blocks[0].attn
    tokens = torch.randn(1, frames, cfg.frame_tokens[0] * cfg.frame_tokens[1], cfg.hidden_size)
    kw = dict(grid=cfg.frame_tokens, frames=torch.arange(frames)) if model.arch == "msc" else {}

    @torch.no_grad()
    def call():
        attn(tokens, **kw)

    return call


def forward_and_step(model, x, t, repeats):
    """Median seconds of a forward pass (no grad) and of a training step (zero-lr SGD) of ``model`` on ``(x, t)``."""
    with torch.no_grad():
        fwd = median_time(lambda: model(x, t), repeats)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)

    def step():
        opt.zero_grad()
        model(x, t).square().mean().backward()
        opt.step()

    return fwd, median_time(step, max(1, repeats // 2))


def by_length(lengths, repeats, frame_size=16):
    """Forward and training-step time, and the FLOP counts, of both families at each clip length."""
    rows = []
    for t_len in lengths:
        for arch in ("tensor", "msc"):
            model = video_model(arch, frame_size, t_len)
            x = torch.randn(1, t_len, 3, frame_size, frame_size)
            t = torch.randint(0, 1000, (1, t_len))
            fwd, train = forward_and_step(model, x, t, repeats)
            attn = median_time(attention_call(model, t_len), repeats)
            tokens = t_len * (frame_size // 4) ** 2
            rows.append({"arch": arch, "frames": t_len, "tokens": tokens, "forward_s": fwd, "train_step_s": train,
                         "attention_forward_s": attn, **layer_cost(model, t_len)})  # fmt: skip
            print(f"  {arch:6s} T={t_len:4d}: forward {fwd * 1e3:8.1f} ms, train step {train * 1e3:8.1f} ms, "
                  f"one attention layer {attn * 1e3:8.1f} ms", flush=True)  # fmt: skip
    return rows


def large_frames(sizes, repeats):
    """Full attention against MSC on each High-Res kernel (``msc.HIGH_RES_PATHS``) where frames hold many tokens
    (``sizes``: (frame px, frames) pairs; patch 4): one attention layer, the forward pass and a training step, each
    with tensor time / MSC time beside the layer's multiply-add ratio, tensor / MSC (``models.cost``)."""
    rows = []
    for frame_size, t_len in sizes:
        x = torch.randn(1, t_len, 3, frame_size, frame_size)
        t = torch.randint(0, 1000, (1, t_len))
        row = {"frame_size": frame_size, "frames": t_len, "tokens": t_len * (frame_size // 4) ** 2}
        for arch, path in [("tensor", None)] + [("msc", p) for p in HIGH_RES_PATHS]:
            model = video_model(arch, frame_size, t_len)
            for block in model.blocks if path else ():
                block.attn.high_path = path
            fwd, train = forward_and_step(model, x, t, repeats)
            cost = layer_macs(model.config, t_len, path=path or "auto")
            products = total(cost) - cost["projections"] - cost.get("gate", 0)  # scores and weighted sums
            row[path or arch] = {"attention_forward_s": median_time(attention_call(model, t_len), repeats),
                                 "forward_s": fwd, "train_step_s": train,
                                 "macs_per_layer": total(cost), "attention_macs_per_layer": products}  # fmt: skip
        for path in HIGH_RES_PATHS:
            row[path]["tensor_over_msc"] = {k: row["tensor"][k] / row[path][k] for k in row["tensor"]}
            ratios = row[path]["tensor_over_msc"]
            print(f"  {t_len} frames x {row['tokens'] // t_len} tokens, {path:8s}: tensor / MSC time: attention layer "
                  f"{ratios['attention_forward_s']:.1f}x, forward {ratios['forward_s']:.1f}x, training step "
                  f"{ratios['train_step_s']:.1f}x; multiply-adds of one layer {ratios['macs_per_layer']:.0f}x, of its "
                  f"attention products {ratios['attention_macs_per_layer']:.0f}x",
                  flush=True)  # fmt: skip
        rows.append(row)
    return rows


def autoregressive_cost(n_frames, steps, frame_size=16):
    """Seconds per new frame against frames already made, MSC autoregressive (chunk 1), cached and uncached."""
    model = video_model("msc", frame_size, 8)
    diffusion = Diffusion(DiffusionConfig(num_steps=1000))
    out = {}
    for cache in (True, False):
        stamps = [time.perf_counter()]
        for _ in causal_frames(model, diffusion, n_frames, SampleConfig(steps=steps), progress=False, cache=cache):
            stamps.append(time.perf_counter())
        out["cached" if cache else "uncached"] = [b - a for a, b in zip(stamps, stamps[1:])]
    return out


def paper_comparison(lengths, steps, low=16, scale=4):
    """Wall time to make N frames at ``low * scale`` px: GriDiT (2x2 grids of ``low`` px, then stage 2 per frame),
    the tensor model and MSC at the final resolution; equal width, depth and steps."""
    diffusion = Diffusion(DiffusionConfig(num_steps=1000))
    torch.manual_seed(0)
    grid = build_dit(SIZE, input_size=2 * low, in_channels=3, rows=2, cols=2, learn_sigma=False).eval()
    sr = build_sr_model(SIZE, low * scale, scale, patch_size=8).eval()
    high = low * scale
    rows = []
    for n in lengths:
        t0 = time.perf_counter()
        frames = torch.cat(list(generate_frames(grid, diffusion, n, rows=2, cols=2, overlap=2, steps=steps,
                                                progress=False)))  # (N, 3, low, low)  # fmt: skip
        t1 = time.perf_counter()
        upscale_frames(sr, diffusion, frames, scale=scale, steps=steps, batch_size=16)
        t2 = time.perf_counter()
        result = {"frames": n, "gridit_stage1_s": t1 - t0, "gridit_stage2_s": t2 - t1, "gridit_s": t2 - t0}
        for arch in ("tensor", "msc"):
            model = video_model(arch, high, 8)
            t0 = time.perf_counter()
            for _ in generate_frames(model, diffusion, n, steps=steps, progress=False):
                pass
            result[f"{arch}_s"] = time.perf_counter() - t0
        result["tensor_over_gridit"] = result["tensor_s"] / result["gridit_s"]
        result["msc_over_gridit"] = result["msc_s"] / result["gridit_s"]
        rows.append(result)
        print(f"  N={n}: GriDiT {result['gridit_s']:.1f} s, tensor {result['tensor_s']:.1f} s, "
              f"MSC {result['msc_s']:.1f} s", flush=True)  # fmt: skip
    return rows


_MEMORY_CHILD = """
import os, sys, threading, time, torch
from gridit_core.diffusion import Diffusion, DiffusionConfig
from gridit_core.sampling import FAMILIES, generate_frames
arch, n = sys.argv[1], int(sys.argv[2])
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page
torch.manual_seed(0)
if arch == "grid":
    model = FAMILIES["grid"].build("DiT-N/4", input_size=32, in_channels=3, rows=2, cols=2, learn_sigma=False).eval()
    kw = dict(rows=2, cols=2, overlap=2)
else:
    model = FAMILIES[arch].build("DiT-N/4", frame_size=16, frames=8, in_channels=3).eval()
    kw = {}
diffusion = Diffusion(DiffusionConfig(num_steps=1000))
def run(frames):
    for _ in generate_frames(model, diffusion, frames, steps=2, progress=False, **kw):
        pass
run(9)  # warm-up: one-off allocations (kernels, caches) belong to the baseline, not to the sequence's length
base, peak, stop = rss(), [0], threading.Event()
def poll():
    while not stop.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.001)
watcher = threading.Thread(target=poll, daemon=True)
watcher.start()
run(n)
stop.set()
watcher.join()
print(base, max(peak[0], rss()))
"""


def peak_memory(lengths):
    """Resident memory (MiB) of a fresh process sampling N frames (streamed, not kept), per family: the baseline
    after a warm-up (imports, model, kernels) and the peak while sampling, read from ``/proc/self/statm`` every
    millisecond (Linux). The process's high-water mark would be useless here: importing torch peaks above sampling."""
    rows = []
    for arch in ("grid", "tensor", "msc"):
        row = {"arch": arch}
        for n in lengths:
            done = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, arch, str(n)], capture_output=True, text=True,
                                  check=True, cwd=REPO)  # fmt: skip
            base, peak = (int(v) / 2**20 for v in done.stdout.split())
            row[str(n)] = {"baseline_mib": base, "peak_mib": peak, "growth_mib": peak - base}
        first, last = row[str(lengths[0])], row[str(lengths[-1])]
        row["ratio"] = last["peak_mib"] / first["peak_mib"]
        rows.append(row)
        print(f"  {arch:6s}: " + ", ".join(f"{n} frames {row[str(n)]['peak_mib']:.0f} MiB "
                                           f"(+{row[str(n)]['growth_mib']:.1f} over the baseline)" for n in lengths),
              flush=True)  # fmt: skip
    return rows


def figure(report):
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    for arch, style in (("tensor", "o-"), ("msc", "s-")):
        rows = [r for r in report["by_length"] if r["arch"] == arch]
        ax.loglog([r["frames"] for r in rows], [r["forward_s"] * 1e3 for r in rows], style, label=f"{arch} forward")
        ax.loglog([r["frames"] for r in rows], [r["train_step_s"] * 1e3 for r in rows], style, alpha=0.4,
                  label=f"{arch} train step")  # fmt: skip
        ax.loglog([r["frames"] for r in rows], [r["attention_forward_s"] * 1e3 for r in rows], style[0] + ":",
                  label=f"{arch} one attention layer")  # fmt: skip
    ax.set(xlabel="frames T (16 tokens each)", ylabel="ms", title="Cost by sequence length")
    ax.legend()
    ax = axes[1]
    for name, times in report["autoregressive"].items():
        ax.plot(range(1, len(times) + 1), [s * 1e3 for s in times], label=name)
    ax.set(xlabel="frame index", ylabel="ms per new frame", title="MSC autoregressive cost per frame")
    ax.legend()
    ax = axes[2]
    comp = report["paper_comparison"]
    xs = range(len(comp))
    for k, (key, label) in enumerate((("gridit_s", "GriDiT (grids + stage 2)"), ("tensor_s", "tensor"), ("msc_s", "MSC"))):
        ax.bar([x + 0.27 * (k - 1) for x in xs], [r[key] for r in comp], width=0.27, label=label)
    ax.set_xticks(list(xs), [f"{r['frames']} frames" for r in comp])
    ax.set(ylabel="seconds", title=f"Time to {report['paper_settings']['high']} px frames")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


SECTIONS = ("by_length", "large_frames", "autoregressive", "paper_comparison", "peak_memory_mib")


def measure(section, quick):
    """One section of the report (``SECTIONS``)."""
    if section == "by_length":
        print("cost by sequence length", flush=True)
        return {"by_length": by_length([4] if quick else [8, 16, 32, 64, 128, 256], 1 if quick else 5)}
    if section == "large_frames":
        print("full attention against MSC's High-Res kernels at many tokens a frame", flush=True)
        return {"large_frames": large_frames([(16, 2)] if quick else [(32, 64), (64, 16)], 1 if quick else 5)}
    if section == "autoregressive":
        print("autoregressive cost per frame", flush=True)
        return {"autoregressive": autoregressive_cost(3 if quick else 64, 1 if quick else 10)}
    if section == "paper_comparison":
        print("paper-level comparison", flush=True)
        low = 8 if quick else 16
        settings = {"low": low, "high": 4 * low, "steps": 1 if quick else 20, "grid": "2x2, overlap 2"}
        return {"paper_settings": settings,
                "paper_comparison": paper_comparison([4] if quick else [64, 256], settings["steps"], low=low)}  # fmt: skip
    print("peak memory", flush=True)
    return {"peak_memory_mib": peak_memory([2, 4] if quick else [64, 1000])}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny counts: a smoke test")
    p.add_argument("--only", nargs="+", choices=SECTIONS, metavar="SECTION",
                   help=f"re-measure these sections into the report already in --out ({', '.join(SECTIONS)})")  # fmt: skip
    p.add_argument("--out", default=str(REPO / "reports" / "bench" / "families.json"))
    a = p.parse_args(argv)
    out, started = Path(a.out), time.perf_counter()
    command = "python benchmarks/families.py" + (" --quick" if a.quick else "")
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    if a.only:
        if not out.exists():
            p.error(f"--only updates an existing report, and {out} does not exist")
        report = json.loads(out.read_text())
        report.setdefault("updated", []).append({"timestamp": stamp, "command": f"{command} --only {' '.join(a.only)}"})
    else:
        report = {"timestamp": stamp, "command": command, "model": SIZE, "msc": MSC, "threads": torch.get_num_threads()}
    for section in a.only or SECTIONS:
        report.update(measure(section, a.quick))
    seconds = time.perf_counter() - started
    (report["updated"][-1] if a.only else report)["duration_s"] = seconds
    write_text_atomic(json.dumps(report, indent=2) + "\n", out)
    write_bytes_atomic(figure(report), out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')} in {seconds:.0f} s")
    return report


if __name__ == "__main__":
    main()
