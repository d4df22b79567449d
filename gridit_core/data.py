"""Image sequences in, grid images out: frame sources on disk or in memory, synthetic data and the grid dataset.

Pixel coordinates used by the synthetic data are continuous: pixel ``(i, j)`` covers ``[i, i+1) x [j, j+1)``,
so its centre is ``(i + 0.5, j + 0.5)`` and a ``size``-pixel frame spans ``[0, size]``.
"""

import hashlib
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

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


PALETTE = np.array(
    [(255, 60, 60), (60, 220, 60), (80, 80, 255), (255, 220, 40), (230, 70, 230), (40, 220, 230)], dtype=np.uint8
)  # bright and far apart in hue, so balls stay distinguishable where they meet


@dataclass
class BouncingConfig:
    """Bouncing balls on black: sizes in pixels, speeds in pixels per frame, ranges as ``(low, high)``."""

    frame_size: int = 32
    length: int = 64  # frames per sequence
    n_balls: int = 1
    radius: tuple = (2.5, 4.0)  # equal ends give a fixed radius
    speed: tuple = (1.0, 2.5)  # speed magnitude; direction is uniform
    colours: object = "palette"  # "palette" (distinct PALETTE colours per sequence) or one RGB tuple for all
    antialias: bool = True  # soft edge by pixel coverage, so sub-pixel motion shows

    @classmethod
    def for_frame_size(cls, frame_size, **overrides):
        """The defaults (sized for 32 px frames) with radius and speed scaled to ``frame_size``."""
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise GriditError(f"unknown bouncing-shapes settings {sorted(unknown)}; known: {', '.join(f.name for f in fields(cls))}")
        k = frame_size / 32
        radius = (max(1.0, 2.5 * k), max(1.0, 4.0 * k))
        return replace(cls(frame_size=frame_size, radius=radius, speed=(1.0 * k, 2.5 * k)), **overrides)


@dataclass
class BouncingData:
    """Frames ``(N, T, H, W, 3)`` uint8 with their ground truth: centres ``(N, T, B, 2)`` as ``(y, x)`` pixels."""

    frames: np.ndarray
    positions: np.ndarray
    radii: np.ndarray  # (N, B)
    colours: np.ndarray  # (N, B, 3) uint8
    velocities: np.ndarray  # (N, B, 2) initial (vy, vx)


def reflect_into(p, low, high):
    """Fold unbounded positions into ``[low, high]`` as elastic bounces between two walls do."""
    span = high - low
    u = np.mod(p - low, 2 * span)
    return low + span - np.abs(u - span)


def _range(pair, what):
    lo, hi = (float(pair), float(pair)) if np.isscalar(pair) else map(float, pair)
    if not 0 <= lo <= hi:
        raise GriditError(f"{what} must be a range (low, high) with 0 <= low <= high, got {pair}")
    return lo, hi


