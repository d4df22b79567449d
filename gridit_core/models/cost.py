"""Multiply-adds of one attention layer as this code computes it, the tensor model's full attention against MSC's two
branches, beside the MSC paper's own formula (arXiv 2412.09828) and what is wrong with it.

Counted: the matrix products, batch 1, biases left out; ``torch.utils.flop_counter.FlopCounterMode`` counts the
same products at 2 FLOPs each (``tests/models/test_cost.py`` holds the two together). Not counted: pooling, the
rotary embedding, softmax, masks and gathers, which cost memory traffic rather than multiply-adds; at small sizes
that traffic, not these counts, sets the time (``docs/families.md``).

For ``T`` frames of ``L`` tokens (``s = T L``) of width ``D``, MSC's High-Res heads of width ``D_hi`` (``high_heads``
of ``num_heads``) and its Low-Res heads of ``D_lo = D - D_hi``:

- full attention (``video.FullAttention``): projections ``4 s D^2`` (queries, keys and values ``3 s D^2``, output
  ``s D^2``), scores ``Q K^T`` and values ``P V`` ``s^2 D`` each;
- MSC (``msc.MSCAttention``): the same projections at full width (queries, keys and values of every token, then the
  heads split); High-Res ``2 s K D_hi``, where every query gets ``K`` key slots, ``w^2 (v + 1)`` when its window's
  keys are gathered (more with the light cone), all ``(v + 1) L`` tokens of its frame block when they are masked,
  or the keys of its tile (the tile and a halo of the window's radius in each of the ``v + 1`` frames) in the tiled
  kernel (``msc.high_res_path`` picks); Low-Res ``2 (s / r^2) (i + 1) (L / r^2) D_lo`` over tokens pooled by ``r``,
  ``i + 1`` frames a query; and the branch gate, one ``D x 2`` map per frame (``2 T D``; twice that with the key-side gate,
  none when the weights are fixed).

Every query gets the same key slots, the ones that fall outside the frame or before frame 0 included (they are masked
after the product), so MSC's cost is linear in ``s`` where full attention's is quadratic. ``msc_attended_pairs``
counts the pairs the masks let through instead: the True entries of the dense reference's masks.
"""

from gridit_core.models.msc import HIGH_RES_PATHS, high_res_path, high_res_tile, tile_keys, window_radius

PATHS = ("auto", *HIGH_RES_PATHS)  # High-Res kernels: the model's own choice, or one of its kernels
GATE_MAPS = {"equal": 0, "learned": 1, "key": 2}  # D x 2 maps per frame of each ``VideoDiTConfig.gate``


def total(cost):
    """The multiply-adds of a cost dict, all parts together."""
    return sum(cost.values())


def full_attention_macs(frames, frame_tokens, hidden, scope="all"):
    """``{"projections", "scores", "values"}`` multiply-adds of the tensor model's attention layer over ``frames``
    frames of ``frame_tokens = (h, w)`` tokens of width ``hidden``: over all tokens (``scope="all"``), within each
    frame (``"space"``) or across frames at each position (``"time"``, Latte's factorized blocks)."""
    n = frame_tokens[0] * frame_tokens[1]
    s = frames * n
    groups, length = {"all": (1, s), "space": (frames, n), "time": (n, frames)}[scope]
    pairs = groups * length * length  # (query, key) pairs; the heads together take D multiply-adds a pair
    return {"projections": 4 * s * hidden * hidden, "scores": pairs * hidden, "values": pairs * hidden}


def high_res_keys(frame_tokens, window, p_frames, light_cone=False, path="auto", tile=None):
    """The key slots of one High-Res query: its window in each of ``p_frames + 1`` frames (``"gathered"``), every
    token of those frames (``"blocked"``), or its tile's keys (``"tiled"``, tiles of ``tile``, None: the model's
    choice); ``"auto"``: the kernel the model picks for this frame size."""
    if path == "auto":
        path = high_res_path(frame_tokens, window, p_frames)
    if path == "tiled":
        tile = tile or high_res_tile(tuple(frame_tokens), window, p_frames, light_cone)
        return tile_keys(tuple(frame_tokens), tuple(tile), window, p_frames, light_cone)
    if path == "blocked":
        return (p_frames + 1) * frame_tokens[0] * frame_tokens[1]
    return sum((2 * window_radius(window, k, light_cone) + 1) ** 2 for k in range(p_frames + 1))


def msc_attention_macs(frames, frame_tokens, hidden, num_heads, *, high_heads=None, window=3, p_frames=1, pool=2,
                       i_stride=2, i_frames=2, light_cone=False, path="auto", tile=None, gate="learned"):  # fmt: skip
    """``{"projections", "high_res", "low_res", "gate"}`` multiply-adds of one MSC layer as its kernels compute it
    (the module docstring); ``high_heads`` None means half the heads, as the model's default; ``path`` and ``tile``
    the High-Res kernel (``high_res_keys``); ``gate`` as
    ``VideoDiTConfig.gate`` (``"equal"`` multiplies nothing). ``i_stride`` decides which frames are seen, not how
    many."""
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    if gate not in GATE_MAPS:
        raise ValueError(f"gate must be one of {tuple(GATE_MAPS)}, got {gate!r}")
    hh = num_heads // 2 if high_heads is None else high_heads
    width_hi = hidden // num_heads * hh  # channels of the High-Res heads
    width_lo = hidden - width_hi
    n = frame_tokens[0] * frame_tokens[1]
    s, pooled = frames * n, n // (pool * pool)
    keys_hi = high_res_keys(frame_tokens, window, p_frames, light_cone, path, tile)
    keys_lo = (i_frames + 1) * pooled
    return {
        "projections": 4 * s * hidden * hidden,
        "high_res": 2 * s * keys_hi * width_hi,  # scores and values
        "low_res": 2 * frames * pooled * keys_lo * width_lo,
        "gate": 2 * frames * hidden * GATE_MAPS[gate],
    }


