"""DiT weights from files: the official DiT checkpoints (raw EMA state dicts) and our training checkpoints.

``load_weights`` loads strictly, but adapts what differs by design between a file and a GriDiT model (the
position table for another token grid, a ``frame3d`` model's own table, optionally learned sigma on one side) and
says what it did in a ``LoadReport``.
"""

import math
import os
from dataclasses import dataclass, field
from typing import Mapping

import torch
import torch.nn.functional as F

from gridit_core.errors import GriditError
from gridit_core.util.io import load_file


@dataclass
class LoadReport:
    """What ``load_weights`` took from a checkpoint, what it left, and why."""

    source: str  # "raw state dict", "checkpoint['ema']", "checkpoint['model']"
    loaded: list = field(default_factory=list)  # keys copied as they are
    missing: list = field(default_factory=list)  # model keys absent from the file: kept as initialised
    dropped: list = field(default_factory=list)  # file keys the model does not use
    resized: list = field(default_factory=list)  # file keys adapted to the model's shape
    notes: dict = field(default_factory=dict)  # key -> why it was dropped or how it was resized

    def __str__(self):
        def names(keys):
            shown = [f"{k} ({self.notes[k]})" if k in self.notes else k for k in keys[:3]]
            return ", ".join(shown) + (f", ... {len(keys) - 3} more" if len(keys) > 3 else "")

        parts = [f"loaded {len(self.loaded)} tensors from {self.source}"]
        for label, keys in (("resized", self.resized), ("missing", self.missing), ("dropped", self.dropped)):
            if keys:
                parts.append(f"{label} {len(keys)}: {names(keys)}")
        return "; ".join(parts)


_OUT_KEYS = ("final_layer.linear.weight", "final_layer.linear.bias")


def _pick_state_dict(obj, prefer):
    if not isinstance(obj, Mapping):
        raise GriditError(f"not a DiT checkpoint: expected a dict, got {type(obj).__name__}")
    other = "model" if prefer == "ema" else "ema"
    for key in (prefer, other):
        if isinstance(obj.get(key), Mapping):
            return obj[key], f"checkpoint[{key!r}]"
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, "raw state dict"
    raise GriditError(f"not a DiT checkpoint: no 'ema' or 'model' state dict among keys {sorted(obj)[:8]}")


def _strip_prefixes(key):
    while key.startswith(("module.", "_orig_mod.")):  # DDP and torch.compile wrappers
        key = key.split(".", 1)[1]
    return key


def _resize_pos_embed(table, gh, gw):
    """Bicubic resize of a ``(1, n, D)`` table onto ``gh x gw`` tokens; the file's grid is square or of that aspect."""
    n, d = table.shape[1], table.shape[2]
    h0 = math.isqrt(n) if math.isqrt(n) ** 2 == n else round(math.sqrt(n * gh / gw))
    w0 = n // max(h0, 1)
    if h0 * w0 != n:
        raise GriditError(f"cannot tell the token grid of a pos_embed with {n} tokens")
    grid = table.float().reshape(1, h0, w0, d).permute(0, 3, 1, 2)  # (1, D, h0, w0)
    grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)  # (1, D, gh, gw)
    return grid.permute(0, 2, 3, 1).reshape(1, gh * gw, d).to(table.dtype)  # (1, gh*gw, D)


def _fit_out_channels(value, mine, patch):
    """Final-linear rows run (py, px, channel): per patch cell copy the leading shared channels, keep the rest."""
    file_rows = value.reshape(patch * patch, -1, *value.shape[1:])  # (p*p, C_file, ...)
    fitted = mine.clone().reshape(patch * patch, -1, *mine.shape[1:])  # (p*p, C_model, ...)
    c = min(file_rows.shape[1], fitted.shape[1])
    fitted[:, :c] = file_rows[:, :c]
    return fitted.reshape(mine.shape)


def load_weights(model, source, *, prefer="ema", allow_out_channel_slice=False):
    """Load a path or dict into ``model`` (strict), adapting ``pos_embed``; returns a ``LoadReport``.

    Accepts a raw state dict (the official DiT files hold the EMA weights so) or a dict with ``"model"`` and/or
    ``"ema"`` state dicts (``prefer`` picks). A shape mismatch other than ``pos_embed`` is a ``GriditError``; with
    ``allow_out_channel_slice`` a learned-sigma final layer (2C outputs) may feed a C-output model or the reverse.
    """
    if prefer not in ("ema", "model"):
        raise GriditError(f"prefer must be 'ema' or 'model', got {prefer!r}")
    obj = load_file(source) if isinstance(source, (str, os.PathLike)) else source
    state, where = _pick_state_dict(obj, prefer)
    state = {_strip_prefixes(k): v for k, v in state.items()}
    own = model.state_dict()
    report, merged, mismatched = LoadReport(source=where), dict(own), []
    p = model.config.patch_size
    c = model.out_channels // 2 if model.learn_sigma else model.out_channels  # in_channels, but 2C-in for stage 2
    for key, value in state.items():
        mine = own.get(key)
        if mine is None:
            report.dropped.append(key)
            continue
        if not isinstance(value, torch.Tensor):
            mismatched.append((f"{key} is a {type(value).__name__} in the file", False))
            continue
        sigma = (key in _OUT_KEYS and value.shape[1:] == mine.shape[1:]
                 and {value.shape[0], mine.shape[0]} == {p * p * c, p * p * 2 * c})  # learned sigma on one side
        if key == "pos_embed" and model.config.pos_embed == "frame3d" and not (
            value.shape == mine.shape and torch.equal(value.to(mine), mine)
        ):
            report.dropped.append(key)
            report.notes[key] = "the frame3d model computes its own table"
        elif value.shape == mine.shape:
            merged[key] = value
            report.loaded.append(key)
        elif key == "pos_embed" and value.ndim == 3 and value.shape[2] == mine.shape[2]:
            merged[key] = _resize_pos_embed(value, *model.layout.token_grid)
            report.resized.append(key)
            report.notes[key] = f"bicubic {tuple(value.shape)} -> {tuple(mine.shape)}"
        elif sigma and allow_out_channel_slice:
            merged[key] = _fit_out_channels(value, mine, p)
            report.resized.append(key)
            report.notes[key] = f"output channels {value.shape[0] // (p * p)} -> {mine.shape[0] // (p * p)}"
        else:
            mismatched.append((f"{key} is {tuple(value.shape)} in the file, {tuple(mine.shape)} in the model", sigma))
    if mismatched:
        mismatched.sort(key=lambda m: m[0].startswith("pos_embed"))  # name a weight first: it tells the size apart
        more = f" ({len(mismatched)} tensors differ)" if len(mismatched) > 1 else ""
        sigma_only = all(s for _, s in mismatched)
        hint = "; learned sigma differs: allow_out_channel_slice=True adapts it" if sigma_only else ""
        raise GriditError(f"checkpoint does not fit {model.name}: {mismatched[0][0]}{more}{hint}")
    if not report.loaded and not report.resized:
        raise GriditError(f"checkpoint shares no tensor with {model.name} ({where} has {len(state)} keys)")
    report.missing = [k for k in own if k not in state]
    model.load_state_dict(merged, strict=True)
    return report
