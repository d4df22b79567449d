"""DiTs over a sequence as one tensor ``(B, T, C, H, W)``: the sequence-tensor baseline (``tensor``) that GriDiT
argues against, and MSC (``msc``, see ``models.msc``). Same blocks, widths and size registry as the grid DiT, so
``DiT-S/4`` means the same width and depth in all three families.

Tokens are ``patch x patch`` squares of every frame, ``(B, T, L, D)``; every frame has its own noise level, whose
embedding modulates that frame's tokens (adaLN per frame) and, in MSC, weighs its two attention branches.

- ``tensor``: full bidirectional attention over all ``T x L`` tokens (``attention="full"``), or Latte's factorized
  form (``"factorized"``: even blocks attend within each frame, odd blocks across frames at each position);
  positions are sin-cos of (x, y) and of the frame's index in the window (``frame3d``'s split).
- ``msc``: frame-causal two-branch attention; positions are sin-cos of (x, y) plus a rotary embedding of the absolute
  frame index inside attention, so a ``KVCache`` of finished frames stays exact and rollouts can outrun ``T``.
"""

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import GELUTanh, Mlp

from gridit_core.errors import GriditError
from gridit_core.models.dit import _SIZES, DiT_models, size_name
from gridit_core.models.layers import FinalLayer, PatchEmbed, TimestepEmbedder, modulate
from gridit_core.models.msc import BranchGate, MSCAttention, check_msc
from gridit_core.models.positions import frame3d_split, grid2d_pos_embed, sincos_1d

ATTENTIONS = {"tensor": ("full", "factorized"), "msc": ("msc",)}
GATES = ("learned", "equal", "key")  # MSC branch weights: see models.msc.BranchGate


@dataclass
class VideoDiTConfig:
    """Size and inputs of a sequence DiT; ``arch`` is ``"tensor"`` or ``"msc"``."""

    arch: str = "tensor"
    frame_size: int | tuple = 16  # one frame's side in input cells (pixels or latents), or (H, W)
    frames: int = 8  # T, the clip length it trains on
    patch_size: int = 4
    in_channels: int = 3
    hidden_size: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    learn_sigma: bool = False
    out_channels: int | None = None
    attention: str = ""  # tensor: "full" (default) or "factorized"; msc: "msc"
    # MSC (arch "msc"); the paper's names in brackets
    window: int = 3  # High-Res spatial window side in tokens [w]
    p_frames: int = 1  # previous frames the High-Res branch sees [v]
    pool: int | list = 2  # Low-Res pooling factor [r]; a list gives one per block (e.g. [1, 2, 2, 4])
    i_stride: int = 2  # I-frame stride [d]
    i_frames: int = 2  # strided past frames the Low-Res branch sees (t - d, ..., t - i_frames*d)
    high_heads: int | None = None  # heads of the High-Res branch; None: half
    gate: str = "learned"  # branch weights from the query frame's noise level: learned, fixed equal, or key: learned
    # and each key frame's values weighed by its own level as well
    light_cone: bool = False  # High-Res window grows by a token a side per frame of distance

    def __post_init__(self):
        if self.arch not in ATTENTIONS:
            raise GriditError(f"unknown sequence architecture {self.arch!r}; choose one of {', '.join(ATTENTIONS)}")
        self.attention = self.attention or ATTENTIONS[self.arch][0]
        if self.attention not in ATTENTIONS[self.arch]:
            raise GriditError(f"{self.arch} attention must be one of {', '.join(ATTENTIONS[self.arch])}, got {self.attention!r}")
        h, w = self.frame_hw
        if min(h, w, self.frames, self.patch_size, self.depth, self.num_heads) < 1:
            raise GriditError("frame size, frames, patch size, depth and heads must be positive")
        if h % self.patch_size or w % self.patch_size:
            raise GriditError(f"frame size {h}x{w} is not divisible by the patch size {self.patch_size}")
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 4:
            raise GriditError(f"hidden size {self.hidden_size} must split into {self.num_heads} heads of a multiple of 4")
        if self.causal:
            if self.gate not in GATES:
                raise GriditError(f"gate must be one of {', '.join(GATES)}, got {self.gate!r}")
            if self.high_heads is None:
                self.high_heads = self.num_heads // 2
            pools = self.pools
            if len(pools) != self.depth:
                raise GriditError(f"pool lists {len(pools)} factors for {self.depth} blocks")
            check_msc(self.frame_tokens, self.num_heads, self.high_heads, self.window, self.p_frames, pools,
                      self.i_stride, self.i_frames)  # fmt: skip

    @property
    def causal(self):
        """MSC: frame-causal two-branch attention, a KV cache and branch gates; else the bidirectional tensor model."""
        return self.arch == "msc"

    @property
    def frame_hw(self):
        s = self.frame_size
        return (s, s) if isinstance(s, int) else (int(s[0]), int(s[1]))

    @property
    def frame_tokens(self):
        h, w = self.frame_hw
        return h // self.patch_size, w // self.patch_size

    @property
    def pools(self):
        """The Low-Res pooling factor of every block."""
        return [int(r) for r in self.pool] if isinstance(self.pool, (list, tuple)) else [int(self.pool)] * self.depth

    @property
    def span(self):
        """Frames back that an MSC query reaches (0 for the bidirectional tensor model)."""
        return max(self.p_frames, self.i_frames * self.i_stride) if self.causal else 0


