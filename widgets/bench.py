"""How responsive the widgets are with the demo checkpoint, measured in the kernel (no browser): live-view updates
per second while the SequenceSampler samples, and the time from a click on a patch to the inspector's new picture.

Usage: python -m widgets.bench [--out reports/widgets/bench.json]. Goals (issue 9): at least 5 live updates per
second, under 300 ms per click. A browser adds the transfer of each picture (a few kB) to these times.
"""

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from gridit_core.util.io import write_text_atomic
from widgets import AttentionInspector, SequenceSampler

REPO = Path(__file__).resolve().parents[1]
CKPT = REPO / "assets" / "demo_bouncing" / "model.safetensors"


def live_view(frames=16, steps=50):
    """Updates per second of the live pictures during a run with the checkpoint's saved settings (DDPM, resampling 5)."""
    sampler = SequenceSampler(str(CKPT), frames=frames)
    sampler.controls["steps"].value = steps
    pushes = []
    sampler.live_x.observe(lambda _: pushes.append(time.perf_counter()), "value")
    sampler.run()
    sampler.wait()
    run = sampler.current
    took = run.finished - run.started
    return {"frames": frames, "steps": steps, "resample": sampler.controls["resample"].value, "seconds": round(took, 2),
            "live_updates": len(pushes), "updates_per_second": round(len(pushes) / took, 1),
            "model_steps_per_second": round(run.progress["units"] * run.progress["steps"] / took, 1)}  # fmt: skip


def click_latency(clicks=20):
    """Milliseconds from a click on a patch to the new picture, for each layer view and for rollout."""
    sampler = SequenceSampler(str(CKPT), frames=8)
    sampler.controls["steps"].value = 10
    sampler.run()
    sampler.wait()
    inspector = AttentionInspector(str(CKPT), sequence=sampler, t=250, layer=1)
    out = {}
    for view in ("layer", "rollout"):
        inspector.view.value = view
        times = []
        for i in range(clicks):
            start = time.perf_counter()
            inspector.patches.press(8 + 33 * (i % 7), 8 + 17 * (i % 11))
            times.append((time.perf_counter() - start) * 1000)
        times.sort()
        out[view] = {"median_ms": round(times[len(times) // 2], 1), "max_ms": round(times[-1], 1)}
    start = time.perf_counter()
    inspector.t.value = 600  # a new noise level: one layer computed afresh, matrix and picture redrawn
    out["new_noise_level_ms"] = round((time.perf_counter() - start) * 1000, 1)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "reports" / "widgets" / "bench.json"))
    args = parser.parse_args(argv)
    result = {"live_view": live_view(), "click": click_latency(),
              "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}}
    write_text_atomic(json.dumps(result, indent=2) + "\n", args.out)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
