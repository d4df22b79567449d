"""The model families, one registered object each, and the one entry point that samples any of them.

- ``grid``: GriDiT. A 2D DiT on grid images whose cells are frames; long sequences grid by grid (``sampling.grids``).
- ``tensor``: the baseline GriDiT argues against, a DiT over the sequence as one tensor; long sequences by sliding
  windows (``sampling.rollout``).
- ``msc``: multi-scale spatio-temporal causal attention; a frame-causal rollout with a KV cache (``sampling.rollout``).

A ``Family`` knows its model class and how to build one, the noise modes it trains with, the ``SampleConfig`` fields
its sampler uses, the sampler, what one sampler call makes (its progress unit) and what it can do (grids or clips,
causal or not). Callers ask it rather than compare family names: ``FAMILIES[name]`` or ``family_of(model)``.

Every sampler reports progress through the same callback dict: ``i``, ``steps`` (the step within the current unit,
and how many), ``t``, ``x`` and ``x0_pred`` (the sample and its predicted clean version), ``unit`` and ``units`` (the
grid, window or rollout, and how many), and ``frames`` (the first frame of the sequence being denoised and the one
after the last).
"""

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

import torch

from gridit_core.errors import GriditError
from gridit_core.models import DiT, VideoDiT, build_dit, build_video_dit
from gridit_core.models.codec import pixel_codec
from gridit_core.sampling.config import SampleConfig
from gridit_core.sampling.grids import SequencePlan, default_overlap, grid_frames
from gridit_core.sampling.rollout import causal_frames, window_frames, window_seams
from gridit_core.util.io import FrameWriter, prepare_output_dir, write_text_atomic

SAMPLE_RECORD = "sampling.json"  # beside the frames: the family, settings and seams they were sampled with
SAMPLE_OUTPUTS = ["frames", "sequence.gif", "frames_lr", "sequence_lr.gif", SAMPLE_RECORD]  # what a sampling run may leave
DEFAULT_FAMILY = "grid"  # what a checkpoint that names no family holds (those written before the families existed)


