"""Tests for gridit_core.models: shapes, adaLN-Zero init, attention, position tables, registry, checkpoint loading."""

import math

import numpy as np
import pytest
import torch

from gridit_core.errors import GriditError
from gridit_core.grid import GridLayout
from gridit_core.models import DiT, DiT_models, DiTConfig, build_dit
from gridit_core.models.positions import frame3d_pos_embed, frame3d_split, grid2d_pos_embed, sincos_1d
from gridit_core.models.weights import load_weights

pytestmark = pytest.mark.unit

TINY = dict(patch_size=2, hidden_size=32, depth=2, num_heads=2)


def tiny(seed=0, randomize=True, **kw):
    """A 2-block, 32-wide DiT; ``randomize`` replaces the zero adaLN-Zero weights so every path matters."""
    torch.manual_seed(seed)
    model = DiT(DiTConfig(**{"input_size": 8, **TINY, **kw})).eval()
    if randomize:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
    return model


def inputs(model, n=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    h, w = model.config.image_size
    x = torch.randn(n, model.in_channels, h, w, generator=g)
    t = torch.randint(0, 1000, (n,), generator=g)
    return x, t


# ---------------------------------------------------------------------------- config and forward


@pytest.mark.parametrize(
    "size, rows, cols, learn_sigma, num_classes",
    [(8, 1, 1, True, 0), ((8, 16), 2, 4, False, 0), ((16, 8), 2, 2, True, 10), (8, 2, 2, False, 5)],
)
def test_forward_shapes(size, rows, cols, learn_sigma, num_classes):
    model = tiny(input_size=size, rows=rows, cols=cols, learn_sigma=learn_sigma, num_classes=num_classes)
    x, t = inputs(model)
    y = torch.tensor([0, num_classes - 1]) if num_classes else None
    out = model(x, t.float(), y)
    c = 8 if learn_sigma else 4
    assert model.out_channels == c and out.shape == (2, c, *x.shape[2:])
    assert model.layout == GridLayout(rows, cols, x.shape[2] // rows, x.shape[3] // cols, 2)
    assert torch.isfinite(out).all()


def test_unpatchify_keeps_token_positions():
    # Token k's outputs must land on the pixels that token k was cut from: use a final layer that copies the input.
    model = tiny(input_size=(8, 12), rows=2, cols=3, learn_sigma=False, in_channels=1)
    gh, gw = model.layout.token_grid
    tokens = torch.arange(gh * gw * 4.0).reshape(1, gh * gw, 4)  # (1, L, p*p*1)
    img = model.unpatchify(tokens)  # (1, 1, 8, 12)
    k = 1 * gw + 2  # token at token-row 1, token-col 2 covers pixels rows 2..3, cols 4..5
    assert img[0, 0, 2:4, 4:6].flatten().tolist() == tokens[0, k].tolist()


def test_input_checks():
    model = tiny(num_classes=3)
    x, t = inputs(model)
    with pytest.raises(GriditError, match=r"expects x of shape \(N, 4, 8, 8\)"):
        model(x[:, :, :4], t, torch.tensor([0, 1]))
    with pytest.raises(GriditError, match="class-conditional"):
        model(x, t)
    with pytest.raises(GriditError, match="unconditional"):
        tiny()(x, t, torch.tensor([0, 1]))


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(input_size=60, rows=2, cols=2, patch_size=4), "frame size 30 is not divisible by the patch size 4"),
        (dict(input_size=9, rows=2), "does not split into 2x1"),
        (dict(input_size=8, hidden_size=36, num_heads=8), "not divisible by 8 heads"),
        (dict(input_size=8, pos_embed="3d"), "unknown pos_embed"),
    ],
)
def test_config_validation(kw, msg):
    with pytest.raises(GriditError, match=msg):
        DiTConfig(**kw)


