"""Feature networks from local weight files (nothing is downloaded): reading a file as TorchScript or as a state dict,
checking it against the architecture expected, with one clear line when it is missing, unreadable or of another
network; and ``Extractor``, which runs one over uint8 batches. ``metrics.i3d`` and ``metrics.inception`` use it.
"""

import hashlib
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from gridit_core.errors import GriditError


@dataclass
class Extractor:
    """A loaded feature network: ``fn`` maps a uint8 batch to features ``(N, dim)``; ``name`` says what it is."""

    name: str
    fn: object
    dim: int
    path: str
    kind: str  # "torchscript" or "state dict"

    def features(self, batches, progress=False, desc="features", total=None):
        """float64 features ``(N, dim)`` of an iterable of uint8 batches, without gradients."""
        out = []
        with torch.inference_mode():
            for batch in tqdm(batches, desc=desc, unit="batch", disable=not progress, leave=False, total=total):
                out.append(self.fn(batch).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim))

    def identity(self):
        """What a cached statistic computed with this network depends on: the file's name, size and time."""
        stat = Path(self.path).stat()
        return {"network": self.name, "file": Path(self.path).name, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def file_digest(path, algorithm="sha256"):
    """Hex digest of the file at ``path``, read in blocks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_torchscript(path):
    """A TorchScript archive holds compiled code (``code/``) beside its constants; a saved state dict holds none."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any("/code/" in n or n.endswith("constants.pkl") for n in z.namelist())


def read_network(path, what, device="cpu"):
    """``("torchscript", module)`` or ``("state dict", dict of tensors)`` from ``path``; ``what`` names the network
    in errors. A state dict may sit under ``state_dict`` or ``model`` and carry DataParallel's ``module.``."""
    path = Path(path)
    if not path.is_file():
        raise GriditError(f"{what} weights file not found: {path}")
    try:
        if is_torchscript(path):
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*is deprecated", category=FutureWarning)
                return "torchscript", torch.jit.load(str(path), map_location=device).eval()
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
                state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch and safetensors raise many types for a bad file
        first = " ".join(str(e).split()).split(". ")[0][:120] or type(e).__name__
        raise GriditError(f"cannot read {what} weights {path}: not a TorchScript archive or a state dict ({first})") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise GriditError(f"{path} is not a state dict of tensors, as {what} weights must be")
    return "state dict", {k.removeprefix("module."): v for k, v in state.items()}


def load_state(model, state, path, what):
    """Load ``state`` into ``model``, refusing (one line) any missing, unexpected or misshapen tensor."""
    own = model.state_dict()
    optional = {k for k in own if k.endswith("num_batches_tracked")}
    missing = sorted(set(own) - set(state) - optional)
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        parts = [f"{len(missing)} tensors missing (e.g. {missing[0]})"] if missing else []
        parts += [f"{len(unexpected)} unexpected (e.g. {unexpected[0]})"] if unexpected else []
        raise GriditError(f"{path} is not {what}: {' and '.join(parts)}")
    for k, v in state.items():
        if own[k].shape != v.shape:
            raise GriditError(f"{path} is not {what}: {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
    model.load_state_dict(state, strict=False)  # checked above; only BatchNorm's num_batches_tracked may be absent
    return model.eval()


def check_script_output(fn, probe, dim, path, what, call):
    """Run a TorchScript network once on ``probe`` and refuse it (one line) unless it gives ``(N, dim)`` features."""
    try:
        with torch.inference_mode():
            out = fn(probe)
    except Exception as e:  # a foreign scripted module fails in its own ways
        first = " ".join(str(e).split())[:120]
        raise GriditError(f"TorchScript file {path} does not take {what}'s call {call}: {first}") from None
    if tuple(out.shape) != (len(probe), dim):
        raise GriditError(f"TorchScript file {path} gives features of shape {tuple(out.shape)}, expected "
                          f"({len(probe)}, {dim}) from {what}")  # fmt: skip
