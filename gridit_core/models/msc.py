"""MSC attention: multi-scale spatio-temporal causal attention for autoregressive video diffusion (arXiv 2412.09828).

Each block splits its heads into two parallel branches whose outputs are concatenated before the output projection:

- High-Res: full-resolution tokens; a query of frame t at (y, x) sees the tokens within a ``window`` x ``window``
  square around (y, x) in frame t and in each of the ``p_frames`` frames before it (P-frames). With ``light_cone``
  the square grows by one token a side per frame of distance (the paper's light cone).
- Low-Res: every frame's tokens average-pooled by ``pool`` in each spatial dimension; a pooled query of frame t sees
  all pooled tokens of frames t, t-d, ..., t-i_frames*d (I-frames, ``d = i_stride``); the output is repeated back to
  full resolution.

Both branches are causal at the frame level. Time enters through a rotary embedding of the absolute frame index on
half of each head's channels, so attention depends on frame distances only: keys cached once keep their meaning, and
rollouts may run past the training length. Each frame's noise-level embedding sets the weights of the two branches
(see ``BranchGate``): the query frame's for the branch outputs, and optionally each key frame's for its values.

The cost really drops, with no T x T score matrix: the High-Res branch gathers each query's
``(p_frames+1) * window^2`` keys (``"gathered"``), or attends from each frame to the ``(p_frames+1) * L`` tokens of
its frame block with the window as a mask (``"blocked"``), or splits each frame into tiles of queries that
attend to their tile and a halo of the window's radius in their frame and the ``p_frames`` before it, all tiles in
one batched product with the window as a mask (``"tiled"``, neighbourhood attention in tiles: dense products whose
time follows their multiply-adds); ``high_res_path`` picks by frame size. The Low-Res branch attends over
``(i_frames+1) * L / pool^2`` keys per pooled query. Attention never reaches further back than
``span = max(p_frames, i_frames * i_stride)`` frames, so a cache of the last ``span`` frames' keys and values
(``KVCache``) is exact. ``reference=True`` computes the same attention with full boolean masks over all tokens
(``_dense``): the tests hold both fast paths to it. The dense path also takes a first frame each frame may see
(``earliest``): the uncached rollout's way to see only the frames a shorter cache would hold.
"""

import math
from functools import lru_cache

import torch
import torch.nn as nn
import torch.nn.functional as F

from gridit_core.errors import GriditError


def rope_time(x, frames, dims):
    """Rotate channel pairs of the first ``dims`` channels of ``x (..., T, L, d)`` by angles ``frame * w_i``."""
    if dims == 0:
        return x
    half = dims // 2
    freqs = 10000.0 ** (-torch.arange(half, dtype=torch.float64, device=x.device) / half)  # (dims/2,)
    angle = frames.to(torch.float64)[:, None] * freqs  # (T, dims/2)
    cos, sin = angle.cos().to(x.dtype)[:, None], angle.sin().to(x.dtype)[:, None]  # (T, 1, dims/2)
    a, b, rest = x[..., :half], x[..., half:dims], x[..., dims:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos, rest], dim=-1)