def layer_macs(config, frames, block=0, path="auto"):
    """The cost dict of block ``block``'s attention in a sequence model of ``config`` (``VideoDiTConfig``) on clips of
    ``frames`` frames: MSC's (on the High-Res kernel ``path``) or the tensor model's, as that block computes it."""
    if not config.causal:
        scope = "all" if config.attention == "full" else ("space", "time")[block % 2]
        return full_attention_macs(frames, config.frame_tokens, config.hidden_size, scope)
    return msc_attention_macs(frames, config.frame_tokens, config.hidden_size, config.num_heads,
                              high_heads=config.high_heads, window=config.window, p_frames=config.p_frames,
                              pool=config.pools[block], i_stride=config.i_stride, i_frames=config.i_frames,
                              light_cone=config.light_cone, path=path, gate=config.gate)  # fmt: skip


def _pairs_1d(n, radius):
    """Pairs ``(a, b)`` of positions in ``0..n-1`` with ``|a - b| <= radius``."""
    return n + 2 * sum(n - d for d in range(1, min(radius, n - 1) + 1))


def msc_attended_pairs(frames, frame_tokens, *, window=3, p_frames=1, pool=2, i_stride=2, i_frames=2, light_cone=False):
    """``{"high_res", "low_res"}``: the (query, key) pairs of one head that MSC's masks allow over ``frames`` frames
    starting at frame 0, the key slots that exist (inside the frame, at or after frame 0); Low-Res pairs are pooled
    tokens."""
    h, w = frame_tokens
    high = 0
    for k in range(min(p_frames, frames - 1) + 1):  # key frame k back: T - k query frames have it
        radius = window_radius(window, k, light_cone)
        high += (frames - k) * _pairs_1d(h, radius) * _pairs_1d(w, radius)
    pooled = (h // pool) * (w // pool)
    low = sum(frames - j * i_stride for j in range(i_frames + 1) if j * i_stride < frames) * pooled * pooled
    return {"high_res": high, "low_res": low}


def paper_full_flops(tokens, hidden):
    """The MSC paper's per-layer cost of full attention over ``tokens`` tokens of width ``hidden`` (batch 1):
    ``8sh^2 + 2s^2h``.

    Its two terms count in different units: ``2s^2h`` is exactly the multiply-adds of ``Q K^T`` and ``P V``, but the
    four ``h x h`` projections take ``4sh^2`` multiply-adds, so ``8sh^2`` counts them twice over (as FLOPs), which
    weighs projections against scores at 2:1. ``full_attention_macs`` counts both in multiply-adds.
    """
    return 8 * tokens * hidden * hidden + 2 * tokens * tokens * hidden


def paper_msc_flops(tokens, hidden, *, window=3, p_frames=1, pool=2, i_stride=2):
    """The MSC paper's per-layer cost of its two branches: High-Res ``2sh^2 + s^2h / (2 w^2 v)`` plus Low-Res
    ``2sh^2 / r^2 + s^2h / (2 r^2 d)`` (``v`` at least 1: the formula divides by it). Kept as the paper states it,
    for comparison; it is not the cost of this code (``msc_attention_macs``), and it is wrong on its own terms:

    - Units, as in ``paper_full_flops``: the ``2sh^2`` projection terms count FLOPs, the ``s^2`` terms multiply-adds.
    - The projections are half-width (each branch maps ``h/2`` channels, so ``2sh^2`` is a quarter of ``8sh^2``, and
      Low-Res projects only the ``s / r^2`` pooled tokens); this code projects every token at full width, ``4sD^2``
      multiply-adds as full attention does, and pools afterwards.
    - High-Res: a ``w x w`` window in each of ``v + 1`` frames gives a query ``w^2 (v + 1)`` keys whatever ``s`` is,
      so the term is linear in ``s`` (``s w^2 (v + 1) h`` multiply-adds at half width); ``s^2 h / (2 w^2 v)`` keeps
      full attention's ``s^2``, as if the window divided the keys rather than fixing their number.
    - Low-Res: pooling by ``r`` divides both the queries and the keys by ``r^2``, so full attention's ``s^2`` term is
      divided by ``r^4`` (``s^2 h / (2 r^4 d)`` with the formula's causal half and stride); the formula has ``r^2``.

    At DiT-N's width (128), 4 heads, this code's defaults (``w=3, v=1, r=2, d=2, i=2``) and frames of 16 tokens, the
    formula gives full attention a saving of 7.0x at 64 frames and 16.4x at 4,096; this code's multiply-adds give
    4.7x and 240x (``saving``; 4.8x and 247x where the High-Res keys are gathered rather than masked).
    """
    s, h = tokens, hidden
    w, v, r, d = window, max(p_frames, 1), pool, i_stride
    return 2 * s * h * h + s * s * h / (2 * w * w * v) + 2 * s * h * h / r**2 + s * s * h / (2 * r * r * d)


def saving(frames, frame_tokens, hidden, num_heads, **msc):
    """Full attention's multiply-adds over MSC's (``msc_attention_macs``' keywords) for one layer."""
    return total(full_attention_macs(frames, frame_tokens, hidden)) / total(
        msc_attention_macs(frames, frame_tokens, hidden, num_heads, **msc))
