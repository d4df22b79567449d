"""Where sequences come from: folders of frames, GIFs and videos on disk, or arrays in memory, each a sequence of PIL
frames read on demand; ``find_sequences`` walks a dataset folder, ``split_sequences`` splits it by name."""

import hashlib
import os
import re
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from gridit_core.errors import GriditError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
RESIZE_POLICIES = ("stretch", "center-crop", "none")


def natural_key(name):
    """Sort key that orders digit runs by value, so ``frame_10`` follows ``frame_9``."""
    parts = re.split(r"(\d+)", str(name))  # text at even positions, digit runs at odd ones
    return tuple(int(p) if i % 2 else p.lower() for i, p in enumerate(parts)), str(name)


@contextmanager
def _reading(path, what="image"):
    """Turn any decoder failure inside the block into a one-line ``GriditError`` naming the file."""
    try:
        yield
    except GriditError:
        raise
    except (OSError, EOFError, SyntaxError, ValueError, RuntimeError, Image.DecompressionBombError) as err:
        msg = " ".join(str(err).split()) or type(err).__name__
        raise GriditError(f"cannot read {what} {path}: {msg}") from None


def load_image(path):
    """Read an image file fully into memory as RGB; any failure is a one-line ``GriditError``."""
    with _reading(path), Image.open(path) as img:
        img.load()  # decode now: a truncated file fails here, not later in a worker
        return img.convert("RGB")


class _Sequence:
    """Common part of the sequence sources: ``name``, ``len()``, ``frame(i)`` and ``frames(indices)``."""

    name = ""
    _len = 0

    def __len__(self):
        return self._len

    def frame(self, i):
        return self.frames([i])[0]

    def frames(self, indices):
        """PIL RGB frames at ``indices`` (negative indices count from the end)."""
        span = range(self._len)
        return self._read([span[i] for i in indices])  # IndexError on out-of-range, as a sequence should

    def _read(self, indices):
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r}, {self._len} frames)"


class FolderSequence(_Sequence):
    """A folder of image files, one frame each, in natural order of file name."""

    def __init__(self, folder, name=None):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise GriditError(f"sequence folder {self.folder} does not exist")
        files = [p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file()]
        if not files:
            raise GriditError(f"no image files ({' '.join(IMAGE_EXTS)}) in {self.folder}")
        self.files = sorted(files, key=lambda p: natural_key(p.name))
        self.name = name or self.folder.name
        self._len = len(self.files)

    def _read(self, indices):
        return [load_image(self.files[i]) for i in indices]


class GifSequence(_Sequence):
    """The frames of an animated GIF (or any multi-frame image file), converted to RGB."""

    def __init__(self, path, name=None):
        self.path = Path(path)
        with _reading(self.path), Image.open(self.path) as img:
            self._len = getattr(img, "n_frames", 1)
        self.name = name or self.path.stem

    def _read(self, indices):
        out = []
        with _reading(self.path), Image.open(self.path) as img:  # opened per call so the object pickles
            for i in indices:
                img.seek(i)
                out.append(img.convert("RGB"))
        return out


def _imageio():
    try:
        import imageio.v3 as iio
    except ImportError:
        raise GriditError("reading videos needs the package imageio[ffmpeg]: pip install 'imageio[ffmpeg]'") from None
    return iio


class VideoSequence(_Sequence):
    """The frames of a video file, decoded with ``imageio.v3`` (needs ``imageio[ffmpeg]``)."""

    def __init__(self, path, name=None):
        self.path = Path(path)
        self.name = name or self.path.stem
        iio = _imageio()
        with _reading(self.path, "video"):
            try:
                n = int(iio.improps(self.path).shape[0])
            except (TypeError, OverflowError, IndexError):
                n = 0
            if n <= 0:  # some backends cannot tell the frame count without decoding
                n = sum(1 for _ in iio.imiter(self.path))
        self._len = n

    def _read(self, indices):
        if not indices:
            return []
        wanted, last, got = set(indices), max(indices), {}
        with _reading(self.path, "video"):
            for i, frame in enumerate(_imageio().imiter(self.path)):  # one sequential decode for all indices
                if i in wanted:
                    got[i] = Image.fromarray(np.asarray(frame, dtype=np.uint8)).convert("RGB")
                if i >= last:
                    break
        if len(got) < len(wanted):
            raise GriditError(f"video {self.path} has fewer frames than the {self._len} it announced")
        return [got[i] for i in indices]


