"""Turn a sequence dataset into grid images on disk (``gridit organise``), and read such a folder back.

With ``rows=cols=4, frame_size=128, resize="stretch"``, no stride and no overlap, the grids are pixel-identical
to the official organiser's (16 frames, PIL bicubic resize, pasted row-major, last partial chunk dropped).
"""

import json
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from gridit_core.data import find_sequences, frames_to_tensor, load_image, resize_frame
from gridit_core.errors import GriditError
from gridit_core.sequence import prepare_output_dir

MANIFEST = "grids.json"


def chunk_starts(length, cells, stride=1, overlap=0):
    """First frame of every full chunk of ``cells`` frames taken every ``stride``, chunks sharing ``overlap`` frames."""
    if not 0 <= overlap < cells:
        raise GriditError(f"chunk overlap must be in 0..{cells - 1}, got {overlap}")
    span = (cells - 1) * stride + 1
    return list(range(0, length - span + 1, (cells - overlap) * stride))


def make_grid_image(frames, rows, cols, frame_size, resize):
    """Paste PIL frames row-major into one RGB grid image of ``rows*frame_size x cols*frame_size``."""
    grid = Image.new("RGB", (cols * frame_size, rows * frame_size))
    for i, frame in enumerate(frames):
        cell = resize_frame(frame, frame_size, resize)
        grid.paste(cell, ((i % cols) * frame_size, (i // cols) * frame_size))
    return grid


def organise(src, dst, *, rows=4, cols=4, frame_size=128, stride=1, overlap=0, resize="stretch", overwrite=False, progress=True):
    """Write every full chunk of every sequence under ``src`` as ``dst/000000.png ...`` plus a manifest; returns the count."""
    sequences = find_sequences(src)
    cells = rows * cols
    prepare_output_dir(dst, overwrite, [MANIFEST])
    dst = Path(dst)
    for old in dst.glob("[0-9]*.png"):
        old.unlink()
    entries = []
    for seq in tqdm(sequences, desc="organising", unit="seq", disable=not progress):
        for start in chunk_starts(len(seq), cells, stride, overlap):
            frames = seq.frames(range(start, start + cells * stride, stride))
            name = f"{len(entries):06d}.png"
            make_grid_image(frames, rows, cols, frame_size, resize).save(dst / name)
            entries.append({"file": name, "sequence": seq.name, "start": start})
    if not entries:
        longest = max(len(s) for s in sequences)
        raise GriditError(f"no sequence under {src} has the {(cells - 1) * stride + 1} frames a {rows}x{cols} grid needs (longest: {longest})")
    manifest = {"rows": rows, "cols": cols, "frame_size": frame_size, "stride": stride, "overlap": overlap, "resize": resize, "grids": entries}
    (dst / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return len(entries)


class GridFolder(torch.utils.data.Dataset):
    """Grid images written by ``organise``: items are ``(3, rows*S, cols*S)`` tensors in [-1, 1]."""

    def __init__(self, root, rows, cols, frame_size):
        self.root = Path(root)
        manifest = json.loads((self.root / MANIFEST).read_text())
        got = (manifest["rows"], manifest["cols"], manifest["frame_size"])
        if got != (rows, cols, frame_size):
            raise GriditError(f"{root} holds {got[0]}x{got[1]} grids of {got[2]}px frames, not {rows}x{cols} of {frame_size}px")
        self.files = [self.root / e["file"] for e in manifest["grids"]]

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        return frames_to_tensor([load_image(self.files[i])])[0]


def is_grid_folder(path):
    return (Path(path) / MANIFEST).is_file()
