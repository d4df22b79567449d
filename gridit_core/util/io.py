"""Files: every write atomic (a temporary file beside the target, then one rename), checkpoints read with
``weights_only=True`` (or as ``.safetensors``), output folders checked before anything in them is replaced, and the
frame writer that sampling streams into."""

import contextlib
import os
import pickle
import shutil
import uuid
import warnings
from pathlib import Path

import torch
from PIL import Image

from gridit_core.errors import GriditError
from gridit_core.util.image import tensor_to_uint8


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; when the block ends without error it is renamed onto ``path``.

    Readers see the old file or the new one, never half of one; an error leaves no temporary file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield Path(tmp)
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask())  # some writers make 0600
        os.replace(tmp, path)  # atomic on POSIX
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask():
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def save_atomic(obj, path):
    """Write ``obj`` with ``torch.save`` atomically (see ``atomic_path``), flushed to disk before the rename."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def write_text_atomic(text, path):
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_bytes_atomic(data, path):
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


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


def prepare_output_dir(out_dir, overwrite, outputs):
    """Refuse an output folder that already holds any of ``outputs`` unless ``overwrite``; then clear them."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise GriditError(f"output path {out_dir} exists and is not a folder")
    present = [name for name in outputs if (out_dir / name).exists()]
    if present and not overwrite:
        raise GriditError(f"output folder {out_dir} already holds results ({', '.join(present)}); pass --overwrite to replace them")
    for name in present:
        path = out_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


class FrameWriter:
    """Writes ``DIR/frames/000000.png ...`` as frames arrive and ``DIR/sequence.gif`` when closed.

    ``frames`` and ``gif_name`` rename the two outputs, so one folder can hold several streams (``frames_lr/``).
    """

    def __init__(self, out_dir, *, fps=8, gif=True, frames="frames", gif_name="sequence.gif"):
        self.out_dir = Path(out_dir)
        self.frames_dir = self.out_dir / frames
        self.gif_name = gif_name
        self.frames_dir.mkdir(parents=True, exist_ok=True)  # the caller has checked the folder (prepare_output_dir)
        self.fps, self.gif = fps, gif
        self.count = 0
        self._palette_frames = []  # GIF frames kept as 1-byte palette images: small even for 1,000s of frames

    def add(self, frame):
        """Write one frame (tensor ``(3, H, W)`` in [-1, 1] or uint8 ``(H, W, 3)``); returns the PIL image written."""
        img = Image.fromarray(tensor_to_uint8(frame) if torch.is_tensor(frame) else frame)
        img.save(self.frames_dir / f"{self.count:06d}.png")
        if self.gif:
            self._palette_frames.append(img.convert("P", palette=Image.ADAPTIVE))
        self.count += 1
        return img

    def close(self):
        if self.gif and self._palette_frames:
            first, *rest = self._palette_frames
            with atomic_path(self.out_dir / self.gif_name) as tmp:
                first.save(tmp, format="GIF", save_all=True, append_images=rest, duration=int(1000 / self.fps), loop=0)
        self._palette_frames = []
        return self.out_dir