def pool_tokens(x, grid, r):
    """Average-pool tokens ``(..., T, L, d)`` of an ``(h, w)`` token grid by ``r`` in each spatial dimension."""
    if r == 1:
        return x
    (h, w), lead, d = grid, x.shape[:-2], x.shape[-1]
    x = x.reshape(-1, h, w, d).permute(0, 3, 1, 2)  # (*, d, h, w), channels last: avg_pool2d's fast layout, where
    x = F.avg_pool2d(x, r).permute(0, 2, 3, 1)  # (*, h/r, w/r, d) a mean over two strided dims is 20x slower
    return x.reshape(*lead, (h // r) * (w // r), d)


def unpool_tokens(x, grid, r):
    """Repeat pooled tokens ``(..., T, Lp, d)`` back onto the full ``(h, w)`` token grid."""
    if r == 1:
        return x
    (h, w), lead, d = grid, x.shape[:-2], x.shape[-1]
    x = x.reshape(-1, h // r, 1, w // r, 1, d).expand(-1, h // r, r, w // r, r, d)  # (*, h/r, r, w/r, r, d), a view
    return x.reshape(*lead, h * w, d)  # one copy


def attend(q, k, v, bias=None):
    """Softmax attention of ``q (N, H, Q, d)`` over ``k, v (N, H, K, d)`` with an additive ``bias`` broadcast to
    ``(N, H, Q, K)`` (or none). On the CPU as two batched products and a softmax: for the few keys MSC gives a query,
    that beats the fused SDPA kernel, whose time with a mask is several times its time without (measured, torch 2.14);
    elsewhere the fused kernel."""
    if q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-1, -2))  # (N, H, Q, K)
    if bias is not None:
        scores = scores + bias
    return torch.matmul(scores.softmax(dim=-1), v)  # (N, H, Q, d)


def per_head(weights, high_heads, heads):
    """Branch weights ``(B, T, 2)`` (High-Res, Low-Res) spread over the heads: ``(B, heads, T, 1, 1)``, the first
    ``high_heads`` taking the High-Res weight."""
    branch = (torch.arange(heads, device=weights.device) >= high_heads).long()  # (h,) 0: High-Res, 1: Low-Res
    return weights[..., branch].permute(0, 2, 1)[..., None, None]  # (B, h, T, 1, 1)


def window_radius(window, distance, light_cone):
    """Half side of the High-Res window at a frame ``distance`` back: fixed, or growing by one per frame."""
    return window // 2 + (distance if light_cone else 0)


@lru_cache(maxsize=64)
def _high_index(n_past, n_new, grid, window, p_frames, light_cone):
    """For each new frame's token, the flat indices of its High-Res keys among ``(n_past + n_new)`` frames of
    tokens, and which of them exist: ``(n_new, L, K)`` long and bool (CPU; cached per shape)."""
    h, w = grid
    offsets = [(k, dy, dx) for k in range(p_frames + 1) for r in [window_radius(window, k, light_cone)]
               for dy in range(-r, r + 1) for dx in range(-r, r + 1)]  # fmt: skip
    k, dy, dx = (torch.tensor(v) for v in zip(*offsets))  # (K,) each
    frame = n_past + torch.arange(n_new)[:, None, None] - k  # (T, 1, K) key frame position
    y = torch.arange(h).repeat_interleave(w)[None, :, None] + dy  # (1, L, K)
    x = torch.arange(w).repeat(h)[None, :, None] + dx  # (1, L, K)
    valid = (frame >= 0) & (y >= 0) & (y < h) & (x >= 0) & (x < w)  # (T, L, K)
    index = (frame.clamp(min=0) * h + y.clamp(0, h - 1)) * w + x.clamp(0, w - 1)  # (T, L, K)
    return index, valid


@lru_cache(maxsize=64)
def _low_index(n_past, n_new, i_frames, i_stride):
    """For each new frame, the positions of its I-frames among ``(n_past + n_new)`` frames, and which exist."""
    frame = n_past + torch.arange(n_new)[:, None] - i_stride * torch.arange(i_frames + 1)  # (T, I+1)
    return frame.clamp(min=0), frame >= 0


@lru_cache(maxsize=64)
def _tile_index(n_past, n_new, grid, tile, window, p_frames, light_cone, dtype, device):
    """For each new frame and tile of ``tile = (th, tw)`` queries, the flat indices of its keys among ``(n_past +
    n_new)`` frames of tokens, ``(T, tiles, K)``, and the window as an additive mask ``(T * tiles, th * tw, K)``
    (0 where a query sees the key, ``-inf`` where it does not or the key frame is before frame 0), in ``dtype`` on
    ``device`` (cached per shape: the mask is built once, not per call)."""
    (h, w), (th, tw) = grid, tile
    ty, tx = torch.arange(h // th).repeat_interleave(w // tw), torch.arange(w // tw).repeat(h // th)  # (tiles,)
    qy = ty[:, None] * th + torch.arange(th).repeat_interleave(tw)  # (tiles, Q) query rows
    qx = tx[:, None] * tw + torch.arange(tw).repeat(th)  # (tiles, Q) query columns
    index, seen = [], []
    for k in range(p_frames + 1):  # key frame k back: a (kh, kw) block around the tile, slid inside the frame
        rk = window_radius(window, k, light_cone)
        kh, kw = min(h, th + 2 * rk), min(w, tw + 2 * rk)
        ky = (ty * th - rk).clamp(0, h - kh)[:, None] + torch.arange(kh).repeat_interleave(kw)  # (tiles, Kk)
        kx = (tx * tw - rk).clamp(0, w - kw)[:, None] + torch.arange(kw).repeat(kh)  # (tiles, Kk)
        frame = n_past + torch.arange(n_new)[:, None, None] - k  # (T, 1, 1)
        index.append((frame.clamp(min=0) * h + ky) * w + kx)  # (T, tiles, Kk)
        near = ((qy[:, :, None] - ky[:, None]).abs() <= rk) & ((qx[:, :, None] - kx[:, None]).abs() <= rk)
        seen.append(near & (frame >= 0)[..., None])  # (T, tiles, Q, Kk)
    mask = torch.cat(seen, -1).flatten(0, 1)  # (T * tiles, Q, K)
    bias = torch.zeros(mask.shape, dtype=dtype).masked_fill_(~mask, float("-inf"))
    return torch.cat(index, -1).to(device), bias.to(device)


def high_res_path(grid, window, p_frames):
    """``"blocked"`` (one tile a frame) when a frame block's keys are few enough (at most 8x the window's keys), else
    ``"tiled"``: on a quiet 2-core CPU the tiled kernel beat gathering at 16 frames of 16x16 tokens by 1.2x in the
    layer and 1.4x in a training step (``benchmarks/families.py --only large_frames``, docs/families.md)."""
    return "blocked" if grid[0] * grid[1] <= 8 * window * window else "tiled"


HIGH_RES_PATHS = ("gathered", "blocked", "tiled")  # the High-Res kernels; "auto" asks ``high_res_path``


def tile_keys(grid, tile, window, p_frames, light_cone):
    """The keys of one tile of queries: its tile and a halo of the window's radius in each of ``p_frames + 1``
    frames, the block slid inside the frame at its edges, so every query of the tile multiplies all of them."""
    (h, w), (th, tw) = grid, tile
    return sum(min(h, th + 2 * rk) * min(w, tw + 2 * rk)
               for rk in (window_radius(window, k, light_cone) for k in range(p_frames + 1)))  # fmt: skip


def high_res_tile(grid, window, p_frames, light_cone=False, min_queries=32):
    """The tile ``(th, tw)`` of the tiled High-Res kernel: of the tiles that divide the ``(h, w)`` token grid and hold
    at least ``min_queries`` queries (else the whole frame), the one whose queries see the fewest keys; wider tiles
    first on ties, as a tile of whole rows needs no copy of the queries."""
    h, w = grid
    tiles = [(th, tw) for th in range(1, h + 1) if h % th == 0 for tw in range(w, 0, -1) if w % tw == 0]
    tiles = [t for t in tiles if t[0] * t[1] >= min(min_queries, h * w)]
    return min(tiles, key=lambda t: (tile_keys(grid, t, window, p_frames, light_cone), -t[1]))


class KVCache:
    """Keys and values of finished frames, per block and branch, for the last ``span`` frames only.

    ``end`` is the absolute index of the frame that comes next; frames must arrive in order.
    """

    def __init__(self, span):
        self.span, self.end, self.layers = span, 0, {}

    def get(self, layer):
        return self.layers.get(layer)

    def put(self, layer, tensors):
        """Append ``n_new`` frames of ``tensors`` (each ``(B, h, T, L, d)``) and keep the last ``span`` frames."""
        old = self.layers.get(layer)
        merged = tensors if old is None else tuple(torch.cat([o, t], dim=2) for o, t in zip(old, tensors))
        self.layers[layer] = tuple(m[:, :, -self.span :] if self.span else m[:, :, :0] for m in merged)

    def frames(self):
        """How many frames the cache holds."""
        first = next(iter(self.layers.values()), None)
        return 0 if first is None else first[0].shape[2]


class MSCAttention(nn.Module):
    """The two branches of an MSC block (see the module docstring); ``forward`` takes tokens ``(B, T, L, D)``."""

    def __init__(self, dim, num_heads, *, high_heads, window, p_frames, pool, i_stride, i_frames, light_cone):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.high_heads = high_heads
        self.window, self.p_frames, self.pool = window, p_frames, pool
        self.i_stride, self.i_frames, self.light_cone = i_stride, i_frames, light_cone
        self.rope_dims = 2 * (self.head_dim // 4)  # half of each head's channels carry time
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.high_path = "auto"  # High-Res kernel: one of HIGH_RES_PATHS, or "auto" (by frame and window size)
        self.high_tile = None  # the tiled kernel's (th, tw); None: ``high_res_tile``'s choice

    @property
    def span(self):
        """How many frames back any query reaches."""
        return max(self.p_frames, self.i_frames * self.i_stride)

    def _qkv(self, x, frames):
        b, t, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, t, n, 3, self.num_heads, self.head_dim)  # (B, T, L, 3, h, d)
        qkv = qkv.permute(3, 0, 4, 1, 2, 5).contiguous()  # (3, B, h, T, L, d): one copy, then contiguous passes
        q, k = rope_time(qkv[:2], frames, self.rope_dims).unbind(0)  # (B, h, T, L, d) each
        return q, k, qkv[2]

    def forward(self, x, grid, frames, gate=None, key_gate=None, cache=None, layer=0, write=False, reference=False,
                earliest=None):  # fmt: skip
        """Tokens ``x (B, T, L, D)`` of consecutive frames with absolute indices ``frames (T,)`` on an ``(h, w)``
        token ``grid``; ``gate (B, T, 2)`` weighs the branches per query frame, ``key_gate (B, T, 2)`` each frame's
        values in them, before they are cached. With a ``cache``, its frames come just before ``frames[0]`` and are
        attended to as well; ``write`` appends these frames' keys and values to it. ``reference`` computes the
        branches with dense masks (slow; for tests), and there ``earliest (T,)`` limits each frame to key frames from
        that absolute index on."""
        if earliest is not None and not reference:
            raise GriditError("a first key frame per frame (earliest) is for the dense reference: pass reference=True")
        b, t, n, d = x.shape
        hh, r = self.high_heads, self.pool
        q, k, v = self._qkv(x, frames)  # (B, h, T, L, dh) each
        if key_gate is not None:
            v = v * per_head(key_gate, hh, self.num_heads)  # (B, h, T, L, dh)
        lo = [pool_tokens(z[:, hh:], grid, r) for z in (q, k, v)]  # (B, hl, T, Lp, dh) each
        new = (k[:, :hh], v[:, :hh], lo[1], lo[2])
        past = cache.get(layer) if cache is not None else None
        keys = new if past is None else tuple(torch.cat([p, z], dim=2) for p, z in zip(past, new))
        n_past = 0 if past is None else past[0].shape[2]
        if write:
            cache.put(layer, new)
        if reference:  # out_hi (B, hh, T, L, dh), out_lo (B, hl, T, Lp, dh) from either path
            floor = None if earliest is None else earliest - (frames[0] - n_past)  # (T,) in key positions
            out_hi, out_lo = self._dense(q[:, :hh], lo[0], keys, n_past, grid, floor)
        else:
            out_hi, out_lo = self._gathered(q[:, :hh], lo[0], keys, n_past, grid)
        out_lo = unpool_tokens(out_lo, grid, r)  # (B, hl, T, L, dh)
        if gate is not None:
            g = gate.permute(0, 2, 1)[:, :, None, :, None, None]  # (B, 2, 1, T, 1, 1)
            out_hi, out_lo = out_hi * g[:, 0], out_lo * g[:, 1]
        out = torch.cat([z.permute(0, 2, 3, 1, 4) for z in (out_hi, out_lo)], dim=3)  # (B, T, L, h, dh), one copy
        return self.proj(out.reshape(b, t, n, d))  # (B, T, L, D)

    def _gathered(self, q_hi, q_lo, keys, n_past, grid):
        """Each query against its own keys only: cost linear in the number of frames."""
        k_hi, v_hi, k_lo, v_lo = keys
        out_hi = q_hi[..., :0]
        if self.high_heads:
            path = self.high_path if self.high_path != "auto" else high_res_path(grid, self.window, self.p_frames)
            kernel = {"gathered": self._high_gathered, "blocked": self._high_blocked, "tiled": self._high_tiled}[path]
            out_hi = kernel(q_hi, k_hi, v_hi, n_past, grid)
        out_lo = q_lo
        if q_lo.shape[1]:
            b, hl, t, lp, dh = q_lo.shape
            index, valid = (z.to(q_lo.device) for z in _low_index(n_past, t, self.i_frames, self.i_stride))
            kg, vg = (z[:, :, index].reshape(b * hl, t, -1, dh) for z in (k_lo, v_lo))  # (B*hl, T, (I+1)*Lp, dh)
            bias = None
            if not valid.all():  # I-frames before frame 0
                bias = torch.zeros(valid.shape, dtype=q_lo.dtype, device=q_lo.device).masked_fill_(~valid, -math.inf)
                bias = bias.repeat_interleave(lp, dim=1)[:, None, :]  # (T, 1, (I+1)*Lp)
            out_lo = attend(q_lo.reshape(b * hl, t, lp, dh), kg, vg, bias).reshape(b, hl, t, lp, dh)
        return out_hi, out_lo

    def _high_gathered(self, q, k, v, n_past, grid):
        """High-Res with each query's ``K`` window keys gathered: ``(B, hh, T, L, K, dh)``, for large frames."""
        index, valid = (z.to(q.device) for z in _high_index(n_past, q.shape[2], tuple(grid), self.window,
                                                             self.p_frames, self.light_cone))  # fmt: skip
        kg, vg = k.flatten(2, 3)[:, :, index], v.flatten(2, 3)[:, :, index]  # (B, hh, T, L, K, dh) each
        scores = torch.einsum("bhtld,bhtlkd->bhtlk", q, kg) / math.sqrt(self.head_dim)  # (B, hh, T, L, K)
        probs = scores.masked_fill(~valid, float("-inf")).softmax(dim=-1)
        return torch.einsum("bhtlk,bhtlkd->bhtld", probs, vg)  # (B, hh, T, L, dh)

    def _high_blocked(self, q, k, v, n_past, grid):
        """High-Res with each frame's queries against all tokens of its ``v + 1`` frames, the window as a mask: the
        tiled kernel with the whole frame as its one tile. For small frames this beats gathering: fewer copies, two
        dense products."""
        return self._high_tiled(q, k, v, n_past, grid, tile=tuple(grid))

    def _high_tiled(self, q, k, v, n_past, grid, tile=None):
        """High-Res as neighbourhood attention in tiles: each tile of ``th x tw`` queries against its tile and a halo
        of the window's radius in its frame and the ``v`` before it, all tiles of all frames in one batched product
        (``attend``), the exact window as an additive mask. Every product is a dense block and each query's keys are
        copied ``K / (th tw)`` times rather than ``w^2 (v+1)``, so the time follows the multiply-adds."""
        (h, w), (b, hh, t, n, dh) = grid, q.shape
        th, tw = tile or self.high_tile or high_res_tile(tuple(grid), self.window, self.p_frames, self.light_cone)
        if h % th or w % tw:
            raise GriditError(f"the High-Res tile {th}x{tw} does not divide the frame's {h}x{w} token grid")
        index, bias = _tile_index(n_past, t, tuple(grid), (th, tw), self.window, self.p_frames, self.light_cone,
                                  q.dtype, q.device)  # (T, tiles, K), (T*tiles, Q, K)  # fmt: skip
        tiles = index.shape[1]

        def to_tiles(z):  # (B, hh, T, L, dh) -> (B*hh, T*tiles, Q, dh); a view when tiles are whole rows
            z = z.reshape(b * hh, t, h // th, th, w // tw, tw, dh).transpose(3, 4)  # (B*hh, T, ny, nx, th, tw, dh)
            return z.reshape(b * hh, t * tiles, th * tw, dh)

        tokens = k.shape[2] * n  # of the cached and new frames
        rows = (torch.arange(b * hh, device=q.device)[:, None] * tokens + index.flatten()).flatten()

        def keys(z):  # (B, hh, F, L, dh) -> (B*hh, T*tiles, K, dh): each tile's keys, one copy
            # rows of a 2-D tensor: several times faster than indexing a middle dimension, forward and backward
            return z.reshape(-1, dh).index_select(0, rows).reshape(b * hh, t * tiles, -1, dh)

        out = attend(to_tiles(q), keys(k), keys(v), bias)  # (B*hh, T*tiles, Q, dh)
        out = out.reshape(b * hh, t, h // th, w // tw, th, tw, dh).transpose(3, 4)  # (B*hh, T, ny, th, nx, tw, dh)
        return out.reshape(b, hh, t, n, dh)

    def _dense(self, q_hi, q_lo, keys, n_past, grid, floor=None):
        """The same attention over all tokens with full boolean masks built from coordinates: the reference.
        ``floor (T,)``: each query frame's first key position (None: all within reach)."""
        k_hi, v_hi, k_lo, v_lo = keys
        t = q_hi.shape[2]
        h, w = grid
        fq = n_past + torch.arange(t, device=q_hi.device)  # query frame positions
        fk = torch.arange(n_past + t, device=q_hi.device)  # key frame positions
        dt = fq[:, None] - fk[None, :]  # (T, F)
        seen = dt >= 0 if floor is None else (dt >= 0) & (fk[None, :] >= floor[:, None])  # (T, F) causal, from floor
        yy = torch.arange(h, device=q_hi.device).repeat_interleave(w)
        xx = torch.arange(w, device=q_hi.device).repeat(h)
        out_hi = q_hi[..., :0]
        if self.high_heads:
            radius = self.window // 2 + (dt.clamp(min=0) if self.light_cone else 0) * torch.ones_like(dt)  # (T, F)
            dy, dx = (yy[:, None] - yy[None, :]).abs(), (xx[:, None] - xx[None, :]).abs()  # (L, L) each
            r4 = radius[:, None, :, None]  # (T, 1, F, 1)
            near = (dy[None, :, None, :] <= r4) & (dx[None, :, None, :] <= r4)  # (T, L, F, L)
            mask = near & (seen & (dt <= self.p_frames))[:, None, :, None]
            mask = mask.flatten(0, 1).flatten(1, 2)  # (T*L, F*L)
            out = F.scaled_dot_product_attention(q_hi.flatten(2, 3), k_hi.flatten(2, 3), v_hi.flatten(2, 3), attn_mask=mask)
            out_hi = out.unflatten(2, (t, h * w))
        out_lo = q_lo
        if q_lo.shape[1]:
            lp = q_lo.shape[3]
            allowed = seen & (dt % self.i_stride == 0) & (dt // self.i_stride <= self.i_frames)  # (T, F)
            mask = allowed.repeat_interleave(lp, 0).repeat_interleave(lp, 1)  # (T*Lp, F*Lp)
            out = F.scaled_dot_product_attention(q_lo.flatten(2, 3), k_lo.flatten(2, 3), v_lo.flatten(2, 3), attn_mask=mask)
            out_lo = out.unflatten(2, (t, lp))
        return out_hi, out_lo


def reach(config, n_frames, frame, y, x, block=0):
    """Which tokens a query at ``(frame, y, x)`` (token coordinates) sees in each branch of block ``block``:
    ``{"high": (T, h, w), "low": (T, h, w)}`` booleans over ``n_frames`` frames (Low-Res: the pooled cells whose
    tokens it averages), from the same rules as the dense reference."""
    h, w = config.frame_tokens
    r = config.pools[block]
    fk = torch.arange(n_frames)[:, None, None]
    yy, xx = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
    dt = frame - fk
    radius = window_radius(config.window, dt.clamp(min=0), config.light_cone)
    high = (dt >= 0) & (dt <= config.p_frames) & ((yy - y).abs() <= radius) & ((xx - x).abs() <= radius)
    low = (dt >= 0) & (dt % config.i_stride == 0) & (dt // config.i_stride <= config.i_frames)
    return {"high": high, "low": low.expand(n_frames, h, w).clone(), "pool": r}


class BranchGate(nn.Module):
    """Per-frame weights of the two branches from that frame's noise-level embedding: ``2 * softmax(W c + b)``.

    Pooling by ``r`` divides the noise variance by ``r^2``, so the Low-Res view of a noisy frame stays informative
    where the High-Res one does not; the gate lets each frame's level move weight between the branches (which way
    is for training to decide: the shipped demo leans the other way, ``notebooks/tutorials/03_msc.ipynb``). ``W``
    and ``b`` start at zero, so both weights start at 1 (the branches simply concatenated). ``learned=False`` keeps
    them at 1 (the ablation: fixed equal weights).

    The query frame's level alone cannot tell a noisy key frame from a clean one. ``keys=True`` adds a second map
    of the same form (``key_linear``, also zero at the start) read at the key frames: each frame's High-Res and
    Low-Res values are weighed by its own level's weights before any query sees them, and are cached so.
    """

    def __init__(self, hidden, learned=True, keys=False):
        super().__init__()
        self.learned = learned
        self.linear = nn.Linear(hidden, 2)
        self.key_linear = nn.Linear(hidden, 2) if keys else None
        for layer in (self.linear, self.key_linear):
            if layer is not None:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
        self.linear.requires_grad_(learned)

    def forward(self, c):
        """``c (B, T, D)`` -> weights ``(B, T, 2)`` (High-Res, Low-Res)."""
        if not self.learned:
            return c.new_ones(*c.shape[:-1], 2)
        return 2 * self.linear(F.silu(c)).softmax(dim=-1)

    def key_weights(self, c):
        """``c (B, T, D)`` -> the weights ``(B, T, 2)`` of each frame's values as a key, or None without them."""
        if self.key_linear is None:
            return None
        return 2 * self.key_linear(F.silu(c)).softmax(dim=-1)


def check_msc(frame_tokens, num_heads, high_heads, window, p_frames, pools, i_stride, i_frames):
    """Refuse MSC settings that cannot work, one line each."""
    h, w = frame_tokens
    if not 1 <= high_heads < num_heads:
        raise GriditError(f"high_heads must leave both branches a head: 1..{num_heads - 1} of {num_heads}, got {high_heads}")
    if window < 1 or window % 2 == 0:
        raise GriditError(f"the High-Res window w must be an odd number of tokens >= 1, got {window}")
    if p_frames < 0:
        raise GriditError(f"p_frames v (previous frames of the High-Res branch) must be >= 0, got {p_frames}")
    if i_stride < 1:
        raise GriditError(f"the I-frame stride d must be >= 1, got {i_stride}")
    if i_frames < 0:
        raise GriditError(f"i_frames (strided past frames of the Low-Res branch) must be >= 0, got {i_frames}")
    for r in pools:
        if r < 1 or h % r or w % r:
            raise GriditError(f"the pooling factor r = {r} does not divide the frame's {h}x{w} token grid")
