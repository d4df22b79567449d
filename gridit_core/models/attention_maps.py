"""Attention probabilities on demand, for inspection: one layer (or every layer, for rollout) of any architecture,
in one token order, while the models keep sampling through their fused attention.

A forward pre-hook captures the input of the attention modules asked for and stops the forward after the last of
them, so the layers beyond it are never run; ``explicit_attention`` then recomputes each module's attention from
that input with its own weights as an explicit softmax, and returns the output those probabilities imply, which
equals the fused module's output (the tests hold them to it).

Every result is in frame-major token order: token ``(frame * h + y) * w + x`` for frames of ``h x w`` tokens, for
the grid DiT (whose own tokens run row-major over the whole grid image) as for the sequence models. MSC heads are
split between its branches: the High-Res heads' probabilities are those of the masked softmax over full-resolution
keys; a Low-Res head attends over pooled tokens, and its probability of a pooled key is spread evenly over the
``r x r`` tokens that the key averages, while every token of a pooled query shares that query's row.
"""

import math
from dataclasses import dataclass

import torch

from gridit_core.errors import GriditError
from gridit_core.grid import frames_to_grid
from gridit_core.models.dit import DiT
from gridit_core.models.layers import Attention
from gridit_core.models.msc import MSCAttention, _high_index, _low_index, per_head, pool_tokens, unpool_tokens
from gridit_core.models.video import FullAttention
from gridit_core.util.rng import randn

FUSIONS = ("mean", "max")  # how heads are fused into one matrix (attention rollout's head fusion)


