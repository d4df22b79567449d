"""Arbitrary-length sequences, generated grid by grid (GriDiT, Sec. 3.3).

The plan: a start grid gives the first ``rows*cols`` frames; every continuation grid has its first ``overlap``
cells tied to the last ``overlap`` frames generated so far (known-region replacement at every denoising step)
and adds ``rows*cols - overlap`` new frames.

With ``interpolate=True`` the sequence is made in two passes, uniform in time. A grid covers ``rows*cols``
consecutive frames, so its first and last rows lie ``(rows-1)*cols`` frames apart. Keyframe rows are made that far
apart: the start grid gives keyframe rows 0 and 1 (its first and last rows), and each keyframe grid after it has its
first row tied to the last keyframe row and gives the next one as its last row. Then an in-betweening grid holds two
consecutive keyframe rows as its first and last rows and fills the ``rows - 2`` rows of frames that lie between them
in time. (The official code makes keyframes with the usual continuation, so consecutive keyframe rows are adjacent
in time, and then inserts ``rows - 2`` rows between them: its output runs at uneven speed.) A model trained on
consecutive frames already samples those middle rows inside each keyframe grid; the in-betweening pass resamples
them with both ends known, at the cost of one more grid per ``(rows-1)*cols`` frames.

Frames are streamed out as soon as they are final, so memory holds one grid and the conditioning frames, whatever
the length; exactly ``n_frames`` come out.
"""

