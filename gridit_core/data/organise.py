"""Turn a sequence dataset into grid images on disk (``gridit organise``), and read such a folder back.

With ``rows=cols=4, frame_size=128, resize="stretch"``, no stride and no overlap, the grids of RGB frames with
zero-padded names are pixel-identical to the official organiser's (16 frames, PIL bicubic resize, pasted
row-major, last partial chunk dropped). Grids are written to a hidden staging folder and moved into place
only when every one of them was made, so a bad frame leaves the output folder as it was.
"""

import json
import re
import shutil
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from gridit_core.data.sources import RESIZE_POLICIES, find_sequences, load_image, resize_frame
from gridit_core.errors import GriditError
from gridit_core.util.image import frames_to_tensor
from gridit_core.util.io import write_text_atomic

MANIFEST = "grids.json"
STAGING = ".organising"  # hidden, so find_sequences never takes it for a sequence
GRID_FILE = re.compile(r"\d{6}\.png")


def chunk_starts(length, cells, stride=1, overlap=0):
    """First frame of every full chunk of ``cells`` frames taken every ``stride``, chunks sharing ``overlap`` frames."""
    if not 0 <= overlap < cells:
        raise GriditError(f"chunk overlap must be in 0..{cells - 1}, got {overlap}")
    span = (cells - 1) * stride + 1
    return list(range(0, length - span + 1, (cells - overlap) * stride))


def make_grid_image(frames, rows, cols, frame_size, resize, names=None):
    """Paste PIL frames row-major into one RGB grid image of ``rows*frame_size x cols*frame_size``."""
    grid = Image.new("RGB", (cols * frame_size, rows * frame_size))
    for i, frame in enumerate(frames):
        cell = resize_frame(frame, frame_size, resize, name=names[i] if names else str(i))
        grid.paste(cell, ((i % cols) * frame_size, (i // cols) * frame_size))
    return grid


def _earlier_results(dst):
    """The manifest and grid images of an earlier run in ``dst``."""
    if not dst.is_dir():
        return []
    return sorted(p for p in dst.iterdir() if p.name == MANIFEST or GRID_FILE.fullmatch(p.name))


def organise(src, dst, *, rows=4, cols=4, frame_size=128, stride=1, overlap=0, resize="stretch", overwrite=False, progress=True):
    """Write every full chunk of every sequence under ``src`` as ``dst/000000.png ...`` plus a manifest; returns the count."""
    src, dst = Path(src), Path(dst)
    cells = rows * cols
    if min(rows, cols, frame_size, stride) < 1:
        raise GriditError(f"rows, cols, frame size and stride must be >= 1, got {rows}, {cols}, {frame_size}, {stride}")
    if resize not in RESIZE_POLICIES:
        raise GriditError(f"unknown resize policy {resize!r}; choose one of {', '.join(RESIZE_POLICIES)}")
    chunk_starts(0, cells, stride, overlap)  # checks the overlap before anything is read
    if src.is_dir() and dst.resolve().is_relative_to(src.resolve()):
        raise GriditError(f"output folder {dst} lies inside the dataset {src}; its grids would be read as frames")
    if dst.exists() and not dst.is_dir():
        raise GriditError(f"output path {dst} exists and is not a folder")
    old = _earlier_results(dst)
    if old and not overwrite:
        raise GriditError(f"output folder {dst} already holds grids ({len(old)} files); pass --overwrite to replace them")

    sequences = find_sequences(src)
    plan = [(seq, start) for seq in sequences for start in chunk_starts(len(seq), cells, stride, overlap)]
    if not plan:
        longest = max(len(s) for s in sequences)
        raise GriditError(
            f"no sequence under {src} has the {(cells - 1) * stride + 1} frames a {rows}x{cols} grid with stride "
            f"{stride} needs (longest: {longest})"
        )

    created = not dst.exists()
    staging = dst / STAGING
    shutil.rmtree(staging, ignore_errors=True)  # left by an interrupted run
    staging.mkdir(parents=True)
    entries = []
    try:
        for seq, start in tqdm(plan, desc="organising", unit="grid", disable=not progress):
            indices = list(range(start, start + cells * stride, stride))
            names = [f"{seq.name}[{i}]" for i in indices]
            name = f"{len(entries):06d}.png"
            make_grid_image(seq.frames(indices), rows, cols, frame_size, resize, names).save(staging / name)
            entries.append({"file": name, "sequence": seq.name, "start": start, "frames": indices})
        for path in old:
            path.unlink()
        for entry in entries:
            (staging / entry["file"]).replace(dst / entry["file"])
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not any(dst.iterdir()):
            dst.rmdir()
        raise
    staging.rmdir()
    manifest = {"rows": rows, "cols": cols, "frame_size": frame_size, "stride": stride, "overlap": overlap,
                "resize": resize, "source": str(src), "grids": entries}
    write_text_atomic(json.dumps(manifest, indent=1), dst / MANIFEST)  # written last: a folder with a manifest is complete
    return len(entries)


class GridFolder(torch.utils.data.Dataset):
    """Grid images written by ``organise``: items are ``(3, rows*S, cols*S)`` tensors in [-1, 1]."""

    def __init__(self, root, rows, cols, frame_size):
        self.root = Path(root)
        try:
            manifest = json.loads((self.root / MANIFEST).read_text())
            got = (manifest["rows"], manifest["cols"], manifest["frame_size"])
            self.files = [self.root / e["file"] for e in manifest["grids"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise GriditError(f"cannot read the grid manifest {self.root / MANIFEST}: {type(e).__name__}: {e}") from None
        if got != (rows, cols, frame_size):
            raise GriditError(f"{root} holds {got[0]}x{got[1]} grids of {got[2]}px frames, not {rows}x{cols} of {frame_size}px")
        if not self.files:
            raise GriditError(f"{root} holds no grids")
        self.size = (cols * frame_size, rows * frame_size)

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        img = load_image(self.files[i])
        if img.size != self.size:
            raise GriditError(f"grid {self.files[i]} is {img.size[0]}x{img.size[1]}, expected {self.size[0]}x{self.size[1]}")
        return frames_to_tensor([img])[0]


def is_grid_folder(path):
    return (Path(path) / MANIFEST).is_file()