def test_adaln_zero_init_gives_identity_blocks_and_zero_output():
    model = tiny(randomize=False, num_classes=4)
    seen = []
    for block in model.blocks:
        block.register_forward_hook(lambda mod, args, out: seen.append(torch.equal(args[0], out)))
    x, t = inputs(model)
    out = model(x, t, torch.tensor([1, 2]))
    assert seen == [True, True]
    assert torch.equal(out, torch.zeros_like(out))
    assert model.t_embedder.mlp[0].weight.std().item() == pytest.approx(0.02, rel=0.2)


def test_label_dropout_uses_null_class():
    model = tiny(num_classes=4, class_dropout_prob=0.5)
    emb = model.y_embedder
    assert emb.embedding_table.num_embeddings == 5
    out = emb(torch.tensor([1, 2]), train=False, force_drop_ids=torch.tensor([1, 0]))
    assert torch.equal(out, emb.embedding_table.weight[[4, 2]])


# ---------------------------------------------------------------------------- position tables


def test_sincos_1d_values():
    emb = sincos_1d(4, torch.tensor([0, 3]))  # omega = [1, 1/100]
    expected = [[0, 0, 1, 1], [math.sin(3), math.sin(0.03), math.cos(3), math.cos(0.03)]]
    assert torch.allclose(emb, torch.tensor(expected, dtype=torch.float64))


