"""Arbitrary-length sequences, generated grid by grid (GriDiT, Sec. 3.3).

The plan: a start grid gives the first ``rows*cols`` frames; every continuation grid has its first ``overlap``
cells tied to the last ``overlap`` frames generated so far (known-region replacement at every denoising step)
and adds ``rows*cols - overlap`` new frames. With ``interpolate=True`` the frames so far are keyframes, read
in rows of ``cols`` frames; an in-betweening grid holds two consecutive keyframe rows as its first and last
rows and generates the ``rows - 2`` rows between them. Frames are streamed out as soon as they are final,
so memory holds one grid and the conditioning frames, whatever the length; exactly ``n_frames`` come out.
"""

import itertools
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from gridit_core import diffusion as gd
from gridit_core.data import tensor_to_uint8
from gridit_core.errors import GriditError
from gridit_core.grid import GridLayout, frames_to_grid, grid_to_frames


@dataclass(frozen=True)
class SequencePlan:
    """How many grids of each kind a sequence of ``n_frames`` needs."""

    n_frames: int
    rows: int
    cols: int
    overlap: int
    interpolate: bool = False

    def __post_init__(self):
        cells = self.rows * self.cols
        if self.n_frames < 1:
            raise GriditError(f"the number of frames must be at least 1, got {self.n_frames}")
        if not 0 <= self.overlap < cells:
            raise GriditError(f"overlap must be in 0..{cells - 1} for a {self.rows}x{self.cols} grid, got {self.overlap}")
        if self.interpolate and self.rows < 3:
            raise GriditError(f"in-betweening needs at least 3 grid rows, got {self.rows}")

    @property
    def cells(self):
        return self.rows * self.cols

    @property
    def keyframes(self):
        """Frames the start and continuation grids must produce."""
        if not self.interpolate:
            return self.n_frames
        # k keyframe rows expand to k*cols + (k-1)*(rows-2)*cols frames
        per_gap = self.cols * (self.rows - 1)
        key_rows = 1 + max(0, -(-(self.n_frames - self.cols) // per_gap))
        return key_rows * self.cols

    @property
    def continuation_grids(self):
        extra = max(0, self.keyframes - self.cells)
        return -(-extra // (self.cells - self.overlap))

    @property
    def inbetween_grids(self):
        return self.keyframes // self.cols - 1 if self.interpolate else 0

    @property
    def total_grids(self):
        return 1 + self.continuation_grids + self.inbetween_grids


def default_overlap(rows, cols):
    """The official setting: every cell but the last row is conditioning (12 of 16 for a 4x4 grid)."""
    return rows * cols - cols


def generate_frames(
    model,
    diffusion,
    n_frames,
    *,
    rows,
    cols,
    overlap=None,
    interpolate=False,
    n_sequences=1,
    sampler="ddim",
    steps=50,
    eta=0.0,
    resample=1,
    seed=0,
    device="cpu",
    progress=True,
    callback=None,
    codec=None,
):
    """An iterator of frames ``(n_sequences, C, H, W)``, one time step at a time, exactly ``n_frames`` of them.

    A latent-space model needs its ``codec`` (``train.load_codec``): grids are sampled in latents, and each frame is
    decoded to RGB pixels as it comes out (known frames pass between grids as latents, never re-encoded). Every
    setting is checked here, before the first grid is sampled or anything is written.
    """
    if codec is not None and codec.latent_channels != model.in_channels:
        raise GriditError(f"the model takes {model.in_channels}-channel latents, but the VAE makes {codec.latent_channels}")
    overlap = default_overlap(rows, cols) if overlap is None else overlap
    plan = SequencePlan(n_frames, rows, cols, overlap, interpolate)
    gh, gw = model.config.image_size
    if gh % rows or gw % cols:
        raise GriditError(f"the model's {gh}x{gw} input does not split into a {rows}x{cols} grid")
    gd.Stepper(diffusion, sampler, steps, eta)  # refuses an unknown sampler, eta or step count now, not mid-sequence
    layout = GridLayout(rows, cols, gh // rows, gw // cols)
    opts = dict(sampler=sampler, steps=steps, resample=resample, device=device)
    if sampler == "ddim":
        opts["eta"] = eta
    frames = _stream(model, diffusion, plan, layout, (n_sequences, model.in_channels, gh, gw), opts, seed, progress, callback)
    return frames if codec is None else (codec.decode(z) for z in frames)  # (n_sequences, 3, H*f, W*f) each


def _stream(model, diffusion, plan, layout, shape, opts, seed, progress, callback):
    """The generator behind ``generate_frames``, once its settings are checked."""
    n_sequences, c = shape[:2]
    rows, cols, overlap = plan.rows, plan.cols, plan.overlap
    device, steps = opts["device"], opts["steps"]
    generator = torch.Generator(device).manual_seed(seed)

    bar = tqdm(total=plan.total_grids * steps, desc="sampling", unit="step", disable=not progress)
    grid_no = [0]

    def on_step(info):
        bar.update(1)
        if callback is not None:
            callback({**info, "grid": grid_no[0], "grids": plan.total_grids})

    def run(known_frames, known_cells):
        """Sample one grid with ``known_frames`` (B, K, C, H, W) in cells ``known_cells``; return its frames."""
        if known_cells:
            cells = torch.zeros(n_sequences, plan.cells, c, layout.frame_h, layout.frame_w, device=device)
            cells[:, known_cells] = known_frames
            known = frames_to_grid(cells, rows, cols)  # (B, C, GH, GW)
            mask = layout.cell_mask(known_cells).to(device)  # (1, GH, GW)
            mask = mask.unsqueeze(0)  # (1, 1, GH, GW)
        else:
            known = mask = None
        with torch.no_grad():
            grid = gd.sample(diffusion, model, shape, known=known, known_mask=mask, generator=generator, callback=on_step, **opts)
        grid_no[0] += 1
        return grid_to_frames(grid, rows, cols)  # (B, F, C, H, W)

    def keyframes():
        frames = run(None, [])
        yield from frames.unbind(1)
        made = plan.cells
        while made < plan.keyframes:
            # the next grid's first `overlap` cells are the last `overlap` frames of this one
            frames = run(frames[:, plan.cells - overlap :], list(range(overlap)))
            yield from frames[:, overlap:].unbind(1)
            made += plan.cells - overlap

    def inbetweened():
        """Keyframes in rows of ``cols``; between two consecutive rows, the ``rows - 2`` rows an in-between grid fills."""
        outer = [*range(cols), *range(plan.cells - cols, plan.cells)]  # first and last rows are known
        row, prev_row = [], None
        for frame in keyframes():
            row.append(frame)
            if len(row) < cols:
                continue
            if prev_row is not None:
                grid = run(torch.stack(prev_row + row, 1), outer)  # (B, F, C, H, W)
                yield from grid[:, cols : plan.cells - cols].unbind(1)
            yield from row
            prev_row, row = row, []

    try:  # islice stops asking once n_frames are out, so no grid is sampled beyond what is needed
        yield from itertools.islice(inbetweened() if plan.interpolate else keyframes(), plan.n_frames)
    finally:
        bar.close()


SAMPLE_OUTPUTS = ["frames", "sequence.gif", "frames_lr", "sequence_lr.gif"]  # what a sampling run may leave in its folder


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
            tmp = self.out_dir / f".{self.gif_name}.tmp"
            first.save(tmp, format="GIF", save_all=True, append_images=rest, duration=int(1000 / self.fps), loop=0)
            tmp.replace(self.out_dir / self.gif_name)
        self._palette_frames = []
        return self.out_dir


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


def sample_sequence(model, diffusion, n_frames, *, rows, cols, out_dir=None, overwrite=False, fps=8, n_sequences=1, **kwargs):
    """Sample ``n_sequences`` sequences of exactly ``n_frames`` frames.

    Without ``out_dir`` returns a tensor ``(n_sequences, n_frames, C, H, W)`` in [-1, 1]. With it, streams the
    (single) sequence to ``out_dir/frames/*.png`` and ``out_dir/sequence.gif`` and returns the folder.
    """
    frames = generate_frames(model, diffusion, n_frames, rows=rows, cols=cols, n_sequences=n_sequences, **kwargs)
    if out_dir is None:
        return torch.stack(list(frames), 1)
    if n_sequences != 1:
        raise GriditError("writing to a folder takes one sequence at a time (n_sequences=1)")
    prepare_output_dir(out_dir, overwrite, SAMPLE_OUTPUTS)  # also clears a two-stage run's frames_lr/
    writer = FrameWriter(out_dir, fps=fps)
    for frame in frames:
        writer.add(frame[0])
    return writer.close()

