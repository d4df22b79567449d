"""Fixed positions and attention masks over tokens: sin-cos tables (2D over the whole grid image, or 3D over frame,
y and x) and the token mask that a frame-level mask implies."""

import torch

from gridit_core.errors import GriditError

POS_EMBEDS = ("grid2d", "frame3d")  # sin-cos over the whole token grid (official), or over frame, y and x


def sincos_1d(dim, positions):
    """Sin-cos embedding ``(M, dim)`` float64: ``[sin(p w_i), cos(p w_i)]`` with ``w_i = 10000^(-2i/dim)``."""
    if dim < 2 or dim % 2:
        raise GriditError(f"a sin-cos embedding needs a positive even width, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))  # (dim/2,)
    angles = torch.as_tensor(positions).reshape(-1).to(torch.float64)[:, None] * omega[None]  # (M, dim/2)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)  # (M, dim)


def grid2d_pos_embed(dim, gh, gw):
    """2D sin-cos table ``(gh*gw, dim)`` float32, row-major: ``[:dim/2]`` encodes the column, ``[dim/2:]`` the row.

    Equals the official DiT/MAE table on a square grid: that code builds ``np.meshgrid(w, h)``, whose first output
    varies along columns, and encodes it in the first half.
    """
    row, col = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")  # (gh, gw) each
    return torch.cat([sincos_1d(dim // 2, col), sincos_1d(dim // 2, row)], dim=1).float()  # (gh*gw, dim)


def frame3d_split(dim):
    """Channel widths ``(x, y, frame)`` of the frame3d table: 3/8, 3/8 and 1/4 of ``dim``, each even."""
    s = 2 * (3 * dim // 16)
    return s, s, dim - 2 * s


def frame3d_pos_embed(dim, layout):
    """Sin-cos table ``(L, dim)`` float32 over (x, y) inside the frame and the frame index, on disjoint channels.

    Channels are ``[x | y | frame]`` with widths from ``frame3d_split``: the same (y, x) in two frames shares the
    spatial channels, and two frames differ only in the last quarter.
    """
    frame, y, x = layout.token_to_frame(torch.arange(layout.num_tokens))  # (L,) each
    sx, sy, sf = frame3d_split(dim)
    return torch.cat([sincos_1d(sx, x), sincos_1d(sy, y), sincos_1d(sf, frame)], dim=1).float()  # (L, dim)