@dataclass
class LayerAttention:
    """One layer's attention: ``probs (B, heads, N, N)`` over frame-major tokens of ``frames`` frames of ``grid``
    (h, w) tokens; ``branch`` names each head's branch (``"all"``, or MSC's ``"high"`` / ``"low"``); ``gate (B, T, 2)``
    the MSC branch weights of each query frame (None for the other families)."""

    probs: torch.Tensor
    frames: int
    grid: tuple
    branch: list
    gate: torch.Tensor | None = None

    def head_weights(self, sample=0):
        """``(heads, N)``: how much each head's output counts for each query token (MSC: its branch's gate weight
        at the query's frame; 1 elsewhere)."""
        n = self.probs.shape[-1]
        if self.gate is None:
            return torch.ones(len(self.branch), n)
        per_frame = self.gate[sample].float().cpu()  # (T, 2)
        col = torch.tensor([0 if b == "high" else 1 for b in self.branch])
        return per_frame[:, col].T.repeat_interleave(n // self.frames, dim=1)  # (heads, N)


class _Stop(Exception):
    """Raised by the last capture hook: nothing after the wanted layers runs."""


def attention_modules(model):
    """The attention module of every block, in order."""
    return [block.attn for block in model.blocks]


def token_grid(model, n_frames=None):
    """``(frames, h, w)``: the frames a model input holds and each frame's token grid."""
    if isinstance(model, DiT):
        return (model.layout.frames, *model.layout.frame_tokens)
    if n_frames is None:
        raise GriditError("a sequence model's token grid needs the number of frames")
    return (n_frames, *model.config.frame_tokens)


def frame_major_order(model, n_frames=None):
    """``(N,)`` long: entry ``i`` is the model's own index of frame-major token ``i``."""
    t, h, w = token_grid(model, n_frames)
    if not isinstance(model, DiT):
        return torch.arange(t * h * w)
    f, y, x = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    return model.layout.frame_to_token(f.flatten(), y.flatten(), x.flatten())


def model_input(model, frames):
    """Frames ``(B, T, C, H, W)`` as the model takes them: a grid image for the grid DiT, the clip otherwise."""
    if frames.ndim != 5:
        raise GriditError(f"frames must be (B, T, C, H, W), got shape {tuple(frames.shape)}")
    if isinstance(model, DiT):
        layout = model.layout
        want = (layout.frames, model.in_channels, layout.frame_h, layout.frame_w)
        if tuple(frames.shape[1:]) != want:
            raise GriditError(f"the {layout.rows}x{layout.cols} grid model takes {want[0]} frames of "
                              f"{want[1]}x{want[2]}x{want[3]}, got {tuple(frames.shape[1:])}")  # fmt: skip
        return frames_to_grid(frames, layout.rows, layout.cols)  # (B, C, GH, GW)
    want = (model.in_channels, *model.config.frame_hw)
    if tuple(frames.shape[2:]) != want:
        raise GriditError(f"the {model.arch} model takes frames of {'x'.join(map(str, want))}, got "
                          f"{'x'.join(map(str, frames.shape[2:]))}")  # fmt: skip
    if not model.config.causal and frames.shape[1] > model.config.frames:
        raise GriditError(f"the tensor model sees {model.config.frames} frames at once, got {frames.shape[1]}")
    return frames


def noised(diffusion, x0, t, seed=0):
    """``x0`` noised to timestep ``t`` (one for the batch) with noise drawn from ``seed``: the same t and seed give
    the same input, so only what the slider changes changes."""
    generator = torch.Generator().manual_seed(seed)
    tt = torch.full((x0.shape[0],), int(t), dtype=torch.long, device=x0.device)
    return diffusion.q_sample(x0, tt, randn(x0.shape, generator, x0.device, x0.dtype))


def capture_inputs(model, x, t, layers):
    """Run ``model(x, t)`` up to the last of ``layers`` and return ``{layer: (args, kwargs)}``, each attention
    module's inputs there."""
    modules = attention_modules(model)
    wanted = sorted(set(int(i) for i in layers))
    if not wanted or wanted[0] < 0 or wanted[-1] >= len(modules):
        raise GriditError(f"layers must lie in 0..{len(modules) - 1}, got {list(layers)}")
    captured = {}

    def hook(i):
        def capture(module, args, kwargs):
            captured[i] = (args, kwargs)
            if i == wanted[-1]:
                raise _Stop

        return capture

    handles = [modules[i].register_forward_pre_hook(hook(i), with_kwargs=True) for i in wanted]
    t = torch.as_tensor(t, device=x.device).long().reshape(-1).expand(x.shape[0])  # (B,)
    try:
        with torch.no_grad():
            model(x, t)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    return captured


def _softmax(q, k, mask=None):
    """Explicit scaled dot-product probabilities ``(.., Q, K)``; ``mask`` (bool, True = may attend) broadcasts."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (.., Q, K)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1)


def _plain(module, x):
    """``Attention`` over tokens ``(N, L, D)``: (out, probs (N, h, L, L))."""
    q, k, v = module.qkv_heads(x)  # (N, h, L, d) each
    probs = _softmax(q, k)  # (N, h, L, L)
    out = (probs @ v).transpose(1, 2).reshape(x.shape)  # (N, L, D)
    return module.proj(out), probs


def _full(module, x):
    """``FullAttention`` over tokens ``(B, T, L, D)`` with its scope as a token mask: (out, probs (B, h, TL, TL))."""
    b, t, n, d = x.shape
    qkv = module.qkv(x.reshape(b, t * n, d)).reshape(b, t * n, 3, module.num_heads, d // module.num_heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, h, TL, dh) each
    frame = torch.arange(t, device=x.device).repeat_interleave(n)  # (TL,)
    place = torch.arange(n, device=x.device).repeat(t)
    mask = {"all": None, "space": frame[:, None] == frame[None, :], "time": place[:, None] == place[None, :]}[module.scope]
    probs = _softmax(q, k, mask)  # (B, h, TL, TL)
    out = (probs @ v).transpose(1, 2).reshape(b, t, n, d)
    return module.proj(out), probs


def _msc(module, x, grid, frames, gate=None, key_gate=None, **_):
    """``MSCAttention`` over tokens ``(B, T, L, D)`` (no cache), both branches as explicit softmaxes (a key gate
    weighs the values, not the probabilities)."""
    b, t, n, d = x.shape
    hh, r = module.high_heads, module.pool
    h, w = grid
    q, k, v = module._qkv(x, frames)  # (B, h, T, L, dh) each
    if key_gate is not None:
        v = v * per_head(key_gate, hh, module.num_heads)
    index, valid = _high_index(0, t, tuple(grid), module.window, module.p_frames, module.light_cone)  # (T, L, K)
    near = torch.zeros(t * n, t * n, dtype=torch.bool)
    rows = torch.arange(t * n).reshape(t, n, 1).expand_as(index)
    near[rows[valid], index[valid]] = True  # (TL, TL) the High-Res keys of every query
    flat = lambda z: z.flatten(2, 3)  # (B, heads, T*L, dh)  # noqa: E731
    p_hi = _softmax(flat(q[:, :hh]), flat(k[:, :hh]), near.to(x.device))  # (B, hh, TL, TL)
    out_hi = (p_hi @ flat(v[:, :hh])).unflatten(2, (t, n))  # (B, hh, T, L, dh)
    lo = [flat(pool_tokens(z[:, hh:], grid, r)) for z in (q, k, v)]  # (B, hl, T*Lp, dh) each
    lp = lo[0].shape[2] // t
    idx, ok = _low_index(0, t, module.i_frames, module.i_stride)  # (T, I+1)
    allowed = torch.zeros(t, t, dtype=torch.bool)
    allowed[torch.arange(t)[:, None].expand_as(idx)[ok], idx[ok]] = True  # (T, T) query frame -> key frames
    mask = allowed.repeat_interleave(lp, 0).repeat_interleave(lp, 1).to(x.device)  # (T*Lp, T*Lp)
    p_pool = _softmax(lo[0], lo[1], mask)  # (B, hl, T*Lp, T*Lp)
    out_lo = unpool_tokens((p_pool @ lo[2]).unflatten(2, (t, lp)), grid, r)  # (B, hl, T, L, dh)
    y, xx = torch.arange(h).repeat_interleave(w), torch.arange(w).repeat(h)  # (L,) token coordinates
    cell = (torch.arange(t)[:, None] * lp + (y // r * (w // r) + xx // r)[None]).flatten().to(x.device)  # (TL,)
    p_lo = p_pool[:, :, cell][:, :, :, cell] / (r * r)  # (B, hl, TL, TL)
    if gate is not None:
        g = gate.permute(0, 2, 1)[:, :, None, :, None, None]  # (B, 2, 1, T, 1, 1)
        out_hi, out_lo = out_hi * g[:, 0], out_lo * g[:, 1]
    out = torch.cat([out_hi, out_lo], dim=1).permute(0, 2, 3, 1, 4).reshape(b, t, n, d)  # (B, T, L, D)
    return module.proj(out), torch.cat([p_hi, p_lo], dim=1)


@torch.no_grad()
def explicit_attention(module, args, kwargs):
    """``(out, probs, branch, gate)`` of one attention module on its captured inputs: its output, recomputed from
    explicit probabilities ``(B, heads, N, N)`` in the module's own token order, each head's branch and the MSC
    gate ``(B, T, 2)`` (or None)."""
    if isinstance(module, Attention):
        out, probs = _plain(module, args[0])
        return out, probs, ["all"] * module.num_heads, None
    if isinstance(module, FullAttention):
        out, probs = _full(module, args[0])
        return out, probs, ["all"] * module.num_heads, None
    if isinstance(module, MSCAttention):
        if kwargs.get("cache") is not None:
            raise GriditError("explicit MSC attention runs without a KV cache: inspect whole clips")
        out, probs = _msc(module, *args, **kwargs)
        branch = ["high"] * module.high_heads + ["low"] * (module.num_heads - module.high_heads)
        return out, probs, branch, kwargs.get("gate")
    raise GriditError(f"no explicit attention for {type(module).__name__}")


def layer_attention(model, x, t, layers):
    """``{layer: LayerAttention}`` for model input ``x`` (``model_input``) at timestep ``t``, computed explicitly for
    ``layers`` only; the forward stops after the last of them."""
    captured = capture_inputs(model, x, t, layers)
    n_frames = x.shape[1] if x.ndim == 5 else None
    frames, h, w = token_grid(model, n_frames)
    order = frame_major_order(model, n_frames).to(x.device)
    modules = attention_modules(model)
    result = {}
    for i, (args, kwargs) in captured.items():
        _, probs, branch, gate = explicit_attention(modules[i], args, kwargs)
        probs = probs[:, :, order][:, :, :, order]  # (B, heads, N, N) frame-major
        result[i] = LayerAttention(probs.float().cpu(), frames, (h, w), branch, None if gate is None else gate.cpu())
    return result


def fuse_heads(probs, heads=None, mode="mean", weights=None):
    """One ``(N, N)`` matrix from ``probs (heads, N, N)``: the ``heads`` chosen (all if None) averaged (weighted
    per query by ``weights (heads, N)`` if given) or their maximum, row-normalised."""
    if mode not in FUSIONS:
        raise GriditError(f"unknown head fusion {mode!r}; choose one of {', '.join(FUSIONS)}")
    heads = list(range(probs.shape[0])) if heads is None else sorted(heads)
    if not heads:
        raise GriditError("choose at least one head")
    chosen = probs[heads]  # (k, N, N)
    if mode == "max":
        fused = chosen.max(dim=0).values
    elif weights is None:
        fused = chosen.mean(dim=0)
    else:
        wk = weights[heads][:, :, None]  # (k, N, 1)
        fused = (wk * chosen).sum(0) / wk.sum(0).clamp(min=1e-12)
    return fused / fused.sum(-1, keepdim=True).clamp(min=1e-12)


def rollout(matrices, add_identity=True):
    """Attention rollout (Abnar & Zuidema 2020) of fused ``(N, N)`` matrices, first layer first: each becomes
    ``(A + I) / 2`` row-normalised, and they are multiplied, last layer on the left."""
    result = None
    for a in matrices:
        if add_identity:
            a = 0.5 * (a + torch.eye(a.shape[-1], dtype=a.dtype))
            a = a / a.sum(-1, keepdim=True)
        result = a if result is None else a @ result
    return result


def frame_mass(matrix, frames):
    """``(T, T)``: the attention mass tokens of frame ``i`` put on tokens of frame ``j``, averaged over the tokens of
    ``i``; rows of a row-stochastic ``matrix (N, N)`` sum to 1."""
    n = matrix.shape[-1]
    per = n // frames
    return matrix.reshape(frames, per, frames, per).sum(-1).mean(1)


def near_mass(frame_matrix, reach=1):
    """The mean over query frames of the mass on frames at most ``reach`` away (itself included)."""
    t = frame_matrix.shape[0]
    i = torch.arange(t)
    near = (i[:, None] - i[None, :]).abs() <= reach
    return float((frame_matrix * near).sum(-1).mean())
