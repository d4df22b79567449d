"""Fidelity of a stage-2 checkpoint on held-out frames: PSNR and SSIM against bicubic upsampling.

The stage-2 numbers ``docs/results.md``, ``assets/demo_sr/README.md`` and ``reports/stage2_x4.md`` quote come from this
script:

    .venv/bin/python benchmarks/stage2_fidelity.py                         # the shipped demo_sr checkpoint
    .venv/bin/python benchmarks/stage2_fidelity.py --ckpt runs/sr/checkpoints/last.pt --out /tmp/sr.json
    .venv/bin/python benchmarks/stage2_fidelity.py --quick                 # 4 frames, 2 steps: a smoke test

Held-out frames of the checkpoint's built-in data (bouncing seed ``--seed``) are brought down clean (antialiased
bicubic) or degraded by the checkpoint's own training recipe, super-resolved with DDIM, and scored at noise
levels 0 and 0.1. Writes ``reports/bench/stage2_fidelity.json``.
"""

import argparse
import datetime
import json
import time
from pathlib import Path

from gridit_core.experiments.quickstart import sr_fidelity
from gridit_core.training import load_sr
from gridit_core.util.io import write_text_atomic

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CKPT = REPO / "assets" / "demo_sr" / "model.safetensors"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", default=str(DEFAULT_CKPT), help="stage-2 checkpoint (default: the shipped demo_sr)")
    p.add_argument("--frames", type=int, default=32, help="held-out frames")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps per frame")
    p.add_argument("--seed", type=int, default=999, help="seed of the held-out frames and of sampling")
    p.add_argument("--quick", action="store_true", help="4 frames, 2 steps: a smoke test")
    p.add_argument("--out", default=str(REPO / "reports" / "bench" / "stage2_fidelity.json"))
    a = p.parse_args(argv)
    frames, steps = (4, 2) if a.quick else (a.frames, a.steps)
    run = load_sr(a.ckpt)
    started = time.perf_counter()
    rows = []
    for degraded in (False, True):
        for level in (0.0, 0.1):
            scores, _ = sr_fidelity(run, frames, steps=steps, noise_level=level, seed=a.seed, degraded=degraded)
            rows.append({"input": "degraded" if degraded else "clean", "noise_level": level, **scores})
            print(f"{rows[-1]['input']:8s} noise {level:.1f}: PSNR {scores['psnr']:.2f} dB (bicubic "
                  f"{scores['psnr_bicubic']:.2f}), SSIM {scores['ssim']:.3f} (bicubic {scores['ssim_bicubic']:.3f})")
    ckpt = Path(a.ckpt).resolve()
    report = {
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/stage2_fidelity.py" + (" --quick" if a.quick else ""),
        "checkpoint": str(ckpt.relative_to(REPO)) if ckpt.is_relative_to(REPO) else str(ckpt),
        "frames": frames, "steps": steps, "seed": a.seed, "sampler": "ddim", "scale": run[2].scale,
        "frame_size": run[2].frame_size, "results": rows, "duration_s": time.perf_counter() - started,
    }  # fmt: skip
    write_text_atomic(json.dumps(report, indent=2) + "\n", a.out)
    print(f"wrote {a.out}")
    return report


if __name__ == "__main__":
    main()
