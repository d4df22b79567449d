"""What the AttentionInspector shows, with no widget in it: a window of a sequence noised to level ``t``, one layer's
attention (or the rollout over all layers) computed explicitly on demand and cached per window, level and layer,
the frame x frame matrix, one token's attention drawn over every frame, MSC branch gates, and snapshots."""

import base64
import html
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure

from gridit_core.errors import GriditError
from gridit_core.models import attention_maps as xattn  # explicit attention, computed on demand
from gridit_core.report.page import figure_png
from gridit_core.util.image import uint8_to_tensor
from gridit_core.util.io import write_text_atomic
from widgets.common import display_zoom, png_bytes, to_uint8, zoom

VIEWS = ("layer", "rollout")
FUSIONS = xattn.FUSIONS  # mean or max of the chosen heads
BRANCHES = ("both", "high", "low")  # MSC: all heads, or one branch's
GAP = 2  # pixels between frames in the patch view


def as_frames(sequence):
    """A sequence as frames ``(T, 3, H, W)`` float in [-1, 1]: a tensor ``(T, 3, H, W)`` or ``(1, T, 3, H, W)``, uint8
    ``(T, H, W, 3)``, or anything with ``result()`` (a SequenceSampler or a SamplingRun)."""
    if hasattr(sequence, "result"):
        sequence = sequence.result()
        if sequence is None:
            raise GriditError("the sampler has no frames yet: run it first")
    if isinstance(sequence, np.ndarray) and sequence.dtype == np.uint8:
        sequence = uint8_to_tensor(sequence)
    if not torch.is_tensor(sequence):
        raise GriditError(f"a sequence must be a tensor (T, 3, H, W), uint8 frames or a sampler, got {type(sequence).__name__}")
    x = sequence.detach().float().cpu()
    if x.ndim == 5 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 4 or x.shape[1] != 3:
        raise GriditError(f"a sequence must be frames (T, 3, H, W), got shape {tuple(sequence.shape)}")
    return x


def heat_colours(values):
    """Values in [0, 1] ``(..)`` -> uint8 colours ``(.., 3)`` of matplotlib's inferno map."""
    return (matplotlib.colormaps["inferno"](np.clip(values, 0, 1))[..., :3] * 255).astype(np.uint8)