@dataclass(frozen=True)
class Family:
    """One model family: its model, its training noise, its sampler and what it can do."""

    name: str
    title: str  # one line, for help texts and menus
    model_class: type  # with a ``config_class`` dataclass
    build_fn: Callable  # (size name, **config fields) -> model
    sampler: Callable  # (model, diffusion, n_frames, SampleConfig, **keywords) -> iterator of frames
    sample_fields: tuple  # the SampleConfig fields the sampler uses
    noise_modes: tuple  # training noise levels (training.losses.NOISE_MODES it supports); the default first
    model_options: tuple  # model config fields that the CLI's and the notebooks' family options set
    unit: str  # what one sampler call makes: "grid", "window" or "rollout"
    on_grids: bool  # frames tiled into one grid image; else clips (B, T, C, H, W)
    causal: bool = False  # frame-causal attention: a KV cache, branch gates; its trajectory follows one frame
    stage2: bool = False  # its model also serves as the per-frame super-resolution model of stage 2

    def build(self, size, **kwargs):
        """A model of the registered size ``size`` (e.g. ``"DiT-N/4"``); ``kwargs`` go to its config."""
        return self.build_fn(size, **kwargs)

    def geometry(self, cfg, side):
        """The model config fields a training config ``cfg`` sets for frames of ``side`` cells (pixels or latents)."""
        if self.on_grids:
            return dict(input_size=(cfg.rows * side, cfg.cols * side), rows=cfg.rows, cols=cfg.cols, pos_embed=cfg.pos_embed)
        return dict(frame_size=side, frames=cfg.frames)

    def from_config(self, config):
        """Rebuild a model from its saved config dict (fields it predates take their defaults, unknown ones are refused)."""
        known = {f.name for f in fields(self.model_class.config_class)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise GriditError(f"a {self.name} model config has no fields {unknown}")
        if "arch" in known and config.get("arch", self.name) != self.name:
            raise GriditError(f"a {config.get('arch')} model config loaded as {self.name}")
        return self.model_class(self.model_class.config_class(**config))

    def default_overlap(self, model, rows=None, cols=None):
        """Known frames per continuation grid or window when ``overlap`` is None (0 where the family has none);
        ``rows`` and ``cols``: a grid layout other than the model's own."""
        if self.on_grids:
            return default_overlap(rows or model.config.rows, cols or model.config.cols)
        return 0 if self.causal else model.config.frames // 2

    def seams(self, model, n_frames, settings=None, *, rows=None, cols=None):
        """The frames (after the first) where a new grid or window starts adding frames, the places its sampler joins
        new frames to known ones; a causal rollout has none. ``settings``: a ``SampleConfig`` (default: the defaults);
        ``rows`` and ``cols``: a grid layout other than the model's own."""
        s = settings or SampleConfig()
        overlap = self.default_overlap(model, rows, cols) if s.overlap is None else s.overlap
        if self.on_grids:
            rows, cols = rows or model.config.rows, cols or model.config.cols
            return SequencePlan(n_frames, rows, cols, overlap, s.interpolate).seams()
        return [] if self.causal else window_seams(n_frames, model.config.frames, overlap)

    def traces(self, info, k):
        """Whether a sampler step (its callback ``info``) works on trajectory ``k``: grid or window ``k``, or, for a
        causal rollout, a step in which frame ``k`` is being denoised."""
        if self.causal:
            first, stop = info["frames"]
            return first <= k < stop
        return info["unit"] == k

    @property
    def traced(self):
        """What a sampling trajectory follows: a grid, a window or a frame."""
        return "frame" if self.causal else self.unit


FAMILIES = {
    "grid": Family(
        "grid", "GriDiT: a 2D DiT on grid images of frames", DiT, build_dit, grid_frames,
        sample_fields=("sampler", "steps", "eta", "resample", "overlap", "interpolate", "conditioning", "guidance",
                       "context_noise"),
        noise_modes=("shared", "per-frame", "context"),
        model_options=(), unit="grid", on_grids=True, stage2=True,
    ),
    "tensor": Family(
        "tensor", "a DiT over the sequence as one tensor (the baseline)", VideoDiT,
        lambda size, **kw: build_video_dit(size, arch="tensor", **kw), window_frames,
        sample_fields=("sampler", "steps", "eta", "resample", "overlap", "conditioning", "guidance", "context_noise"),
        noise_modes=("shared", "per-frame", "context"),
        model_options=("attention",), unit="window", on_grids=False,
    ),
    "msc": Family(
        "msc", "MSC: multi-scale spatio-temporal causal attention", VideoDiT,
        lambda size, **kw: build_video_dit(size, arch="msc", **kw), causal_frames,
        sample_fields=("sampler", "steps", "eta", "schedule", "chunk", "context", "context_noise", "context_mode"),
        noise_modes=("per-frame", "shared"),
        model_options=("window", "p_frames", "pool", "i_stride", "i_frames", "high_heads", "gate", "light_cone"),
        unit="rollout", on_grids=False, causal=True,
    ),
}  # fmt: skip


def get_family(name):
    """The family registered as ``name``, or a one-line refusal naming the choices."""
    if name not in FAMILIES:
        raise GriditError(f"unknown architecture {name!r}; choose one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_of(model):
    """The family of ``model`` (its ``arch``; a model without one is a grid DiT)."""
    return get_family(getattr(model, "arch", DEFAULT_FAMILY))


def check_fields(family, names):
    """Refuse, by name, sampling settings that ``family`` does not use."""
    unused = sorted(set(names) - set(family.sample_fields))
    if unused:
        users = {k: [f.name for f in FAMILIES.values() if k in f.sample_fields] for k in unused}
        who = "; ".join(f"{k} is for {' and '.join(users[k]) or 'no'} models" for k in unused)
        raise GriditError(f"sampling settings a {family.name} model does not use: {who}")


def generate_frames(model, diffusion, n_frames, settings=None, *, rows=None, cols=None, n_sequences=1, seed=0,
                    device="cpu", progress=True, callback=None, codec=None, **given):  # fmt: skip
    """An iterator of frames ``(n_sequences, C, H, W)``, one time step at a time, exactly ``n_frames`` of them,
    from a model of any family.

    ``settings`` (a ``SampleConfig``) gives the sampling settings (the family takes the fields it uses); ``given``
    are ``SampleConfig`` fields that override them, and one the family does not use is refused by name. ``rows`` and
    ``cols`` set a grid model's layout (default: the model's own). A latent-space model needs its ``codec``
    (``training.load_codec``; None means pixel space): it samples in the codec's latents, each frame is decoded to
    RGB pixels as it comes out, and the predicted x0 is clamped to the codec's ``x0_range``. Every setting is checked
    here, before the first frame is sampled or anything is written.
    """
    family = family_of(model)
    check_fields(family, given)
    if n_frames < 1:
        raise GriditError(f"the number of frames must be at least 1, got {n_frames}")
    codec = pixel_codec(codec)
    if codec.latent_channels != model.in_channels:
        raise GriditError(f"the model takes {model.in_channels}-channel latents, but the VAE makes {codec.latent_channels}")
    base = (settings or SampleConfig()).pick(family.sample_fields)
    s = SampleConfig(**{**base, **given})  # checks every sampling setting
    layout = {"rows": rows, "cols": cols} if family.on_grids else {}
    return family.sampler(model, diffusion, n_frames, s, n_sequences=n_sequences, seed=seed, device=device,
                          progress=progress, callback=callback, codec=codec, **layout)  # fmt: skip


def sample_record(model, n_frames, settings=None, *, rows=None, cols=None, **given):
    """What ``SAMPLE_RECORD`` holds: the family, the sampling settings it used, the length and its seams (the frames
    where a new grid or window starts adding frames: ``gridit eval`` splits the plausible rate there)."""
    family = family_of(model)
    s = SampleConfig(**{**(settings or SampleConfig()).pick(family.sample_fields), **given})
    return {"family": family.name, "settings": s.pick(family.sample_fields), "n_frames": n_frames,
            "seams": family.seams(model, n_frames, s, rows=rows, cols=cols)}  # fmt: skip


def write_sample_record(out_dir, model, n_frames, settings=None, **given):
    """``SAMPLE_RECORD`` into ``out_dir`` (``sample_record``'s arguments)."""
    write_text_atomic(json.dumps(sample_record(model, n_frames, settings, **given), indent=1) + "\n",
                      Path(out_dir) / SAMPLE_RECORD)  # fmt: skip


def sequence_folders(out_dir, n_sequences):
    """Where each of ``n_sequences`` sampled sequences goes: ``out_dir`` itself for one, else ``out_dir/seq_000``, ..."""
    out_dir = Path(out_dir)
    return [out_dir] if n_sequences == 1 else [out_dir / f"seq_{k:03d}" for k in range(n_sequences)]


def prepare_sample_dir(out_dir, overwrite, n_sequences):
    """``util.io.prepare_output_dir`` for a sampling run of ``n_sequences`` (every earlier ``seq_*`` folder counts as
    a result: refused unless ``overwrite``, then cleared with the rest); returns the sequences' folders."""
    out_dir = Path(out_dir)
    earlier = sorted(p.name for p in out_dir.glob("seq_*") if p.is_dir()) if out_dir.is_dir() else []
    prepare_output_dir(out_dir, overwrite, [*SAMPLE_OUTPUTS, *earlier])
    return sequence_folders(out_dir, n_sequences)


def sample_sequence(model, diffusion, n_frames, settings=None, *, out_dir=None, overwrite=False, fps=8, n_sequences=1,
                    **kwargs):  # fmt: skip
    """Sample ``n_sequences`` sequences of exactly ``n_frames`` frames together (``generate_frames``'s arguments).

    Without ``out_dir`` returns a tensor ``(n_sequences, n_frames, C, H, W)`` in [-1, 1]. With it, streams each
    sequence to ``frames/*.png`` and ``sequence.gif`` of its folder (``sequence_folders``: ``out_dir`` for one
    sequence, ``out_dir/seq_000``, ... for more), writes ``SAMPLE_RECORD`` into ``out_dir``, and returns ``out_dir``.
    """
    frames = generate_frames(model, diffusion, n_frames, settings, n_sequences=n_sequences, **kwargs)
    if out_dir is None:
        return torch.stack(list(frames), 1)
    writers = [FrameWriter(d, fps=fps) for d in prepare_sample_dir(out_dir, overwrite, n_sequences)]
    for frame in frames:  # (n_sequences, C, H, W)
        for writer, f in zip(writers, frame):
            writer.add(f)
    fields = {k: v for k, v in kwargs.items() if k in (*SampleConfig.names(), "rows", "cols")}
    write_sample_record(out_dir, model, n_frames, settings, **fields)
    for writer in writers:
        writer.close()
    return Path(out_dir)