import itertools
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from gridit_core.diffusion import Stepper, sample
from gridit_core.errors import GriditError
from gridit_core.grid import GridLayout, frames_to_grid, grid_to_frames
from gridit_core.models.codec import pixel_codec


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
    def key_rows(self):
        """Keyframe rows (``interpolate``): k of them expand to ``k*cols + (k-1)*(rows-2)*cols`` frames."""
        per_gap = self.cols * (self.rows - 1)
        return 1 + max(0, -(-(self.n_frames - self.cols) // per_gap))

    @property
    def continuation_grids(self):
        """Grids after the start grid that extend the sequence (keyframe grids with ``interpolate``)."""
        if self.interpolate:
            return max(0, self.key_rows - 2)
        extra = max(0, self.n_frames - self.cells)
        return -(-extra // (self.cells - self.overlap))

    @property
    def inbetween_grids(self):
        return self.key_rows - 1 if self.interpolate else 0

    @property
    def total_grids(self):
        return 1 + self.continuation_grids + self.inbetween_grids

    def origins(self):
        """Which grid makes each frame: one label per frame, equal for frames of the same grid (``("start", 0)``,
        ``("next", k)``, or with ``interpolate`` ``("key", k)`` and ``("between", k)``)."""
        cells, new, cols = self.cells, self.cells - self.overlap, self.cols
        if not self.interpolate:
            return [("start", 0) if f < cells else ("next", (f - cells) // new) for f in range(self.n_frames)]
        gap = (self.rows - 1) * cols  # keyframe rows lie this far apart; the rows between come from in-betweening
        out = []
        for f in range(self.n_frames):
            k, r = divmod(f, gap)
            out.append(("key", max(k - 1, 0)) if r < cols else ("between", k))
        return out

    def seams(self):
        """The frames (after the first) where another grid takes over: a continuation grid's first new frame, or
        with ``interpolate`` each switch between keyframe rows and in-between rows."""
        labels = self.origins()
        return [f for f in range(1, len(labels)) if labels[f] != labels[f - 1]]


def default_overlap(rows, cols):
    """The official setting: every cell but the last row is conditioning (12 of 16 for a 4x4 grid)."""
    return rows * cols - cols


def grid_frames(model, diffusion, n_frames, s, *, n_sequences=1, seed=0, device="cpu", progress=True, callback=None,
                codec=None, rows=None, cols=None):  # fmt: skip
    """The grid family's sampler (``sampling.generate_frames`` checks its arguments and calls it): frames
    ``(n_sequences, C, H, W)`` of the latents ``codec`` decodes, one time step at a time, grid by grid as the module
    docstring says. ``s`` is a ``SampleConfig``; ``rows x cols`` the grid (default: the model's). Every setting is
    checked here, before the first grid is sampled."""
    rows = rows or model.config.rows
    cols = cols or model.config.cols
    codec = pixel_codec(codec)
    overlap = default_overlap(rows, cols) if s.overlap is None else s.overlap
    plan = SequencePlan(n_frames, rows, cols, overlap, s.interpolate)
    gh, gw = model.config.image_size
    if gh % rows or gw % cols:
        raise GriditError(f"the model's {gh}x{gw} input does not split into a {rows}x{cols} grid")
    Stepper(diffusion, s.sampler, s.steps, s.eta, clip_x0=codec.x0_range)  # refuses a step count the process lacks
    layout = GridLayout(rows, cols, gh // rows, gw // cols)
    opts = dict(sampler=s.sampler, steps=s.steps, resample=s.resample, device=device, clip_x0=codec.x0_range)
    if s.sampler == "ddim":
        opts["eta"] = s.eta
    conditioning = {"reconstruction": s.guidance, "clean": s.conditioning == "clean", "context_t": s.context_t(diffusion.num_steps)}
    frames = _stream(model, diffusion, plan, layout, (n_sequences, model.in_channels, gh, gw), opts, conditioning, seed,
                     progress, callback)  # fmt: skip
    return (codec.decode(z) for z in frames)  # (n_sequences, 3, H*f, W*f) each


def _stream(model, diffusion, plan, layout, shape, opts, conditioning, seed, progress, callback):
    """The generator behind ``grid_frames``, once its settings are checked; ``conditioning`` says how the known cells
    of a continuation grid condition it (``diffusion.run_stepper``'s ``context``, ``context_t`` and ``reconstruction``)."""
    n_sequences, c = shape[:2]
    rows, cols, cells, overlap = plan.rows, plan.cols, plan.cells, plan.overlap
    device, steps = opts["device"], opts["steps"]
    generator = torch.Generator(device).manual_seed(seed)

    bar = tqdm(total=plan.total_grids * steps, desc="sampling", unit="step", disable=not progress)
    grid_no = [0]

    def run(known_frames, known_cells, first):
        """Sample one grid, whose cells are frames ``first ..`` of the sequence, with ``known_frames``
        (B, K, C, H, W) in cells ``known_cells``; return its frames."""
        extra = {}
        if known_cells:
            frames = torch.zeros(n_sequences, cells, c, layout.frame_h, layout.frame_w, device=device)
            frames[:, known_cells] = known_frames
            known = frames_to_grid(frames, rows, cols)  # (B, C, GH, GW)
            mask = layout.cell_mask(known_cells).to(device).unsqueeze(0)  # (1, 1, GH, GW)
            extra["reconstruction"] = conditioning["reconstruction"]
            if conditioning["clean"]:  # the known cells at their own level, one timestep per cell
                extra["context"] = torch.isin(torch.arange(cells), torch.tensor(known_cells)).to(device)  # (F,)
                extra["context_t"] = conditioning["context_t"]
        else:
            known = mask = None

        def on_step(info):
            bar.update(1)
            if callback is not None:
                callback({**info, "unit": grid_no[0], "units": plan.total_grids, "frames": (first, first + cells)})

        with torch.no_grad():
            grid = sample(diffusion, model, shape, known=known, known_mask=mask, generator=generator, callback=on_step,
                          **opts, **extra)  # fmt: skip
        grid_no[0] += 1
        return grid_to_frames(grid, rows, cols)  # (B, F, C, H, W)

    def continued():
        """Start grid, then continuation grids tied to the last ``overlap`` frames; one frame at a time."""
        frames = run(None, [], 0)
        yield from frames.unbind(1)
        for k in itertools.count(1):  # islice below stops asking once enough frames are out
            frames = run(frames[:, cells - overlap :], list(range(overlap)), k * (cells - overlap))
            yield from frames[:, overlap:].unbind(1)

    gap = (rows - 1) * cols  # frames between a grid's first and last rows

    def key_rows():
        """Keyframe rows ``(B, cols, C, H, W)``, ``gap`` frames apart in time: a grid's first and last rows."""
        frames = run(None, [], 0)
        yield frames[:, :cols]
        for k in itertools.count(1):
            yield frames[:, cells - cols :]
            frames = run(frames[:, cells - cols :], list(range(cols)), k * gap)

    def inbetweened():
        """Each keyframe row, preceded by the ``rows - 2`` rows between it and the previous one (one grid each)."""
        outer = [*range(cols), *range(cells - cols, cells)]  # first and last rows are known
        prev = None
        for k, row in enumerate(key_rows()):
            if prev is not None:
                grid = run(torch.cat([prev, row], 1), outer, (k - 1) * gap)  # (B, F, C, H, W)
                yield from grid[:, cols : cells - cols].unbind(1)
            yield from row.unbind(1)
            prev = row

    try:  # islice stops asking once n_frames are out, so no grid is sampled beyond what is needed
        yield from itertools.islice(inbetweened() if plan.interpolate else continued(), plan.n_frames)
    finally:
        bar.close()