class FullAttention(nn.Module):
    """Bidirectional multi-head attention over tokens ``(B, T, L, D)``: all of them, within frames, or across frames."""

    def __init__(self, dim, num_heads, scope="all"):
        super().__init__()
        self.num_heads, self.scope = num_heads, scope
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, **_):
        b, t, n, d = x.shape
        seq = {"all": x.reshape(b, t * n, d), "space": x.reshape(b * t, n, d), "time": x.transpose(1, 2).reshape(b * n, t, d)}[self.scope]
        qkv = self.qkv(seq).reshape(*seq.shape[:2], 3, self.num_heads, d // self.num_heads)  # (N, S, 3, h, dh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (N, h, S, dh) each
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(seq.shape)  # (N, S, D)
        out = self.proj(out)
        if self.scope == "time":
            return out.reshape(b, n, t, d).transpose(1, 2)  # (B, T, L, D)
        return out.reshape(b, t, n, d)


class VideoBlock(nn.Module):
    """adaLN-Zero block on tokens ``(B, T, L, D)`` with per-frame conditioning ``c (B, T, D)``."""

    def __init__(self, hidden, num_heads, mlp_ratio, attention, gate=None):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn = attention
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden, int(hidden * mlp_ratio), act_layer=GELUTanh)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))
        self.gate = gate

    def forward(self, x, c, **attn_kwargs):
        mod = self.adaLN_modulation(c).unsqueeze(2).chunk(6, dim=-1)  # 6 x (B, T, 1, D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod
        gates = {} if self.gate is None else {"gate": self.gate(c), "key_gate": self.gate.key_weights(c)}  # (B, T, 2)
        h = self.attn(modulate(self.norm1(x), shift_msa, scale_msa), **gates, **attn_kwargs)  # (B, T, L, D)
        x = torch.addcmul(x, gate_msa, h)
        return torch.addcmul(x, gate_mlp, self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp)))  # (B, T, L, D)


