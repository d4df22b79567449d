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
from dataclasses import asdict, dataclass, fields

import torch
from tqdm.auto import tqdm

from gridit_core.diffusion import STEPPER_KINDS, Stepper, sample
from gridit_core.errors import GriditError
from gridit_core.grid import GridLayout, frames_to_grid, grid_to_frames
from gridit_core.latent import pixel_codec
from gridit_core.util.io import FrameWriter, prepare_output_dir

CAUSAL_SCHEDULES = ("autoregressive", "pyramid", "full")


@dataclass
class SampleConfig:
    """How a model samples a sequence; a checkpoint saves the settings it was validated with (``gridit sample``'s
    defaults for it). ``kwargs(arch)`` gives the fields an architecture uses (``FIELDS``), as keywords of
    ``generate_frames`` (grid) or ``rollout.generate_rollout`` (tensor, msc)."""

    sampler: str = "ddim"  # ddpm (ancestral) or ddim
    steps: int = 50  # denoising steps per grid, window or frame
    eta: float = 0.0  # DDIM eta (0: deterministic)
    resample: int = 1  # RePaint: each step done this many times with the known cells re-imposed (1: replace once)
    overlap: int | None = None  # known frames per continuation grid / window; None: all but the last row (grid), T/2
    interpolate: bool = False  # grid: keyframes, then in-betweening grids (see the module docstring)
    schedule: str = "autoregressive"  # msc: Diffusion Forcing's scheduling: autoregressive, pyramid or full
    chunk: int = 1  # msc: frames that start together (one chunk is denoised at a time when autoregressive)
    context: int | None = None  # msc: past frames kept in the cache; None: all the model can see (its span)
    context_noise: float = 0.0  # msc: context frames are re-noised to this fraction of the process (stabilisation)

    def __post_init__(self):
        if self.sampler not in STEPPER_KINDS:
            raise GriditError(f"unknown sampler {self.sampler!r}; choose one of {', '.join(STEPPER_KINDS)}")
        for name, low in (("steps", 1), ("resample", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise GriditError(f"{name} must be an integer >= {low}, got {value!r}")
        if not 0 <= self.eta <= 1:
            raise GriditError(f"eta must lie in [0, 1], got {self.eta}")
        for name in ("overlap", "context"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise GriditError(f"{name} must be None or an integer >= 0, got {value!r}")
        if self.schedule not in CAUSAL_SCHEDULES:
            raise GriditError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(CAUSAL_SCHEDULES)}")
        if isinstance(self.chunk, bool) or not isinstance(self.chunk, int) or self.chunk < 1:
            raise GriditError(f"chunk must be an integer >= 1, got {self.chunk!r}")
        if not 0 <= self.context_noise < 1:
            raise GriditError(f"context_noise must lie in [0, 1), got {self.context_noise}")

    @classmethod
    def from_dict(cls, d, what="sample config"):
        """A ``SampleConfig`` from a dict; unknown keys are refused by name."""
        if not isinstance(d, dict):
            raise GriditError(f"{what} must be a dict of {', '.join(f.name for f in fields(cls))}, got {d!r}")
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise GriditError(f"{what}: unknown settings {unknown}; known: {', '.join(f.name for f in fields(cls))}")
        return cls(**d)

    def kwargs(self, arch="grid"):
        """The fields ``arch`` uses, as keywords of its sampling function."""
        return {k: v for k, v in asdict(self).items() if k in FIELDS[arch]}


FIELDS = {  # the SampleConfig fields each architecture's sampling uses
    "grid": ("sampler", "steps", "eta", "resample", "overlap", "interpolate"),
    "tensor": ("sampler", "steps", "eta", "resample", "overlap"),
    "msc": ("sampler", "steps", "eta", "schedule", "chunk", "context", "context_noise"),
}


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


def default_overlap(rows, cols):
    """The official setting: every cell but the last row is conditioning (12 of 16 for a 4x4 grid)."""
    return rows * cols - cols


def generate_frames(model, diffusion, n_frames, *, rows=None, cols=None, n_sequences=1, seed=0, device="cpu",
                    progress=True, callback=None, codec=None, **settings):  # fmt: skip
    """An iterator of frames ``(n_sequences, C, H, W)``, one time step at a time, exactly ``n_frames`` of them.

    ``settings`` are ``SampleConfig`` fields; a model uses those of ``FIELDS[model.arch]`` and refuses the others by
    name. A grid model samples grid by grid (``rows x cols``, the module docstring); the sequence families (tensor,
    msc) go to ``rollout.generate_rollout``. A latent-space model needs its ``codec`` (``training.load_codec``; None
    means pixel space): grids are sampled in its latents, each frame is decoded to RGB pixels as it comes out (known
    frames pass between grids as latents, never re-encoded), and the predicted x0 is clamped to the codec's
    ``x0_range`` (pixels: [-1, 1]; latents: not at all). Every setting is checked here, before the first grid is
    sampled or anything is written.
    """
    arch = getattr(model, "arch", "grid")
    unused = sorted(set(settings) - set(FIELDS[arch]))
    if unused:
        users = {k: [a for a, f in FIELDS.items() if k in f] for k in unused}
        who = "; ".join(f"{k} is for {' and '.join(users[k]) or 'no'} models" for k in unused)
        raise GriditError(f"sampling settings a {arch} model does not use: {who}")
    if arch != "grid":
        from gridit_core.rollout import generate_rollout

        return generate_rollout(model, diffusion, n_frames, n_sequences=n_sequences, seed=seed, device=device,
                                progress=progress, callback=callback, codec=codec, **settings)  # fmt: skip
    if rows is None or cols is None:
        raise GriditError("a grid model samples grid by grid: pass rows and cols")
    codec = pixel_codec(codec)
    if codec.latent_channels != model.in_channels:
        raise GriditError(f"the model takes {model.in_channels}-channel latents, but the VAE makes {codec.latent_channels}")
    s = SampleConfig(**settings)  # checks every sampling setting
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
    frames = _stream(model, diffusion, plan, layout, (n_sequences, model.in_channels, gh, gw), opts, seed, progress, callback)
    return (codec.decode(z) for z in frames)  # (n_sequences, 3, H*f, W*f) each


def _stream(model, diffusion, plan, layout, shape, opts, seed, progress, callback):
    """The generator behind ``generate_frames``, once its settings are checked."""
    n_sequences, c = shape[:2]
    rows, cols, cells, overlap = plan.rows, plan.cols, plan.cells, plan.overlap
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
            frames = torch.zeros(n_sequences, cells, c, layout.frame_h, layout.frame_w, device=device)
            frames[:, known_cells] = known_frames
            known = frames_to_grid(frames, rows, cols)  # (B, C, GH, GW)
            mask = layout.cell_mask(known_cells).to(device).unsqueeze(0)  # (1, 1, GH, GW)
        else:
            known = mask = None
        with torch.no_grad():
            grid = sample(diffusion, model, shape, known=known, known_mask=mask, generator=generator, callback=on_step, **opts)
        grid_no[0] += 1
        return grid_to_frames(grid, rows, cols)  # (B, F, C, H, W)

    def continued():
        """Start grid, then continuation grids tied to the last ``overlap`` frames; one frame at a time."""
        frames = run(None, [])
        yield from frames.unbind(1)
        while True:  # islice below stops asking once enough frames are out
            frames = run(frames[:, cells - overlap :], list(range(overlap)))
            yield from frames[:, overlap:].unbind(1)

    def key_rows():
        """Keyframe rows ``(B, cols, C, H, W)``, ``(rows-1)*cols`` frames apart in time: a grid's first and last rows."""
        frames = run(None, [])
        yield frames[:, :cols]
        while True:
            yield frames[:, cells - cols :]
            frames = run(frames[:, cells - cols :], list(range(cols)))

    def inbetweened():
        """Each keyframe row, preceded by the ``rows - 2`` rows between it and the previous one (one grid each)."""
        outer = [*range(cols), *range(cells - cols, cells)]  # first and last rows are known
        prev = None
        for row in key_rows():
            if prev is not None:
                grid = run(torch.cat([prev, row], 1), outer)  # (B, F, C, H, W)
                yield from grid[:, cols : cells - cols].unbind(1)
            yield from row.unbind(1)
            prev = row

    try:  # islice stops asking once n_frames are out, so no grid is sampled beyond what is needed
        yield from itertools.islice(inbetweened() if plan.interpolate else continued(), plan.n_frames)
    finally:
        bar.close()


SAMPLE_OUTPUTS = ["frames", "sequence.gif", "frames_lr", "sequence_lr.gif"]  # what a sampling run may leave in its folder


def sample_sequence(model, diffusion, n_frames, *, rows=None, cols=None, out_dir=None, overwrite=False, fps=8, n_sequences=1,
                    **kwargs):  # fmt: skip
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

