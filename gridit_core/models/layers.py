"""The building blocks of the DiT family: adaLN modulation, patch and timestep embedders, attention, adaLN-Zero
blocks and the final layer (Peebles & Xie 2023).

Parameter names follow the official DiT checkpoints (which build on timm's ``PatchEmbed`` and ``Mlp``, used here as
they are). Conditioning ``c`` is one vector per sample ``(N, D)`` or one per frame ``(N, F, D)``; per-frame vectors
are modulated first and then spread to the tokens of each frame through ``frame_index`` (the frame of every token),
so the adaLN projections run once per frame, not once per token.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import GELUTanh, Mlp
from timm.layers import PatchEmbed as TimmPatchEmbed

from gridit_core.errors import GriditError


def per_token(v, frame_index=None):
    """A modulation vector for every token: ``(N, D)`` -> ``(N, 1, D)`` (broadcast), per-frame ``(N, F, D)`` ->
    ``(N, L, D)`` through ``frame_index (L,)``."""
    if v.ndim == 2:
        return v.unsqueeze(1)  # (N, 1, D)
    if frame_index is None:
        raise GriditError("per-frame conditioning (N, F, D) needs the frame index of every token")
    return v[:, frame_index]  # (N, L, D)


def modulate(x, shift, scale):
    """adaLN: ``x * (1 + scale) + shift`` on tokens ``x (N, L, D)``; ``shift`` and ``scale`` broadcast to it."""
    return torch.addcmul(shift, x, 1 + scale)  # one fused multiply-add


def PatchEmbed(patch, in_channels, hidden, image_size):
    """Cut an ``image_size`` (H, W) image into ``patch x patch`` squares, each projected to a token (timm's strided
    convolution, ``proj``): ``(N, C, H, W)`` -> ``(N, L, D)``, tokens row-major."""
    return TimmPatchEmbed(img_size=image_size, patch_size=patch, in_chans=in_channels, embed_dim=hidden, bias=True)


class TimestepEmbedder(nn.Module):
    """Diffusion step -> vector: sinusoidal frequencies, then a two-layer MLP."""

    def __init__(self, hidden, freq_dim=256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    @staticmethod
    def timestep_embedding(t, dim, max_period=10000):
        """``[cos(t f_i), sin(t f_i)]`` with ``f_i = max_period^(-i/half)``; ``t`` of any shape, may be fractional."""
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t.float()[..., None] * freqs  # (*t.shape, half)
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (N, 2*half)
        return F.pad(emb, (0, dim % 2))  # (*t.shape, dim)

    def forward(self, t):
        """Steps ``(N,)``, or one per frame ``(N, F)`` -> ``(N, D)`` or ``(N, F, D)``."""
        t_freq = self.timestep_embedding(t, self.freq_dim)  # (*t.shape, 256)
        return self.mlp(t_freq.to(self.mlp[0].weight.dtype))  # (*t.shape, D)


class LabelEmbedder(nn.Module):
    """Class label -> vector; training swaps labels for the null class with probability ``dropout_prob`` (for CFG)."""

    def __init__(self, num_classes, hidden, dropout_prob):
        super().__init__()
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), hidden)  # last row: null class

    def token_drop(self, labels, force_drop_ids=None):
        if force_drop_ids is None:
            drop = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob  # (N,)
        else:
            drop = force_drop_ids == 1  # (N,)
        return torch.where(drop, self.num_classes, labels)  # (N,)

    def forward(self, labels, train, force_drop_ids=None):
        if force_drop_ids is not None and self.dropout_prob == 0:
            raise GriditError("force_drop_ids needs a null class: build the model with class_dropout_prob > 0")
        if (train and self.dropout_prob > 0) or force_drop_ids is not None:
            labels = self.token_drop(labels, force_drop_ids)  # (N,)
        return self.embedding_table(labels)  # (N, D)


class Attention(nn.Module):
    """Multi-head self-attention through fused SDPA (``models.attention_maps`` recomputes its probabilities)."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def qkv_heads(self, x):
        """Queries, keys and values ``(N, h, L, d)`` of tokens ``x (N, L, D)``."""
        n, length, _ = x.shape
        qkv = self.qkv(x).reshape(n, length, 3, self.num_heads, self.head_dim)  # (N, L, 3, h, d)
        return qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (N, h, L, d) each

    def forward(self, x):
        q, k, v = self.qkv_heads(x)  # (N, h, L, d) each
        out = F.scaled_dot_product_attention(q, k, v)  # (N, h, L, d)
        return self.proj(out.transpose(1, 2).reshape(x.shape))  # (N, L, D)


class DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero: c gives shift, scale and a residual gate for attention and for the MLP."""

    def __init__(self, hidden, num_heads, mlp_ratio=4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden, num_heads)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden, int(hidden * mlp_ratio), act_layer=GELUTanh)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))

    def forward(self, x, c, frame_index=None):
        """``c`` is ``(N, D)`` or per frame ``(N, F, D)`` with ``frame_index (L,)``."""
        mod = per_token(self.adaLN_modulation(c), frame_index).chunk(6, dim=-1)  # 6 x (N, 1 or L, D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod
        h = self.attn(modulate(self.norm1(x), shift_msa, scale_msa))  # (N, L, D)
        x = torch.addcmul(x, gate_msa, h)  # (N, L, D): x + gate * h
        return torch.addcmul(x, gate_mlp, self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp)))  # (N, L, D)


class FinalLayer(nn.Module):
    """adaLN, then a linear map from each token to its ``patch x patch x out_channels`` output cells."""

    def __init__(self, hidden, patch, out_channels):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden, patch * patch * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x, c, frame_index=None):
        shift, scale = per_token(self.adaLN_modulation(c), frame_index).chunk(2, dim=-1)  # 2 x (N, 1 or L, D)
        x = modulate(self.norm_final(x), shift, scale)  # (N, L, D)
        return self.linear(x)  # (N, L, p*p*C_out)
