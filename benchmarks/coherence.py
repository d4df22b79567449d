"""Coherence of a stage-1 checkpoint's samples under several sampling settings, beside real, shuffled and frozen data.

The numbers docs/results.md and the asset READMEs quote about sampling settings come from this script:

    .venv/bin/python benchmarks/coherence.py            # the shipped demo checkpoint, 8 sequences x 32 frames
    .venv/bin/python benchmarks/coherence.py --quick    # 2 sequences x 8 frames, 5 steps: a smoke test

It writes ``reports/bench/coherence.json`` and ``reports/bench/coherence.png`` (a bar chart of the scores).
Settings compared: the library's defaults (``SampleConfig()``, what ``gridit sample`` used before checkpoints
carried their own), the checkpoint's saved settings, and the saved settings without RePaint resampling.
"""

import argparse
import dataclasses
import datetime
import io
import json
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from gridit_core.experiments.quickstart import real_sequences, score  # noqa: E402
from gridit_core.sampling import SampleConfig, family_of, sample_sequence  # noqa: E402
from gridit_core.training import load_trained  # noqa: E402
from gridit_core.util.image import tensor_to_uint8  # noqa: E402
from gridit_core.util.io import write_bytes_atomic, write_text_atomic  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CKPT = REPO / "assets" / "demo_bouncing" / "model.safetensors"


def settings_to_compare(saved, family, extra=()):
    """Named ``SampleConfig``s: the library defaults, the checkpoint's saved ones, those without resampling (for the
    families that resample), and any ``extra`` settings dicts given on the command line."""
    saved = SampleConfig.from_dict(saved) if saved else SampleConfig()
    out = {"library defaults": SampleConfig(), "saved with the checkpoint": saved}
    if "resample" in family.sample_fields:
        out["saved, without resampling"] = dataclasses.replace(saved, resample=1)
    for d in extra:
        out[json.dumps(d, sort_keys=True)] = SampleConfig.from_dict({**dataclasses.asdict(saved), **d})
    return out


def measure(ckpt, n_sequences, n_frames, seed, steps=None, extra=()):
    """``{name: {"settings", "coherence", "seconds_per_frame"}}`` plus the real-data baselines."""
    model, diffusion, cfg = load_trained(ckpt)
    real = real_sequences(cfg, n_sequences, n_frames)
    results = {}
    for name, settings in settings_to_compare(cfg.sampling, family_of(model), extra).items():
        if steps is not None:
            settings = dataclasses.replace(settings, steps=steps)
        t0 = time.perf_counter()
        frames = sample_sequence(model, diffusion, n_frames, settings, n_sequences=n_sequences, seed=seed,
                                 progress=sys.stderr.isatty())  # fmt: skip
        seconds = time.perf_counter() - t0
        scores = score(tensor_to_uint8(frames), real)
        results[name] = {"settings": settings.pick(family_of(model).sample_fields), "coherence": scores["samples"],
                         "seconds_per_frame": seconds / (n_frames * n_sequences)}  # fmt: skip
        baselines = {k: scores[k] for k in ("real", "shuffled", "frozen")}
    return results, baselines


def figure(results, baselines):
    names = list(results) + list(baselines)
    values = [r["coherence"]["score"] for r in results.values()] + [b["score"] for b in baselines.values()]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.bar(range(len(names)), values, color=["tab:blue"] * len(results) + ["tab:green", "tab:red", "tab:gray"])
    ax.set_xticks(range(len(names)), [n if len(n) < 30 else n[:27] + "..." for n in names], rotation=15, ha="right")
    ax.set(ylim=(0, 1.15), ylabel="coherence score", title="Shipped checkpoint: coherence by sampling setting")
    for i, v in enumerate(values):
        ax.text(i, v + 0.02, f"{v:.2f}", ha="center")
    fig.tight_layout()
    return fig


def save_png(fig, path):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    write_bytes_atomic(buf.getvalue(), path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", default=str(DEFAULT_CKPT), help="stage-1 checkpoint (default: the shipped demo)")
    p.add_argument("--sequences", type=int, default=8)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="2 sequences x 8 frames, 5 steps: a smoke test")
    p.add_argument("--also", type=json.loads, action="append", default=[], metavar="JSON",
                   help='more settings to compare, over the saved ones, e.g. \'{"sampler": "ddim"}\' (repeatable)')
    p.add_argument("--out", default=str(REPO / "reports" / "bench" / "coherence.json"))
    p.add_argument("--replot", action="store_true", help="redraw the figure from the JSON already in --out")
    a = p.parse_args(argv)
    out = Path(a.out)
    if a.replot:
        report = json.loads(out.read_text())
        save_png(figure(report["results"], report["baselines"]), out.with_suffix(".png"))
        return report
    torch.set_num_threads(max(1, torch.get_num_threads()))
    n_seq, n_frames, steps = (2, 8, 5) if a.quick else (a.sequences, a.frames, None)
    started = time.perf_counter()
    results, baselines = measure(a.ckpt, n_seq, n_frames, a.seed, steps, a.also)
    report = {
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/coherence.py", *(argv if argv is not None else sys.argv[1:])]),
        "checkpoint": str(Path(a.ckpt).resolve().relative_to(REPO)) if Path(a.ckpt).resolve().is_relative_to(REPO) else a.ckpt,
        "sequences": n_seq, "frames": n_frames, "seed": a.seed, "quick": a.quick,
        "results": results, "baselines": baselines, "duration_s": time.perf_counter() - started,
    }  # fmt: skip
    write_text_atomic(json.dumps(report, indent=2) + "\n", out)
    save_png(figure(results, baselines), out.with_suffix(".png"))
    for name, r in results.items():
        s = r["settings"]
        print(f"{name:28s} {json.dumps(s)}: "
              f"coherence {r['coherence']['score']:.3f} ({r['seconds_per_frame']:.3f} s/frame)")  # fmt: skip
    print("baselines: " + ", ".join(f"{k} {v['score']:.3f}" for k, v in baselines.items()))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return report


if __name__ == "__main__":
    main()
