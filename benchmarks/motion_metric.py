"""The plausible rate (``gridit_core.metrics.motion``) checked on data whose motion is known: real sequences and their
shuffled and frozen baselines, sets broken at known rates (``metrics.graded``) and re-styled ones, for the demo's
balls, two balls of several colours, and moving digits.

    .venv/bin/python benchmarks/motion_metric.py            # 16 sequences x 32 frames per set (a few minutes)
    .venv/bin/python benchmarks/motion_metric.py --quick    # 4 sequences x 12 frames: a smoke test

It writes ``reports/bench/motion_metric.json`` and ``reports/bench/motion_metric.png`` (the measured rate against the
share of transitions each broken set leaves whole). docs/metrics.md quotes this run.
"""

import argparse
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

from gridit_core.data.builtin import BouncingConfig, bouncing_shapes, moving_digits  # noqa: E402
from gridit_core.experiments.recipes import QUICKSTART  # noqa: E402
from gridit_core.metrics.coherence import BallReference, coherence_many, with_baselines  # noqa: E402
from gridit_core.metrics.digits import DigitReference, digit_coherence_many  # noqa: E402
from gridit_core.metrics.graded import BREAKS, RESTYLES, corrupt  # noqa: E402
from gridit_core.util.io import write_bytes_atomic, write_text_atomic  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RATES = (0.03, 0.1, 0.2, 0.4)  # shares of frames broken
FIGURES = ("plausible_rate", "plausible_rate_ci", "plausible_run", "detection_rate", "appearance", "score")


def sources(n, length):
    """``{name: (real sequences, reference, score_many)}``: the demo's balls, two balls of several colours at 32 px, and
    moving digits; references of a seed the sequences do not use."""
    demo = BouncingConfig.for_frame_size(16, length=length, **QUICKSTART.builtin)
    two = BouncingConfig.for_frame_size(32, length=length, n_balls=2)
    return {
        "demo balls (16 px)": (list(bouncing_shapes(n, demo, seed=99).frames), BallReference.from_config(demo), coherence_many),
        "two balls (32 px)": (list(bouncing_shapes(n, two, seed=99).frames), BallReference.from_config(two), coherence_many),
        "digits (32 px)": (list(moving_digits(n, length, 32, seed=99)), DigitReference.from_source(32, length), digit_coherence_many),
    }  # fmt: skip


def pick(result):
    return {k: result.get(k) for k in FIGURES}


def measure(n, length):
    out = {}
    for name, (real, reference, score_many) in sources(n, length).items():
        row = {k: pick(v) for k, v in with_baselines(real, real, reference, score_many=score_many).items() if k != "samples"}
        row["restyled"] = {k: pick(score_many([f(x) for x in real], reference)) for k, f in RESTYLES.items()}
        row["broken"] = []
        for kind in BREAKS:
            for rate in RATES:
                seqs, broken = corrupt(real, rate, kind, seed=3)
                row["broken"].append({"kind": kind, "rate": rate, "left_whole": 1 - broken,
                                      **pick(score_many(seqs, reference))})  # fmt: skip
        out[name] = row
        print(f"{name}: real {row['real']['plausible_rate']:.3f}, shuffled {row['shuffled']['plausible_rate']:.3f}, "
              f"frozen {row['frozen']['plausible_rate']:.3f}", flush=True)  # fmt: skip
    return out


def figure(results):
    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.6), squeeze=False)
    for ax, (name, row) in zip(axes[0], results.items()):
        for kind, marker in zip(BREAKS, "osd"):
            pts = [r for r in row["broken"] if r["kind"] == kind]
            x, y = [r["left_whole"] for r in pts], [r["plausible_rate"] for r in pts]
            err = np.array([[r["plausible_rate"] - r["plausible_rate_ci"][0] for r in pts],
                            [r["plausible_rate_ci"][1] - r["plausible_rate"] for r in pts]])  # fmt: skip
            ax.errorbar(x, y, yerr=err, fmt=marker, capsize=3, label=f"{kind} frames")
        styled = [r["plausible_rate"] for r in row["restyled"].values()]
        ax.scatter([1.0] * len(styled), styled, marker="x", color="k", label="re-styled", zorder=3)
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.axhline(row["real"]["plausible_rate"], color="tab:green", lw=0.8, label="real")
        ax.axhline(row["shuffled"]["plausible_rate"], color="tab:red", lw=0.8, label="shuffled")
        ax.set(xlim=(0, 1.05), ylim=(0, 1.05), xlabel="share of transitions left whole", ylabel="plausible rate",
               title=name)  # fmt: skip
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.suptitle("The plausible rate against how often the motion was broken (95% intervals over sequences)")
    fig.tight_layout()
    return fig


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sequences", type=int, default=16)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--quick", action="store_true", help="4 sequences x 12 frames: a smoke test")
    p.add_argument("--out", default=str(REPO / "reports" / "bench" / "motion_metric.json"))
    a = p.parse_args(argv)
    n, length = (4, 12) if a.quick else (a.sequences, a.frames)
    started = time.perf_counter()
    results = measure(n, length)
    report = {
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/motion_metric.py", *(argv if argv is not None else sys.argv[1:])]),
        "sequences": n, "frames": length, "rates": list(RATES), "results": results,
        "duration_s": time.perf_counter() - started,
    }  # fmt: skip
    out = Path(a.out)
    write_text_atomic(json.dumps(report, indent=2) + "\n", out)
    buf = io.BytesIO()
    figure(results).savefig(buf, format="png", dpi=110)
    write_bytes_atomic(buf.getvalue(), out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return report


if __name__ == "__main__":
    main()
