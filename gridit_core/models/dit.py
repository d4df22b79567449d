"""GriDiT's model: a plain 2D Diffusion Transformer with adaLN-Zero blocks (Peebles & Xie 2023), run on grid images.

Parameter names follow the official DiT checkpoints, so ``DiT-XL-2-256x256.pt`` and ``DiT-XL-2-512x512.pt`` load
with ``models.weights.load_weights``. Tokens are ``patch x patch`` squares of the grid image in row-major order;
``model.layout`` maps them to frames.
"""

from dataclasses import dataclass

import torch
import torch.nn as nn

from gridit_core.errors import GriditError
from gridit_core.grid import GridLayout
from gridit_core.models.layers import DiTBlock, FinalLayer, LabelEmbedder, PatchEmbed, TimestepEmbedder
from gridit_core.models.positions import POS_EMBEDS, frame3d_pos_embed, grid2d_pos_embed


@dataclass
class DiTConfig:
    """Size and inputs of a DiT; ``rows x cols`` frames tile the ``input_size`` grid image."""

    input_size: int | tuple = 32  # grid image side, or (H, W); official DiT-XL/2 at 256x256 sees 32x32 latents
    patch_size: int = 2  # token side in input cells
    in_channels: int = 4  # 4 for Stable Diffusion VAE latents
    hidden_size: int = 1152  # token width D
    depth: int = 28  # number of DiT blocks
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_classes: int = 0  # 0: unconditional, c = t_emb (GriDiT); > 0: class labels added to c
    class_dropout_prob: float = 0.1  # label dropout for classifier-free guidance; > 0 adds a null-class row
    learn_sigma: bool = True  # predict the variance too (IDDPM): 2x in_channels outputs
    pos_embed: str = "grid2d"  # "grid2d": sin-cos over the whole token grid (official); "frame3d": frame, y, x
    rows: int = 1  # grid layout in frames
    cols: int = 1
    out_channels: int | None = None  # None: in_channels, doubled with learn_sigma; stage 2 sets it (inputs are 2C)
    aug_cond: bool = False  # condition on a noise-augmentation level in [0, 1] too (stage 2, ``aug_level``)

    def __post_init__(self):
        size = self.input_size
        ok = isinstance(size, int) or (isinstance(size, (tuple, list)) and len(size) == 2)
        if not ok or min(self.image_size) < 1:
            raise GriditError(f"input_size must be a positive int or (H, W), got {size!r}")
        h, w = self.image_size
        if min(self.rows, self.cols, self.patch_size, self.depth, self.num_heads) < 1:
            raise GriditError("rows, cols, patch_size, depth and num_heads must be positive")
        if h % self.rows or w % self.cols:
            raise GriditError(f"grid size {h}x{w} does not split into {self.rows}x{self.cols} equal frames")
        fh, fw = self.frame_size
        if fh % self.patch_size or fw % self.patch_size:
            frame = f"{fh}" if fh == fw else f"{fh}x{fw}"
            raise GriditError(f"frame size {frame} is not divisible by the patch size {self.patch_size}")
        if self.hidden_size % self.num_heads:
            raise GriditError(f"hidden size {self.hidden_size} is not divisible by {self.num_heads} heads")
        if self.hidden_size % 4:
            raise GriditError(f"hidden size {self.hidden_size} must be divisible by 4 for the sin-cos position table")
        if self.pos_embed not in POS_EMBEDS:
            raise GriditError(f"unknown pos_embed {self.pos_embed!r}; choose 'grid2d' or 'frame3d'")
        if self.num_classes < 0 or not 0 <= self.class_dropout_prob < 1:
            raise GriditError("num_classes must be >= 0 and class_dropout_prob in [0, 1)")
        if self.out_channels is not None and self.out_channels < 1:
            raise GriditError(f"out_channels must be positive or None, got {self.out_channels}")

    @property
    def image_size(self):
        """``(H, W)`` of the grid image."""
        s = self.input_size
        return (s, s) if isinstance(s, int) else (int(s[0]), int(s[1]))

    @property
    def frame_size(self):
        """``(H, W)`` of one frame."""
        h, w = self.image_size
        return h // self.rows, w // self.cols

    @property
    def frame_hw(self):
        """``(H, W)`` of one frame, by the name the sequence models use."""
        return self.frame_size

    @property
    def frames(self):
        """Frames the model sees at once: the grid's cells."""
        return self.rows * self.cols


AUG_LEVEL_SCALE = 1000  # an augmentation level in [0, 1] meets the sinusoids on the same range as timesteps 0..999


