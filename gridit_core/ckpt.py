"""Checkpoint files: written atomically, read with ``weights_only=True``."""

import os
import tempfile
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


def load_file(path, map_location="cpu"):
    """Load a checkpoint with ``weights_only=True``; a missing or corrupt file is a ``GriditError``."""
    path = Path(path)
    if not path.is_file():
        raise GriditError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise GriditError(f"cannot read checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
