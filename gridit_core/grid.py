"""Grid images: frames tiled row-major into one image, and the map between DiT tokens and frames.

A grid of ``rows x cols`` cells holds frames ``0 .. rows*cols-1``; frame ``i`` sits at row ``i // cols``
and column ``i % cols``. Every function here takes any number of leading batch dimensions.
"""

from dataclasses import dataclass

import torch

from gridit_core.errors import GriditError


def frames_to_grid(frames, rows, cols):
    """Tile frames ``(..., T, C, H, W)`` with ``T == rows*cols`` into grids ``(..., C, rows*H, cols*W)``."""
    if frames.ndim < 4:
        raise GriditError(f"frames must be (..., T, C, H, W), got shape {tuple(frames.shape)}")
    *lead, t, c, h, w = frames.shape
    if t != rows * cols:
        raise GriditError(f"{t} frames cannot fill a {rows}x{cols} grid (needs {rows * cols})")
    x = frames.reshape(*lead, rows, cols, c, h, w)  # (..., R, Cl, C, H, W)
    x = x.movedim(-3, -5)  # (..., C, R, Cl, H, W)
    x = x.transpose(-3, -2)  # (..., C, R, H, Cl, W)
    return x.reshape(*lead, c, rows * h, cols * w)  # (..., C, R*H, Cl*W)


def grid_to_frames(grid, rows, cols):
    """Cut grids ``(..., C, rows*H, cols*W)`` back into frames ``(..., rows*cols, C, H, W)``; inverts ``frames_to_grid``."""
    if grid.ndim < 3:
        raise GriditError(f"grid must be (..., C, H, W), got shape {tuple(grid.shape)}")
    *lead, c, gh, gw = grid.shape
    if gh % rows or gw % cols:
        raise GriditError(f"a {gh}x{gw} grid does not split into {rows}x{cols} equal cells")
    h, w = gh // rows, gw // cols
    x = grid.reshape(*lead, c, rows, h, cols, w)  # (..., C, R, H, Cl, W)
    x = x.transpose(-3, -2)  # (..., C, R, Cl, H, W)
    x = x.movedim(-5, -3)  # (..., R, Cl, C, H, W)
    return x.reshape(*lead, rows * cols, c, h, w)  # (..., T, C, H, W)


@dataclass(frozen=True)
class GridLayout:
    """Geometry of a grid image and of the DiT tokens that cover it (``patch`` pixels a side, row-major tokens)."""

    rows: int
    cols: int
    frame_h: int
    frame_w: int
    patch: int = 1

    def __post_init__(self):
        if min(self.rows, self.cols, self.frame_h, self.frame_w, self.patch) < 1:
            raise GriditError(f"grid layout needs positive sizes, got {self}")
        if self.frame_h % self.patch or self.frame_w % self.patch:
            raise GriditError(
                f"frame size {self.frame_h}x{self.frame_w} is not divisible by the patch size {self.patch}"
            )

    @property
    def frames(self):
        return self.rows * self.cols

    @property
    def image_size(self):
        """``(height, width)`` of the grid image in pixels."""
        return self.rows * self.frame_h, self.cols * self.frame_w

    @property
    def frame_tokens(self):
        """``(height, width)`` of one frame in tokens."""
        return self.frame_h // self.patch, self.frame_w // self.patch

    @property
    def token_grid(self):
        """``(height, width)`` of the whole grid in tokens."""
        fh, fw = self.frame_tokens
        return self.rows * fh, self.cols * fw

    @property
    def num_tokens(self):
        gh, gw = self.token_grid
        return gh * gw

    def token_to_frame(self, token):
        """Token index (int or tensor) -> ``(frame, y, x)``, with ``y, x`` in tokens inside the frame."""
        fh, fw = self.frame_tokens
        _, gw = self.token_grid
        r, c = token // gw, token % gw
        return (r // fh) * self.cols + c // fw, r % fh, c % fw

    def frame_to_token(self, frame, y, x):
        """``(frame, y, x)`` (ints or tensors, ``y, x`` in tokens) -> token index; inverts ``token_to_frame``."""
        fh, fw = self.frame_tokens
        _, gw = self.token_grid
        r = (frame // self.cols) * fh + y
        c = (frame % self.cols) * fw + x
        return r * gw + c

    def token_frames(self):
        """Frame index of every token, ``(N,)`` long."""
        return self.token_to_frame(torch.arange(self.num_tokens))[0]

    def cell_mask(self, frames):
        """Boolean pixel mask ``(1, rows*H, cols*W)``, true on the cells of the given frame indices."""
        mask = torch.zeros(self.frames, 1, self.frame_h, self.frame_w, dtype=torch.bool)
        mask[list(frames)] = True
        return frames_to_grid(mask, self.rows, self.cols)
