"""The GPU path: on a CUDA device, the ``gpu``-marked tests, then what the three families cost there. Per family a
bf16 training step at DiT-S and DiT-B sizes with its achieved TFLOP/s and the share of the card's peak; one MSC
attention layer (flex_attention with block masks, and the library's own kernels) against SDPA full attention at 16k
to 64k tokens; sampling frames per second at 64 px and 256 px output; the peak memory of each.

    .venv/bin/python benchmarks/gpu.py             # a few minutes on one GPU (make bench-gpu)
    .venv/bin/python benchmarks/gpu.py --quick     # one size of each: a smoke test
    .venv/bin/python benchmarks/gpu.py --device cpu --out /tmp/gpu.json   # tiny sizes on the CPU: the logic only

Writes ``reports/bench/gpu.json`` and ``reports/bench/gpu.png``, after every section, so a run cut short keeps what
it measured. Without CUDA it says so on one line and exits 0, writing nothing: a report from a GPU run stays as it
is. Models are randomly initialised (speed does not depend on the weights); times are medians after a warm-up, with
the device synchronised around each call. FLOPs of a training step are torch's ``FlopCounterMode`` count (2 per
multiply-add, forward and backward); an attention layer's are this code's cost model (``gridit_core.models.cost``)
and its masks' True entries for flex_attention, which skips the blocks its masks leave empty.
"""

import argparse
import contextlib
import datetime
import io
import json
import re
import statistics
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402
from torch.nn.attention.flex_attention import create_block_mask, flex_attention  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from gridit_core.diffusion import Diffusion, DiffusionConfig  # noqa: E402
from gridit_core.models.cost import full_attention_macs, msc_attended_pairs, msc_attention_macs, total  # noqa: E402
from gridit_core.models.dit import _SIZES  # noqa: E402
from gridit_core.models.msc import MSCAttention, pool_tokens, unpool_tokens, window_radius  # noqa: E402
from gridit_core.models.sr import build_sr_model  # noqa: E402
from gridit_core.models.video import FullAttention  # noqa: E402
from gridit_core.sampling import FAMILIES, generate_frames  # noqa: E402
from gridit_core.sampling.upscale import upscale_frames  # noqa: E402
from gridit_core.util.device import autocast  # noqa: E402
from gridit_core.util.io import write_bytes_atomic, write_text_atomic  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "reports" / "bench" / "gpu.json"

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from the vendors' datasheets, by a word of the device name;
# the most specific name first. A card not listed gets utilisation null (or pass --peak-tflops).
PEAK_BF16_TFLOPS = (("H100 PCIe", 756), ("H100 NVL", 835), ("H200 NVL", 835), ("GH200", 989), ("H100", 989),
                    ("H200", 989), ("A100", 312), ("L40S", 362), ("L4", 121), ("A10", 125))  # fmt: skip

MSC = dict(window=3, p_frames=1, pool=2, i_stride=2, i_frames=2)  # the defaults of `gridit train --arch msc`
FAMILY_NAMES = ("grid", "tensor", "msc")

# training: `frames` frames of side x side cells of `channels` channels a sample (latent-like: 32x32x4 is a 256 px
# frame in SD-VAE latents), the grid model on a rows x cols grid of the same frames; attention: clips of
# attn_side x attn_side tokens a frame at a width of attn_size; sampling: pixel frames of each px, GriDiT at px / 4
# on 2x2 grids then stage 2 (x4, patch 8), the sequence models at px. Lists, as the report's JSON keeps them.
FULL = dict(sizes=["DiT-S/2", "DiT-B/2"], frames=16, side=32, channels=4, rows=4, cols=4, batch=8, steps=10,
            attn_size="DiT-B/2", attn_side=32, attn_tokens=[16384, 32768, 65536], attn_repeats=10,
            sample_size="DiT-S/4", sample_px=[64, 256], sample_frames=16, sample_steps=10)  # fmt: skip
QUICK = {**FULL, "sizes": ["DiT-S/2"], "steps": 3, "attn_tokens": [16384], "attn_repeats": 3, "sample_px": [64],
         "sample_frames": 8, "sample_steps": 2}  # fmt: skip
TINY = dict(sizes=["DiT-N/2"], frames=4, side=8, channels=4, rows=2, cols=2, batch=2, steps=2, attn_size="DiT-N/2",
            attn_side=4, attn_tokens=[64, 128], attn_repeats=2, sample_size="DiT-N/4", sample_px=[16, 32],
            sample_frames=4, sample_steps=1)  # fmt: skip


