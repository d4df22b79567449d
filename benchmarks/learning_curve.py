"""How long a family must train from scratch before its samples can be judged: the detection rate and the plausible
rate of EMA snapshots along one training run, the budget question every study faces (a run whose samples fail the
detection gate decides nothing).

    .venv/bin/python benchmarks/learning_curve.py --arch grid --steps 4000 --every 500   # about 25 minutes on 2 cores
    .venv/bin/python benchmarks/learning_curve.py --quick                                # a smoke test

The model and data are the studies' (``notebooks/studies/paper-claims.yaml``: DiT-N/4, a 2x4 grid or clips of 8
frames of 16 px balls); every snapshot samples 4 sequences of 32 frames with DDIM 20. It writes
``reports/bench/learning_curve_ARCH.json``.
"""

import argparse
import copy
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

from gridit_core.experiments import runs
from gridit_core.experiments.params import read_parameters
from gridit_core.metrics.evaluate import evaluate
from gridit_core.sampling import FAMILIES, SampleConfig
from gridit_core.training import Trainer
from gridit_core.util.io import write_text_atomic

REPO = Path(__file__).resolve().parents[1]
STUDY = dict(DATA="builtin:bouncing", MODEL="DiT-N/4", FRAME_SIZE=16, ROWS=2, COLS=4, FRAMES=8, N_SEQUENCES=500,
             DEVICE="cpu")  # fmt: skip


def curve(arch, steps, every, n_sequences, n_frames, seed, work):
    """Train ``arch`` for ``steps`` steps, keeping the EMA weights every ``every`` steps; score each snapshot."""
    params = read_parameters(REPO / "notebooks" / "experiments" / "train.ipynb")
    params.update(STUDY, ARCH=arch, STEPS=steps, SEED=seed, OUT_DIR=str(work / "run"))
    cfg = runs.train_config(params)
    snapshots = {}
    trainer = Trainer(cfg, work / "run", overwrite=True)

    def keep(metrics):
        if metrics["step"] % every == 0:
            snapshots[metrics["step"]] = copy.deepcopy(trainer.ema.state_dict())

    started = time.perf_counter()
    trainer.fit(progress=sys.stderr.isatty(), callback=keep)
    seconds = time.perf_counter() - started
    model, rows = trainer.ema.eval(), []
    for step, state in sorted(snapshots.items()):
        model.load_state_dict(state)
        folder = work / f"samples_{step}"
        runs.sample_to_folder(model, trainer.diffusion, cfg, n_frames, n_sequences, SampleConfig(sampler="ddim", steps=20),
                              folder, seed=seed)  # fmt: skip
        c = evaluate(folder, "builtin:bouncing", builtin=cfg.builtin)["metrics"]["coherence"]["samples"]
        rows.append({"step": step, **{k: c.get(k) for k in ("detection_rate", "plausible_rate", "plausible_rate_ci")}})
        print(f"{arch} step {step}: detection {c['detection_rate']:.3f}, plausible {c['plausible_rate']}", flush=True)
    return rows, seconds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", choices=list(FAMILIES), default="grid")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--every", type=int, default=500)
    p.add_argument("--sequences", type=int, default=4)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="20 steps, a snapshot every 10, 2 sequences of 6 frames")
    p.add_argument("--out", default=None, help="default: reports/bench/learning_curve_ARCH.json")
    a = p.parse_args(argv)
    steps, every, n_seq, n_frames = (20, 10, 2, 6) if a.quick else (a.steps, a.every, a.sequences, a.frames)
    with tempfile.TemporaryDirectory() as tmp:
        rows, seconds = curve(a.arch, steps, every, n_seq, n_frames, a.seed, Path(tmp))
    report = {
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/learning_curve.py", *(argv if argv is not None else sys.argv[1:])]),
        "arch": a.arch, "steps": steps, "every": every, "sequences": n_seq, "frames": n_frames, "seed": a.seed,
        "study": STUDY, "train_seconds": seconds, "snapshots": rows,
    }  # fmt: skip
    out = Path(a.out or REPO / "reports" / "bench" / f"learning_curve_{a.arch}.json")
    write_text_atomic(json.dumps(report, indent=2) + "\n", out)
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
