"""Image sequences in, grid images out: frame sources on disk or in memory, the grid dataset, and ``open_dataset``,
which serves a folder or a built-in synthetic set (``gridit_core.builtin``) as grids.
"""

import hashlib
import os
import re
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gridit_core.builtin import BUILTIN
from gridit_core.errors import GriditError
from gridit_core.grid import frames_to_grid

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
RESIZE_POLICIES = ("stretch", "center-crop", "none")
SPLITS = ("train", "val", "all")


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


def frames_to_tensor(images):
    """PIL frames of one size -> float32 tensor ``(T, 3, H, W)`` in ``[-1, 1]``."""
    if not images:
        raise GriditError("frames_to_tensor needs at least one frame")
    try:
        arr = np.stack([np.asarray(im if im.mode == "RGB" else im.convert("RGB")) for im in images])  # (T, H, W, 3)
    except ValueError:
        sizes = sorted({im.size for im in images})
        raise GriditError(f"frames differ in size ({sizes}); resize them to one size first") from None
    return uint8_to_tensor(arr)


def uint8_to_tensor(arr):
    """uint8 array ``(..., H, W, 3)`` -> float32 tensor ``(..., 3, H, W)`` in ``[-1, 1]``; ``tensor_to_uint8`` undone."""
    arr = np.asarray(arr)
    if arr.dtype != np.uint8 or arr.ndim < 3 or arr.shape[-1] != 3:
        raise GriditError(f"expected uint8 images (..., H, W, 3), got {arr.dtype} {arr.shape}")
    x = np.moveaxis(arr, -1, -3).astype(np.float32, order="C") / 127.5 - 1.0  # numpy: no thread overhead
    return torch.from_numpy(x)


def tensor_to_uint8(x):
    """Tensor or array ``(..., 3, H, W)`` in ``[-1, 1]`` -> numpy uint8 ``(..., H, W, 3)`` (clamped, rounded)."""
    x = torch.as_tensor(x).detach().cpu().float()
    if x.ndim < 3 or x.shape[-3] != 3:
        raise GriditError(f"expected images (..., 3, H, W), got shape {tuple(x.shape)}")
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).numpy()  # (..., H, W, 3)


def _stable_hash(*parts):
    """64-bit integer from the parts' text; unlike ``hash()`` it is the same in every process."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little")


class GridClips(torch.utils.data.Dataset):
    """Grid images ``(3, rows*H, cols*W)`` in ``[-1, 1]`` of ``rows*cols`` frames taken every ``stride`` frames.

    Each sequence is cut into ``len // span`` non-overlapping windows of ``span = (rows*cols-1)*stride + 1``
    frames starting at multiples of ``span`` (the official chunking). With ``random_offset`` the frames left
    over at the end are shared out: the windows of a sequence move right by sorted random offsets, so each one
    moves within the slack before the next and they never overlap. The draw depends on ``seed``, the epoch
    (``set_epoch``) and the sequence only, so every worker and every rerun sees the same windows.
    """

    def __init__(self, sequences, rows, cols, frame_size, stride=1, resize="stretch", random_offset=True, seed=0):
        if min(rows, cols, stride) < 1:
            raise GriditError(f"rows, cols and stride must be >= 1, got {rows}, {cols}, {stride}")
        if resize not in RESIZE_POLICIES:
            raise GriditError(f"unknown resize policy {resize!r}; choose one of {', '.join(RESIZE_POLICIES)}")
        self.sequences = list(sequences)
        self.rows, self.cols, self.stride, self.resize = rows, cols, stride, resize
        self.size = _size_hw(frame_size)
        self.random_offset, self.seed, self.epoch = random_offset, seed, 0
        self.span = (rows * cols - 1) * stride + 1
        self.windows = []  # (sequence index, window index, windows in sequence, spare frames at the end)
        self.skipped = []
        for si, seq in enumerate(self.sequences):
            k = len(seq) // self.span
            if k == 0:
                self.skipped.append(seq.name)
            self.windows += [(si, j, k, len(seq) - k * self.span) for j in range(k)]
        if not self.windows:
            longest = max((len(s) for s in self.sequences), default=0)
            raise GriditError(
                f"no sequence has the {self.span} frames a {rows}x{cols} grid with stride {stride} needs "
                f"(longest: {longest})"
            )

    def __len__(self):
        return len(self.windows)

    def set_epoch(self, epoch):
        """Draw new window offsets; call it before each epoch (DataLoader workers pick it up when they start)."""
        self.epoch = int(epoch)

    def frame_indices(self, index):
        """``(sequence index, frame indices)`` of item ``index`` in the current epoch."""
        si, j, k, spare = self.windows[index]
        offset = 0
        if self.random_offset and spare:
            g = torch.Generator().manual_seed(_stable_hash(self.seed, self.epoch, si))
            offset = int(torch.randint(0, spare + 1, (k,), generator=g).sort().values[j])
        start = j * self.span + offset
        return si, list(range(start, start + self.span, self.stride))

    def __getitem__(self, index):
        si, idx = self.frame_indices(index)
        seq = self.sequences[si]
        images = [
            resize_frame(im, self.size, self.resize, name=f"{seq.name}[{i}]") for i, im in zip(idx, seq.frames(idx))
        ]
        return frames_to_grid(frames_to_tensor(images), self.rows, self.cols)  # (3, R*H, C*W)


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


def open_dataset(
    spec, rows, cols, frame_size, *, stride=1, resize="stretch", split="train", val_fraction=0.1, seed=0,
    n_sequences=2000, bouncing=None,
):
    """``GridClips`` from ``"builtin:NAME"`` (see ``BUILTIN``) or a path searched by ``find_sequences``."""
    if split not in SPLITS:
        raise GriditError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    spec = str(spec)
    if spec.startswith("builtin:"):
        name = spec.split(":", 1)[1]
        if name not in BUILTIN:
            raise GriditError(f"unknown builtin dataset {name!r}; choose one of {', '.join(sorted(BUILTIN))}")
        span = (rows * cols - 1) * stride + 1
        h, w = _size_hw(frame_size)
        length = max(4 * span, bouncing.length if bouncing else 64)  # at least 4 windows per sequence
        n_val = max(1, round(n_sequences * val_fraction))
        sizes = {"train": n_sequences, "val": n_val}
        sequences = []
        for part in ("train", "val") if split == "all" else (split,):
            part_seed = _stable_hash(seed, part)  # train and val never share a random stream
            frames = BUILTIN[name](sizes[part], length, max(h, w), part_seed, bouncing)  # (N, T, S, S, 3)
            sequences += [ArraySequence(f"{name}-{part}/{i:05d}", f) for i, f in enumerate(frames)]
    else:
        found = find_sequences(spec)
        train, val = split_sequences(found, val_fraction, seed)
        sequences = {"train": train, "val": val, "all": found}[split]
        if not sequences:
            raise GriditError(f"the {split} split of {spec} is empty ({len(found)} sequences, val {val_fraction})")
    return GridClips(sequences, rows, cols, frame_size, stride=stride, resize=resize, seed=seed)
