"""Checkpoint files: written atomically, read with ``weights_only=True`` (or as ``.safetensors``)."""

import os
import pickle
import tempfile
import warnings
from pathlib import Path

import torch

from gridit_core.errors import GriditError


def save_atomic(obj, path):
    """Write ``obj`` with ``torch.save`` to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one, never half
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _why_unreadable(err):
    """A short reason for a failed ``torch.load``; torch's own messages run to a paragraph."""
    if isinstance(err, pickle.UnpicklingError):
        return "not a PyTorch file of tensors and plain containers"
    if isinstance(err, EOFError):
        return "the file is empty or cut short"
    text = " ".join(str(err).split())
    first = text.split(". ")[0][:160] or type(err).__name__
    return f"truncated, corrupt or not a PyTorch file ({first})"


def load_file(path, map_location="cpu"):
    """Load a checkpoint with ``weights_only=True``, a ``.safetensors`` file as its dict of tensors.

    A missing or corrupt file is a ``GriditError``.
    """
    path = Path(path)
    if path.is_dir():
        raise GriditError(f"checkpoint {path} is a folder, not a file")
    if not path.is_file():
        raise GriditError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file as load_safetensors

            return load_safetensors(path, device=str(map_location))
        with warnings.catch_warnings():
            # the weights-only unpickler warns about the pickle protocol of foreign files just before refusing them
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types (RuntimeError, UnpicklingError, KeyError, EOFError, SafetensorError, ...)
        raise GriditError(f"cannot read checkpoint {path}: {_why_unreadable(e)}") from None