class VideoDiT(nn.Module):
    """A DiT over clips ``(B, T, C, H, W)`` with one noise level per frame; see the module docstring."""

    config_class = VideoDiTConfig

    def __init__(self, config):
        super().__init__()
        cfg = self.config = config
        self.arch = cfg.arch
        self.in_channels = cfg.in_channels
        self.learn_sigma = cfg.learn_sigma
        self.num_classes = 0
        self.out_channels = cfg.out_channels or (cfg.in_channels * 2 if cfg.learn_sigma else cfg.in_channels)
        d, gh, gw = cfg.hidden_size, *cfg.frame_tokens
        self.x_embedder = PatchEmbed(cfg.patch_size, cfg.in_channels, d, cfg.frame_hw)
        self.t_embedder = TimestepEmbedder(d)
        dims = (d // 2, d // 2) if cfg.causal else frame3d_split(d)[:2]
        row, col = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
        table = grid2d_pos_embed(d, gh, gw) if cfg.causal else torch.cat(
            [sincos_1d(dims[0], col), sincos_1d(dims[1], row), torch.zeros(gh * gw, d - sum(dims), dtype=torch.float64)], 1
        ).float()  # fmt: skip
        self.register_buffer("pos_embed", table[None, None], persistent=False)  # (1, 1, L, D) fixed sin-cos
        self.blocks = nn.ModuleList(self._block(i) for i in range(cfg.depth))
        self.final_layer = FinalLayer(d, cfg.patch_size, self.out_channels)
        self.initialize_weights()

    def _block(self, i):
        cfg, d = self.config, self.config.hidden_size
        if cfg.causal:
            attn = MSCAttention(d, cfg.num_heads, high_heads=cfg.high_heads, window=cfg.window, p_frames=cfg.p_frames,
                                pool=cfg.pools[i], i_stride=cfg.i_stride, i_frames=cfg.i_frames, light_cone=cfg.light_cone)
            gate = BranchGate(d, learned=cfg.gate != "equal", keys=cfg.gate == "key")
            return VideoBlock(d, cfg.num_heads, cfg.mlp_ratio, attn, gate)
        scope = "all" if cfg.attention == "full" else ("space", "time")[i % 2]
        return VideoBlock(d, cfg.num_heads, cfg.mlp_ratio, FullAttention(d, cfg.num_heads, scope))

    @property
    def name(self):
        cfg = self.config
        return f"{cfg.arch} {size_name(cfg.depth, cfg.hidden_size, cfg.num_heads, cfg.patch_size)}"

    @property
    def span(self):
        return self.config.span

    @torch.no_grad()
    def initialize_weights(self):
        """DiT's initialisation: adaLN-Zero blocks start as the identity and the output at zero."""
        gates = {id(m) for b in self.blocks if b.gate is not None for m in b.gate.modules()}  # start at equal weights
        for m in self.modules():
            if isinstance(m, nn.Linear) and id(m) not in gates:
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for layer in [b.adaLN_modulation[-1] for b in self.blocks] + [self.final_layer.adaLN_modulation[-1]]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def _frame_positions(self, t, device):
        """The tensor model's frame sin-cos ``(1, T, 1, D)``: index in the window, on the last quarter of channels."""
        d = self.config.hidden_size
        sx, sy = frame3d_split(d)[:2]
        table = torch.zeros(t, d, dtype=torch.float64)
        table[:, sx + sy :] = sincos_1d(d - sx - sy, torch.arange(t))
        return table.float().to(device)[None, :, None]

    def unpatchify(self, x):
        """Tokens ``(B, T, L, p*p*C)`` -> frames ``(B, T, C, H, W)``."""
        p, c = self.config.patch_size, self.out_channels
        gh, gw = self.config.frame_tokens
        b, t = x.shape[:2]
        x = x.reshape(b, t, gh, gw, p, p, c).permute(0, 1, 6, 2, 4, 3, 5)  # (B, T, C, gh, p, gw, p)
        return x.reshape(b, t, c, gh * p, gw * p)

    def _check(self, x, t):
        want = (self.in_channels, *self.config.frame_hw)
        if x.ndim != 5 or tuple(x.shape[2:]) != want:
            raise GriditError(f"{self.name} expects clips of shape (B, T, {', '.join(map(str, want))}), got {tuple(x.shape)}")
        b, n = x.shape[:2]
        if t.shape not in ((b,), (b, n)):
            raise GriditError(f"t must have shape ({b},) or ({b}, {n}), got {tuple(t.shape)}")
        if not self.config.causal and n > self.config.frames:
            raise GriditError(f"the tensor model sees {self.config.frames} frames at once, got {n}")

    def forward(self, x, t, y=None, *, start=0, cache=None, write=False, reference=False, earliest=None):
        """Predict noise (or x0 / v) for clips ``x (B, T, C, H, W)`` at per-frame steps ``t (B, T)`` (or ``(B,)``).

        MSC only: ``start`` is the absolute index of the first frame; a ``cache`` (``KVCache``) holds the frames
        just before it, and ``write`` appends these frames to it; ``reference`` runs the dense-mask attention, where
        ``earliest (T,)`` may give each frame the first (absolute) frame it sees.
        """
        if y is not None:
            raise GriditError("sequence models are unconditional: pass y=None")
        self._check(x, t)
        b, n = x.shape[:2]
        t = t[:, None].expand(b, n) if t.ndim == 1 else t  # (B, T)
        tokens = self.x_embedder(x.flatten(0, 1)).unflatten(0, (b, n))  # (B, T, L, D)
        tokens = tokens + self.pos_embed.to(tokens.dtype)
        kwargs = {}
        if not self.config.causal:
            tokens = tokens + self._frame_positions(n, x.device).to(tokens.dtype)
        else:
            if cache is not None and cache.frames() and cache.end != start:
                raise GriditError(f"the cache ends at frame {cache.end}, but these frames start at {start}")
            frames = torch.arange(start, start + n, device=x.device)
            kwargs = dict(grid=self.config.frame_tokens, frames=frames, cache=cache, write=write, reference=reference,
                          earliest=earliest)  # fmt: skip
        c = self.t_embedder(t)  # (B, T, D)
        for i, block in enumerate(self.blocks):
            tokens = block(tokens, c, **({**kwargs, "layer": i} if kwargs else {}))  # (B, T, L, D)
        if write and cache is not None:
            cache.end = start + n
        L = tokens.shape[2]
        frame_index = torch.arange(n, device=x.device).repeat_interleave(L)
        out = self.final_layer(tokens.flatten(1, 2), c, frame_index)  # (B, T*L, p*p*C_out)
        return self.unpatchify(out.unflatten(1, (n, L)))  # (B, T, C_out, H, W)

    @torch.no_grad()
    def gate_weights(self, t):
        """The MSC branch weights of every block at steps ``t (K,)``: ``(depth, K, 2)`` (High-Res, Low-Res)."""
        if not self.config.causal:
            raise GriditError("branch weights exist only in MSC models")
        c = self.t_embedder(torch.as_tensor(t, device=self.pos_embed.device)[None])  # (1, K, D)
        return torch.stack([b.gate(c)[0] for b in self.blocks])

    def new_cache(self):
        """An empty ``KVCache`` sized to this model's temporal reach."""
        from gridit_core.models.msc import KVCache

        if not self.config.causal:
            raise GriditError("only the causal MSC model keeps a cache of past frames")
        return KVCache(self.span)


def build_video_dit(name, *, arch="tensor", **kwargs):
    """A sequence DiT of the registered size ``name`` (a key of ``DiT_models``, e.g. ``"DiT-N/4"``): ``arch`` is
    ``"tensor"`` or ``"msc"``; ``kwargs`` go to ``VideoDiTConfig`` and override the named size."""
    if name not in DiT_models:
        raise GriditError(f"unknown model {name!r}; choose one of: {', '.join(DiT_models)}")
    size, patch = name[len("DiT-") :].split("/")
    return VideoDiT(VideoDiTConfig(**{"arch": arch, "patch_size": int(patch), **_SIZES[size], **kwargs}))