class AttentionState:
    """The inspector's settings and what they show. ``loaded`` is a ``widgets.common.Loaded``; ``sequence`` as for
    ``as_frames`` (pixel frames; a latent model's codec encodes them)."""

    def __init__(self, loaded, sequence, *, t=None, layer=None, seed=0):
        self.loaded, self.seed = loaded, seed
        model = loaded.model
        self.depth, self.heads = len(model.blocks), model.blocks[0].attn.num_heads
        self.t = loaded.diffusion.num_steps // 4 if t is None else int(t)
        self.layer = self.depth - 1 if layer is None else min(max(int(layer), 0), self.depth - 1)
        self.view, self.mode, self.branch = "layer", "mean", "both"
        self.checked = set(range(self.heads))
        self.start, self.token = 0, None
        self.frames = None
        self.set_sequence(sequence)

    # -- inputs ----------------------------------------------------------------------------------------------------

    def set_sequence(self, sequence):
        """Take a new sequence (checked against the model's frame size and window) and forget the cached maps."""
        frames = as_frames(sequence)
        ld = self.loaded
        factor = getattr(ld.codec, "downsample_factor", 1)
        want = tuple(s * factor for s in ld.frame_hw)
        if tuple(frames.shape[-2:]) != want:
            raise GriditError(f"the sequence has {frames.shape[-2]}x{frames.shape[-1]} frames, but the model takes "
                              f"{want[0]}x{want[1]}")  # fmt: skip
        if len(frames) < ld.window:
            raise GriditError(f"the sequence has {len(frames)} frames; the model looks at {ld.window} at once")
        self.frames, self._cache = frames, {}
        self.start = min(self.start, self.max_start)
        _, h, w = self.token_grid
        self.token = self.token or (ld.window // 2, h // 2, w // 2)

    @property
    def max_start(self):
        return len(self.frames) - self.loaded.window

    @property
    def token_grid(self):
        """``(frames, h, w)`` of the window in tokens."""
        m = self.loaded.model
        p = m.config.patch_size
        fh, fw = self.loaded.frame_hw
        return self.loaded.window, fh // p, fw // p

    def window(self):
        """The frames the model looks at ``(T, 3, H, W)``, in pixels."""
        return self.frames[self.start : self.start + self.loaded.window]

    def model_x(self):
        """The window as the model's input, noised to ``t``."""
        ld = self.loaded
        x0 = ld.codec.encode(self.window().to(ld.device))  # (T, C, h, w); pixels pass as they are
        x0 = xattn.model_input(ld.model, x0[None])  # (1, C, GH, GW) or (1, T, C, H, W)
        return xattn.noised(ld.diffusion, x0, self.t, self.seed)

    # -- attention -------------------------------------------------------------------------------------------------

    def attention(self, layers):
        """``{layer: LayerAttention}`` for this window and level, computing only the layers not cached yet."""
        key = (self.start, self.t)
        cached = self._cache.setdefault(key, {})
        missing = [i for i in layers if i not in cached]
        if missing:
            cached.update(xattn.layer_attention(self.loaded.model, self.model_x(), self.t, missing))
        return {i: cached[i] for i in layers}

    def chosen_heads(self, branch_of):
        """The checked heads that belong to the chosen branch."""
        heads = [h for h in sorted(self.checked) if self.branch == "both" or branch_of[h] in ("all", self.branch)]
        if not heads:
            raise GriditError("no head chosen: tick at least one head of the chosen branch")
        return heads

    def _fused(self, att):
        heads = self.chosen_heads(att.branch)
        weights = att.head_weights() if att.gate is not None else None
        return xattn.fuse_heads(att.probs[0], heads, self.mode, weights)

    def matrix(self):
        """The token x token matrix ``(N, N)`` shown: one layer's fused heads, or the rollout up to that layer."""
        if self.view == "layer":
            return self._fused(self.attention([self.layer])[self.layer])
        maps = self.attention(list(range(self.layer + 1)))
        return xattn.rollout([self._fused(maps[i]) for i in range(self.layer + 1)])

    def frame_matrix(self):
        """``(T, T)``: the mass tokens of frame i put on frame j."""
        return xattn.frame_mass(self.matrix(), self.loaded.window)

    def token_map(self):
        """The chosen token's attention over every frame of the window, ``(T, h, w)``."""
        t, h, w = self.token_grid
        f, y, x = self.token
        return self.matrix()[(f * h + y) * w + x].reshape(t, h, w)

    def near_mass(self, reach=1):
        return xattn.near_mass(self.frame_matrix(), reach)

    def gates(self, levels=None):
        """MSC: ``(levels (K,), weights (depth, K, 2))``, the branch weights of every layer by noise level."""
        model = self.loaded.model
        if not self.loaded.family.causal:
            return None
        levels = torch.linspace(0, self.loaded.diffusion.num_steps - 1, 41).round().long() if levels is None else levels
        return levels, model.gate_weights(levels.to(self.loaded.device)).float().cpu()

    # -- the patch picture -----------------------------------------------------------------------------------------

    @property
    def tiles(self):
        """``(rows, cols)`` of frames in the picture: the grid model's grid, else one row of up to 8."""
        ld = self.loaded
        return (ld.rows, ld.cols) if ld.family.on_grids else (-(-ld.window // 8), min(ld.window, 8))

    @property
    def zoom(self):
        return display_zoom(self.frames.shape[-1], 128)

    def picture(self):
        """uint8 picture of the window's frames with the chosen token's attention over them (inferno, brighter is
        more), the token outlined in cyan."""
        heat = self.token_map().numpy()  # (T, h, w)
        heat = heat / max(float(heat.max()), 1e-12)
        frames = to_uint8(self.window())  # (T, H, W, 3)
        z = self.zoom
        cell = frames.shape[1] // heat.shape[1]  # pixels of one token
        rows, cols = self.tiles
        fh, fw = frames.shape[1] * z, frames.shape[2] * z
        out = np.full((rows * fh + (rows - 1) * GAP, cols * fw + (cols - 1) * GAP, 3), 255, dtype=np.uint8)
        for i, (frame, hm) in enumerate(zip(frames, heat)):
            alpha = 0.75 * np.sqrt(hm).repeat(cell * z, 0).repeat(cell * z, 1)[..., None]
            colour = heat_colours(hm).repeat(cell * z, 0).repeat(cell * z, 1)
            tile_ = ((1 - alpha) * zoom(frame, z) + alpha * colour).astype(np.uint8)
            if i == self.token[0]:
                _, ty, tx = self.token
                s = cell * z
                for y0, y1, x0, x1 in ((ty * s, ty * s + 1, tx * s, tx * s + s), (ty * s + s - 1, ty * s + s, tx * s, tx * s + s),
                                       (ty * s, ty * s + s, tx * s, tx * s + 1), (ty * s, ty * s + s, tx * s + s - 1, tx * s + s)):
                    tile_[y0:y1, x0:x1] = (0, 255, 255)  # fmt: skip
            r, c = divmod(i, cols)
            out[r * (fh + GAP) : r * (fh + GAP) + fh, c * (fw + GAP) : c * (fw + GAP) + fw] = tile_
        return out

    def pick(self, px, py):
        """Choose the token under picture pixel ``(px, py)``; returns it, or None over a gap or outside."""
        rows, cols = self.tiles
        fh, fw = self.frames.shape[-2] * self.zoom, self.frames.shape[-1] * self.zoom
        r, oy = divmod(int(py), fh + GAP)
        c, ox = divmod(int(px), fw + GAP)
        frame = r * cols + c
        if px < 0 or py < 0 or r >= rows or c >= cols or oy >= fh or ox >= fw or frame >= self.loaded.window:
            return None
        _, h, w = self.token_grid
        self.token = (frame, oy * h // fh, ox * w // fw)
        return self.token

    # -- snapshot --------------------------------------------------------------------------------------------------

    def describe(self):
        what = f"rollout of layers 0-{self.layer}" if self.view == "rollout" else f"layer {self.layer}"
        branch = f", branch {self.branch}" if self.loaded.family.causal else ""
        return (f"{self.loaded.describe()}. {what}, heads {sorted(self.checked)} ({self.mode}){branch}, t = {self.t}, "
                f"frames {self.start}-{self.start + self.loaded.window - 1}, token (frame, y, x) = {self.token}")  # fmt: skip

    def figure(self):
        """A matplotlib figure of the current view: frame matrix with its numbers, the token's map, MSC gates."""
        gates = self.gates()
        fig = Figure(figsize=(13 if gates else 9, 4.2))
        axes = fig.subplots(1, 3 if gates else 2)
        fm = self.frame_matrix().numpy()
        axes[0].imshow(fm, cmap="viridis", vmin=0)
        if len(fm) <= 16:
            for (i, j), v in np.ndenumerate(fm):
                axes[0].text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if v < fm.max() / 2 else "k")
        axes[0].set(title="frame x frame attention mass", xlabel="key frame", ylabel="query frame")
        axes[1].imshow(self.picture(), interpolation="nearest")
        axes[1].set(title=f"token {self.token} (frame, y, x)")
        axes[1].set_axis_off()
        if gates:
            levels, weights = gates
            for i, wl in enumerate(weights):
                axes[2].plot(levels.numpy(), wl[:, 0].numpy(), label=f"layer {i}")
            axes[2].axvline(self.t, color="k", lw=0.8)
            axes[2].set(title="High-Res gate (Low-Res = 2 - it)", xlabel="noise level t", ylabel="weight")
            axes[2].legend(fontsize=7)
        fig.tight_layout()
        return fig

    def snapshot(self, path):
        """Write the current view as ``path.png`` and a self-contained ``path.html`` (the picture inline, the frame
        matrix as a table, the settings); returns both paths."""
        path = Path(path)
        stem = path.with_suffix("") if path.suffix in (".png", ".html") else path
        png = figure_png(self.figure())
        stem.parent.mkdir(parents=True, exist_ok=True)
        png_path, html_path = stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".html")
        png_path.write_bytes(png)
        fm = self.frame_matrix().numpy()
        head = "".join(f"<th>{j}</th>" for j in range(len(fm)))
        rows = "".join(f"<tr><th>{i}</th>" + "".join(f"<td>{v:.3f}</td>" for v in row) + "</tr>" for i, row in enumerate(fm))
        page = (
            "<!doctype html><html><head><meta charset='utf-8'><title>attention snapshot</title><style>"
            "body{font-family:system-ui,sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:2px 6px;"
            "text-align:right}table{border-collapse:collapse}</style></head><body>"
            f"<h1>Attention across frames</h1><p>{html.escape(self.describe())}</p>"
            f"<img alt='attention view' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
            f"<h2>Frame x frame mass (rows: query frame, columns: key frame)</h2><table><tr><th></th>{head}</tr>{rows}</table>"
            "</body></html>"
        )
        write_text_atomic(page, html_path)
        return png_path, html_path

    def picture_png(self):
        return png_bytes(self.picture())


__all__ = ["AttentionState", "BRANCHES", "FUSIONS", "VIEWS", "as_frames"]