def bouncing_shapes(n_sequences, cfg=None, seed=0):
    """Sequences of balls moving at constant velocity and bouncing elastically off the frame walls."""
    cfg = cfg or BouncingConfig()
    n, t, s, b = int(n_sequences), int(cfg.length), int(cfg.frame_size), int(cfg.n_balls)
    if min(n, t, s, b) < 1:
        raise GriditError(f"bouncing_shapes needs positive sizes, got n={n} and {cfg}")
    r_lo, r_hi = _range(cfg.radius, "radius")
    v_lo, v_hi = _range(cfg.speed, "speed")
    if r_lo <= 0 or 2 * r_hi >= s:
        raise GriditError(f"ball radius {cfg.radius} must be > 0 and fit a {s}px frame (below {s / 2})")
    rng = np.random.default_rng(seed)
    radii = rng.uniform(r_lo, r_hi, (n, b))
    speed = rng.uniform(v_lo, v_hi, (n, b))
    angle = rng.uniform(0, 2 * np.pi, (n, b))
    vel = np.stack([speed * np.sin(angle), speed * np.cos(angle)], -1)  # (N, B, 2) as (vy, vx)
    r = radii[..., None]  # (N, B, 1)
    start = r + rng.uniform(0, 1, (n, b, 2)) * (s - 2 * r)  # (N, B, 2)
    if isinstance(cfg.colours, str) and cfg.colours == "palette":
        order = np.argsort(rng.random((n, len(PALETTE))), axis=1)  # distinct colours while the palette lasts
        colours = PALETTE[order[:, np.arange(b) % len(PALETTE)]]  # (N, B, 3)
    else:
        c = np.asarray(cfg.colours)
        if c.shape != (3,) or c.min() < 0 or c.max() > 255:
            raise GriditError(f"colours must be 'palette' or one RGB tuple of 0-255 values, got {cfg.colours!r}")
        colours = np.broadcast_to(c.astype(np.uint8), (n, b, 3)).copy()
    steps = np.arange(t, dtype=np.float64)[None, :, None, None]  # (1, T, 1, 1)
    pos = reflect_into(start[:, None] + vel[:, None] * steps, r[:, None], s - r[:, None])  # (N, T, B, 2)

    frames = np.empty((n, t, s, s, 3), np.uint8)
    grid = np.arange(s, dtype=np.float32) + 0.5  # pixel centres
    chunk = max(1, 2**21 // (t * s * s))
    for lo in range(0, n, chunk):
        sl = slice(lo, lo + chunk)
        img = np.zeros((len(range(n)[sl]), t, s, s, 3), np.float32)  # (n, T, H, W, 3)
        for k in range(b):  # later balls are drawn over earlier ones
            dy = grid[None, None, :, None] - pos[sl, :, k, 0, None, None].astype(np.float32)  # (n, T, H, 1)
            dx = grid[None, None, None, :] - pos[sl, :, k, 1, None, None].astype(np.float32)  # (n, T, 1, W)
            rad = radii[sl, k, None, None, None].astype(np.float32)
            dist = np.sqrt(dy * dy + dx * dx)  # (n, T, H, W)
            cover = np.clip(rad - dist + 0.5, 0, 1) if cfg.antialias else (dist <= rad).astype(np.float32)
            cover = cover[..., None]  # (n, T, H, W, 1)
            img = img * (1 - cover) + cover * colours[sl, k, None, None, None, :].astype(np.float32)
        frames[sl] = np.rint(img).astype(np.uint8)
    return BouncingData(frames, pos, radii, colours, vel)


@lru_cache(maxsize=None)
def _digit_glyphs(height):
    """Glyphs of 0-9 from PIL's built-in font, upscaled to ``height`` pixels: a list of uint8 ``(h, w)``."""
    font = ImageFont.load_default()
    glyphs = []
    for d in range(10):
        canvas = Image.new("L", (48, 48))
        ImageDraw.Draw(canvas).text((8, 8), str(d), fill=255, font=font)
        glyph = canvas.crop(canvas.getbbox())
        width = max(1, round(glyph.width * height / glyph.height))
        glyphs.append(np.asarray(glyph.resize((width, height), Image.BICUBIC)))
    return glyphs


def moving_digits(n_sequences, length=64, frame_size=32, n_digits=1, seed=0, speed=(1.0, 2.5)):
    """White digits 0-9 on black, each at constant velocity bouncing off the walls: uint8 ``(N, T, H, W, 3)``."""
    n, t, s, m = int(n_sequences), int(length), int(frame_size), int(n_digits)
    if min(n, t, m) < 1 or s < 8:
        raise GriditError(f"moving_digits needs n, length, n_digits >= 1 and frame_size >= 8, got {n}, {t}, {m}, {s}")
    v_lo, v_hi = _range(speed, "speed")
    glyphs = _digit_glyphs(max(4, s // 2))
    rng = np.random.default_rng(seed)
    digits = rng.integers(10, size=(n, m))
    speeds = rng.uniform(v_lo, v_hi, (n, m))
    angle = rng.uniform(0, 2 * np.pi, (n, m))
    frames = np.zeros((n, t, s, s), np.uint8)
    steps = np.arange(t)[:, None]  # (T, 1)
    for i in range(n):
        for k in range(m):
            g = glyphs[digits[i, k]]
            room = np.array([s - g.shape[0], s - g.shape[1]], dtype=np.float64)  # top-left corner range
            start = rng.uniform(0, 1, 2) * room
            v = speeds[i, k] * np.array([np.sin(angle[i, k]), np.cos(angle[i, k])])
            corner = np.rint(reflect_into(start + v * steps, 0.0, room)).astype(int)  # (T, 2)
            ys = corner[:, 0, None, None] + np.arange(g.shape[0])[None, :, None]  # (T, h, 1)
            xs = corner[:, 1, None, None] + np.arange(g.shape[1])[None, None, :]  # (T, 1, w)
            tt = np.arange(t)[:, None, None]
            frames[i, tt, ys, xs] = np.maximum(frames[i, tt, ys, xs], g)  # overlapping digits: brighter wins
    return np.repeat(frames[..., None], 3, axis=-1)


BUILTIN = {
    "bouncing": lambda n, length, size, seed, bouncing: bouncing_shapes(
        n, replace(bouncing or BouncingConfig.for_frame_size(size), length=length), seed
    ).frames,
    "digits": lambda n, length, size, seed, bouncing: moving_digits(n, length, size, seed=seed),
}


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