class DiT(nn.Module):
    """Diffusion Transformer on a grid image: patchify, add positions, adaLN-Zero blocks conditioned on t (and y)."""

    config_class = DiTConfig
    arch = "grid"

    def __init__(self, config):
        super().__init__()
        cfg = self.config = config
        fh, fw = cfg.frame_size
        self.layout = GridLayout(cfg.rows, cfg.cols, fh, fw, cfg.patch_size)
        self.num_classes = cfg.num_classes
        self.in_channels = cfg.in_channels
        self.learn_sigma = cfg.learn_sigma
        self.out_channels = cfg.out_channels or (cfg.in_channels * 2 if cfg.learn_sigma else cfg.in_channels)
        d = cfg.hidden_size

        self.x_embedder = PatchEmbed(cfg.patch_size, cfg.in_channels, d, cfg.image_size)
        self.t_embedder = TimestepEmbedder(d)
        self.y_embedder = LabelEmbedder(cfg.num_classes, d, cfg.class_dropout_prob) if cfg.num_classes else None
        self.aug_embedder = TimestepEmbedder(d) if cfg.aug_cond else None
        self.register_buffer("pos_embed", torch.zeros(1, self.layout.num_tokens, d))  # fixed sin-cos, saved
        self.register_buffer("frame_index", self.layout.token_frames(), persistent=False)  # (L,) frame of each token
        self.blocks = nn.ModuleList(DiTBlock(d, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.final_layer = FinalLayer(d, cfg.patch_size, self.out_channels)
        self.initialize_weights()

    @property
    def name(self):
        """Registry name such as ``"DiT-XL/2"`` when the size is a registered one, else a short description."""
        cfg = self.config
        return size_name(cfg.depth, cfg.hidden_size, cfg.num_heads, cfg.patch_size)

    def position_table(self):
        """The fixed position table ``(L, D)`` this config asks for."""
        if self.config.pos_embed == "frame3d":
            return frame3d_pos_embed(self.config.hidden_size, self.layout)
        return grid2d_pos_embed(self.config.hidden_size, *self.layout.token_grid)

    @torch.no_grad()
    def initialize_weights(self):
        """DiT's initialisation; adaLN-Zero makes every block the identity and the output zero."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        self.pos_embed.copy_(self.position_table().unsqueeze(0))
        w = self.x_embedder.proj.weight  # a linear map on flattened patches
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        if self.aug_embedder is not None:
            nn.init.normal_(self.aug_embedder.mlp[0].weight, std=0.02)
            nn.init.normal_(self.aug_embedder.mlp[2].weight, std=0.02)
        for layer in [b.adaLN_modulation[-1] for b in self.blocks] + [self.final_layer.adaLN_modulation[-1]]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def unpatchify(self, x):
        """Tokens ``(N, L, p*p*C)`` -> image ``(N, C, H, W)``; each token's outputs are ordered (py, px, channel)."""
        p, c = self.config.patch_size, self.out_channels
        gh, gw = self.layout.token_grid
        x = x.reshape(x.shape[0], gh, gw, p, p, c)  # (N, gh, gw, p, p, C)
        x = x.permute(0, 5, 1, 3, 2, 4)  # (N, C, gh, p, gw, p)
        return x.reshape(x.shape[0], c, gh * p, gw * p)  # (N, C, H, W)

    def _check_inputs(self, x, t, y, aug_level):
        want = (self.in_channels, *self.config.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            shape = ", ".join(map(str, want))
            raise GriditError(f"{self.name} expects x of shape (N, {shape}), got {tuple(x.shape)}")
        n, f = x.shape[0], self.layout.frames
        if t.shape not in ((n,), (n, f)):
            raise GriditError(f"t must have shape ({n},), or ({n}, {f}) with one step per frame, got {tuple(t.shape)}")
        if self.y_embedder is None and y is not None:
            raise GriditError("this model is unconditional (num_classes=0): pass y=None")
        if self.y_embedder is not None and (y is None or y.shape != (x.shape[0],)):
            raise GriditError(f"this model is class-conditional: pass labels y of shape ({x.shape[0]},)")
        if self.aug_embedder is None and aug_level is not None:
            raise GriditError("this model has no augmentation-level input (aug_cond=False): pass aug_level=None")
        if self.aug_embedder is not None and (aug_level is None or aug_level.shape != (x.shape[0],)):
            raise GriditError(f"this model takes a noise-augmentation level: pass aug_level of shape ({x.shape[0]},)")

    def forward(self, x, t, y=None, *, aug_level=None):
        """Predict noise (and variance values if ``learn_sigma``) for noisy grids ``x (N, C, H, W)`` at steps ``t``.

        ``t`` is ``(N,)``, or ``(N, F)`` with one step per frame of the grid (each frame's tokens are then modulated
        by its own step's embedding; equal steps give what ``(N,)`` gives). Returns ``(N, out_channels, H, W)``. An
        ``aug_cond`` model also takes ``aug_level (N,)`` in [0, 1], embedded like a timestep after scaling by
        ``AUG_LEVEL_SCALE``. Attention probabilities, for inspection: ``models.attention_maps``.
        """
        t = t.expand(x.shape[0]) if t.ndim == 0 else t  # (N,) or (N, F)
        if aug_level is not None and aug_level.ndim == 0:
            aug_level = aug_level.expand(x.shape[0])  # (N,)
        self._check_inputs(x, t, y, aug_level)
        x = self.x_embedder(x) + self.pos_embed  # (N, L, D)
        c = self.t_embedder(t)  # (N, D) or (N, F, D)
        extra = []
        if self.y_embedder is not None:
            extra.append(self.y_embedder(y, self.training))  # (N, D)
        if self.aug_embedder is not None:
            extra.append(self.aug_embedder(aug_level * AUG_LEVEL_SCALE))  # (N, D)
        for e in extra:
            c = c + (e.unsqueeze(1) if c.ndim == 3 else e)  # (N, D) or (N, F, D)
        frames = self.frame_index if c.ndim == 3 else None
        for block in self.blocks:
            x = block(x, c, frames)  # (N, L, D)
        x = self.final_layer(x, c, frames)  # (N, L, p*p*C_out)
        return self.unpatchify(x)  # (N, C_out, H, W)


# ---------------------------------------------------------------------------- registry

_SIZES = {  # depth, width and heads of the paper's sizes, plus tiny (T) and nano (N) ones that train on a CPU
    "XL": dict(depth=28, hidden_size=1152, num_heads=16),
    "L": dict(depth=24, hidden_size=1024, num_heads=16),
    "B": dict(depth=12, hidden_size=768, num_heads=12),
    "S": dict(depth=12, hidden_size=384, num_heads=6),
    "T": dict(depth=6, hidden_size=192, num_heads=3),
    "N": dict(depth=4, hidden_size=128, num_heads=4),
}


def size_name(depth, hidden_size, num_heads, patch_size):
    """``"DiT-XL/2"`` when depth, width and heads are a registered size, else a short description."""
    for size, spec in _SIZES.items():
        if spec == dict(depth=depth, hidden_size=hidden_size, num_heads=num_heads):
            return f"DiT-{size}/{patch_size}"
    return f"DiT(depth={depth}, hidden={hidden_size}, heads={num_heads}, patch={patch_size})"


def DiT_XL_2(**kw): return DiT(DiTConfig(**{"patch_size": 2, **_SIZES["XL"], **kw}))
def DiT_XL_4(**kw): return DiT(DiTConfig(**{"patch_size": 4, **_SIZES["XL"], **kw}))
def DiT_XL_8(**kw): return DiT(DiTConfig(**{"patch_size": 8, **_SIZES["XL"], **kw}))
def DiT_L_2(**kw): return DiT(DiTConfig(**{"patch_size": 2, **_SIZES["L"], **kw}))
def DiT_L_4(**kw): return DiT(DiTConfig(**{"patch_size": 4, **_SIZES["L"], **kw}))
def DiT_L_8(**kw): return DiT(DiTConfig(**{"patch_size": 8, **_SIZES["L"], **kw}))
def DiT_B_2(**kw): return DiT(DiTConfig(**{"patch_size": 2, **_SIZES["B"], **kw}))
def DiT_B_4(**kw): return DiT(DiTConfig(**{"patch_size": 4, **_SIZES["B"], **kw}))
def DiT_B_8(**kw): return DiT(DiTConfig(**{"patch_size": 8, **_SIZES["B"], **kw}))
def DiT_S_2(**kw): return DiT(DiTConfig(**{"patch_size": 2, **_SIZES["S"], **kw}))
def DiT_S_4(**kw): return DiT(DiTConfig(**{"patch_size": 4, **_SIZES["S"], **kw}))
def DiT_S_8(**kw): return DiT(DiTConfig(**{"patch_size": 8, **_SIZES["S"], **kw}))
def DiT_T_2(**kw): return DiT(DiTConfig(**{"patch_size": 2, **_SIZES["T"], **kw}))
def DiT_T_4(**kw): return DiT(DiTConfig(**{"patch_size": 4, **_SIZES["T"], **kw}))
def DiT_N_2(**kw): return DiT(DiTConfig(**{"patch_size": 2, **_SIZES["N"], **kw}))
def DiT_N_4(**kw): return DiT(DiTConfig(**{"patch_size": 4, **_SIZES["N"], **kw}))


DiT_models = {
    "DiT-XL/2": DiT_XL_2, "DiT-XL/4": DiT_XL_4, "DiT-XL/8": DiT_XL_8,
    "DiT-L/2": DiT_L_2, "DiT-L/4": DiT_L_4, "DiT-L/8": DiT_L_8,
    "DiT-B/2": DiT_B_2, "DiT-B/4": DiT_B_4, "DiT-B/8": DiT_B_8,
    "DiT-S/2": DiT_S_2, "DiT-S/4": DiT_S_4, "DiT-S/8": DiT_S_8,
    "DiT-T/2": DiT_T_2, "DiT-T/4": DiT_T_4,
    "DiT-N/2": DiT_N_2, "DiT-N/4": DiT_N_4,
}


def build_dit(name, **kwargs):
    """Build a registered grid DiT; ``kwargs`` go to ``DiTConfig`` and override the named size (input_size, depth, ...)."""
    if name not in DiT_models:
        raise GriditError(f"unknown model {name!r}; choose one of: {', '.join(DiT_models)}")
    return DiT_models[name](**kwargs)
