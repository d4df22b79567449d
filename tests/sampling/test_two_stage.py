import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from gridit_core.diffusion import Diffusion, DiffusionConfig
from gridit_core.errors import GriditError
from gridit_core.grid import frames_to_grid
from gridit_core.models import DiT, DiTConfig
from gridit_core.models.sr import build_sr_model
from gridit_core.sampling import grids, two_stage
from gridit_core.sampling.two_stage import batch_seed, sample_two_stage, upscale_folder

pytestmark = pytest.mark.unit

SMALL = dict(depth=1, hidden_size=32, num_heads=2)


def cfg(frame_size, rows=1, cols=1, scale=None):
    return SimpleNamespace(frame_size=frame_size, rows=rows, cols=cols, scale=scale, residual=True)


def fake_stage1(side, rows=2, cols=2):
    return SimpleNamespace(in_channels=3, config=SimpleNamespace(image_size=(rows * side, cols * side)))


def fake_stage2(side):
    return SimpleNamespace(config=SimpleNamespace(aug_cond=True, in_channels=6, image_size=(side, side)))


class CountingSampler:
    """Stands in for ``diffusion.sample``: every new frame is flat, its count written in channels 0 and 1 (base 250)."""

    def __init__(self, rows=2, cols=2):
        self.rows, self.cols, self.count = rows, cols, 0

    def __call__(self, diffusion, model, shape, *, known=None, known_mask=None, **_):
        n, c, h, w = shape
        frames = torch.empty(n, self.rows * self.cols, c, h // self.rows, w // self.cols)  # (N, F, C, h, w)
        for i in range(self.rows * self.cols):
            self.count += 1
            frames[:, i, :2] = torch.tensor([self.count % 250, self.count // 250]).reshape(2, 1, 1) / 127.5 - 1
        grid = frames_to_grid(frames, self.rows, self.cols)  # (N, C, H, W)
        return grid if known is None else torch.where(known_mask, known, grid)


class NearestUpscale:
    """Stands in for ``upscale.upscale_frames``: nearest-neighbour x``scale``; records each call and what is on disk."""

    def __init__(self, out_dir):
        self.out_dir, self.calls = out_dir, []

    def __call__(self, model, diffusion, lr, *, scale, seed, batch_size, **_):
        on_disk = [len(list((self.out_dir / name).iterdir())) for name in ("frames_lr", "frames")]
        self.calls.append((len(lr), seed, batch_size, *on_disk))
        return lr.repeat_interleave(scale, -2).repeat_interleave(scale, -1)  # (B, C, H, W)


def test_a_thousand_frames_stream_through_both_stages(monkeypatch, tmp_path):
    out = tmp_path / "two"
    upscale = NearestUpscale(out)
    monkeypatch.setattr(grids, "sample", CountingSampler())
    monkeypatch.setattr(two_stage, "upscale_frames", upscale)
    sample_two_stage(fake_stage1(4), Diffusion(), cfg(4, 2, 2), fake_stage2(8), Diffusion(), cfg(8, scale=2), 1001, out,
                     sr_batch=16, sr_steps=1, steps=1, seed=3, progress=False)
    for name, side in (("frames", 8), ("frames_lr", 4)):
        files = sorted((out / name).iterdir())
        assert len(files) == 1001 and files[-1].name == "001000.png"
        with Image.open(files[-1]) as img:
            assert img.size == (side, side)
    # batches of 16 (the last one short), each its own seed; each batch's LR frames are on disk before it is
    # super-resolved and its HR frames before the next is read: memory holds one batch
    assert [c[0] for c in upscale.calls] == [16] * 62 + [9]
    assert [c[1] for c in upscale.calls] == [batch_seed(3, b) for b in range(63)]
    assert all(c[2] == c[0] for c in upscale.calls)
    assert [c[3] for c in upscale.calls] == [min(16 * (b + 1), 1001) for b in range(63)]
    assert [c[4] for c in upscale.calls] == [16 * b for b in range(63)]
    lr = [np.asarray(Image.open(f)).astype(int) for f in sorted((out / "frames_lr").iterdir())]
    counts = [f[0, 0, 0] + 250 * f[0, 0, 1] for f in lr]
    assert all(a < b for a, b in zip(counts, counts[1:]))  # every frame written once, in the order sampled
    for i in (0, 500, 1000):  # HR frame i is LR frame i upscaled
        assert np.array_equal(np.asarray(Image.open(out / "frames" / f"{i:06d}.png"))[::2, ::2], lr[i])
    for gif, side in (("sequence.gif", 8), ("sequence_lr.gif", 4)):
        with Image.open(out / gif) as img:
            assert img.n_frames == 1001 and img.size == (side, side)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    stage1 = DiT(DiTConfig(input_size=16, patch_size=4, in_channels=3, rows=2, cols=2, **SMALL)).eval()
    return stage1, build_sr_model("DiT-N/4", 32, 2, **SMALL).eval(), Diffusion(DiffusionConfig(num_steps=50))


@pytest.mark.parametrize("sr_side, options, message", [
    (32, {}, "the stage-2 model makes 32px frames from 16px ones (x2), but stage 1 makes 8px frames"),
    (16, {"sr_steps": 60}, "integer in 1..50, got 60"),
    (16, {"aug_level": 1.5}, "noise level must lie in [0, 1], got 1.5"),
    (16, {"sr_batch": 0}, "batch size must be a positive integer, got 0"),
    (16, {"sr_sampler": "euler"}, "unknown sampler 'euler'"),
    (16, {"overlap": 4}, "overlap must be in 0..3"),
], ids=["sizes", "sr-steps", "noise-level", "sr-batch", "sr-sampler", "stage1-overlap"])
def test_bad_settings_are_refused_before_the_folder_is_made(models, tmp_path, sr_side, options, message):
    stage1, sr, diffusion = models
    with pytest.raises(GriditError, match=re.escape(message)):
        sample_two_stage(stage1, diffusion, cfg(8, 2, 2), sr, diffusion, cfg(sr_side, scale=2), 3, tmp_path / "out",
                         steps=2, progress=False, **options)
    assert not (tmp_path / "out").exists()


def test_upscale_folder_refuses_a_stage1_model_and_its_own_output(models, tmp_path):
    stage1, sr, diffusion = models
    (tmp_path / "out" / "frames").mkdir(parents=True)
    Image.new("RGB", (16, 16)).save(tmp_path / "out" / "frames" / "000000.png")
    with pytest.raises(GriditError, match="not a stage-2"):
        upscale_folder(stage1, diffusion, cfg(8, scale=2), tmp_path / "out" / "frames", tmp_path / "up", progress=False)
    with pytest.raises(GriditError, match="is the output's frames/ folder"):
        upscale_folder(sr, diffusion, cfg(32, scale=2), tmp_path / "out" / "frames", tmp_path / "out", overwrite=True,
                       steps=2, progress=False)
    assert (tmp_path / "out" / "frames" / "000000.png").is_file() and not (tmp_path / "up").exists()
