"""Coherence of a stage-1 checkpoint's samples under several sampling settings, beside real, shuffled and frozen data:
the plausible rate (``metrics.motion``) with its 95% interval and split at the seams, and the strict score.

The numbers docs/results.md and the asset READMEs quote about sampling settings come from this script:

    .venv/bin/python benchmarks/coherence.py            # the shipped demo checkpoint, 8 sequences x 32 frames
    .venv/bin/python benchmarks/coherence.py --quick    # 2 sequences x 8 frames, 5 steps: a smoke test

It writes ``reports/bench/coherence.json`` and ``reports/bench/coherence.png`` (bar charts of the plausible rates).
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
import numpy as np  # noqa: E402
import torch  # noqa: E402

from gridit_core.experiments.quickstart import real_sequences, reference, score  # noqa: E402
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
        seams = family_of(model).seams(model, n_frames, settings)
        scores = score(tensor_to_uint8(frames), real, reference(cfg, n_frames), seams)
        results[name] = {"settings": settings.pick(family_of(model).sample_fields), "coherence": scores["samples"],
                         "seconds_per_frame": seconds / (n_frames * n_sequences)}  # fmt: skip
        baselines = {k: scores[k] for k in ("real", "shuffled", "frozen")}
    return results, baselines


def figure(results, baselines):
    """Plausible rate with its interval per setting and baseline; for each setting also at seams and inside."""
    rows = [(n, r["coherence"]) for n, r in results.items()] + list(baselines.items())
    colours = ["tab:blue"] * len(results) + ["tab:green", "tab:red", "tab:gray"]
    fig, ax = plt.subplots(figsize=(9, 3.4))
    x = np.arange(len(rows))
    for offset, key, alpha in ((-0.27, "plausible_rate_at_seams", 0.45), (0.0, "plausible_rate", 1.0),
                               (0.27, "plausible_rate_inside", 0.45)):  # fmt: skip
        values = np.array([np.nan if c.get(key) is None else c[key] for _, c in rows])
        ci = [c.get(f"{key}_ci") or [v, v] for (_, c), v in zip(rows, values)]
        err = np.nan_to_num(np.array([[v - lo for v, (lo, _) in zip(values, ci)], [hi - v for v, (_, hi) in zip(values, ci)]]))
        ax.bar(x + offset, values, width=0.26, color=colours, alpha=alpha, yerr=err, capsize=3)
        if key == "plausible_rate":
            for i, v in enumerate(values):
                ax.text(i, (0 if np.isnan(v) else v) + 0.05, "n/a" if np.isnan(v) else f"{v:.2f}", ha="center", fontsize=8)
    names = [n if len(n) < 30 else n[:27] + "..." for n, _ in rows]
    ax.set_xticks(x, names, rotation=15, ha="right")
    ax.set(ylim=(0, 1.15), ylabel="plausible rate",
           title="Plausible motion by sampling setting (faint: at seams | inside grids; 95% intervals)")  # fmt: skip
    fig.tight_layout()
    return fig


def _text(row, key):
    value, ci = row.get(key), row.get(f"{key}_ci")
    if value is None:
        return "n/a"
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


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
        c = r["coherence"]
        print(f"{name:28s} {json.dumps(r['settings'])}: plausible {_text(c, 'plausible_rate')}, at seams "
              f"{_text(c, 'plausible_rate_at_seams')}, inside {_text(c, 'plausible_rate_inside')}, strict "
              f"{c['score']:.3f} ({r['seconds_per_frame']:.3f} s/frame)")  # fmt: skip
    print("baselines: " + ", ".join(f"{k} {_text(v, 'plausible_rate')}" for k, v in baselines.items()))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return report


if __name__ == "__main__":
    main()