def peak_tflops(name):
    """The dense bf16 peak of the device called ``name`` (``torch.cuda.get_device_name``), or None if not listed."""
    for key, peak in PEAK_BF16_TFLOPS:
        if re.search(rf"(?<![A-Za-z0-9]){re.escape(key)}(?![A-Za-z0-9])", name):
            return peak
    return None


def achieved(flops, seconds, peak):
    """TFLOP/s of ``flops`` done in ``seconds``, and their share of ``peak`` TFLOP/s (None without a peak)."""
    tflops = flops / seconds / 1e12
    return tflops, (tflops / peak if peak else None)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn, device, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class PeakMemory:
    """The most memory the device held (MiB) while the block ran; None on the CPU."""

    def __init__(self, device):
        self.device, self.mib = device, None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.mib = torch.cuda.max_memory_allocated(self.device) / 2**20


def guarded(row, device, fn):
    """``row`` updated with what ``fn()`` returns, or with its error: one size that fails (out of memory, a kernel
    that does not compile) must not cost the rest of the run."""
    try:
        row.update(fn())
    except Exception as err:  # noqa: BLE001 (recorded in the report, then the run goes on)
        row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


# ---------------------------------------------------------------------------- the gpu-marked tests


def gpu_tests(timeout=600):
    """``pytest -m gpu`` over ``tests/`` in a fresh process: its exit code, counts and summary line."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests"],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    summary = lines[-1] if lines else ""
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?)", summary)}
    return {"returncode": done.returncode, "summary": summary, **counts, "seconds": time.perf_counter() - start}


# ---------------------------------------------------------------------------- training steps


def training_batch(family, size, s, device):
    """A randomly initialised model of ``family`` and one batch of noisy inputs and levels for it."""
    torch.manual_seed(0)
    b, t, c, side = s["batch"], s["frames"], s["channels"], s["side"]
    if family == "grid":
        model = FAMILIES["grid"].build(size, input_size=(s["rows"] * side, s["cols"] * side), in_channels=c,
                                       rows=s["rows"], cols=s["cols"], learn_sigma=False)  # fmt: skip
        x, levels = torch.randn(b, c, s["rows"] * side, s["cols"] * side), torch.randint(0, 1000, (b,))
    else:
        extra = MSC if family == "msc" else {}
        model = FAMILIES[family].build(size, frame_size=side, frames=t, in_channels=c, **extra)
        x, levels = torch.randn(b, t, c, side, side), torch.randint(0, 1000, (b, t))
    return model.to(device).train(), x.to(device), levels.to(device)


def training(s, device, peak):
    """One bf16 training step (forward, backward, AdamW) per family and size: seconds, FLOPs, TFLOP/s, memory."""
    rows = []
    for size in s["sizes"]:
        for family in FAMILY_NAMES:
            row = {"family": family, "size": size, "batch": s["batch"], "frames": s["frames"]}

            def measure():
                model, x, levels = training_batch(family, size, s, device)
                opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

                def step():
                    opt.zero_grad(set_to_none=True)
                    with autocast(device, "bf16"):
                        loss = model(x, levels).float().square().mean()
                    loss.backward()
                    opt.step()

                # the CPU's fused SDPA kernel is invisible to the counter: count its math path there (same products)
                counted = sdpa_kernel(SDPBackend.MATH) if device.type == "cpu" else contextlib.nullcontext()
                with counted, FlopCounterMode(display=False) as counter:
                    step()
                with PeakMemory(device) as memory:
                    seconds = median_seconds(step, device, s["steps"])
                flops = counter.get_total_flops()
                tflops, share = achieved(flops, seconds, peak)
                tokens = x[0].numel() // (s["channels"] * model.config.patch_size**2)
                params = sum(p.numel() for p in model.parameters()) / 1e6
                return {"tokens_per_sample": tokens, "params_millions": params, "step_s": seconds,
                        "flops_per_step": flops, "tflops": tflops, "utilisation": share, "peak_memory_mib": memory.mib}

            rows.append(guarded(row, device, measure))
            print(f"  {family:6s} {size}: " + (row.get("error") or f"{row['step_s'] * 1e3:7.1f} ms a step, "
                  f"{row['tflops']:6.1f} TFLOP/s"), flush=True)  # fmt: skip
    return rows


# ---------------------------------------------------------------------------- one attention layer


@lru_cache(maxsize=None)
def flex_kernel(device_type):
    """flex_attention compiled where it compiles (CUDA); eager elsewhere (it materialises the scores: tests only)."""
    return torch.compile(flex_attention, dynamic=False) if device_type == "cuda" else flex_attention


@lru_cache(maxsize=16)
def msc_block_masks(frames, grid, window, p_frames, pool, i_stride, i_frames, light_cone, device):
    """flex_attention block masks of MSC's two branches over ``frames`` frames of a ``grid`` of tokens, by the rules
    of ``MSCAttention``'s dense reference: High-Res over the full tokens, Low-Res over the pooled ones."""
    h, w = grid
    n, pooled = h * w, (h // pool) * (w // pool)

    def high(b, head, q, kv):
        dt = q // n - kv // n
        radius = window_radius(window, dt, light_cone)
        dy = (q % n) // w - (kv % n) // w
        dx = (q % n) % w - (kv % n) % w
        return (dt >= 0) & (dt <= p_frames) & (dy.abs() <= radius) & (dx.abs() <= radius)

    def low(b, head, q, kv):
        dt = q // pooled - kv // pooled
        return (dt >= 0) & (dt % i_stride == 0) & (dt // i_stride <= i_frames)

    make = dict(B=None, H=None, device=device, _compile=device.startswith("cuda"))
    return (create_block_mask(high, Q_LEN=frames * n, KV_LEN=frames * n, **make),
            create_block_mask(low, Q_LEN=frames * pooled, KV_LEN=frames * pooled, **make))  # fmt: skip


def flex_msc(attn, x, grid):
    """``attn`` (an ``MSCAttention``, its weights) on tokens ``x (B, T, L, D)`` of frames ``0..T-1`` by flex_attention
    with block masks instead of its own kernels: the same attention (``tests/test_bench_gpu.py``), no gate, no cache."""
    b, t, n, d = x.shape
    hh, r = attn.high_heads, attn.pool
    q, k, v = attn._qkv(x, torch.arange(t, device=x.device))  # (B, h, T, L, dh) each
    lo = [pool_tokens(z[:, hh:], grid, r) for z in (q, k, v)]  # (B, hl, T, Lp, dh) each
    masks = msc_block_masks(t, tuple(grid), attn.window, attn.p_frames, r, attn.i_stride, attn.i_frames,
                            attn.light_cone, str(x.device))  # fmt: skip
    flex = flex_kernel(x.device.type)
    out_hi = flex(*(z[:, :hh].flatten(2, 3).contiguous() for z in (q, k, v)), block_mask=masks[0])  # (B, hh, T*L, dh)
    out_lo = flex(*(z.flatten(2, 3) for z in lo), block_mask=masks[1])  # (B, hl, T*Lp, dh)
    out_lo = unpool_tokens(out_lo.unflatten(2, (t, lo[0].shape[3])), grid, r)  # (B, hl, T, L, dh)
    out = torch.cat([out_hi.unflatten(2, (t, n)), out_lo], dim=1)  # (B, h, T, L, dh)
    return attn.proj(out.permute(0, 2, 3, 1, 4).reshape(b, t, n, d))  # (B, T, L, D)


def attention_layers(size, device, dtype):
    """SDPA full attention and an MSC layer of the width and heads of ``size``, randomly initialised."""
    spec = _SIZES[size.split("-")[1].split("/")[0]]
    d, heads = spec["hidden_size"], spec["num_heads"]
    torch.manual_seed(0)
    full = FullAttention(d, heads).to(device, dtype)
    msc = MSCAttention(d, heads, high_heads=heads // 2, light_cone=False, **MSC).to(device, dtype)
    return full, msc, d, heads


def attention(s, device, peak):
    """One attention layer (projections included) at each token count: SDPA full attention, MSC by flex_attention and
    MSC by its own kernels; forward, and forward + backward (flex_attention's backward needs CUDA)."""
    dtype = torch.bfloat16
    full, msc, d, heads = attention_layers(s["attn_size"], device, dtype)
    grid = (s["attn_side"], s["attn_side"])
    n = grid[0] * grid[1]
    rows = []
    for tokens in s["attn_tokens"]:
        frames = tokens // n
        x = torch.randn(1, frames, n, d, device=device, dtype=dtype)
        where = dict(grid=grid, frames=torch.arange(frames, device=device))
        pairs, width_hi = msc_attended_pairs(frames, grid, **MSC), d // heads * (heads // 2)
        flex_macs = 4 * frames * n * d * d + 2 * pairs["high_res"] * width_hi + 2 * pairs["low_res"] * (d - width_hi)
        library_macs = total(msc_attention_macs(frames, grid, d, heads, gate="equal", **MSC))  # called with no gate
        variants = {"sdpa_full": (full, total(full_attention_macs(frames, grid, d))),
                    "msc_flex": (lambda z: flex_msc(msc, z, grid), flex_macs),
                    "msc_library": (lambda z: msc(z, **where), library_macs)}  # fmt: skip
        outputs, made = {}, {}
        for name, (fn, macs) in variants.items():
            row = made[name] = {"tokens": frames * n, "frames": frames, "variant": name, "macs": macs}

            def measure():
                with torch.no_grad(), PeakMemory(device) as memory:
                    outputs[name] = fn(x)
                    forward = median_seconds(lambda: fn(x), device, s["attn_repeats"])
                result = {"forward_s": forward, "forward_tflops": achieved(2 * macs, forward, peak)[0],
                          "forward_peak_memory_mib": memory.mib}  # fmt: skip
                if name == "msc_flex" and device.type != "cuda":
                    return result  # flex_attention has no backward on the CPU
                xg = x.detach().requires_grad_(True)
                with PeakMemory(device) as memory:
                    result["train_s"] = median_seconds(lambda: fn(xg).float().square().mean().backward(), device,
                                                       s["attn_repeats"])  # fmt: skip
                result["train_peak_memory_mib"] = memory.mib
                return result

            rows.append(guarded(row, device, measure))
            said = row.get("error") or f"forward {row['forward_s'] * 1e3:.2f} ms" + (
                f", forward + backward {row['train_s'] * 1e3:.2f} ms" if "train_s" in row else "")
            print(f"  {name:11s} {frames * n:6d} tokens: {said}", flush=True)
        if "msc_flex" in outputs and "msc_library" in outputs:  # the two MSC kernels agree (bf16: to its precision)
            a, b = outputs["msc_flex"].float(), outputs["msc_library"].float()
            made["msc_flex"]["relative_difference_to_library"] = float((a - b).abs().max() / b.abs().max())
    return rows


# ---------------------------------------------------------------------------- sampling


def sampling(s, device):
    """Frames per second, sampling ``sample_frames`` frames at each output size: GriDiT (2x2 grids at a quarter of
    the size, then stage 2 per frame) and the tensor model and MSC at the output size; DDIM, bf16 autocast."""
    diffusion = Diffusion(DiffusionConfig(num_steps=1000))
    size, n, steps = s["sample_size"], s["sample_frames"], s["sample_steps"]
    rows = []
    for px in s["sample_px"]:
        low = px // 4
        for family in FAMILY_NAMES:
            row = {"family": family, "px": px, "frames": n, "steps": steps, "model": size}

            def measure():
                torch.manual_seed(0)
                if family == "grid":
                    grid = FAMILIES["grid"].build(size, input_size=2 * low, in_channels=3, rows=2, cols=2,
                                                  learn_sigma=False).to(device).eval()  # fmt: skip
                    sr = build_sr_model(size, px, 4, patch_size=8).to(device).eval()

                    def run(frames):
                        made = generate_frames(grid, diffusion, frames, rows=2, cols=2, overlap=2, steps=steps,
                                               device=device, progress=False)  # fmt: skip
                        small = torch.cat(list(made))  # (N, 3, low, low)
                        upscale_frames(sr, diffusion, small, scale=4, steps=steps, batch_size=16, device=device)
                else:
                    model = FAMILIES[family].build(size, frame_size=px, frames=8, in_channels=3,
                                                   **(MSC if family == "msc" else {})).to(device).eval()  # fmt: skip

                    def run(frames):
                        for _ in generate_frames(model, diffusion, frames, steps=steps, device=device, progress=False):
                            pass

                with autocast(device, "bf16"):
                    run(min(n, 4))  # warm-up: kernels, caches
                    with PeakMemory(device) as memory:
                        sync(device)
                        start = time.perf_counter()
                        run(n)
                        sync(device)
                        seconds = time.perf_counter() - start
                return {"seconds": seconds, "frames_per_s": n / seconds, "peak_memory_mib": memory.mib}

            rows.append(guarded(row, device, measure))
            said = row.get("error") or f"{row['frames_per_s']:7.2f} frames/s"
            print(f"  {family:6s} {px:3d} px: {said}", flush=True)
    return rows


# ---------------------------------------------------------------------------- report


def figure(report):
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    ax = axes[0]
    rows = [r for r in report.get("training", []) if "tflops" in r]
    ax.bar(range(len(rows)), [r["tflops"] for r in rows], color=[f"C{FAMILY_NAMES.index(r['family'])}" for r in rows])
    ax.set_xticks(range(len(rows)), [f"{r['family']}\n{r['size']}" for r in rows], fontsize=8)
    for i, r in enumerate(rows):
        if r["utilisation"] is not None:
            ax.annotate(f"{r['utilisation']:.0%}", (i, r["tflops"]), ha="center", va="bottom", fontsize=8)
    ax.set(ylabel="TFLOP/s (share of peak above)", title="bf16 training step")
    ax = axes[1]
    for k, variant in enumerate(("sdpa_full", "msc_flex", "msc_library")):
        for key, style, what in (("forward_s", "-", "forward"), ("train_s", ":", "+ backward")):
            pts = [(r["tokens"], r[key] * 1e3) for r in report.get("attention", [])
                   if r["variant"] == variant and key in r]  # fmt: skip
            if pts:
                ax.plot(*zip(*pts), f"o{style}", color=f"C{k}", label=f"{variant} {what}")
    ax.set(xscale="log", yscale="log", xlabel="tokens", ylabel="ms", title="One attention layer")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    ax = axes[2]
    sizes = sorted({r["px"] for r in report.get("sampling", [])})
    for k, family in enumerate(FAMILY_NAMES):
        rate = {r["px"]: r.get("frames_per_s", 0) for r in report.get("sampling", []) if r["family"] == family}
        ax.bar([i + 0.27 * (k - 1) for i in range(len(sizes))], [rate.get(px, 0) for px in sizes], width=0.27,
               label=family)  # fmt: skip
    ax.set_xticks(range(len(sizes)), [f"{px} px" for px in sizes])
    ax.set(yscale="log", ylabel="frames per second", title="Sampling")
    if sizes:
        ax.legend(fontsize=8)
    fig.suptitle(f"{report['device']['name']}, torch {report['device']['torch']}", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def device_info(device, peak):
    info = {"name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "torch": torch.__version__,
            "peak_bf16_tflops": peak}  # fmt: skip
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(cuda=torch.version.cuda, capability=f"{props.major}.{props.minor}",
                    memory_gib=round(props.total_memory / 2**30, 1))  # fmt: skip
    return info


SECTIONS = ("tests", "training", "attention", "sampling")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one size of each: a smoke test")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cpu: every section at tiny sizes on the CPU, to check the logic (needs --out)")  # fmt: skip
    p.add_argument("--only", nargs="+", choices=SECTIONS, metavar="SECTION",
                   help=f"these sections only ({', '.join(SECTIONS)})")  # fmt: skip
    p.add_argument("--peak-tflops", type=float, help="the card's dense bf16 peak, where the table lacks it")
    p.add_argument("--out", help=f"report path (default {OUT.relative_to(REPO)}; a CPU run must name another)")
    a = p.parse_args(argv)
    out = Path(a.out) if a.out else OUT
    if a.device == "cuda" and not torch.cuda.is_available():
        print(f"CUDA is not available: nothing measured, {out} left as it is")
        return None
    if a.device == "cpu" and out.resolve() == OUT.resolve():
        p.error(f"a CPU run checks the logic, not the numbers: give it an --out other than {OUT.relative_to(REPO)}")
    device = torch.device(a.device)
    s = TINY if a.device == "cpu" else QUICK if a.quick else FULL
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = a.peak_tflops or peak_tflops(name)
    flags = ["--quick"] * a.quick + ["--device cpu"] * (a.device == "cpu")
    command = " ".join(["python benchmarks/gpu.py", *flags])
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    if a.only and out.exists():  # re-measure these sections into the report there
        report = json.loads(out.read_text())
        report.setdefault("updated", []).append({"timestamp": stamp, "command": f"{command} --only {' '.join(a.only)}"})
    else:
        report = {"timestamp": stamp, "command": command, "device": device_info(device, peak), "settings": s,
                  "msc": MSC}  # fmt: skip
    started = time.perf_counter()
    for section in a.only or SECTIONS:
        print(section, flush=True)
        if section == "tests":
            report["tests"] = guarded({}, device, gpu_tests) if device.type == "cuda" else {"skipped": "not on CUDA"}
        elif section == "training":
            report["training"] = training(s, device, peak)
        elif section == "attention":
            report["attention"] = attention(s, device, peak)
        else:
            report["sampling"] = sampling(s, device)
        report["duration_s"] = time.perf_counter() - started
        write_text_atomic(json.dumps(report, indent=2) + "\n", out)
        write_bytes_atomic(figure(report), out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')} in {report['duration_s']:.0f} s")
    return report


if __name__ == "__main__":
    main()
