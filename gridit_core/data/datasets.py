"""Training clips cut from sequences: grid images ``(3, rows*H, cols*W)`` for the grid model (``GridClips``) and
frame stacks ``(T, 3, H, W)`` for the sequence models (``SequenceClips``); ``open_dataset`` serves a folder or a
built-in synthetic set (``gridit_core.data.builtin``) either way."""

import torch

from gridit_core.data.builtin import BUILTIN
from gridit_core.data.real import is_real, real_sequences
from gridit_core.data.sources import (
    RESIZE_POLICIES,
    ArraySequence,
    _size_hw,
    _stable_hash,
    find_sequences,
    resize_frame,
    split_sequences,
)  # fmt: skip
from gridit_core.errors import GriditError
from gridit_core.grid import frames_to_grid
from gridit_core.util.image import frames_to_tensor

SPLITS = ("train", "val", "all")


class SequenceClips(torch.utils.data.Dataset):
    """Clips ``(T, 3, H, W)`` in ``[-1, 1]`` of ``frames`` frames taken every ``stride`` frames: the sequence models' data.

    Each sequence is cut into ``len // span`` non-overlapping windows of ``span = (frames-1)*stride + 1`` frames
    starting at multiples of ``span`` (the official chunking). With ``random_offset`` the frames left over at the
    end are shared out: the windows of a sequence move right by sorted random offsets, so each one moves within the
    slack before the next and they never overlap. The draw depends on ``seed``, the epoch (``set_epoch``) and the
    sequence only, so every worker and every rerun sees the same windows.
    """

    def __init__(self, sequences, frames, frame_size, stride=1, resize="stretch", random_offset=True, seed=0):
        if min(frames, stride) < 1:
            raise GriditError(f"clip length and stride must be >= 1, got {frames} and {stride}")
        if resize not in RESIZE_POLICIES:
            raise GriditError(f"unknown resize policy {resize!r}; choose one of {', '.join(RESIZE_POLICIES)}")
        self.sequences = list(sequences)
        self.frames, self.stride, self.resize = frames, stride, resize
        self.size = _size_hw(frame_size)
        self.random_offset, self.seed, self.epoch = random_offset, seed, 0
        self.span = (frames - 1) * stride + 1
        self.windows = []  # (sequence index, window index, windows in sequence, spare frames at the end)
        self.skipped = []
        for si, seq in enumerate(self.sequences):
            k = len(seq) // self.span
            if k == 0:
                self.skipped.append(seq.name)
            self.windows += [(si, j, k, len(seq) - k * self.span) for j in range(k)]
        if not self.windows:
            longest = max((len(s) for s in self.sequences), default=0)
            raise GriditError(f"no sequence has the {self.span} frames {self._what()} with stride {stride} needs "
                              f"(longest: {longest})")  # fmt: skip

    def _what(self):
        return f"a clip of {self.frames} frames"

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

    def clip(self, index):
        """Item ``index`` as frames ``(T, 3, H, W)``."""
        si, idx = self.frame_indices(index)
        seq = self.sequences[si]
        images = [
            resize_frame(im, self.size, self.resize, name=f"{seq.name}[{i}]") for i, im in zip(idx, seq.frames(idx))
        ]
        return frames_to_tensor(images)  # (T, 3, H, W)

    def __getitem__(self, index):
        return self.clip(index)


class GridClips(SequenceClips):
    """Grid images ``(3, rows*H, cols*W)`` in ``[-1, 1]``: clips of ``rows*cols`` frames tiled row-major."""

    def __init__(self, sequences, rows, cols, frame_size, stride=1, resize="stretch", random_offset=True, seed=0):
        if min(rows, cols, stride) < 1:
            raise GriditError(f"rows, cols and stride must be >= 1, got {rows}, {cols}, {stride}")
        self.rows, self.cols = rows, cols
        super().__init__(sequences, rows * cols, frame_size, stride, resize, random_offset, seed)

    def _what(self):
        return f"a {self.rows}x{self.cols} grid"

    def __getitem__(self, index):
        return frames_to_grid(self.clip(index), self.rows, self.cols)  # (3, R*H, C*W)


def open_sequences(spec, span, frame_size, *, split="train", val_fraction=0.1, seed=0, n_sequences=2000,
                   bouncing=None):  # fmt: skip
    """The sequences of ``"builtin:NAME"`` (see ``BUILTIN``; generated at least ``4 * span`` frames long), of
    ``"real:NAME"`` (packaged real clips, split in time: ``data.real``) or of a path searched by ``find_sequences``,
    split by name into train and val."""
    if split not in SPLITS:
        raise GriditError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    spec = str(spec)
    if is_real(spec):
        return real_sequences(spec, frame_size, split)
    if not spec.startswith("builtin:"):
        found = find_sequences(spec)
        train, val = split_sequences(found, val_fraction, seed)
        sequences = {"train": train, "val": val, "all": found}[split]
        if not sequences:
            raise GriditError(f"the {split} split of {spec} is empty ({len(found)} sequences, val {val_fraction})")
        return sequences
    name = spec.split(":", 1)[1]
    if name not in BUILTIN:
        raise GriditError(f"unknown builtin dataset {name!r}; choose one of {', '.join(sorted(BUILTIN))}")
    h, w = _size_hw(frame_size)
    length = max(4 * span, bouncing.length if bouncing else 64)  # at least 4 windows per sequence
    sizes = {"train": n_sequences, "val": max(1, round(n_sequences * val_fraction))}
    sequences = []
    for part in ("train", "val") if split == "all" else (split,):
        part_seed = _stable_hash(seed, part)  # train and val never share a random stream
        frames = BUILTIN[name](sizes[part], length, max(h, w), part_seed, bouncing)  # (N, T, S, S, 3)
        sequences += [ArraySequence(f"{name}-{part}/{i:05d}", f) for i, f in enumerate(frames)]
    return sequences


def open_dataset(spec, rows, cols, frame_size, *, stride=1, resize="stretch", **kwargs):
    """``GridClips`` of ``open_sequences(spec, ...)``; ``kwargs``: ``split``, ``val_fraction``, ``seed``,
    ``n_sequences``, ``bouncing``."""
    sequences = open_sequences(spec, (rows * cols - 1) * stride + 1, frame_size, **kwargs)
    return GridClips(sequences, rows, cols, frame_size, stride=stride, resize=resize, seed=kwargs.get("seed", 0))


def open_clips(spec, frames, frame_size, *, stride=1, resize="stretch", **kwargs):
    """``SequenceClips`` of ``frames`` frames from ``open_sequences(spec, ...)``; ``kwargs`` as ``open_dataset``."""
    sequences = open_sequences(spec, (frames - 1) * stride + 1, frame_size, **kwargs)
    return SequenceClips(sequences, frames, frame_size, stride=stride, resize=resize, seed=kwargs.get("seed", 0))
