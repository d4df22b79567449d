"""What both widgets share: loading a model (a checkpoint path or a model object), errors shown as one red line,
and images for display (tiles, zoom, PNG bytes)."""

import functools
import html
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gridit_core.diffusion import Diffusion
from gridit_core.errors import GriditError
from gridit_core.models.codec import IdentityCodec
from gridit_core.sampling import family_of

USER_ERRORS = (GriditError, OSError, ValueError, TypeError, RuntimeError, KeyError)  # shown in red, never raised


@dataclass
class Loaded:
    """A stage-1 model with what sampling and inspection need from its checkpoint."""

    model: torch.nn.Module
    diffusion: Diffusion
    rows: int = 1
    cols: int = 1
    sampling: dict = field(default_factory=dict)  # the checkpoint's saved SampleConfig fields
    codec: object = None
    source: str = "model object"

    @property
    def family(self):
        """The model's family (``gridit_core.sampling.FAMILIES``)."""
        return family_of(self.model)

    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def window(self):
        """Frames the model sees at once: a grid's cells, or the sequence model's training clip."""
        return self.model.config.frames

    @property
    def frame_hw(self):
        """``(H, W)`` of a frame in the model's space (pixels, or latents)."""
        return self.model.config.frame_hw

    def describe(self):
        name = getattr(self.model, "name", type(self.model).__name__)
        h, w = self.frame_hw
        extent = f"a {self.rows}x{self.cols} grid" if self.family.on_grids else f"clips of {self.window}"
        return f"{name} ({self.family.name}): {extent} of {h}x{w} frames; from {self.source}"


def load_stage1(source, diffusion=None, *, device="cpu"):
    """A ``Loaded`` from a checkpoint path (training checkpoint or export) or a model object (then ``diffusion``,
    default DiT's process, and the grid's rows and columns from the model's config)."""
    from gridit_core.training import load_codec, load_trained

    if isinstance(source, (str, Path)):
        model, diff, cfg = load_trained(source, device=device)
        codec = load_codec(cfg, model, device=device)
        return Loaded(model, diff, cfg.rows, cfg.cols, dict(cfg.sampling), codec, str(source))
    if not isinstance(source, torch.nn.Module):
        raise GriditError(f"expected a checkpoint path or a model, got {type(source).__name__}")
    rows, cols = (source.config.rows, source.config.cols) if family_of(source).on_grids else (1, 1)
    return Loaded(source.eval(), diffusion or Diffusion(), rows, cols, {}, IdentityCodec())


def error_html(message):
    """One line in red."""
    first = str(message).strip().splitlines()[0] if str(message).strip() else type(message).__name__
    return f'<span class="gridit-error" style="color:#c00">{html.escape(first)}</span>'


def note_html(message):
    return f'<span class="gridit-note" style="color:#444">{html.escape(str(message))}</span>'


def guarded(method):
    """A widget handler whose user errors land in the widget's ``status`` line instead of the notebook."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except USER_ERRORS as e:
            self.status.value = error_html(e)
            return None

    return wrapper


def to_uint8(x):
    """Images ``(..., C, H, W)`` in [-1, 1] -> uint8 ``(..., H, W, 3)``; other channel counts show their first three
    channels (latents: a rough look, scaled by 1/2), a single channel as grey."""
    x = torch.as_tensor(x).detach().float().cpu()
    c = x.shape[-3]
    if c == 1:
        x = x.expand(*x.shape[:-3], 3, *x.shape[-2:])
    elif c != 3:
        x = x.narrow(-3, 0, 3) / 2
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).movedim(-3, -1).numpy()


def tile(images, cols, gap=0):
    """uint8 ``(T, H, W, 3)`` -> one image of ``cols`` columns (row-major), ``gap`` white pixels between tiles."""
    images = np.asarray(images)
    t, h, w, c = images.shape
    rows = -(-t // cols)
    out = np.full((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, c), 255, dtype=np.uint8)
    for i, im in enumerate(images):
        r, k = divmod(i, cols)
        out[r * (h + gap) : r * (h + gap) + h, k * (w + gap) : k * (w + gap) + w] = im
    return out


def zoom(image, factor):
    """Nearest-neighbour enlargement of uint8 ``(H, W, 3)`` by an integer ``factor``."""
    return np.asarray(image).repeat(factor, 0).repeat(factor, 1)


def png_bytes(image):
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return buf.getvalue()


def display_zoom(side, target=192):
    """An integer zoom that shows a ``side``-pixel image about ``target`` pixels wide."""
    return max(1, round(target / max(1, side)))