class ArraySequence(_Sequence):
    """Frames held in memory as a uint8 array ``(T, H, W, 3)``."""

    def __init__(self, name, frames):
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise GriditError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
        self.name, self.array, self._len = str(name), frames, len(frames)

    def _read(self, indices):
        return [Image.fromarray(self.array[i]) for i in indices]


def _file_sequence(path, name):
    suffix = path.suffix.lower()
    if suffix == ".gif":
        return GifSequence(path, name)
    if suffix in VIDEO_EXTS:
        return VideoSequence(path, name)
    raise GriditError(f"{path} is not a sequence: expected a folder, a .gif or a video ({' '.join(VIDEO_EXTS)})")


def find_sequences(root):
    """Every sequence under ``root``: folders that directly hold image files, GIFs and videos (or ``root`` itself).

    Names are paths relative to ``root`` (``root``'s own name if it holds frames itself); hidden files and
    folders are skipped; the result is in natural order of name.
    """
    root = Path(root)
    if not root.exists():
        raise GriditError(f"dataset path {root} does not exist")
    if root.is_file():
        return [_file_sequence(root, root.stem)]
    found = []
    def unreadable(err):
        raise GriditError(f"cannot read dataset folder {err.filename}: {err.strerror}")

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        here = Path(dirpath)
        rel = here.relative_to(root).as_posix()
        files = [f for f in filenames if not f.startswith(".")]
        if any(Path(f).suffix.lower() in IMAGE_EXTS for f in files):
            found.append(FolderSequence(here, name=root.name if rel == "." else rel))
        for f in files:
            if Path(f).suffix.lower() in (".gif", *VIDEO_EXTS):
                found.append(_file_sequence(here / f, (here / f).relative_to(root).as_posix()))
    if not found:
        raise GriditError(f"no image sequences found under {root}")
    return sorted(found, key=lambda s: natural_key(s.name))


def _size_hw(size):
    h, w = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if int(h) < 1 or int(w) < 1:
        raise GriditError(f"frame size must be positive, got {size}")
    return int(h), int(w)


def resize_frame(img, size, policy="stretch", name="frame"):
    """Bring a PIL frame to ``size`` (int or ``(h, w)``) by ``policy``: stretch, center-crop or none."""
    h, w = _size_hw(size)
    if policy == "stretch":
        return img.resize((w, h), Image.BICUBIC)  # exactly the official GriDiT organiser (aspect not kept)
    if policy == "center-crop":
        iw, ih = img.size
        scale = max(w / iw, h / ih)  # the shorter side (relative to the target) fits exactly
        sw, sh = max(w, round(iw * scale)), max(h, round(ih * scale))
        left, top = (sw - w) // 2, (sh - h) // 2
        return img.resize((sw, sh), Image.BICUBIC).crop((left, top, left + w, top + h))
    if policy == "none":
        if img.size != (w, h):
            raise GriditError(f"frame {name} is {img.size[0]}x{img.size[1]}, expected {w}x{h}; pass a resize policy")
        return img
    raise GriditError(f"unknown resize policy {policy!r}; choose one of {', '.join(RESIZE_POLICIES)}")


def _stable_hash(*parts):
    """64-bit integer from the parts' text; unlike ``hash()`` it is the same in every process."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def split_sequences(sequences, val_fraction=0.1, seed=0):
    """Deterministic ``(train, val)`` split by a stable hash of each name; train is never empty.

    Val also gets at least one sequence when ``val_fraction > 0`` and there are two or more.
    """
    if not 0 <= val_fraction < 1:
        raise GriditError(f"val_fraction must be in [0, 1), got {val_fraction}")
    seqs = list(sequences)
    u = [_stable_hash(seed, s.name) / 2**64 for s in seqs]  # uniform in [0, 1), fixed per name
    in_val = [x < val_fraction for x in u]
    if seqs and all(in_val):
        in_val[int(np.argmax(u))] = False
    if val_fraction > 0 and len(seqs) > 1 and not any(in_val):
        in_val[int(np.argmin(u))] = True
    return [s for s, v in zip(seqs, in_val) if not v], [s for s, v in zip(seqs, in_val) if v]