def test_grid2d_matches_hand_values_and_meshgrid_reference():
    d, n = 8, 3
    table = grid2d_pos_embed(d, n, n)  # (9, 8)
    r, c = 2, 1
    tok = table[r * n + c]
    assert tok[0] == pytest.approx(math.sin(c))  # first half: the column
    assert tok[d // 2] == pytest.approx(math.sin(r))  # second half: the row
    assert tok[1] == pytest.approx(math.sin(c / 100)) and tok[2] == pytest.approx(math.cos(c))
    # MAE/DiT construction: meshgrid(w, h) in "xy" indexing, first output encoded in the first half.
    gw, gh = np.meshgrid(np.arange(n, dtype=np.float32), np.arange(n, dtype=np.float32))
    omega = 1.0 / 10000 ** (np.arange(d // 4, dtype=np.float64) / (d / 4))

    def enc(pos):
        a = pos.reshape(-1)[:, None] * omega[None]
        return np.concatenate([np.sin(a), np.cos(a)], axis=1)

    ref = np.concatenate([enc(gw), enc(gh)], axis=1)
    assert np.allclose(table.numpy(), ref, atol=1e-6)


def test_grid2d_non_square_orientation():
    table = grid2d_pos_embed(16, 2, 5)
    assert table.shape == (10, 16)
    assert table[1 * 5 + 4, 0] == pytest.approx(math.sin(4)) and table[1 * 5 + 4, 8] == pytest.approx(math.sin(1))


def test_frame3d_separates_frames_and_shares_space():
    layout = GridLayout(2, 2, 4, 4, patch=2)  # 4 frames of 2x2 tokens, 16 tokens
    d = 64
    sx, sy, sf = frame3d_split(d)
    assert (sx, sy, sf) == (24, 24, 16) and frame3d_split(1152) == (432, 432, 288)
    table = frame3d_pos_embed(d, layout)
    a, b = layout.frame_to_token(0, 1, 0), layout.frame_to_token(3, 1, 0)
    assert torch.equal(table[a, : sx + sy], table[b, : sx + sy])
    assert not torch.allclose(table[a, sx + sy :], table[b, sx + sy :])
    assert len({tuple(row.tolist()) for row in table}) == 16  # every token distinct
    # a DiT built with frame3d uses that table
    model = tiny(input_size=8, rows=2, cols=2, pos_embed="frame3d", hidden_size=64, randomize=False)
    assert torch.equal(model.pos_embed[0], frame3d_pos_embed(64, model.layout))


# ---------------------------------------------------------------------------- registry


OFFICIAL = {"XL": (28, 1152, 16), "L": (24, 1024, 16), "B": (12, 768, 12), "S": (12, 384, 6)}


def test_registry_sizes_on_meta_device():
    names = [f"DiT-{s}/{p}" for s in OFFICIAL for p in (2, 4, 8)]
    assert set(names) <= set(DiT_models) and len(names) == 12
    assert {"DiT-T/2", "DiT-T/4", "DiT-N/2", "DiT-N/4"} <= set(DiT_models)
    expected = {**OFFICIAL, "T": (6, 192, 3), "N": (4, 128, 4)}
    with torch.device("meta"):
        for name in DiT_models:
            size, patch = name[4:].split("/")
            depth, width, heads = expected[size]
            model = build_dit(name, input_size=16)
            assert model.name == name
            sizes = (len(model.blocks), model.config.hidden_size, model.blocks[0].attn.num_heads)
            assert sizes == (depth, width, heads)
            assert model.x_embedder.proj.weight.shape == (width, 4, int(patch), int(patch))
        xl = build_dit("DiT-XL/2", num_classes=1000)  # official 256x256 model
    # the official count includes pos_embed, which is a frozen parameter there and a buffer here
    assert sum(p.numel() for p in xl.parameters()) + xl.pos_embed.numel() == 675_129_632
    shapes = {k: tuple(v.shape) for k, v in xl.state_dict().items()}
    assert shapes["blocks.27.attn.qkv.weight"] == (3456, 1152)
    assert shapes["final_layer.linear.weight"] == (32, 1152) and shapes["pos_embed"] == (1, 256, 1152)
    assert shapes["y_embedder.embedding_table.weight"] == (1001, 1152)
    assert shapes["blocks.0.adaLN_modulation.1.weight"] == (6912, 1152)


def test_state_dict_uses_official_names():
    keys = set(tiny(num_classes=3).state_dict())
    block = {f"blocks.0.{m}.{p}" for m in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2", "adaLN_modulation.1")
             for p in ("weight", "bias")}
    top = {"pos_embed", "y_embedder.embedding_table.weight"} | {
        f"{m}.{p}" for m in ("x_embedder.proj", "t_embedder.mlp.0", "t_embedder.mlp.2", "final_layer.linear",
                             "final_layer.adaLN_modulation.1") for p in ("weight", "bias")}
    assert keys == top | block | {k.replace("blocks.0", "blocks.1") for k in block}


def test_build_model_unknown_name():
    with pytest.raises(GriditError, match="DiT-XL/2"):
        build_dit("DiT-XXL/2")


# ---------------------------------------------------------------------------- checkpoints


def test_round_trip_through_a_file(tmp_path):
    src, dst = tiny(seed=0), tiny(seed=1)
    torch.save(src.state_dict(), tmp_path / "m.pt")
    report = load_weights(dst, tmp_path / "m.pt")
    assert report.source == "raw state dict" and not (report.missing or report.dropped or report.resized)
    x, t = inputs(src)
    assert torch.equal(src(x, t), dst(x, t))
    assert "loaded 31 tensors" in str(report)


def test_model_and_ema_dict_prefers_ema():
    ema, raw, dst = tiny(seed=0), tiny(seed=1), tiny(seed=2)
    ckpt = {"model": raw.state_dict(), "ema": ema.state_dict(), "step": 7}
    assert load_weights(dst, ckpt).source == "checkpoint['ema']"
    assert torch.equal(dst.blocks[0].attn.qkv.weight, ema.blocks[0].attn.qkv.weight)
    assert load_weights(dst, ckpt, prefer="model").source == "checkpoint['model']"
    assert torch.equal(dst.blocks[0].attn.qkv.weight, raw.blocks[0].attn.qkv.weight)
    assert load_weights(dst, {"model": ema.state_dict()}).source == "checkpoint['model']"


def test_wrapper_prefixes_are_stripped():
    src, dst = tiny(seed=0), tiny(seed=1)
    state = {f"module._orig_mod.{k}": v for k, v in src.state_dict().items()}
    report = load_weights(dst, {"ema": state})
    assert not report.dropped and torch.equal(dst.final_layer.linear.bias, src.final_layer.linear.bias)


def test_class_conditional_into_unconditional_drops_labels():
    src, dst = tiny(seed=0, num_classes=10), tiny(seed=1)
    report = load_weights(dst, src.state_dict())
    assert report.dropped == ["y_embedder.embedding_table.weight"] and not report.missing
    assert torch.equal(dst.t_embedder.mlp[2].weight, src.t_embedder.mlp[2].weight)
    back = load_weights(tiny(num_classes=10), dst.state_dict())
    assert back.missing == ["y_embedder.embedding_table.weight"]


def test_pos_embed_is_resized_from_4x4_to_8x8_tokens():
    src, dst = tiny(seed=0, input_size=8), tiny(seed=1, input_size=16)
    state = src.state_dict()
    col = torch.arange(4.0).repeat(4)  # 4x4 table whose value is the token's column index
    state["pos_embed"] = col[None, :, None].expand(1, 16, 32).clone()
    report = load_weights(dst, state)
    assert report.resized == ["pos_embed"] and "bicubic" in str(report)
    table = dst.pos_embed[0, :, 0].reshape(8, 8)
    assert torch.allclose(table, table[:1].expand(8, 8))  # still constant down each column
    assert (table[0, 1:] >= table[0, :-1] - 1e-6).all() and table[0, -1] > table[0, 0] + 2


def test_frame3d_model_drops_the_2d_table():
    src = tiny(seed=0, rows=2, cols=2)
    dst = tiny(seed=1, rows=2, cols=2, pos_embed="frame3d")
    own = dst.pos_embed.clone()
    report = load_weights(dst, src.state_dict())
    assert report.dropped == ["pos_embed"] and "frame3d" in report.notes["pos_embed"]
    assert torch.equal(dst.pos_embed, own)
    assert load_weights(dst, dst.state_dict()).dropped == []  # its own table loads as is


def test_another_size_raises_naming_the_key():
    src = tiny(hidden_size=64, num_heads=4)
    with pytest.raises(GriditError, match=r"does not fit DiT\(depth=2.*x_embedder.proj.weight is \(64, 4, 2, 2\)"
                       r" in the file, \(32, 4, 2, 2\) in the model \(\d+ tensors differ\)"):
        load_weights(tiny(), src.state_dict())


def test_learned_sigma_needs_permission_to_slice():
    src, dst = tiny(seed=0, learn_sigma=True), tiny(seed=1, learn_sigma=False)
    with pytest.raises(GriditError, match="allow_out_channel_slice"):
        load_weights(dst, src.state_dict())
    report = load_weights(dst, src.state_dict(), allow_out_channel_slice=True)
    assert sorted(report.resized) == ["final_layer.linear.bias", "final_layer.linear.weight"]
    # float64: the cut model's last matrix product has half the columns, and a product of another shape may sum in
    # another order, by how much depends on the CPU's kernels; in float64 that stays below 1e-14, far below 1e-9
    x, t = inputs(src)
    src, dst, x = src.double(), dst.double(), x.double()
    assert torch.allclose(dst(x, t), src(x, t)[:, :4], atol=1e-9, rtol=0)  # eps channels kept, sigma channels cut
    back = tiny(seed=2, learn_sigma=True).double()
    load_weights(back, dst.state_dict(), allow_out_channel_slice=True)
    assert torch.allclose(back(x, t)[:, :4], dst(x, t), atol=1e-9, rtol=0)


def test_truncated_or_foreign_files_raise(tmp_path):
    path = tmp_path / "m.pt"
    torch.save(tiny().state_dict(), path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(GriditError, match="cannot read checkpoint"):
        load_weights(tiny(), path)
    with pytest.raises(GriditError, match="not found"):
        load_weights(tiny(), tmp_path / "nope.pt")
    with pytest.raises(GriditError, match="no 'ema' or 'model'"):
        load_weights(tiny(), {"step": 3})
    with pytest.raises(GriditError, match="shares no tensor"):
        load_weights(tiny(), {"unrelated.weight": torch.zeros(3)})
